/* Fixed-point math on raw int32 values, with the arithmetic of gemmlowp's fixedpoint library as
 * TFLM's reference kernels use it, so that results are bit-exact with TFLM.
 *
 * A value is a raw int32 with m integer bits (format Qm.(31-m), real = raw / 2^(31-m)). The
 * number of integer bits is passed as an argument where a function accepts several formats.
 * Plain additions wrap around (through uint32_t, so that C gives them defined behaviour);
 * multiplications are the saturating rounding doubling high multiply of mf_quant.h. */
#ifndef MF_FIXEDPOINT_H
#define MF_FIXEDPOINT_H

#include <stdint.h>

#include "mf_quant.h"

static inline int32_t mf_fx_add(int32_t a, int32_t b)
{
    return (int32_t)((uint32_t)a + (uint32_t)b);
}

static inline int32_t mf_fx_sub(int32_t a, int32_t b)
{
    return (int32_t)((uint32_t)a - (uint32_t)b);
}

/* Product of two fixed-point values: the integer bits of the operands add up. */
static inline int32_t mf_fx_mul(int32_t a, int32_t b)
{
    return mf_saturating_rounding_doubling_high_mul(a, b);
}

/* x * 2^exponent: a saturating left shift for exponent > 0, a rounding right shift for exponent < 0. */
static inline int32_t mf_saturating_rounding_multiply_by_pot(int32_t x, int exponent)
{
    if (exponent > 0) {
        const int32_t threshold = (int32_t)((1u << (31 - exponent)) - 1u);
        if (x > threshold) {
            return INT32_MAX;
        }
        if (x < -threshold) {
            return INT32_MIN;
        }
        return (int32_t)((uint32_t)x << exponent);
    }
    if (exponent < 0) {
        return mf_rounding_divide_by_pot(x, -exponent);
    }
    return x;
}

/* The same real value in a format with dst_integer_bits instead of src_integer_bits. */
static inline int32_t mf_fx_rescale(int32_t x, int src_integer_bits, int dst_integer_bits)
{
    return mf_saturating_rounding_multiply_by_pot(x, src_integer_bits - dst_integer_bits);
}

/* (a + b) / 2, rounded half away from zero. */
static inline int32_t mf_rounding_half_sum(int32_t a, int32_t b)
{
    int64_t sum = (int64_t)a + (int64_t)b;
    sum += sum >= 0 ? 1 : -1;
    return (int32_t)(sum / 2);
}

static inline int mf_count_leading_zeros(uint32_t x)
{
    if (x == 0u) {
        return 32;
    }
#if defined(__GNUC__)
    return __builtin_clz(x);
#else
    int n = 0;
    while ((x & 0x80000000u) == 0u) {
        x <<= 1;
        ++n;
    }
    return n;
#endif
}

/* exp(a) for a Q0.31 value a in [-1/4, 0), as Q0.31: a Taylor polynomial around -1/8. */
static inline int32_t mf_exp_on_interval_between_negative_one_quarter_and_0_excl(int32_t a)
{
    const int32_t exp_minus_one_eighth = 1895147668;  /* exp(-1/8) in Q0.31 */
    const int32_t one_third = 715827883;               /* 1/3 in Q0.31 */
    const int32_t x = mf_fx_add(a, 1 << 28);           /* a + 1/8 */
    const int32_t x2 = mf_fx_mul(x, x);
    const int32_t x3 = mf_fx_mul(x2, x);
    const int32_t x4 = mf_fx_mul(x2, x2);
    const int32_t x4_over_4 = mf_rounding_divide_by_pot(x4, 2);
    /* x^4/24 + x^3/6 + x^2/2 */
    const int32_t poly = mf_rounding_divide_by_pot(
        mf_fx_add(mf_fx_mul(mf_fx_add(x4_over_4, x3), one_third), x2), 1);
    return mf_fx_add(exp_minus_one_eighth, mf_fx_mul(exp_minus_one_eighth, mf_fx_add(x, poly)));
}

/* exp(a) for a value a <= 0 with `integer_bits` integer bits, as Q0.31.
 * a = -(k/4) - r with r in (0, 1/4]: exp(-r) from the polynomial, then one multiplication by
 * exp(-2^e) for each bit e set in k/4. */
