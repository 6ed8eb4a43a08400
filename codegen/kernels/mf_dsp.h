/* Building blocks of the Arm DSP (SIMD32) kernels in dsp/: int8 dot products on SMLAD.
 *
 * Four int8 values are read as one word and split into two int16 pairs with SXTB16 (bytes 0 and 2)
 * and SXTB16 ROR #8 (bytes 1 and 3). Inputs and weights split the same way, so SMLAD pairs each
 * input with its own weight. SXTAB16 adds an offset to both halves in the same instruction: an
 * int8 value plus an offset in [-128, 128] lies in [-256, 255], which fits the int16 half exactly.
 *
 * Integer sums do not depend on their order, so every kernel built on these is bit-exact with the
 * portable one. Without __ARM_FEATURE_DSP (a Cortex-M0+/M3, or the host) the same functions are plain
 * C: this header is also included by the generated model.c, whatever the core. */
#ifndef MF_DSP_H
#define MF_DSP_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP
#include <arm_acle.h>
#define MF_HAVE_DSP 1
/* Inline assembly that takes a dozen registers: unoptimized builds keep a frame pointer and cannot
 * give them, and get the same code in C. */
#if defined(__OPTIMIZE__)
#define MF_DSP_ASM 1
#else
#define MF_DSP_ASM 0
#endif
#else
#define MF_HAVE_DSP 0
#define MF_DSP_ASM 0
#endif

/* Four bytes from any address: the DSP cores load unaligned words in one LDR. */
static inline uint32_t mf_load_word(const int8_t *p)
{
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* An offset in both int16 halves of a word, the form SXTAB16 adds. */
static inline int32_t mf_pair16(int32_t v)
{
    return (int32_t)(((uint32_t)v & 0xFFFFu) | ((uint32_t)v << 16));
}

#if MF_HAVE_DSP
/* GCC 12's arm_acle.h has no __ror, and a separate ROR is not folded into SXTB16's rotation. */
static inline int32_t mf_sxtb16_ror8(uint32_t v)
{
    int32_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(v));
    return r;
}

static inline int32_t mf_sxtab16_ror8(int32_t pair, uint32_t v)
{
    int32_t r;
    __asm__("sxtab16 %0, %1, %2, ror #8" : "=r"(r) : "r"(pair), "r"(v));
    return r;
}
#endif

/* acc[k] += sum (x[i] + x_off) * wk[i] for the three weight rows w0, w1, w2 and i < n (any n).
 * Three rows keep every pointer, sum and temporary in a register of a Cortex-M4; a fourth would spill. */
static inline void mf_dot_s8_x3(const int8_t *x, const int8_t *w0, const int8_t *w1, const int8_t *w2, int32_t n,
                                int32_t x_off, int32_t acc[3])
{
    int32_t a0 = acc[0], a1 = acc[1], a2 = acc[2];
    const int8_t *const end = x + n;
#if MF_HAVE_DSP
    const int32_t x_pair = mf_pair16(x_off);
    const int8_t *const vector_end = x + (n & ~3);
    while (x != vector_end) {
        const uint32_t xv = mf_load_word(x);
        const int32_t x02 = __sxtab16(x_pair, xv), x13 = mf_sxtab16_ror8(x_pair, xv);
        uint32_t v = mf_load_word(w0);
        a0 = __smlad(x02, __sxtb16((int32_t)v), a0);
        a0 = __smlad(x13, mf_sxtb16_ror8(v), a0);
        v = mf_load_word(w1);
        a1 = __smlad(x02, __sxtb16((int32_t)v), a1);
        a1 = __smlad(x13, mf_sxtb16_ror8(v), a1);
        v = mf_load_word(w2);
        a2 = __smlad(x02, __sxtb16((int32_t)v), a2);
        a2 = __smlad(x13, mf_sxtb16_ror8(v), a2);
        x += 4;
        w0 += 4;
        w1 += 4;
        w2 += 4;
    }
#endif
    for (; x != end; ++x, ++w0, ++w1, ++w2) {
        const int32_t xi = (int32_t)*x + x_off;
        a0 += xi * (int32_t)*w0;
        a1 += xi * (int32_t)*w1;
        a2 += xi * (int32_t)*w2;
    }
    acc[0] = a0;
    acc[1] = a1;
    acc[2] = a2;
}

