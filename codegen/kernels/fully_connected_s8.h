/* FULLY_CONNECTED (int8): parameters and entry point. */
#ifndef MF_FULLY_CONNECTED_S8_H
#define MF_FULLY_CONNECTED_S8_H

#include <stdint.h>

typedef struct {
    int32_t input_offset;    /* minus the input zero point */
    int32_t filter_offset;   /* minus the filter zero point (0 for symmetric int8 weights) */
    int32_t output_offset;   /* the output zero point */
    int32_t act_min;         /* fused activation clamp, in the output's quantized domain */
    int32_t act_max;
    int32_t batches;
    int32_t accum_depth;     /* input values per output value */
    int32_t output_depth;    /* output channels */
    int32_t per_channel;     /* 1: one multiplier/shift per output channel, 0: a single pair */
    const int8_t *weights;   /* [output_depth][accum_depth] */
    const int32_t *bias;     /* [output_depth], or NULL */
    const int32_t *multiplier;
    const int32_t *shift;
} mf_fully_connected_params;

void mf_fully_connected_s8(const mf_fully_connected_params *p, const int8_t *input, int8_t *output);

#endif /* MF_FULLY_CONNECTED_S8_H */
