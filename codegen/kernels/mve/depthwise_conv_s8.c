/* DEPTHWISE_CONV_2D, int8: Helium (MVE) version for Cortex-M55, bit-exact with portable/.
 *
 * Each output channel has its own sum, so the vector lanes run across channels.
 * - Depth multiplier 1: VLDRB.S16 widens eight channels of a tap to int16 lanes, where the input
 *   plus its offset (in [-256, 255]) fits; VMULLB/VMULLT multiply the even and the odd lanes into
 *   int32 products, added to two sums that start from the bias. Sixteen channels (two such vectors)
 *   go through the taps at once; their sums are requantized where they are, with the per-channel
 *   constants of every other channel gathered, then narrowed back into channel order (VQMOVNB/T).
 * - Depth multiplier above 1: the lanes are the outputs of one input channel; VLDRB.S32 widens four
 *   filter values, and VMLA multiplies them by the one input value and adds. Up to 16 at once. A
 *   single input channel is a plain convolution with the filter transposed, which goes through the
 *   four-pixel matrix product of the convolutions (mf_mve_rows_4px).
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

/* Requantization constants of one call, hoisted out of the pixel loops. */
typedef struct {
    int32x4_t act_min, act_max;
    int32_t out_off, act_min16, act_max16;
    int right_only; /* every shift negative: no left shift, the rounding fix-up always applies */
} requant_consts;

static requant_consts consts_of(const mf_depthwise_conv_params *p)
{
    requant_consts k;
    k.act_min = vdupq_n_s32(p->act_min);
    k.act_max = vdupq_n_s32(p->act_max);
    k.out_off = p->output_offset;
    k.act_min16 = p->act_min;
    k.act_max16 = p->act_max;
    int32_t largest = INT32_MIN;
    for (int32_t n = p->win.out_c, *s = (int32_t *)p->shift; n > 0; n -= 4, s += 4) {
        largest = vmaxvq_p_s32(largest, vldrwq_z_s32(s, vctp32q((uint32_t)n)), vctp32q((uint32_t)n));
    }
    k.right_only = largest < 0;
    return k;
}

/* The four channels oc, oc + 2, oc + 4, oc + 6 of `acc` (bias included): requantized and offset. */
static inline __attribute__((always_inline)) int32x4_t requantize_alternate(const int32_t *mult, const int32_t *shift,
                                                                             int32_t out_off, int right_only,
                                                                             int32x4_t acc)
{
    const uint32x4_t every_other = vidupq_n_u32(0u, 2);
    const int32x4_t m = vldrwq_gather_shifted_offset_s32(mult, every_other);
    const int32x4_t s = vldrwq_gather_shifted_offset_s32(shift, every_other);
    if (right_only) {
        acc = vqrdmulhq_s32(acc, m);
        acc = vrshlq_s32(vqaddq_s32(acc, vshrq_n_s32(acc, 31)), s);
    } else {
        acc = mf_mve_requantize(acc, m, s);
    }
    return vaddq_n_s32(acc, out_off);
}

/* Eight channels from oc on, whose sums are split into even (oc, oc + 2, ..) and odd channels:
 * requantized, narrowed with saturation into one vector in channel order (VQMOVNB/VQMOVNT: the
 * clamp range lies inside int16, so saturating first changes nothing), clamped and stored. */
static inline __attribute__((always_inline)) void finish8(const int32_t *mult, const int32_t *shift,
                                                          const requant_consts *k, int32x4_t even, int32x4_t odd,
                                                          int8_t *out)
{
    even = requantize_alternate(mult, shift, k->out_off, k->right_only, even);
    odd = requantize_alternate(mult + 1, shift + 1, k->out_off, k->right_only, odd);
    int16x8_t both = vqmovnbq_s32(vdupq_n_s16(0), even);
    both = vqmovntq_s32(both, odd);
    both = vminq_s16(vmaxq_s16(both, vdupq_n_s16((int16_t)k->act_min16)), vdupq_n_s16((int16_t)k->act_max16));
    vstrbq_s16(out, both);
}

#if MF_MVE_ASM
/* finish8() twice, for sixteen channels whose shifts are all negative, written out: GCC spills and
 * reloads around the intrinsics. `every_other` holds the gather offsets 0, 2, 4, 6. */
