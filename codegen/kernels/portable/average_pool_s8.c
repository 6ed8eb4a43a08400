/* AVERAGE_POOL_2D, int8: portable C99 with the semantics of TFLM's reference_integer_ops::AveragePool:
 * padding is excluded from the count, and the mean is rounded half away from zero. */
#include <stddef.h>

#include "mf_quant.h"
#include "pooling_s8.h"

void mf_average_pool_s8(const mf_pool_params *p, const int8_t *input, int8_t *output)
{
    const mf_window *w = &p->win;
    for (int32_t b = 0; b < w->batches; ++b) {
        for (int32_t oy = 0; oy < w->out_h; ++oy) {
            const int32_t in_y0 = oy * w->stride_h - w->pad_h;
            const int32_t fy_start = in_y0 < 0 ? -in_y0 : 0;
            const int32_t fy_end = w->filter_h < w->in_h - in_y0 ? w->filter_h : w->in_h - in_y0;
            for (int32_t ox = 0; ox < w->out_w; ++ox) {
                const int32_t in_x0 = ox * w->stride_w - w->pad_w;
                const int32_t fx_start = in_x0 < 0 ? -in_x0 : 0;
                const int32_t fx_end = w->filter_w < w->in_w - in_x0 ? w->filter_w : w->in_w - in_x0;
                int8_t *out = output + (((size_t)b * w->out_h + oy) * w->out_w + ox) * w->out_c;
                for (int32_t c = 0; c < w->out_c; ++c) {
                    int32_t acc = 0;
                    int32_t count = 0;
                    for (int32_t fy = fy_start; fy < fy_end; ++fy) {
                        for (int32_t fx = fx_start; fx < fx_end; ++fx) {
                            acc += input[(((size_t)b * w->in_h + in_y0 + fy) * w->in_w + in_x0 + fx) * w->in_c + c];
                            ++count;
                        }
                    }
                    if (count == 0) {
                        out[c] = (int8_t)mf_clamp(0, p->act_min, p->act_max);
                        continue;
                    }
                    acc = acc > 0 ? (acc + count / 2) / count : (acc - count / 2) / count;
                    out[c] = (int8_t)mf_clamp(acc, p->act_min, p->act_max);
                }
            }
        }
    }
}
