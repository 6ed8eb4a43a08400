/* DEPTHWISE_CONV_2D, int8: portable C99 with the semantics of TFLM's
 * reference_integer_ops::DepthwiseConvPerChannel (any depth multiplier). */
#include <stddef.h>

#include "depthwise_conv_s8.h"
#include "mf_quant.h"

void mf_depthwise_conv_s8(const mf_depthwise_conv_params *p, const int8_t *input, int8_t *output)
{
    const mf_window *w = &p->win;
    for (int32_t b = 0; b < w->batches; ++b) {
        for (int32_t oy = 0; oy < w->out_h; ++oy) {
            const int32_t in_y0 = oy * w->stride_h - w->pad_h;
            for (int32_t ox = 0; ox < w->out_w; ++ox) {
                const int32_t in_x0 = ox * w->stride_w - w->pad_w;
                int8_t *out = output + (((size_t)b * w->out_h + oy) * w->out_w + ox) * w->out_c;
                for (int32_t ic = 0; ic < w->in_c; ++ic) {
                    for (int32_t m = 0; m < p->depth_multiplier; ++m) {
                        const int32_t oc = ic * p->depth_multiplier + m;
                        int32_t acc = 0;
                        for (int32_t fy = 0; fy < w->filter_h; ++fy) {
                            const int32_t in_y = in_y0 + w->dilation_h * fy;
                            if (in_y < 0 || in_y >= w->in_h) {
                                continue;
                            }
                            for (int32_t fx = 0; fx < w->filter_w; ++fx) {
                                const int32_t in_x = in_x0 + w->dilation_w * fx;
                                if (in_x < 0 || in_x >= w->in_w) {
                                    continue;
                                }
                                const int32_t in_val = input[(((size_t)b * w->in_h + in_y) * w->in_w + in_x) * w->in_c + ic];
                                const int32_t f_val = p->filter[((size_t)fy * w->filter_w + fx) * w->out_c + oc];
                                acc += f_val * (in_val + p->input_offset);
                            }
                        }
                        if (p->bias != NULL) {
                            acc += p->bias[oc];
                        }
                        acc = mf_multiply_by_quantized_multiplier(acc, p->multiplier[oc], p->shift[oc]);
                        acc += p->output_offset;
                        out[oc] = (int8_t)mf_clamp(acc, p->act_min, p->act_max);
                    }
                }
            }
        }
    }
}