static inline __attribute__((always_inline)) void finish16_right_only(int32x4_t e0, int32x4_t o0, int32x4_t e1,
                                                                       int32x4_t o1, const int32_t *mult,
                                                                       const int32_t *shift, const requant_consts *k,
                                                                       int8_t *out)
{
    int32x4_t m, sh, t;
    uint32x4_t eo;
    uint32_t zero;
    __asm__ volatile(
        "   movs        %[zero], #0                         \n"
        "   vidup.u32   %q[eo], %[zero], #2                 \n"
        /* channels 0..7: even lanes in e0, odd in o0 */
        "   vldrw.u32   %q[m], [%[mult], %q[eo], uxtw #2]   \n"
        "   vldrw.u32   %q[sh], [%[shift], %q[eo], uxtw #2] \n"
        "   vqrdmulh.s32 %q[e0], %q[e0], %q[m]              \n"
        "   vshr.s32    %q[t], %q[e0], #31                  \n"
        "   vqadd.s32   %q[e0], %q[e0], %q[t]               \n"
        "   vrshl.s32   %q[e0], %q[e0], %q[sh]              \n"
        "   vadd.i32    %q[e0], %q[e0], %[off]              \n"
        "   adds        %[mult], #4                         \n"
        "   adds        %[shift], #4                        \n"
        "   vldrw.u32   %q[m], [%[mult], %q[eo], uxtw #2]   \n"
        "   vldrw.u32   %q[sh], [%[shift], %q[eo], uxtw #2] \n"
        "   vqrdmulh.s32 %q[o0], %q[o0], %q[m]              \n"
        "   vshr.s32    %q[t], %q[o0], #31                  \n"
        "   vqadd.s32   %q[o0], %q[o0], %q[t]               \n"
        "   vrshl.s32   %q[o0], %q[o0], %q[sh]              \n"
        "   vadd.i32    %q[o0], %q[o0], %[off]              \n"
        "   vqmovnb.s32 %q[t], %q[e0]                       \n"
        "   vqmovnt.s32 %q[t], %q[o0]                       \n"
        "   vdup.16     %q[m], %[lo]                        \n"
        "   vmax.s16    %q[t], %q[t], %q[m]                 \n"
        "   vdup.16     %q[m], %[hi]                        \n"
        "   vmin.s16    %q[t], %q[t], %q[m]                 \n"
        "   vstrb.16    %q[t], [%[out]]                     \n"
        /* channels 8..15 */
        "   adds        %[mult], #28                        \n"
        "   adds        %[shift], #28                       \n"
        "   vldrw.u32   %q[m], [%[mult], %q[eo], uxtw #2]   \n"
        "   vldrw.u32   %q[sh], [%[shift], %q[eo], uxtw #2] \n"
        "   vqrdmulh.s32 %q[e1], %q[e1], %q[m]              \n"
        "   vshr.s32    %q[t], %q[e1], #31                  \n"
        "   vqadd.s32   %q[e1], %q[e1], %q[t]               \n"
        "   vrshl.s32   %q[e1], %q[e1], %q[sh]              \n"
        "   vadd.i32    %q[e1], %q[e1], %[off]              \n"
        "   adds        %[mult], #4                         \n"
        "   adds        %[shift], #4                        \n"
        "   vldrw.u32   %q[m], [%[mult], %q[eo], uxtw #2]   \n"
        "   vldrw.u32   %q[sh], [%[shift], %q[eo], uxtw #2] \n"
        "   vqrdmulh.s32 %q[o1], %q[o1], %q[m]              \n"
        "   vshr.s32    %q[t], %q[o1], #31                  \n"
        "   vqadd.s32   %q[o1], %q[o1], %q[t]               \n"
        "   vrshl.s32   %q[o1], %q[o1], %q[sh]              \n"
        "   vadd.i32    %q[o1], %q[o1], %[off]              \n"
        "   vqmovnb.s32 %q[t], %q[e1]                       \n"
        "   vqmovnt.s32 %q[t], %q[o1]                       \n"
        "   vdup.16     %q[m], %[lo]                        \n"
        "   vmax.s16    %q[t], %q[t], %q[m]                 \n"
        "   vdup.16     %q[m], %[hi]                        \n"
        "   vmin.s16    %q[t], %q[t], %q[m]                 \n"
        "   vstrb.16    %q[t], [%[out], #8]                 \n"
        : [e0] "+w"(e0), [o0] "+w"(o0), [e1] "+w"(e1), [o1] "+w"(o1), [m] "=&w"(m), [sh] "=&w"(sh), [t] "=&w"(t),
          [eo] "=&w"(eo), [zero] "=&Te"(zero), [mult] "+r"(mult), [shift] "+r"(shift)
        : [out] "l"(out), [off] "r"(k->out_off), [lo] "r"(k->act_min16), [hi] "r"(k->act_max16)
        : "memory", "cc");
}
#endif

/* Depth multiplier 1, the channels of one pixel sixteen at a time (up to `end`): bias, all taps,
 * requantization. The parameters are read into locals first: after a store through an int8_t
 * pointer, which may alias them, fields read through p would be loaded again. */
