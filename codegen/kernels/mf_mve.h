/* Building blocks of the Helium (MVE) kernels in mve/: int8 dot products and a vector requantization.
 *
 * Dot products multiply raw int8 inputs by raw int8 weights (VMLADAVA) and sum the weights on the side
 * (VADDVA): sum w * (x + offset) == sum w * x + offset * sum w, so the input offset never has to
 * be added lane by lane. int32 sums wrap the same way in any order, so the result is the portable one.
 *
 * mf_mve_requantize() is TFLM's MultiplyByQuantizedMultiplier (mf_quant.h) on four lanes:
 * - VQRDMULH is gemmlowp's SaturatingRoundingDoublingHighMul: both give floor((a*b + 2^30) / 2^31),
 *   the nudge of 1 - 2^30 for negative products with truncation toward zero being that same floor,
 *   and both saturate INT32_MIN * INT32_MIN to INT32_MAX;
 * - VRSHL by -e rounds half up; the reference rounds half away from zero. Subtracting 1 from negative
 *   values first (saturating, only when e > 0) makes the two agree, as gemmlowp's NEON code does.
 *
 * This header is also included by the generated model.c, whatever the core: without
 * __ARM_FEATURE_MVE it declares nothing but MF_HAVE_MVE. */
#ifndef MF_MVE_H
#define MF_MVE_H

#include <stdint.h>

#if defined(__ARM_FEATURE_MVE) && (__ARM_FEATURE_MVE & 1)
#include <arm_mve.h>
#define MF_HAVE_MVE 1
#if defined(__OPTIMIZE__)
#define MF_MVE_ASM 1
#else
#define MF_MVE_ASM 0
#endif
#else
#define MF_HAVE_MVE 0
#endif

#if MF_HAVE_MVE

/* Lanes [0, count) of a 32-bit vector; count may be zero or negative (no lane). */
static inline mve_pred16_t mf_mve_lanes32(int32_t count)
{
    return vctp32q(count > 0 ? (uint32_t)count : 0u);
}

/* The dot products below are loops of the low-overhead-branch extension with tail predication
 * (WLSTP/LETP): the last pass loads and adds only the elements left, with no separate tail code,
 * and no VPST before each load. GCC 12 does not emit these loops from intrinsics, hence the
 * assembly. VMLADAV and VADDV write even registers only (constraint "Te"); lr is the loop counter.
 * Unoptimized builds keep a frame pointer and run out of registers for them: they get the same
 * loops written with intrinsics. */
#if MF_MVE_ASM

/* acc[k] += sum x[i] * wk[i] and wsum[k] += sum wk[i], for the two weight rows w0, w1 and i < n. */
static inline void mf_mve_dot_s8_x2(const int8_t *x, const int8_t *w0, const int8_t *w1, int32_t n,
                                    int32_t acc[2], int32_t wsum[2])
{
    int32_t a0 = acc[0], a1 = acc[1], s0 = wsum[0], s1 = wsum[1];
    __asm__ volatile(
        "   wlstp.8     lr, %[n], 2f          \n"
        "1:                                   \n"
        "   vldrb.8     q0, [%[x]], #16       \n"
        "   vldrb.8     q1, [%[w0]], #16      \n"
        "   vmladava.s8 %[a0], q0, q1         \n"
        "   vaddva.s8   %[s0], q1             \n"
        "   vldrb.8     q2, [%[w1]], #16      \n"
        "   vmladava.s8 %[a1], q0, q2         \n"
        "   vaddva.s8   %[s1], q2             \n"
        "   letp        lr, 1b                \n"
        "2:                                   \n"
        : [a0] "+Te"(a0), [a1] "+Te"(a1), [s0] "+Te"(s0), [s1] "+Te"(s1), [x] "+r"(x), [w0] "+r"(w0), [w1] "+r"(w1)
        : [n] "r"(n)
        : "q0", "q1", "q2", "lr", "memory");
    acc[0] = a0;
    acc[1] = a1;
    wsum[0] = s0;
    wsum[1] = s1;
}

