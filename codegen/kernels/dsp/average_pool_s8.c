/* AVERAGE_POOL_2D, int8: Arm DSP version (Cortex-M4/M7/M33), bit-exact with portable/.
 *
 * The sums run across channels in int16 pairs: one word holds four channels, and SXTAB16 adds bytes
 * 0 and 2 (and, rotated, 1 and 3) to the two halves of a sum register, sixteen channels in eight
 * registers. A sum of up to 256 int8 values lies in [-32768, 32512], which an int16 half holds;
 * larger windows, and the last channels, take the scalar loop. Each mean is then divided by the
 * count of valid taps with the reference's rounding, half away from zero (SDIV). */
#include <stddef.h>
#include <string.h>

#include "mf_quant.h"
#include "pooling_s8.h"

#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP
#include <arm_acle.h>
#define HAVE_DSP 1

static inline int32_t sxtab16_ror8(int32_t pair, uint32_t v)
{
    int32_t r;
    __asm__("sxtab16 %0, %1, %2, ror #8" : "=r"(r) : "r"(pair), "r"(v));
    return r;
}

static inline uint32_t load_word(const int8_t *p)
{
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}
#else
#define HAVE_DSP 0
#endif

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
                int32_t c = 0;
#if HAVE_DSP
                if (count <= 256) {
                    for (; c + 16 <= in_c; c += 16) {
                        int32_t s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
                        const int8_t *row = first + c;
                        for (int32_t y = 0; y < rows; ++y, row += row_step) {
                            const int8_t *x = row;
                            for (int32_t i = 0; i < cols; ++i, x += in_c) {
                                const uint32_t v0 = load_word(x), v1 = load_word(x + 4);
                                const uint32_t v2 = load_word(x + 8), v3 = load_word(x + 12);
                                s[0] = __sxtab16(s[0], v0);
                                s[1] = sxtab16_ror8(s[1], v0);
                                s[2] = __sxtab16(s[2], v1);
                                s[3] = sxtab16_ror8(s[3], v1);
                                s[4] = __sxtab16(s[4], v2);
                                s[5] = sxtab16_ror8(s[5], v2);
                                s[6] = __sxtab16(s[6], v3);
                                s[7] = sxtab16_ror8(s[7], v3);
                            }
                        }
                        /* s[2j] holds channels 4j and 4j + 2, s[2j + 1] channels 4j + 1 and 4j + 3. */
                        for (int32_t j = 0; j < 4; ++j) {
                            int8_t *o = out + c + 4 * j;
                            o[0] = mean_of((int16_t)s[2 * j], count, p->act_min, p->act_max);
                            o[1] = mean_of((int16_t)s[2 * j + 1], count, p->act_min, p->act_max);
                            o[2] = mean_of(s[2 * j] >> 16, count, p->act_min, p->act_max);
                            o[3] = mean_of(s[2 * j + 1] >> 16, count, p->act_min, p->act_max);
                        }
                    }
                }
#endif
                for (; c < in_c; ++c) {
                    int32_t acc = 0;
                    const int8_t *row = first + c;
                    for (int32_t y = 0; y < rows; ++y, row += row_step) {
                        for (int32_t i = 0; i < cols; ++i) {
                            acc += row[(size_t)i * in_c];
                        }
                    }
                    out[c] = mean_of(acc, count, p->act_min, p->act_max);
                }
            }
        }
    }
}