/* acc0 += sum (x[i] + x_off) * (w0[i] + w_off), acc1 the same with w1, for i < n (any n). */
static inline void mf_dot_s8_x2(const int8_t *x, const int8_t *w0, const int8_t *w1, int32_t n,
                                int32_t x_off, int32_t w_off, int32_t *acc0, int32_t *acc1)
{
    int32_t a0 = *acc0, a1 = *acc1;
    int32_t i = 0;
#if MF_HAVE_DSP
    const int32_t x_pair = mf_pair16(x_off), w_pair = mf_pair16(w_off);
    for (; i + 4 <= n; i += 4) {
        const uint32_t xv = mf_load_word(x + i);
        const int32_t x02 = __sxtab16(x_pair, xv), x13 = mf_sxtab16_ror8(x_pair, xv);
        const uint32_t v0 = mf_load_word(w0 + i);
        const uint32_t v1 = mf_load_word(w1 + i);
        a0 = __smlad(x02, __sxtab16(w_pair, v0), a0);
        a0 = __smlad(x13, mf_sxtab16_ror8(w_pair, v0), a0);
        a1 = __smlad(x02, __sxtab16(w_pair, v1), a1);
        a1 = __smlad(x13, mf_sxtab16_ror8(w_pair, v1), a1);
    }
#endif
    for (; i < n; ++i) {
        const int32_t xi = (int32_t)x[i] + x_off;
        a0 += xi * ((int32_t)w0[i] + w_off);
        a1 += xi * ((int32_t)w1[i] + w_off);
    }
    *acc0 = a0;
    *acc1 = a1;
}

/* acc + sum (x[i] + x_off) * (w[i] + w_off), for i < n (any n). */
static inline int32_t mf_dot_s8(const int8_t *x, const int8_t *w, int32_t n, int32_t x_off, int32_t w_off, int32_t acc)
{
    int32_t i = 0;
#if MF_HAVE_DSP
    const int32_t x_pair = mf_pair16(x_off), w_pair = mf_pair16(w_off);
    for (; i + 4 <= n; i += 4) {
        const uint32_t xv = mf_load_word(x + i);
        const uint32_t wv = mf_load_word(w + i);
        acc = __smlad(__sxtab16(x_pair, xv), __sxtab16(w_pair, wv), acc);
        acc = __smlad(mf_sxtab16_ror8(x_pair, xv), mf_sxtab16_ror8(w_pair, wv), acc);
    }
#endif
    for (; i < n; ++i) {
        acc += ((int32_t)x[i] + x_off) * ((int32_t)w[i] + w_off);
    }
    return acc;
}

/* One output pixel of a depthwise filter, for four neighbouring channels k:
 * acc[k] += sum over taps (x[k] + x_off) * w[k], where the taps form `rows` rows of `cols` taps,
 * x_col/w_col apart within a row and x_row/w_row apart from one row to the next. */
static inline void mf_depthwise_taps_s8_x4(const int8_t *x, const int8_t *w, int32_t rows, int32_t cols,
                                           size_t x_col, size_t x_row, size_t w_col, size_t w_row,
                                           int32_t x_off, int32_t acc[4])
{
    int32_t a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3];
#if MF_HAVE_DSP
    const int32_t x_pair = mf_pair16(x_off);
#endif
    if (x_col == w_col) {
        /* The common case (no dilation along rows): one index for both, one register fewer. */
        const size_t end = (size_t)cols * x_col;
        for (int32_t r = 0; r < rows; ++r, x += x_row, w += w_row) {
            for (size_t i = 0; i != end; i += x_col) {
#if MF_HAVE_DSP
                const uint32_t xv = mf_load_word(x + i), wv = mf_load_word(w + i);
                const int32_t x02 = __sxtab16(x_pair, xv), x13 = mf_sxtab16_ror8(x_pair, xv);
                const int32_t w02 = __sxtb16((int32_t)wv), w13 = mf_sxtb16_ror8(wv);
                a0 = __smlabb(x02, w02, a0);
                a1 = __smlabb(x13, w13, a1);
                a2 = __smlatt(x02, w02, a2);
                a3 = __smlatt(x13, w13, a3);
#else
                a0 += ((int32_t)x[i] + x_off) * (int32_t)w[i];
                a1 += ((int32_t)x[i + 1] + x_off) * (int32_t)w[i + 1];
                a2 += ((int32_t)x[i + 2] + x_off) * (int32_t)w[i + 2];
                a3 += ((int32_t)x[i + 3] + x_off) * (int32_t)w[i + 3];
#endif
            }
        }
    } else {
        for (int32_t r = 0; r < rows; ++r, x += x_row, w += w_row) {
            const int8_t *xt = x, *wt = w;
            for (int32_t t = 0; t < cols; ++t, xt += x_col, wt += w_col) {
#if MF_HAVE_DSP
                const uint32_t xv = mf_load_word(xt), wv = mf_load_word(wt);
                const int32_t x02 = __sxtab16(x_pair, xv), x13 = mf_sxtab16_ror8(x_pair, xv);
                const int32_t w02 = __sxtb16((int32_t)wv), w13 = mf_sxtb16_ror8(wv);
                a0 = __smlabb(x02, w02, a0);
                a1 = __smlabb(x13, w13, a1);
                a2 = __smlatt(x02, w02, a2);
                a3 = __smlatt(x13, w13, a3);
#else
                a0 += ((int32_t)xt[0] + x_off) * (int32_t)wt[0];
                a1 += ((int32_t)xt[1] + x_off) * (int32_t)wt[1];
                a2 += ((int32_t)xt[2] + x_off) * (int32_t)wt[2];
                a3 += ((int32_t)xt[3] + x_off) * (int32_t)wt[3];
#endif
            }
        }
    }
    acc[0] = a0;
    acc[1] = a1;
    acc[2] = a2;
    acc[3] = a3;
}