static inline int32_t mf_exp_on_negative_values(int32_t a, int integer_bits)
{
    /* exp(-2^e) in Q0.31 for e = -2 .. 4 */
    static const int32_t barrel[7] = { 1672461947, 1302514674, 790015084, 290630308, 39332535, 720401, 242 };
    const int fractional_bits = 31 - integer_bits;
    const int32_t one_quarter = (int32_t)1 << (fractional_bits - 2);
    const int32_t a_mod_quarter_minus_one_quarter = mf_fx_sub(a & (one_quarter - 1), one_quarter);
    int32_t result = mf_exp_on_interval_between_negative_one_quarter_and_0_excl(
        mf_fx_rescale(a_mod_quarter_minus_one_quarter, integer_bits, 0));
    const int32_t remainder = mf_fx_sub(a_mod_quarter_minus_one_quarter, a);
    for (int e = -2; e <= 4; ++e) {
        if (integer_bits > e && (remainder & (int32_t)(1u << (fractional_bits + e))) != 0) {
            result = mf_fx_mul(result, barrel[e + 2]);
        }
    }
    if (integer_bits > 5 && a < -(int32_t)(1u << (36 - integer_bits))) {
        result = 0;  /* below -32, exp() underflows */
    }
    return a == 0 ? INT32_MAX : result;
}

/* 1 / d for half_denominator d in [1/2, 1) (Q0.31), as Q2.29: three Newton-Raphson steps. */
static inline int32_t mf_newton_raphson_reciprocal_q2(int32_t half_denominator)
{
    const int32_t c_48_over_17 = 1515870810;          /* Q2.29 */
    const int32_t c_minus_32_over_17 = -1010580540;   /* Q2.29 */
    int32_t x = mf_fx_add(c_48_over_17, mf_fx_mul(half_denominator, c_minus_32_over_17));
    for (int i = 0; i < 3; ++i) {
        const int32_t one_minus_dx = mf_fx_sub((int32_t)1 << 29, mf_fx_mul(half_denominator, x));
        x = mf_fx_add(x, mf_fx_rescale(mf_fx_mul(x, one_minus_dx), 4, 2));
    }
    return x;
}

/* 1 / (1 + a) for a Q0.31 value a in [0, 1), as Q0.31. */
static inline int32_t mf_one_over_one_plus_x_for_x_in_0_1(int32_t a)
{
    const int32_t x = mf_newton_raphson_reciprocal_q2(mf_rounding_half_sum(a, INT32_MAX));
    return mf_fx_rescale(x, 1, 0);  /* halve by reading Q2.29 as Q1.30 */
}

/* (1 - a) / (1 + a) for a Q0.31 value a in [0, 1), as Q0.31. */
static inline int32_t mf_one_minus_x_over_one_plus_x_for_x_in_0_1(int32_t a)
{
    const int32_t x = mf_newton_raphson_reciprocal_q2(mf_rounding_half_sum(a, INT32_MAX));
    return mf_fx_rescale(mf_fx_sub(x, (int32_t)1 << 29), 2, 0);
}

/* 1 / x for a positive x with `integer_bits` integer bits. Returns s in Q0.31 such that
 * 1/x = s * 2^-num_bits_over_unit. */
static inline int32_t mf_fx_reciprocal(int32_t x, int integer_bits, int *num_bits_over_unit)
{
    const int headroom_plus_one = mf_count_leading_zeros((uint32_t)x);
    *num_bits_over_unit = integer_bits - headroom_plus_one;
    const int32_t shifted_minus_one = (int32_t)(((uint32_t)x << headroom_plus_one) - 0x80000000u);
    return mf_one_over_one_plus_x_for_x_in_0_1(shifted_minus_one);
}

/* logistic(a) = 1 / (1 + exp(-a)) for any a with `integer_bits` integer bits, as Q0.31. */
static inline int32_t mf_fx_logistic(int32_t a, int integer_bits)
{
    if (a == 0) {
        return (int32_t)1 << 30;
    }
    const int32_t abs_a = a > 0 ? a : mf_fx_sub(0, a);
    const int32_t positive = mf_one_over_one_plus_x_for_x_in_0_1(mf_exp_on_negative_values(mf_fx_sub(0, abs_a), integer_bits));
    return a > 0 ? positive : mf_fx_sub(INT32_MAX, positive);
}

/* tanh(a) for any a with `integer_bits` integer bits, as Q0.31. */
static inline int32_t mf_fx_tanh(int32_t a, int integer_bits)
{
    if (a == 0) {
        return 0;
    }
    const int32_t non_positive = a < 0 ? a : mf_fx_sub(0, a);
    /* exp(2n): the same raw value read with one more integer bit */
    const int32_t t = mf_one_minus_x_over_one_plus_x_for_x_in_0_1(mf_exp_on_negative_values(non_positive, integer_bits + 1));
    return a < 0 ? mf_fx_sub(0, t) : t;
}

#endif /* MF_FIXEDPOINT_H */
