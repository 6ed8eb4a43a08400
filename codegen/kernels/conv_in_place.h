/* In-place drivers for CONV_2D and DEPTHWISE_CONV_2D.
 *
 * The output overwrites the input tensor. The ordinary kernel (portable or optimized) computes one
 * output row at a time from the input rows, which are still unmodified, into a slot of scratch;
 * each row is written to its place once no later output row reads the input under it
 * (mf_row_window.h). Valid when the vertical stride is 1, the output has no more rows than the
 * input and an output row is no larger than an input row: then every write lands on input bytes
 * that nothing reads any more. The optimized families may skip the scratch where their kernel
 * can itself run in place (a 1x1 convolution that stages its input). */
#ifndef MF_CONV_IN_PLACE_H
#define MF_CONV_IN_PLACE_H

#include <stdint.h>

#include "conv_s8.h"
#include "depthwise_conv_s8.h"

/* scratch: min(pad_h + 1, out_h) output rows (mf_in_place_scratch_rows). */
void mf_conv_s8_in_place(const mf_conv_params *p, int8_t *data, int8_t *scratch);
void mf_depthwise_conv_s8_in_place(const mf_depthwise_conv_params *p, int8_t *data, int8_t *scratch);

/* Optimized families only (dsp/, mve/ conv_s8.c): whether mf_conv_s8() may be called with the output
 * over the input, which their 1x1 kernels allow by staging each block of pixels before writing it.
 * Their conv_in_place.c then needs no scratch. */
int mf_conv_s8_runs_in_place(const mf_conv_params *p);

#endif /* MF_CONV_IN_PLACE_H */