/* *acc += sum x[i] * w[i] and *wsum += sum w[i], for i < n. */
static inline void mf_mve_dot_s8(const int8_t *x, const int8_t *w, int32_t n, int32_t *acc, int32_t *wsum)
{
    int32_t a = *acc, s = *wsum;
    __asm__ volatile(
        "   wlstp.8     lr, %[n], 2f          \n"
        "1:                                   \n"
        "   vldrb.8     q0, [%[x]], #16       \n"
        "   vldrb.8     q1, [%[w]], #16       \n"
        "   vmladava.s8 %[a], q0, q1          \n"
        "   vaddva.s8   %[s], q1              \n"
        "   letp        lr, 1b                \n"
        "2:                                   \n"
        : [a] "+Te"(a), [s] "+Te"(s), [x] "+r"(x), [w] "+r"(w)
        : [n] "r"(n)
        : "q0", "q1", "lr", "memory");
    *acc = a;
    *wsum = s;
}

/* One filter row against four input rows (the fields of four output pixels), each weight vector
 * loaded once for all four: acc[k] = sum xk[i] * w[i] for k < 4, *wsum = sum w[i], for i < n. */
static inline void mf_mve_dot_s8_4px(const int8_t *x0, const int8_t *x1, const int8_t *x2, const int8_t *x3,
                                     const int8_t *w, int32_t n, int32_t acc[4], int32_t *wsum)
{
    int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0, s = 0;
    __asm__ volatile(
        "   wlstp.8     lr, %[n], 2f          \n"
        "1:                                   \n"
        "   vldrb.8     q0, [%[w]], #16       \n"
        "   vaddva.s8   %[s], q0              \n"
        "   vldrb.8     q1, [%[x0]], #16      \n"
        "   vmladava.s8 %[a0], q0, q1         \n"
        "   vldrb.8     q2, [%[x1]], #16      \n"
        "   vmladava.s8 %[a1], q0, q2         \n"
        "   vldrb.8     q3, [%[x2]], #16      \n"
        "   vmladava.s8 %[a2], q0, q3         \n"
        "   vldrb.8     q4, [%[x3]], #16      \n"
        "   vmladava.s8 %[a3], q0, q4         \n"
        "   letp        lr, 1b                \n"
        "2:                                   \n"
        : [a0] "+Te"(a0), [a1] "+Te"(a1), [a2] "+Te"(a2), [a3] "+Te"(a3), [s] "+Te"(s),
          [w] "+r"(w), [x0] "+r"(x0), [x1] "+r"(x1), [x2] "+r"(x2), [x3] "+r"(x3)
        : [n] "r"(n)
        : "q0", "q1", "q2", "q3", "q4", "lr", "memory");
    acc[0] = a0;
    acc[1] = a1;
    acc[2] = a2;
    acc[3] = a3;
    *wsum = s;
}

/* The same for two input rows. */
static inline void mf_mve_dot_s8_2px(const int8_t *x0, const int8_t *x1, const int8_t *w, int32_t n,
                                     int32_t acc[2], int32_t *wsum)
{
    int32_t a0 = 0, a1 = 0, s = 0;
    __asm__ volatile(
        "   wlstp.8     lr, %[n], 2f          \n"
        "1:                                   \n"
        "   vldrb.8     q0, [%[w]], #16       \n"
        "   vaddva.s8   %[s], q0              \n"
        "   vldrb.8     q1, [%[x0]], #16      \n"
        "   vmladava.s8 %[a0], q0, q1         \n"
        "   vldrb.8     q2, [%[x1]], #16      \n"
        "   vmladava.s8 %[a1], q0, q2         \n"
        "   letp        lr, 1b                \n"
        "2:                                   \n"
        : [a0] "+Te"(a0), [a1] "+Te"(a1), [s] "+Te"(s), [w] "+r"(w), [x0] "+r"(x0), [x1] "+r"(x1)
        : [n] "r"(n)
        : "q0", "q1", "q2", "lr", "memory");
    acc[0] = a0;
    acc[1] = a1;
    *wsum = s;
}

#else /* unoptimized builds: the same loops in intrinsics */

static inline void mf_mve_dot_s8_x2(const int8_t *x, const int8_t *w0, const int8_t *w1, int32_t n,
                                    int32_t acc[2], int32_t wsum[2])
{
    for (; n > 0; n -= 16, x += 16, w0 += 16, w1 += 16) {
        const mve_pred16_t p = vctp8q((uint32_t)n);
        const int8x16_t xv = vldrbq_z_s8(x, p), v0 = vldrbq_z_s8(w0, p), v1 = vldrbq_z_s8(w1, p);
        acc[0] = vmladavaq_s8(acc[0], xv, v0);
        wsum[0] = vaddvaq_s8(wsum[0], v0);
        acc[1] = vmladavaq_s8(acc[1], xv, v1);
        wsum[1] = vaddvaq_s8(wsum[1], v1);
    }
}

