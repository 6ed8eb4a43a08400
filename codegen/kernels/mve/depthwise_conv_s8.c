/* DEPTHWISE_CONV_2D, int8: Helium (MVE) version for Cortex-M55, bit-exact with portable/.
 *
 * Each output channel has its own sum, so the vector lanes run across channels.
 * - Depth multiplier 1: VLDRB.S16 widens eight channels of a tap to int16 lanes, where the input
 *   plus its offset (in [-256, 255]) fits; VMULLB/VMULLT multiply the even and the odd lanes into
 *   int32 products, added to two sums. Sixteen channels (two such vectors) go through the taps at
 *   once; their sums are requantized where they are, with the per-channel constants of every other
 *   channel gathered and the outputs scattered.
 * - Depth multiplier above 1: the lanes are the outputs of one input channel; VLDRB.S32 widens four
 *   filter values, and VMLA multiplies them by the one input value and adds. Up to 16 at once.
 * The tap range that lands inside the input is worked out once per output pixel, and outputs are
 * requantized four at a time in vector registers (mf_mve.h). */
#include <stddef.h>

#include "depthwise_conv_s8.h"
#include "mf_mve.h"
#include "mf_quant.h"

#if MF_HAVE_MVE

/* One output pixel: its first valid tap in the input (x) and the filter (w), and how to step on. */
typedef struct {
    const int8_t *x, *w;
    int32_t rows, cols;
    size_t x_col, x_row, w_col, w_row;
} taps;

/* Bias, requantization and store of outputs oc .. oc + count - 1 whose sums are in sums[]. */
static inline __attribute__((always_inline)) void finish(const mf_depthwise_conv_params *p, const int32_t *sums,
                                                          int32_t oc, int32_t count, int8_t *out)
{
    const int32_t *const bias = p->bias, *const mult = p->multiplier, *const shift = p->shift;
    const int32_t out_off = p->output_offset, act_min = p->act_min, act_max = p->act_max;
    for (int32_t k = 0; k < count; k += 4) {
        const int32_t o = oc + k;
        const mve_pred16_t lanes = mf_mve_lanes32(count - k);
        int32x4_t acc = vldrwq_s32(sums + k);
        if (bias != NULL) {
            acc = vaddq_s32(acc, vldrwq_z_s32(bias + o, lanes));
        }
        mf_mve_requantize_store(acc, vldrwq_z_s32(mult + o, lanes), vldrwq_z_s32(shift + o, lanes), out_off,
                                act_min, act_max, out + o, count - k);
    }
}

/* Requantize and store the channels of one sum vector whose lanes are every other channel from
 * oc on (oc, oc + 2, oc + 4, oc + 6): per-channel constants gathered, outputs scattered. */
static inline __attribute__((always_inline)) void finish_alternate(const mf_depthwise_conv_params *p, int32x4_t acc,
                                                                    int32_t oc, int8_t *out)
{
    const uint32x4_t every_other = vidupq_n_u32(0u, 2);
    if (p->bias != NULL) {
        acc = vaddq_s32(acc, vldrwq_gather_shifted_offset_s32(p->bias + oc, every_other));
    }
    int32x4_t y = mf_mve_requantize(acc, vldrwq_gather_shifted_offset_s32(p->multiplier + oc, every_other),
                                    vldrwq_gather_shifted_offset_s32(p->shift + oc, every_other));
    y = vaddq_n_s32(y, p->output_offset);
    y = vminq_s32(vmaxq_s32(y, vdupq_n_s32(p->act_min)), vdupq_n_s32(p->act_max));
    vstrbq_scatter_offset_s32(out + oc, every_other, y);
}

