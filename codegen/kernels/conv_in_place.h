/* In-place drivers for CONV_2D and DEPTHWISE_CONV_2D.
 *
 * The output overwrites the input tensor. Only the input rows that the current output row
 * still needs are copied into a small scratch window, and the ordinary kernel (portable or
 * optimized) computes one output row at a time from that window. Valid when the vertical
 * stride is 1, the output has no more rows than the input and an output row is no larger
 * than an input row: then every write lands on input bytes that nothing reads any more. */
#ifndef MF_CONV_IN_PLACE_H
#define MF_CONV_IN_PLACE_H

#include <stdint.h>

#include "conv_s8.h"
#include "depthwise_conv_s8.h"

/* scratch: filter_h effective rows of the input ((filter_h - 1) * dilation_h + 1 rows). */
void mf_conv_s8_in_place(const mf_conv_params *p, int8_t *data, int8_t *scratch);
void mf_depthwise_conv_s8_in_place(const mf_depthwise_conv_params *p, int8_t *data, int8_t *scratch);

#endif /* MF_CONV_IN_PLACE_H */
