/* DEPTHWISE_CONV_2D (int8, per-channel requantization): parameters and entry point. */
#ifndef MF_DEPTHWISE_CONV_S8_H
#define MF_DEPTHWISE_CONV_S8_H

#include <stdint.h>

#include "mf_window.h"

typedef struct {
    mf_window win;
    int32_t depth_multiplier;     /* out_c == in_c * depth_multiplier */
    int32_t input_offset;
    int32_t output_offset;
    int32_t act_min, act_max;
    const int8_t *filter;         /* [1][filter_h][filter_w][out_c] */
    const int32_t *bias;          /* [out_c] or NULL */
    const int32_t *multiplier;    /* [out_c] */
    const int32_t *shift;         /* [out_c] */
} mf_depthwise_conv_params;

void mf_depthwise_conv_s8(const mf_depthwise_conv_params *p, const int8_t *input, int8_t *output);

#endif /* MF_DEPTHWISE_CONV_S8_H */