/* The same for a depth multiplier above 1: four neighbouring outputs of one input channel, so each
 * tap is one input value (x[0] + x_off, in [-256, 255]: SMLABB reads it from the low halfword)
 * times four filter values. */
static inline void mf_depthwise_taps_broadcast_s8_x4(const int8_t *x, const int8_t *w, int32_t rows, int32_t cols,
                                                     size_t x_col, size_t x_row, size_t w_col, size_t w_row,
                                                     int32_t x_off, int32_t acc[4])
{
    int32_t a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3];
    for (int32_t r = 0; r < rows; ++r, x += x_row, w += w_row) {
        const int8_t *xt = x, *wt = w;
        for (int32_t t = 0; t < cols; ++t, xt += x_col, wt += w_col) {
            const int32_t xi = (int32_t)*xt + x_off;
#if MF_HAVE_DSP
            const uint32_t wv = mf_load_word(wt);
            const int32_t w02 = __sxtb16((int32_t)wv), w13 = mf_sxtb16_ror8(wv);
            a0 = __smlabb(xi, w02, a0);
            a1 = __smlabb(xi, w13, a1);
            a2 = __smlabt(xi, w02, a2);
            a3 = __smlabt(xi, w13, a3);
#else
            a0 += xi * (int32_t)wt[0];
            a1 += xi * (int32_t)wt[1];
            a2 += xi * (int32_t)wt[2];
            a3 += xi * (int32_t)wt[3];
#endif
        }
    }
    acc[0] = a0;
    acc[1] = a1;
    acc[2] = a2;
    acc[3] = a3;
}

/* mf_multiply_by_quantized_multiplier() (mf_quant.h) in about half the instructions, with the same
 * result for every input. The doubling high multiply is floor((a*b + 2^30) / 2^31), an SMULL and a
 * 64-bit add: for negative products the reference's nudge of 1 - 2^30 and division truncating toward
 * zero land on that same floor. Only INT32_MIN * INT32_MIN overflows; it saturates, as there. */
static inline int32_t mf_requantize_fast(int32_t x, int32_t multiplier, int32_t shift)
{
    const int32_t left = shift > 0 ? shift : 0;
    const int32_t right = shift > 0 ? 0 : -shift;
    const int32_t a = (int32_t)((uint32_t)x << left);
    int32_t high;
    if (a == INT32_MIN && multiplier == INT32_MIN) {
        high = INT32_MAX;
    } else {
        high = (int32_t)(((int64_t)a * multiplier + (1LL << 30)) >> 31);
    }
    /* Round half away from zero, as mf_rounding_divide_by_pot(). */
    const int32_t mask = (int32_t)((1u << right) - 1u);
    const int32_t threshold = (mask >> 1) + (high < 0 ? 1 : 0);
    return (high >> right) + ((high & mask) > threshold ? 1 : 0);
}

/* An int32 sum to its int8 output: requantize, add the output offset, clamp. The arguments are
 * plain values so that callers keep them in registers: after a store through an int8_t pointer,
 * which may alias anything, fields read through a pointer would be loaded again. */
