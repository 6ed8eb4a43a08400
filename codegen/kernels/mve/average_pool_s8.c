/* AVERAGE_POOL_2D, int8: Helium (MVE) version for Cortex-M55, bit-exact with portable/.
 *
 * The sums run across channels, eight at a time in int16 lanes (VLDRB.S16 widens, VADD adds): a sum
 * of up to 256 int8 values lies in [-32768, 32512], which int16 holds. Larger windows add into
 * int32 lanes, four channels at a time. Each mean is then divided by the count of valid taps with
 * the reference's rounding, half away from zero, in scalar code (SDIV). */
#include <stddef.h>

#include "mf_quant.h"
#include "pooling_s8.h"

#if defined(__ARM_FEATURE_MVE) && (__ARM_FEATURE_MVE & 1)
#include <arm_mve.h>

/* The rounded mean of `count` values summing to acc, clamped, as the reference computes it. */
static inline int8_t mean_of(int32_t acc, int32_t count, int32_t act_min, int32_t act_max)
{
    acc = acc > 0 ? (acc + count / 2) / count : (acc - count / 2) / count;
    return (int8_t)mf_clamp(acc, act_min, act_max);
}

void mf_average_pool_s8(const mf_pool_params *p, const int8_t *input, int8_t *output)
{
    const mf_window *w = &p->win;
    const int32_t in_c = w->in_c;
    const size_t row_step = (size_t)w->in_w * in_c;
    for (int32_t b = 0; b < w->batches; ++b) {
        for (int32_t oy = 0; oy < w->out_h; ++oy) {
            const int32_t in_y0 = oy * w->stride_h - w->pad_h;
            const int32_t fy0 = in_y0 < 0 ? -in_y0 : 0;
            const int32_t fy1 = w->filter_h < w->in_h - in_y0 ? w->filter_h : w->in_h - in_y0;
            for (int32_t ox = 0; ox < w->out_w; ++ox) {
                const int32_t in_x0 = ox * w->stride_w - w->pad_w;
                const int32_t fx0 = in_x0 < 0 ? -in_x0 : 0;
                const int32_t fx1 = w->filter_w < w->in_w - in_x0 ? w->filter_w : w->in_w - in_x0;
                int8_t *out = output + (((size_t)b * w->out_h + oy) * w->out_w + ox) * in_c;
                const int32_t rows = fy1 - fy0, cols = fx1 - fx0;
                if (rows <= 0 || cols <= 0) {
                    for (int32_t c = 0; c < in_c; ++c) {
                        out[c] = (int8_t)mf_clamp(0, p->act_min, p->act_max);
                    }
                    continue;
                }
                const int32_t count = rows * cols;
                const int8_t *first = input + (((size_t)b * w->in_h + in_y0 + fy0) * w->in_w + in_x0 + fx0) * in_c;
                if (count <= 256) {
                    for (int32_t c = 0; c < in_c; c += 8) {
                        const mve_pred16_t lanes = vctp16q((uint32_t)(in_c - c));
                        int16x8_t sum = vdupq_n_s16(0);
                        const int8_t *row = first + c;
                        for (int32_t y = 0; y < rows; ++y, row += row_step) {
                            const int8_t *x = row;
                            for (int32_t i = 0; i < cols; ++i, x += in_c) {
                                sum = vaddq_s16(sum, vldrbq_z_s16(x, lanes));
                            }
                        }
                        int16_t sums[8] __attribute__((aligned(16)));
                        vstrhq_s16(sums, sum);
                        const int32_t n = in_c - c < 8 ? in_c - c : 8;
                        for (int32_t k = 0; k < n; ++k) {
                            out[c + k] = mean_of(sums[k], count, p->act_min, p->act_max);
                        }
                    }
                } else {
                    for (int32_t c = 0; c < in_c; c += 4) {
                        const mve_pred16_t lanes = vctp32q((uint32_t)(in_c - c));
                        int32x4_t sum = vdupq_n_s32(0);
                        const int8_t *row = first + c;
                        for (int32_t y = 0; y < rows; ++y, row += row_step) {
                            const int8_t *x = row;
                            for (int32_t i = 0; i < cols; ++i, x += in_c) {
                                sum = vaddq_s32(sum, vldrbq_z_s32(x, lanes));
                            }
                        }
                        int32_t sums[4] __attribute__((aligned(16)));
                        vstrwq_s32(sums, sum);
                        const int32_t n = in_c - c < 4 ? in_c - c : 4;
                        for (int32_t k = 0; k < n; ++k) {
                            out[c + k] = mean_of(sums[k], count, p->act_min, p->act_max);
                        }
                    }
                }
            }
        }
    }
}

#else /* no Helium: the portable kernel, shipped beside this file by the code generator */

#include "average_pool_s8_portable.inc"

#endif
