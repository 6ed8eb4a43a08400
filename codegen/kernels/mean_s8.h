/* MEAN (int8, any axes): parameters and entry point. */
#ifndef MF_MEAN_S8_H
#define MF_MEAN_S8_H

#include <stdint.h>

#define MF_MEAN_MAX_DIMS 5

/* The input's dimensions split into those that are kept (they index the output, row-major) and
 * those that are averaged; neighbouring dimensions of the same kind are merged, and dimensions of
 * size 1 dropped. Strides count input elements. */
typedef struct {
    int32_t kept_rank;
    int32_t kept_size[MF_MEAN_MAX_DIMS];
    int32_t kept_stride[MF_MEAN_MAX_DIMS];
    int32_t reduced_rank;                     /* >= 1 */
    int32_t reduced_size[MF_MEAN_MAX_DIMS];
    int32_t reduced_stride[MF_MEAN_MAX_DIMS];
    int32_t input_zero_sum;                   /* input zero point x averaged elements (int32) */
    int32_t multiplier, shift;                /* input_scale / (output_scale x averaged elements) */
    int32_t output_offset;
} mf_mean_params;

void mf_mean_s8(const mf_mean_params *p, const int8_t *input, int8_t *output);

#endif /* MF_MEAN_S8_H */