static inline int8_t mf_requantize_to_s8(int32_t acc, int32_t multiplier, int32_t shift, int32_t output_offset,
                                         int32_t act_min, int32_t act_max)
{
    const int32_t y = mf_requantize_fast(acc, multiplier, shift) + output_offset;
    return (int8_t)(y < act_min ? act_min : (y > act_max ? act_max : y));
}

/* ---- requantization in five instructions where the sums are known to be small ----------------
 *
 * For a sum |acc| < 2^30, a multiplier m >= 0 and a right shift r in [1, 22] (shift = -r, the usual
 * case), the reference's two roundings come down to
 *     out = (SMMLAR(2 * acc, m, k + (acc < 0 ? -1 : 0))) >> r,  k = 2^(r-1) + (output_offset << r):
 * - SMMLAR(a, m, c) = c + floor((a*m + 2^31) / 2^32), and with a = 2 * acc (no overflow) that is
 *   c + floor((acc*m + 2^30) / 2^31): the doubling high multiply, which cannot saturate here;
 * - rounding half away from zero by 2^r is floor((h + 2^(r-1) - (h < 0)) / 2^r); h < 0 implies
 *   acc < 0, and when acc < 0 but h = 0 the -1 changes nothing (2^(r-1) - 1 < 2^r), so the sign of
 *   acc stands in for the sign of h;
 * - adding output_offset * 2^r before the shift adds output_offset after it; with r <= 22 every
 *   intermediate stays inside int32.
 * mf_dsp_requant_setup() checks those conditions for one channel, given a bound on |acc|. */
typedef struct {
    int32_t multiplier, k, right;
} mf_dsp_requant;

/* Whether the five-instruction form applies to a channel whose sums satisfy |acc| <= bound
 * (bound < 2^30); fills q when it does. */
static inline int mf_dsp_requant_setup(int32_t multiplier, int32_t shift, int32_t output_offset, int32_t bound,
                                       mf_dsp_requant *q)
{
    if (shift >= 0 || shift < -22 || multiplier < 0 || bound >= (1 << 30) || bound < 0) {
        return 0;
    }
    q->multiplier = multiplier;
    q->right = -shift;
    q->k = (int32_t)((1u << (q->right - 1)) + ((uint32_t)output_offset << q->right));
    return 1;
}

static inline int32_t mf_dsp_requant_apply(int32_t acc, const mf_dsp_requant *q)
{
    const int32_t c = q->k + (acc >> 31);
#if MF_HAVE_DSP
    int32_t h;
    __asm__("smmlar %0, %1, %2, %3" : "=r"(h) : "r"(acc * 2), "r"(q->multiplier), "r"(c));
#else
    const int32_t h = (int32_t)(((int64_t)c * 4294967296LL + (int64_t)(acc * 2) * q->multiplier + 2147483648LL) >> 32);
#endif
    return h >> q->right;
}

/* ---- four pixels against rows of filters (a convolution as a matrix product) ---------------------
 *
 * The fields of four output pixels are widened once, input offset added, into int16 pairs: for
 * each group of four values, (x0, x2) and (x1, x3), the order in which SXTB16 splits a word of
 * weights, and the four pixels' pairs side by side (mf_dsp_stage_field). Each word of a filter row
 * is then loaded and split once for the four pixels, and one LDRD brings the two pairs of a pixel:
 * eight SMLADs for sixteen products. A value plus the offset lies in [-255, 255], so it fits its
 * int16 half; padding in a field must hold the zero point, which the offset turns into 0. */

typedef struct {
    const int8_t *filter;       /* `count` rows of `field` values */
    const int32_t *bias;        /* one per row, or NULL */
    const int32_t *multiplier, *shift;
    int32_t field, count;
    int32_t out_stride;         /* from one pixel's outputs to the next pixel's */
    int32_t output_offset, act_min, act_max;
    int mode;                   /* mf_dsp_rows_mode() */
} mf_dsp_rows;

#if MF_HAVE_DSP

/* Pixel r's field (n values at src) into the stage, widened with the offset. */
static inline void mf_dsp_stage_field(uint32_t *stage, int32_t r, const int8_t *src, int32_t n, int32_t offset)
{
    const int32_t pair = mf_pair16(offset);
    uint32_t *dst = stage + 2 * r;
    for (; n >= 4; n -= 4, src += 4, dst += 8) {
        const uint32_t v = mf_load_word(src);
        dst[0] = (uint32_t)__sxtab16(pair, v);
        dst[1] = (uint32_t)mf_sxtab16_ror8(pair, v);
    }
    if (n > 0) {
        int32_t t[4] = {0, 0, 0, 0};
        for (int32_t i = 0; i < n; ++i) {
            t[i] = src[i] + offset;
        }
        dst[0] = ((uint32_t)t[0] & 0xFFFFu) | ((uint32_t)t[2] << 16);
        dst[1] = ((uint32_t)t[1] & 0xFFFFu) | ((uint32_t)t[3] << 16);
    }
}