static __attribute__((noinline)) void channels16(const mf_depthwise_conv_params *p, const requant_consts *k,
                                                 const taps *t, int32_t end, int8_t *out)
{
    const int32_t rows = t->rows, cols = t->cols, x_off = p->input_offset;
    const size_t x_col = t->x_col, w_col = t->w_col;
    const int32_t *const bias = p->bias, *const mult = p->multiplier, *const shift = p->shift;
    for (int32_t c = 0; c < end; c += 16) {
        const int8_t *x = t->x + c, *w = t->w + c;
        int32x4_t e0 = vdupq_n_s32(0), o0 = e0, e1 = e0, o1 = e0;
        if (bias != NULL) {
            /* Made afresh in each pass, so that it does not hold a Q register through the taps. */
            uint32x4_t every_other;
            uint32_t start = 0; /* VIDUP writes the next offset back */
            __asm__ volatile("vidup.u32 %q0, %1, #2" : "=w"(every_other), "+Te"(start));
            e0 = vldrwq_gather_shifted_offset_s32(bias + c, every_other);
            o0 = vldrwq_gather_shifted_offset_s32(bias + c + 1, every_other);
            e1 = vldrwq_gather_shifted_offset_s32(bias + c + 8, every_other);
            o1 = vldrwq_gather_shifted_offset_s32(bias + c + 9, every_other);
        }
#if MF_MVE_ASM
        /* Written out so that the four sums and three temporaries stay in the eight Q registers: GCC's
         * schedule of the intrinsics below spills a sum on every tap. The widening loads take low
         * registers only (constraint "l"). */
        /* One row of taps per statement: few enough registers for builds that keep a frame pointer. */
        for (int32_t r = 0; r < rows && cols > 0; ++r, x += t->x_row, w += t->w_row) {
            const int8_t *xt = x, *wt = w;
            int16x8_t xv, wv;
            int32x4_t prod;
            __asm__ volatile(
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
                : [e0] "+w"(e0), [o0] "+w"(o0), [e1] "+w"(e1), [o1] "+w"(o1), [xv] "=&w"(xv), [wv] "=&w"(wv),
                  [prod] "=&w"(prod), [x] "+l"(xt), [w] "+l"(wt)
                : [cols] "r"(cols), [x_col] "r"(x_col), [w_col] "r"(w_col), [off] "r"(x_off)
                : "lr", "memory");
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
#if MF_MVE_ASM
        if (k->right_only) {
            finish16_right_only(e0, o0, e1, o1, mult + c, shift + c, k, out + c);
            continue;
        }
#endif
        finish8(mult + c, shift + c, k, e0, o0, out + c);
        finish8(mult + c + 8, shift + c + 8, k, e1, o1, out + c + 8);
    }
}

/* Depth multiplier 1: all channels of one pixel, sixteen at a time, then the last ones (fewer than
 * 16) eight at a time, predicated. */
static void pixel_dm1(const mf_depthwise_conv_params *p, const requant_consts *k, const taps *t, int8_t *out)
{
    const int32_t in_c = p->win.in_c;
    int32_t c = in_c & ~15;
    if (c > 0) {
        channels16(p, k, t, c, out);
    }
    for (; c < in_c; c += 8) {
        channels_tail(p, t, c, in_c - c < 8 ? in_c - c : 8, out);
    }
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

/* ---- one input channel, depth multiplier above 1: a convolution with the filter transposed --------
 *
 * With a single input channel, output channel oc is a convolution of that channel with column oc of
 * the filter ([filter_h][filter_w][out_c]). Transposed into rows on the stack, the filter goes
 * through the four-pixel matrix product of the convolutions (mf_mve_rows), with each pixel's
 * field gathered and padded with the input zero point. */

#define MF_SINGLE_FILTER_BYTES 1024  /* transposed filter */
#define MF_SINGLE_FIELD 128          /* taps per field */
#define MF_SINGLE_CHANNELS 128       /* effective biases */

static int single_channel(const mf_depthwise_conv_params *p)
{
    const mf_window *w = &p->win;
    const int32_t taps = w->filter_h * w->filter_w;
    return w->in_c == 1 && w->out_c > 1 && taps <= MF_SINGLE_FIELD && taps * w->out_c <= MF_SINGLE_FILTER_BYTES && w->out_c <= MF_SINGLE_CHANNELS;
}

static inline void fill(int8_t *dst, int8_t value, int32_t n)
{
    for (int32_t i = 0; i < n; i += 16) {
        vstrbq_p_s8(dst + i, vdupq_n_s8(value), vctp8q((uint32_t)(n - i)));
    }
}

/* The field of output pixel (oy, ox), [filter_h][filter_w], padded with the zero point. */
static void gather_single(const mf_depthwise_conv_params *p, const int8_t *image, int32_t oy, int32_t ox, int8_t *col)
{
    const mf_window *w = &p->win;
    const int8_t pad = (int8_t)(-p->input_offset);
    const int32_t in_y0 = oy * w->stride_h - w->pad_h, in_x0 = ox * w->stride_w - w->pad_w;
    int32_t fy0, fy1, fx0, fx1;
    valid_taps(in_y0, w->dilation_h, w->filter_h, w->in_h, &fy0, &fy1);
    valid_taps(in_x0, w->dilation_w, w->filter_w, w->in_w, &fx0, &fx1);
    if (fy0 > 0 || fy1 < w->filter_h || fx0 > 0 || fx1 < w->filter_w) {
        fill(col, pad, w->filter_h * w->filter_w);
    }
    col += fy0 * w->filter_w;
    for (int32_t fy = fy0; fy < fy1; ++fy, col += w->filter_w) {
        const int8_t *row = image + (size_t)(in_y0 + w->dilation_h * fy) * w->in_w;
        if (w->dilation_w == 1) {
            for (int32_t n = fx1 - fx0, i = 0; i < n; i += 16) {
                const mve_pred16_t lanes = vctp8q((uint32_t)(n - i));
                vstrbq_p_s8(col + fx0 + i, vldrbq_z_s8(row + in_x0 + fx0 + i, lanes), lanes);
            }
        } else {
            for (int32_t fx = fx0; fx < fx1; ++fx) {
                col[fx] = row[in_x0 + w->dilation_w * fx];
            }
        }
    }
}

static __attribute__((noinline)) void single_channel_conv(const mf_depthwise_conv_params *p, const int8_t *input,
                                                          int8_t *output)
{
    const mf_window *w = &p->win;
    const int32_t taps = w->filter_h * w->filter_w, out_c = w->out_c;
    int8_t filter[MF_SINGLE_FILTER_BYTES] __attribute__((aligned(16)));
    int32_t bias[MF_SINGLE_CHANNELS];
    int right_only = 1;
    for (int32_t oc = 0; oc < out_c; ++oc) {
        int32_t sum = 0;
        for (int32_t t = 0; t < taps; ++t) {
            const int8_t v = p->filter[(size_t)t * out_c + oc];
            filter[oc * taps + t] = v;
            sum += v;
        }
        bias[oc] = (p->bias != NULL ? p->bias[oc] : 0) + p->input_offset * sum;
        right_only &= p->shift[oc] < 0;
    }
    mf_mve_rows rows;
    rows.filter = filter;
    rows.bias = bias;
    rows.multiplier = p->multiplier;
    rows.shift = p->shift;
    rows.field = taps;
    rows.count = out_c;
    rows.out_stride = out_c;
    rows.output_offset = p->output_offset;
    rows.act_min = p->act_min;
    rows.act_max = p->act_max;
    rows.right_only = right_only;
    int8_t stage[4 * MF_SINGLE_FIELD] __attribute__((aligned(16)));
    int8_t column[MF_SINGLE_FIELD] __attribute__((aligned(16)));
    const int32_t n_pixels = w->out_h * w->out_w;
    for (int32_t b = 0; b < w->batches; ++b) {
        const int8_t *image = input + (size_t)b * w->in_h * w->in_w;
        int8_t *out = output + (size_t)b * n_pixels * out_c;
        int32_t oy = 0, ox = 0;
        for (int32_t pix = 0; pix < n_pixels; pix += 4) {
            const int32_t pixels = n_pixels - pix < 4 ? n_pixels - pix : 4;
            for (int32_t r = 0; r < pixels; ++r) {
                gather_single(p, image, oy, ox, column);
                mf_mve_stage_row(stage, r, column, taps);
                if (++ox == w->out_w) {
                    ox = 0;
                    ++oy;
                }
            }
            mf_mve_rows_4px(&rows, stage, pixels, out + (size_t)pix * out_c);
        }
    }
}


void mf_depthwise_conv_s8(const mf_depthwise_conv_params *p, const int8_t *input, int8_t *output)
{
    const mf_window *w = &p->win;
    const int32_t in_c = w->in_c, out_c = w->out_c;
    if (single_channel(p)) {
        single_channel_conv(p, input, output);
        return;
    }
    const requant_consts k = consts_of(p);
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
                int8_t *const out = output + (((size_t)b * w->out_h + oy) * w->out_w + ox) * out_c;
                if (p->depth_multiplier == 1) {
                    pixel_dm1(p, &k, &t, out);
                } else {
                    pixel(p, &t, out);
                }
            }
        }
    }
}


#else /* no Helium: the portable kernel, shipped beside this file by the code generator */

#include "depthwise_conv_s8_portable.inc"

#endif