/* Depth multiplier 1, sixteen channels from c on: all taps, then requantization. */
static __attribute__((noinline)) void channels16(const mf_depthwise_conv_params *p, const taps *t, int32_t c,
                                                 int8_t *out)
{
    const int8_t *x = t->x + c, *w = t->w + c;
    const int32_t rows = t->rows, cols = t->cols, x_off = p->input_offset;
    const size_t x_col = t->x_col, w_col = t->w_col;
    int32x4_t e0 = vdupq_n_s32(0), o0 = e0, e1 = e0, o1 = e0;
#if MF_MVE_ASM
    /* Written out so that the four sums and three temporaries stay in the eight Q registers: GCC's
     * schedule of the intrinsics below spills a sum on every tap. The widening loads take low
     * registers only (constraint "l"). */
    const size_t x_next = t->x_row - (size_t)cols * x_col, w_next = t->w_row - (size_t)cols * w_col;
    int16x8_t xv, wv;
    int32x4_t prod;
    int32_t r = rows;
    if (rows > 0 && cols > 0) {
        __asm__ volatile(
            "3:                                       \n"
            "   dls         lr, %[cols]               \n"
            "1:                                       \n"
            "   vldrb.s16   %q[xv], [%[x]]            \n"
            "   vldrb.s16   %q[wv], [%[w]]            \n"
            "   vadd.i16    %q[xv], %q[xv], %[off]    \n"
            "   vmullb.s16  %q[prod], %q[xv], %q[wv]  \n"
            "   vadd.i32    %q[e0], %q[e0], %q[prod]  \n"
            "   vmullt.s16  %q[prod], %q[xv], %q[wv]  \n"
            "   vadd.i32    %q[o0], %q[o0], %q[prod]  \n"
            "   vldrb.s16   %q[xv], [%[x], #8]        \n"
            "   vldrb.s16   %q[wv], [%[w], #8]        \n"
            "   vadd.i16    %q[xv], %q[xv], %[off]    \n"
            "   vmullb.s16  %q[prod], %q[xv], %q[wv]  \n"
            "   vadd.i32    %q[e1], %q[e1], %q[prod]  \n"
            "   vmullt.s16  %q[prod], %q[xv], %q[wv]  \n"
            "   vadd.i32    %q[o1], %q[o1], %q[prod]  \n"
            "   add         %[x], %[x], %[x_col]      \n"
            "   add         %[w], %[w], %[w_col]      \n"
            "   le          lr, 1b                    \n"
            "   add         %[x], %[x], %[x_next]     \n"
            "   add         %[w], %[w], %[w_next]     \n"
            "   subs        %[r], %[r], #1            \n"
            "   bne         3b                        \n"
            : [e0] "+w"(e0), [o0] "+w"(o0), [e1] "+w"(e1), [o1] "+w"(o1), [xv] "=&w"(xv), [wv] "=&w"(wv),
              [prod] "=&w"(prod), [x] "+l"(x), [w] "+l"(w), [r] "+r"(r)
            : [cols] "r"(cols), [x_col] "r"(x_col), [w_col] "r"(w_col), [x_next] "r"(x_next), [w_next] "r"(w_next),
              [off] "r"(x_off)
            : "lr", "memory", "cc");
    }
#else
    for (int32_t r = 0; r < rows; ++r, x += t->x_row, w += t->w_row) {
        const int8_t *xt = x, *wt = w;
        for (int32_t i = 0; i < cols; ++i, xt += x_col, wt += w_col) {
            const int16x8_t x0 = vaddq_n_s16(vldrbq_s16(xt), (int16_t)x_off), w0 = vldrbq_s16(wt);
            const int16x8_t x1 = vaddq_n_s16(vldrbq_s16(xt + 8), (int16_t)x_off), w1 = vldrbq_s16(wt + 8);
            e0 = vaddq_s32(e0, vmullbq_int_s16(x0, w0));
            o0 = vaddq_s32(o0, vmulltq_int_s16(x0, w0));
            e1 = vaddq_s32(e1, vmullbq_int_s16(x1, w1));
            o1 = vaddq_s32(o1, vmulltq_int_s16(x1, w1));
        }
    }
#endif
    finish_alternate(p, e0, c, out);
    finish_alternate(p, o0, c + 1, out);
    finish_alternate(p, e1, c + 8, out);
    finish_alternate(p, o1, c + 9, out);
}