/* Sums of one filter row (field values at w, init added) against the four staged fields. */
static inline __attribute__((always_inline)) void mf_dsp_dot_4px(const uint32_t *s, const int8_t *w, int32_t field,
                                                                int32_t init, int32_t acc[4])
{
    int32_t a0 = init, a1 = init, a2 = init, a3 = init;
    const int8_t *const end = w + (field & ~3);
    if (w != end) {
        /* Seventeen instructions for sixteen products; GCC's own schedule takes 22 (no LDRD). */
        uint32_t v, x0, x1;
        int32_t w13;
        __asm__ volatile(
            "1:                                        \n"
            "   ldr     %[v], [%[w]], #4               \n"
            "   sxtb16  %[w13], %[v], ror #8           \n"
            "   sxtb16  %[v], %[v]                     \n"
            "   ldrd    %[x0], %[x1], [%[s]], #8       \n"
            "   smlad   %[a0], %[x0], %[v], %[a0]      \n"
            "   smlad   %[a0], %[x1], %[w13], %[a0]    \n"
            "   ldrd    %[x0], %[x1], [%[s]], #8       \n"
            "   smlad   %[a1], %[x0], %[v], %[a1]      \n"
            "   smlad   %[a1], %[x1], %[w13], %[a1]    \n"
            "   ldrd    %[x0], %[x1], [%[s]], #8       \n"
            "   smlad   %[a2], %[x0], %[v], %[a2]      \n"
            "   smlad   %[a2], %[x1], %[w13], %[a2]    \n"
            "   ldrd    %[x0], %[x1], [%[s]], #8       \n"
            "   smlad   %[a3], %[x0], %[v], %[a3]      \n"
            "   smlad   %[a3], %[x1], %[w13], %[a3]    \n"
            "   cmp     %[w], %[end]                   \n"
            "   bne     1b                             \n"
            : [a0] "+r"(a0), [a1] "+r"(a1), [a2] "+r"(a2), [a3] "+r"(a3), [w] "+r"(w), [s] "+r"(s),
              [v] "=&r"(v), [w13] "=&r"(w13), [x0] "=&r"(x0), [x1] "=&r"(x1)
            : [end] "r"(end)
            : "cc", "memory");
    }
    if (field & 3) {
        /* The last word, byte by byte: a word load could read past the end of the weights. */
        uint32_t v = 0;
        for (int32_t i = 0; i < (field & 3); ++i) {
            v |= (uint32_t)(uint8_t)w[i] << (8 * i);
        }
        const int32_t w02 = __sxtb16((int32_t)v), w13 = mf_sxtb16_ror8(v);
        a0 = __smlad((int32_t)s[1], w13, __smlad((int32_t)s[0], w02, a0));
        a1 = __smlad((int32_t)s[3], w13, __smlad((int32_t)s[2], w02, a1));
        a2 = __smlad((int32_t)s[5], w13, __smlad((int32_t)s[4], w02, a2));
        a3 = __smlad((int32_t)s[7], w13, __smlad((int32_t)s[6], w02, a3));
    }
    acc[0] = a0;
    acc[1] = a1;
    acc[2] = a2;
    acc[3] = a3;
}

/* How the rows requantize: MF_DSP_EXACT unless every row takes the five-instruction form (its
 * sums are at most field * 255 * 128 plus its bias); then by the clamp left after SSAT #8. */
enum { MF_DSP_FAST_NO_CLAMP, MF_DSP_FAST_CLAMP_LOW, MF_DSP_FAST_CLAMP_BOTH, MF_DSP_EXACT };

static inline int mf_dsp_rows_mode(const mf_dsp_rows *g)
{
    const int32_t products = g->field * 255 * 128;
    if (g->field <= 0 || g->field > 32767 || products >= (1 << 30)) {
        return MF_DSP_EXACT;
    }
    const int32_t limit = (1 << 30) - 1 - products;
    for (int32_t k = 0; k < g->count; ++k) {
        const int32_t bias = g->bias != NULL ? g->bias[k] : 0;
        if (bias < -limit || bias > limit || g->shift[k] >= 0 || g->shift[k] < -22 || g->multiplier[k] < 0) {
            return MF_DSP_EXACT;
        }
    }
    if (g->act_min == -128 && g->act_max == 127) {
        return MF_DSP_FAST_NO_CLAMP;
    }
    return g->act_max == 127 ? MF_DSP_FAST_CLAMP_LOW : MF_DSP_FAST_CLAMP_BOTH;
}

