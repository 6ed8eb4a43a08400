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
#else
#define MF_HAVE_DSP 0
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

#endif /* MF_DSP_H */