/* Depth multiplier 1: the last channels c .. c + count - 1 (count <= 8), predicated. */
static void channels_tail(const mf_depthwise_conv_params *p, const taps *t, int32_t c, int32_t count, int8_t *out)
{
    const mve_pred16_t lanes = vctp16q((uint32_t)count);
    const int16_t x_off = (int16_t)p->input_offset;
    const size_t x_col = t->x_col, w_col = t->w_col;
    int32x4_t even = vdupq_n_s32(0), odd = even;
    const int8_t *x = t->x + c, *w = t->w + c;
    for (int32_t r = 0; r < t->rows; ++r, x += t->x_row, w += t->w_row) {
        const int8_t *xt = x, *wt = w;
        for (int32_t i = 0; i < t->cols; ++i, xt += x_col, wt += w_col) {
            const int16x8_t xv = vaddq_n_s16(vldrbq_z_s16(xt, lanes), x_off);
            const int16x8_t wv = vldrbq_z_s16(wt, lanes);
            even = vaddq_s32(even, vmullbq_int_s16(xv, wv));
            odd = vaddq_s32(odd, vmulltq_int_s16(xv, wv));
        }
    }
    /* VST2 interleaves the even and odd sums back into channel order. */
    int32_t sums[8] __attribute__((aligned(16)));
    int32x4x2_t pair;
    pair.val[0] = even;
    pair.val[1] = odd;
    vst2q_s32(sums, pair);
    finish(p, sums, c, count, out);
}

/* Depth multiplier above 1: outputs oc .. oc + count - 1 of input channel ic, with
 * 4 * (nvec - 1) < count <= 4 * nvec; the last of the nvec vectors is partial when `partial`. */
static inline __attribute__((always_inline)) void multiplied(const mf_depthwise_conv_params *p, const taps *t,
                                                              int32_t ic, int32_t oc, int32_t count, int nvec,
                                                              int partial, int8_t *out)
{
    const mve_pred16_t last = mf_mve_lanes32(count - 4 * (nvec - 1));
    const int32_t x_off = p->input_offset;
    const int32_t rows = t->rows, cols = t->cols;
    const size_t x_col = t->x_col, w_col = t->w_col, x_row = t->x_row, w_row = t->w_row;
    int32x4_t a0 = vdupq_n_s32(0), a1 = a0, a2 = a0, a3 = a0;
    const int8_t *x = t->x + ic, *w = t->w + oc;
    for (int32_t r = 0; r < rows; ++r, x += x_row, w += w_row) {
        const int8_t *xt = x, *wt = w;
        for (int32_t i = 0; i < cols; ++i, xt += x_col, wt += w_col) {
            const int32_t xs = (int32_t)*xt + x_off;
            a0 = vmlaq_n_s32(a0, nvec == 1 && partial ? vldrbq_z_s32(wt, last) : vldrbq_s32(wt), xs);
            if (nvec > 1) {
                a1 = vmlaq_n_s32(a1, nvec == 2 && partial ? vldrbq_z_s32(wt + 4, last) : vldrbq_s32(wt + 4), xs);
            }
            if (nvec > 2) {
                a2 = vmlaq_n_s32(a2, nvec == 3 && partial ? vldrbq_z_s32(wt + 8, last) : vldrbq_s32(wt + 8), xs);
            }
            if (nvec > 3) {
                a3 = vmlaq_n_s32(a3, partial ? vldrbq_z_s32(wt + 12, last) : vldrbq_s32(wt + 12), xs);
            }
        }
    }
    int32_t sums[16] __attribute__((aligned(16)));
    vstrwq_s32(sums, a0);
    vstrwq_s32(sums + 4, a1);
    vstrwq_s32(sums + 8, a2);
    vstrwq_s32(sums + 12, a3);
    finish(p, sums, oc, count, out);
}

