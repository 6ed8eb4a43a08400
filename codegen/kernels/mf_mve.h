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

/* Four rows of a staging buffer against one filter row, the rows interleaved 16 bytes at a time
 * (x = row 0 bytes 0-15, row 1 bytes 0-15, ..., row 3 bytes 0-15, row 0 bytes 16-31, ...): each
 * weight vector is loaded once for the four, and one pointer walks all four rows. Returns
 * init + sum x_r[i] * w[i] for i < n in lane r. */
static inline int32x4_t mf_mve_dot_s8_4rows(const int8_t *x, const int8_t *w, int32_t n, int32_t init)
{
    int32_t a0 = init, a1 = init, a2 = init, a3 = init;
    int32x4_t v;
    __asm__ volatile(
        "   wlstp.8     lr, %[n], 2f          \n"
        "1:                                   \n"
        "   vldrb.8     q0, [%[w]], #16       \n"
        "   vldrb.8     q1, [%[x]], #16       \n"
        "   vmladava.s8 %[a0], q1, q0         \n"
        "   vldrb.8     q2, [%[x]], #16       \n"
        "   vmladava.s8 %[a1], q2, q0         \n"
        "   vldrb.8     q1, [%[x]], #16       \n"
        "   vmladava.s8 %[a2], q1, q0         \n"
        "   vldrb.8     q2, [%[x]], #16       \n"
        "   vmladava.s8 %[a3], q2, q0         \n"
        "   letp        lr, 1b                \n"
        "2:                                   \n"
        "   vmov        %q[v][2], %q[v][0], %[a0], %[a2] \n"
        "   vmov        %q[v][3], %q[v][1], %[a1], %[a3] \n"
        : [a0] "+Te"(a0), [a1] "+Te"(a1), [a2] "+Te"(a2), [a3] "+Te"(a3), [x] "+r"(x), [w] "+r"(w), [v] "=w"(v)
        : [n] "r"(n)
        : "q0", "q1", "q2", "lr", "memory");
    return v;
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

static inline int32x4_t mf_mve_dot_s8_4rows(const int8_t *x, const int8_t *w, int32_t n, int32_t init)
{
    int32_t a[4] = {init, init, init, init};
    for (; n > 0; n -= 16, w += 16, x += 64) {
        const mve_pred16_t p = vctp8q((uint32_t)n);
        const int8x16_t wv = vldrbq_z_s8(w, p);
        for (int r = 0; r < 4; ++r) {
            a[r] = vmladavaq_p_s8(a[r], vldrbq_z_s8(x + 16 * r, p), wv, p);
        }
    }
    int32x4_t v = vdupq_n_s32(a[0]);
    v = vsetq_lane_s32(a[1], v, 1);
    v = vsetq_lane_s32(a[2], v, 2);
    return vsetq_lane_s32(a[3], v, 3);
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

/* mf_multiply_by_quantized_multiplier() on four lanes that share one multiplier and shift. */
static inline int32x4_t mf_mve_requantize_n(int32x4_t acc, int32_t multiplier, int32_t shift)
{
    const int32_t left = shift > 0 ? shift : 0;
    const int32_t right = shift > 0 ? 0 : shift; /* minus the right shift */
    int32x4_t x = vqrdmulhq_n_s32(vshlq_r_s32(acc, left), multiplier);
    if (right != 0) {
        x = vqaddq_s32(x, vshrq_n_s32(x, 31)); /* see mf_mve_requantize() */
    }
    return vrshlq_n_s32(x, right);
}

/* n bytes from src to dst, 16 a beat (the C library's memcpy is a byte loop behind a call). */
static inline void mf_mve_copy_bytes(int8_t *dst, const int8_t *src, int32_t n)
{
#if MF_MVE_ASM
    /* A tail-predicated loop: three instructions a beat, where GCC's predicated intrinsics take twelve. */
    __asm__ volatile(
        "   wlstp.8     lr, %[n], 2f          \n"
        "1:                                   \n"
        "   vldrb.8     q0, [%[src]], #16     \n"
        "   vstrb.8     q0, [%[dst]], #16     \n"
        "   letp        lr, 1b                \n"
        "2:                                   \n"
        : [src] "+r"(src), [dst] "+r"(dst)
        : [n] "r"(n)
        : "q0", "lr", "memory");
#else
    for (; n > 0; n -= 16, src += 16, dst += 16) {
        const mve_pred16_t p = vctp8q((uint32_t)n);
        vstrbq_p_s8(dst, vldrbq_z_s8(src, p), p);
    }
#endif
}

/* n bytes of `value` at dst, 16 a beat. */
static inline void mf_mve_fill_bytes(int8_t *dst, int8_t value, int32_t n)
{
#if MF_MVE_ASM
    const int8x16_t v = vdupq_n_s8(value);
    __asm__ volatile(
        "   wlstp.8     lr, %[n], 2f          \n"
        "1:                                   \n"
        "   vstrb.8     %q[v], [%[dst]], #16  \n"
        "   letp        lr, 1b                \n"
        "2:                                   \n"
        : [dst] "+r"(dst)
        : [n] "r"(n), [v] "w"(v)
        : "lr", "memory");
#else
    for (; n > 0; n -= 16, dst += 16) {
        vstrbq_p_s8(dst, vdupq_n_s8(value), vctp8q((uint32_t)n));
    }
#endif
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


/* ---- four pixels against rows of filters ---------------------------------------------------------
 *
 * A convolution as a matrix product: the fields of four output pixels are staged, interleaved 16
 * bytes at a time (pixel 0 bytes 0-15, pixel 1 bytes 0-15, ..., pixel 3 bytes 0-15, pixel 0 bytes
 * 16-31, ...), so that one pointer walks all four and each weight vector is loaded once for them
 * (mf_mve_dot_s8_4rows). The input offset is in an effective bias, bias + input_offset * sum w,
 * prepared by the caller: padding in a field must then hold the input zero point, whose product
 * with the offset added is zero. The four sums of a filter share its multiplier and shift: they
 * are requantized as one vector and scattered to their pixels. */

typedef struct {
    const int8_t *filter;       /* `count` rows of `field` values */
    const int32_t *bias;        /* effective bias of each row */
    const int32_t *multiplier, *shift;
    int32_t field, count;
    int32_t out_stride;         /* from one pixel's outputs to the next pixel's */
    int32_t output_offset, act_min, act_max;
    int right_only;             /* every shift is negative: no left shift, and no test */
} mf_mve_rows;

/* Staged row r (0 to 3) from n contiguous values at src. */
static inline void mf_mve_stage_row(int8_t *stage, int32_t r, const int8_t *src, int32_t n)
{
    int8_t *dst = stage + 16 * r;
    for (; n >= 16; n -= 16, src += 16, dst += 64) {
        vstrbq_s8(dst, vldrbq_s8(src));
    }
    if (n > 0) {
        vstrbq_s8(dst, vldrbq_z_s8(src, vctp8q((uint32_t)n)));
    }
}

/* `right_only` and `full` (four pixels) are constants where this is inlined: each case its own loop. */
static inline __attribute__((always_inline)) void mf_mve_rows_body(const mf_mve_rows *g, const int8_t *stage,
                                                                    int32_t pixels, int8_t *out, const int right_only,
                                                                    const int full)
{
    const int32_t field = g->field;
    const uint32x4_t scatter = vmulq_n_u32(vidupq_n_u32(0u, 1), (uint32_t)g->out_stride);
    const mve_pred16_t lanes = vctp32q((uint32_t)pixels);
    const int32x4_t act_min = vdupq_n_s32(g->act_min), act_max = vdupq_n_s32(g->act_max);
    const int32x4_t out_off = vdupq_n_s32(g->output_offset);
    const int32_t *bias = g->bias, *mult = g->multiplier, *shift = g->shift;
    const int8_t *w = g->filter;
    int8_t *const out_end = out + g->count;
    /* Pointers walked rather than indexed: fewer registers live across the dot product. */
    for (; out != out_end; ++out, w += field) {
        int32x4_t acc = mf_mve_dot_s8_4rows(stage, w, field, *bias++);
        if (right_only) {
            /* mf_mve_requantize_n() with a right shift known to be there. */
            acc = vqrdmulhq_n_s32(acc, *mult++);
            acc = vrshlq_n_s32(vqaddq_s32(acc, vshrq_n_s32(acc, 31)), *shift++);
        } else {
            acc = mf_mve_requantize_n(acc, *mult++, *shift++);
        }
        acc = vminq_s32(vmaxq_s32(vaddq_s32(acc, out_off), act_min), act_max);
        if (full) {
            vstrbq_scatter_offset_s32(out, scatter, acc);
        } else {
            vstrbq_scatter_offset_p_s32(out, scatter, acc, lanes);
        }
    }
}

/* Every row against the `pixels` (1 to 4) staged fields: output k of pixel r at out + r * out_stride + k. */
static __attribute__((noinline, unused)) void mf_mve_rows_4px(const mf_mve_rows *g, const int8_t *stage,
                                                             int32_t pixels, int8_t *out)
{
    if (pixels == 4 && g->right_only) {
        mf_mve_rows_body(g, stage, 4, out, 1, 1);
    } else if (pixels == 4) {
        mf_mve_rows_body(g, stage, 4, out, 0, 1);
    } else {
        mf_mve_rows_body(g, stage, pixels, out, 0, 0);
    }
}

#endif /* MF_HAVE_MVE */

#endif /* MF_MVE_H */