/* The five-instruction requantization of mf_dsp_requant_apply(), then SSAT #8 and what is left of
 * the clamp. odd_offset = 2 * output_offset + 1, so that k = odd_offset * 2^right / 2. */
static inline __attribute__((always_inline)) int8_t mf_dsp_finish_fast(int32_t acc, int32_t mult, int32_t right,
                                                                     int32_t odd_offset, int32_t act_min,
                                                                     int32_t act_max, const int mode)
{
    const mf_dsp_requant q = {mult, (int32_t)((uint32_t)odd_offset << right) >> 1, right};
    int32_t y = __ssat(mf_dsp_requant_apply(acc, &q), 8);
    if (mode != MF_DSP_FAST_NO_CLAMP) {
        y = y < act_min ? act_min : y;
    }
    if (mode == MF_DSP_FAST_CLAMP_BOTH) {
        y = y > act_max ? act_max : y;
    }
    return (int8_t)y;
}

/* `mode` and `full` (four pixels) are constants where this is inlined: each case its own loop. */
static inline __attribute__((always_inline)) void mf_dsp_rows_body(const mf_dsp_rows *g, const uint32_t *stage,
                                                                    int32_t pixels, int8_t *out, const int mode,
                                                                    const int full)
{
    const int32_t field = g->field, stride = g->out_stride, out_off = g->output_offset;
    const int32_t act_min = g->act_min, act_max = g->act_max, odd_offset = 2 * out_off + 1;
    const int32_t *const bias = g->bias, *const mult = g->multiplier, *const shift = g->shift;
    const int8_t *w = g->filter;
    for (int32_t k = 0; k < g->count; ++k, w += field, ++out) {
        int32_t acc[4];
        mf_dsp_dot_4px(stage, w, field, bias != NULL ? bias[k] : 0, acc);
        if (mode != MF_DSP_EXACT) {
            const int32_t m = mult[k], right = -shift[k];
            out[0] = mf_dsp_finish_fast(acc[0], m, right, odd_offset, act_min, act_max, mode);
            if (full) {
                out[stride] = mf_dsp_finish_fast(acc[1], m, right, odd_offset, act_min, act_max, mode);
                out[2 * stride] = mf_dsp_finish_fast(acc[2], m, right, odd_offset, act_min, act_max, mode);
                out[3 * stride] = mf_dsp_finish_fast(acc[3], m, right, odd_offset, act_min, act_max, mode);
            } else {
                for (int32_t r = 1; r < pixels; ++r) {
                    out[r * stride] = mf_dsp_finish_fast(acc[r], m, right, odd_offset, act_min, act_max, mode);
                }
            }
        } else {
            for (int32_t r = 0; r < pixels; ++r) {
                out[r * stride] = mf_requantize_to_s8(acc[r], mult[k], shift[k], out_off, act_min, act_max);
            }
        }
    }
}

/* Every row against the `pixels` (1 to 4) staged fields: output k of pixel r at out + r * out_stride + k. */
static __attribute__((noinline, unused)) void mf_dsp_rows_4px(const mf_dsp_rows *g, const uint32_t *stage,
                                                             int32_t pixels, int8_t *out)
{
    if (pixels == 4) {
        switch (g->mode) {
        case MF_DSP_FAST_NO_CLAMP: mf_dsp_rows_body(g, stage, 4, out, MF_DSP_FAST_NO_CLAMP, 1); return;
        case MF_DSP_FAST_CLAMP_LOW: mf_dsp_rows_body(g, stage, 4, out, MF_DSP_FAST_CLAMP_LOW, 1); return;
        case MF_DSP_FAST_CLAMP_BOTH: mf_dsp_rows_body(g, stage, 4, out, MF_DSP_FAST_CLAMP_BOTH, 1); return;
        default: break;
        }
    }
    mf_dsp_rows_body(g, stage, pixels, out, g->mode == MF_DSP_EXACT ? MF_DSP_EXACT : MF_DSP_FAST_CLAMP_BOTH, 0);
}

#endif /* MF_HAVE_DSP */

#endif /* MF_DSP_H */