/* All outputs of one pixel, in blocks of 16, then smaller ones. */
static __attribute__((noinline)) void pixel(const mf_depthwise_conv_params *p, const taps *t, int8_t *out)
{
    const int32_t in_c = p->win.in_c, dm = p->depth_multiplier;
    if (dm == 1) {
        int32_t c = 0;
        for (; c + 16 <= in_c; c += 16) {
            channels16(p, t, c, out);
        }
        for (; c < in_c; c += 8) {
            channels_tail(p, t, c, in_c - c < 8 ? in_c - c : 8, out);
        }
        return;
    }
    for (int32_t ic = 0; ic < in_c; ++ic) {
        const int32_t oc_end = (ic + 1) * dm;
        int32_t oc = ic * dm;
        for (; oc < oc_end; oc += 16) {
            const int32_t count = oc_end - oc < 16 ? oc_end - oc : 16;
            /* Each shape its own loop: the loads of whole vectors need no predicate. */
            switch ((count + 3) / 4 * 2 + ((count & 3) != 0)) {
            case 2: multiplied(p, t, ic, oc, count, 1, 0, out); break;
            case 3: multiplied(p, t, ic, oc, count, 1, 1, out); break;
            case 4: multiplied(p, t, ic, oc, count, 2, 0, out); break;
            case 5: multiplied(p, t, ic, oc, count, 2, 1, out); break;
            case 6: multiplied(p, t, ic, oc, count, 3, 0, out); break;
            case 7: multiplied(p, t, ic, oc, count, 3, 1, out); break;
            case 8: multiplied(p, t, ic, oc, count, 4, 0, out); break;
            default: multiplied(p, t, ic, oc, count, 4, 1, out); break;
            }
        }
    }
}

/* The tap range [*lo, *hi) of a filter dimension that lands inside the input. */
static inline void valid_taps(int32_t start, int32_t dilation, int32_t n, int32_t size, int32_t *lo, int32_t *hi)
{
    int32_t first = 0;
    while (first < n && start + dilation * first < 0) {
        ++first;
    }
    int32_t last = n;
    while (last > first && start + dilation * (last - 1) >= size) {
        --last;
    }
    *lo = first;
    *hi = last;
}

void mf_depthwise_conv_s8(const mf_depthwise_conv_params *p, const int8_t *input, int8_t *output)
{
    const mf_window *w = &p->win;
    const int32_t in_c = w->in_c, out_c = w->out_c;
    taps t;
    t.x_col = (size_t)w->dilation_w * in_c;
    t.x_row = (size_t)w->dilation_h * w->in_w * in_c;
    t.w_col = (size_t)out_c;
    t.w_row = (size_t)w->filter_w * out_c;
    for (int32_t b = 0; b < w->batches; ++b) {
        for (int32_t oy = 0; oy < w->out_h; ++oy) {
            const int32_t in_y0 = oy * w->stride_h - w->pad_h;
            int32_t fy0, fy1;
            valid_taps(in_y0, w->dilation_h, w->filter_h, w->in_h, &fy0, &fy1);
            for (int32_t ox = 0; ox < w->out_w; ++ox) {
                const int32_t in_x0 = ox * w->stride_w - w->pad_w;
                int32_t fx0, fx1;
                valid_taps(in_x0, w->dilation_w, w->filter_w, w->in_w, &fx0, &fx1);
                /* With no tap inside the input (rows or cols 0) the loops add nothing: only the bias. */
                t.rows = fy1 - fy0;
                t.cols = fx1 - fx0;
                t.x = input + (((size_t)b * w->in_h + (in_y0 + w->dilation_h * fy0)) * w->in_w +
                               (in_x0 + w->dilation_w * fx0)) * in_c;
                t.w = p->filter + ((size_t)fy0 * w->filter_w + fx0) * out_c;
                pixel(p, &t, output + (((size_t)b * w->out_h + oy) * w->out_w + ox) * out_c);
            }
        }
    }
}

#else /* no Helium: the portable loop */

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
                        acc = mf_multiply_by_quantized_multiplier(acc, p->multiplier[oc], p->shift[oc]) + p->output_offset;
                        out[oc] = (int8_t)mf_clamp(acc, p->act_min, p->act_max);
                    }
                }
            }
        }
    }
}

#endif
