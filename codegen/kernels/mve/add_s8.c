/* ADD, int8: Helium (MVE) version for Cortex-M55, bit-exact with portable/.
 *
 * Same-shape inputs (residual connections) go four elements a beat: both inputs shifted left and
 * rescaled to the common scale, summed, and rescaled to the output, each rescaling being TFLM's
 * MultiplyByQuantizedMultiplier on vector lanes (VQRDMULH, then VRSHL after a fix-up that turns
 * its rounding half up into the reference's half away from zero; see mf_mve.h, which this file
 * does not include because ADD does not ship it). Broadcasting inputs take the portable loop.
 * Safe to run in place: each vector is read before its own elements are written. */
#include "add_s8.h"
#include "mf_quant.h"

#if defined(__ARM_FEATURE_MVE) && (__ARM_FEATURE_MVE & 1)
#include <arm_mve.h>

/* A shift of MultiplyByQuantizedMultiplier, split once per call into its left and (minus) right part. */
typedef struct {
    int32x4_t multiplier, left, right;
} rescale;

static inline rescale rescale_of(int32_t multiplier, int32_t shift)
{
    rescale r;
    r.multiplier = vdupq_n_s32(multiplier);
    r.left = vdupq_n_s32(shift > 0 ? shift : 0);
    r.right = vdupq_n_s32(shift > 0 ? 0 : shift);
    return r;
}

static inline int32x4_t apply(int32x4_t x, const rescale *r)
{
    x = vqrdmulhq_s32(vshlq_s32(x, r->left), r->multiplier);
    x = vqaddq_s32(x, vshrq_n_s32(vandq_s32(x, r->right), 31));
    return vrshlq_s32(x, r->right);
}

#endif

static inline int8_t add_one(const mf_add_params *p, int32_t a, int32_t b)
{
    const int32_t x1 = (int32_t)((uint32_t)(a + p->input1_offset) << p->left_shift);
    const int32_t x2 = (int32_t)((uint32_t)(b + p->input2_offset) << p->left_shift);
    const int32_t s1 = mf_multiply_by_quantized_multiplier(x1, p->input1_multiplier, p->input1_shift);
    const int32_t s2 = mf_multiply_by_quantized_multiplier(x2, p->input2_multiplier, p->input2_shift);
    const int32_t out = mf_multiply_by_quantized_multiplier(s1 + s2, p->output_multiplier, p->output_shift) + p->output_offset;
    return (int8_t)mf_clamp(out, p->act_min, p->act_max);
}

void mf_add_s8(const mf_add_params *p, const int8_t *input1, const int8_t *input2, int8_t *output)
{
    if (!p->bc.broadcast) {
#if defined(__ARM_FEATURE_MVE) && (__ARM_FEATURE_MVE & 1)
        const rescale r1 = rescale_of(p->input1_multiplier, p->input1_shift);
        const rescale r2 = rescale_of(p->input2_multiplier, p->input2_shift);
        const rescale ro = rescale_of(p->output_multiplier, p->output_shift);
        const int32x4_t left = vdupq_n_s32(p->left_shift);
        const int32x4_t act_min = vdupq_n_s32(p->act_min), act_max = vdupq_n_s32(p->act_max);
        for (int32_t n = p->bc.count; n > 0; n -= 4, input1 += 4, input2 += 4, output += 4) {
            const mve_pred16_t lanes = vctp32q((uint32_t)n);
            /* The left shift wraps as the reference's unsigned shift does. */
            const int32x4_t x1 = vshlq_s32(vaddq_n_s32(vldrbq_z_s32(input1, lanes), p->input1_offset), left);
            const int32x4_t x2 = vshlq_s32(vaddq_n_s32(vldrbq_z_s32(input2, lanes), p->input2_offset), left);
            int32x4_t y = vaddq_n_s32(apply(vaddq_s32(apply(x1, &r1), apply(x2, &r2)), &ro), p->output_offset);
            y = vminq_s32(vmaxq_s32(y, act_min), act_max);
            vstrbq_p_s32(output, y, lanes);
        }
        return;
#else
        for (int32_t i = 0; i < p->bc.count; ++i) {
            output[i] = add_one(p, input1[i], input2[i]);
        }
        return;
#endif
    }
    int32_t counter[MF_MAX_DIMS] = {0};
    int32_t i1 = 0, i2 = 0;
    for (int32_t i = 0; i < p->bc.count; ++i) {
        output[i] = add_one(p, input1[i1], input2[i2]);
        mf_broadcast_next(&p->bc, counter, &i1, &i2);
    }
}