static inline void mf_mve_dot_s8(const int8_t *x, const int8_t *w, int32_t n, int32_t *acc, int32_t *wsum)
{
    for (; n > 0; n -= 16, x += 16, w += 16) {
        const mve_pred16_t p = vctp8q((uint32_t)n);
        const int8x16_t wv = vldrbq_z_s8(w, p);
        *acc = vmladavaq_s8(*acc, vldrbq_z_s8(x, p), wv);
        *wsum = vaddvaq_s8(*wsum, wv);
    }
}

static inline void mf_mve_dot_s8_4px(const int8_t *x0, const int8_t *x1, const int8_t *x2, const int8_t *x3,
                                     const int8_t *w, int32_t n, int32_t acc[4], int32_t *wsum)
{
    acc[0] = acc[1] = acc[2] = acc[3] = *wsum = 0;
    for (; n > 0; n -= 16, w += 16, x0 += 16, x1 += 16, x2 += 16, x3 += 16) {
        const mve_pred16_t p = vctp8q((uint32_t)n);
        const int8x16_t wv = vldrbq_z_s8(w, p);
        *wsum = vaddvaq_s8(*wsum, wv);
        acc[0] = vmladavaq_s8(acc[0], vldrbq_z_s8(x0, p), wv);
        acc[1] = vmladavaq_s8(acc[1], vldrbq_z_s8(x1, p), wv);
        acc[2] = vmladavaq_s8(acc[2], vldrbq_z_s8(x2, p), wv);
        acc[3] = vmladavaq_s8(acc[3], vldrbq_z_s8(x3, p), wv);
    }
}

static inline void mf_mve_dot_s8_2px(const int8_t *x0, const int8_t *x1, const int8_t *w, int32_t n,
                                     int32_t acc[2], int32_t *wsum)
{
    acc[0] = acc[1] = *wsum = 0;
    for (; n > 0; n -= 16, w += 16, x0 += 16, x1 += 16) {
        const mve_pred16_t p = vctp8q((uint32_t)n);
        const int8x16_t wv = vldrbq_z_s8(w, p);
        *wsum = vaddvaq_s8(*wsum, wv);
        acc[0] = vmladavaq_s8(acc[0], vldrbq_z_s8(x0, p), wv);
        acc[1] = vmladavaq_s8(acc[1], vldrbq_z_s8(x1, p), wv);
    }
}

#endif /* MF_MVE_ASM */

/* sum x[i], for i < n. */
static inline int32_t mf_mve_sum_s8(const int8_t *x, int32_t n)
{
    int32_t s = 0;
    for (; n >= 16; n -= 16, x += 16) {
        s = vaddvaq_s8(s, vldrbq_s8(x));
    }
    if (n > 0) {
        s = vaddvaq_s8(s, vldrbq_z_s8(x, vctp8q((uint32_t)n)));
    }
    return s;
}

/* mf_multiply_by_quantized_multiplier() on four lanes, each with its own multiplier and shift. */
static inline int32x4_t mf_mve_requantize(int32x4_t acc, int32x4_t multiplier, int32x4_t shift)
{
    const int32x4_t zero = vdupq_n_s32(0);
    const int32x4_t left = vmaxq_s32(shift, zero);
    const int32x4_t right = vminq_s32(shift, zero); /* minus the right shift: VRSHL shifts right by it */
    int32x4_t x = vqrdmulhq_s32(vshlq_s32(acc, left), multiplier);
    /* -1 for negative lanes that are shifted right, 0 otherwise: `right` has its sign bit set iff e > 0. */
    const int32x4_t fixup = vshrq_n_s32(vandq_s32(x, right), 31);
    x = vqaddq_s32(x, fixup);
    return vrshlq_s32(x, right);
}

/* Requantize lanes [0, count) of acc (count <= 4), add the output offset, clamp, store as int8. */
static inline void mf_mve_requantize_store(int32x4_t acc, int32x4_t multiplier, int32x4_t shift, int32_t output_offset,
                                           int32_t act_min, int32_t act_max, int8_t *out, int32_t count)
{
    int32x4_t y = vaddq_n_s32(mf_mve_requantize(acc, multiplier, shift), output_offset);
    y = vminq_s32(vmaxq_s32(y, vdupq_n_s32(act_min)), vdupq_n_s32(act_max));
    if (count >= 4) {
        vstrbq_s32(out, y);
    } else {
        vstrbq_p_s32(out, y, mf_mve_lanes32(count));
    }
}

#endif /* MF_HAVE_MVE */

#endif /* MF_MVE_H */
