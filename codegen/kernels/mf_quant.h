/* Fixed-point helpers shared by every mcuforge kernel.
 *
 * They reproduce TFLM's reference arithmetic (gemmlowp's SaturatingRoundingDoublingHighMul and
 * RoundingDivideByPOT, and the double-rounding MultiplyByQuantizedMultiplier), so that kernels
 * built on them are bit-exact with TFLM. */
#ifndef MF_QUANT_H
#define MF_QUANT_H

#include <stdint.h>

static inline int32_t mf_saturating_rounding_doubling_high_mul(int32_t a, int32_t b)
{
    if (a == INT32_MIN && b == INT32_MIN) {
        return INT32_MAX;
    }
    int64_t ab = (int64_t)a * (int64_t)b;
    int64_t nudge = ab >= 0 ? (1LL << 30) : (1 - (1LL << 30));
    /* C division truncates toward zero, as the reference does; a shift would floor. */
    return (int32_t)((ab + nudge) / (1LL << 31));
}

static inline int32_t mf_rounding_divide_by_pot(int32_t x, int exponent)
{
    int32_t mask = (int32_t)((1LL << exponent) - 1);
    int32_t remainder = x & mask;
    int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

static inline int32_t mf_multiply_by_quantized_multiplier(int32_t x, int32_t multiplier, int32_t shift)
{
    int left_shift = shift > 0 ? shift : 0;
    int right_shift = shift > 0 ? 0 : -shift;
    /* The reference multiplies in int32 and relies on wrap-around; do it on unsigned to keep it defined. */
    int32_t shifted = (int32_t)((uint32_t)x << left_shift);
    return mf_rounding_divide_by_pot(mf_saturating_rounding_doubling_high_mul(shifted, multiplier), right_shift);
}

static inline int32_t mf_clamp(int32_t x, int32_t lo, int32_t hi)
{
    return x < lo ? lo : (x > hi ? hi : x);
}

#endif /* MF_QUANT_H */
