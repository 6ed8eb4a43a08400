"""Quantization arithmetic computed on the host, exactly as TFLM computes it at Prepare time.

The AOT engine precomputes these constants so that the device does no float work. Each
function mirrors the reference semantics (tensorflow/lite/kernels/internal/quantization_util
and kernel_util) so that outputs stay bit-exact.
"""
from __future__ import annotations

import math

import numpy as np

INT8_MIN, INT8_MAX = -128, 127


def tflite_round(value: float) -> int:
    """std::round: halves go away from zero (Python's round() goes to even)."""
    return int(math.floor(abs(value) + 0.5)) * (1 if value >= 0 else -1)


def quantize_multiplier(real_multiplier: float) -> tuple[int, int]:
    """A positive real multiplier as a Q0.31 significand and a power-of-two exponent."""
    if real_multiplier == 0.0:
        return 0, 0
    significand, shift = math.frexp(real_multiplier)
    q_fixed = tflite_round(significand * (1 << 31))
    if q_fixed == (1 << 31):
        q_fixed //= 2
        shift += 1
    if shift < -31:  # every bit would be shifted out
        return 0, 0
    return int(q_fixed), int(shift)


def conv_multipliers(input_scale: float, filter_scales: np.ndarray, output_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (or single) multipliers and shifts for FULLY_CONNECTED / CONV-like ops.

    TFLM forms the effective scale in double from the float32 scales.
    """
    multipliers, shifts = [], []
    for filter_scale in np.asarray(filter_scales, dtype=np.float32):
        effective = float(np.float32(input_scale)) * float(filter_scale) / float(np.float32(output_scale))
        m, s = quantize_multiplier(effective)
        multipliers.append(m)
        shifts.append(s)
    return np.array(multipliers, dtype=np.int32), np.array(shifts, dtype=np.int32)


def _quantize_float(value: float, scale: float, zero_point: int) -> int:
    # TFLM divides in float32 before rounding.
    return int(zero_point) + tflite_round(float(np.float32(value) / np.float32(scale)))


def activation_range(activation: str, scale: float, zero_point: int,
                     qmin: int = INT8_MIN, qmax: int = INT8_MAX) -> tuple[int, int]:
    """CalculateActivationRangeQuantized: the clamp bounds of a fused activation."""
    if activation == "NONE":
        return qmin, qmax
    if activation == "RELU":
        return max(qmin, _quantize_float(0.0, scale, zero_point)), qmax
    if activation == "RELU6":
        return (max(qmin, _quantize_float(0.0, scale, zero_point)),
                min(qmax, _quantize_float(6.0, scale, zero_point)))
    if activation == "RELU_N1_TO_1":
        return (max(qmin, _quantize_float(-1.0, scale, zero_point)),
                min(qmax, _quantize_float(1.0, scale, zero_point)))
    raise ValueError(f"unsupported fused activation {activation}")


# ---------------------------------------------------------------------------------------------
# SOFTMAX, LOGISTIC and TANH: the Prepare-time parameters of TFLM's int8 kernels, and an exact
# integer emulation of the gemmlowp-style fixed-point functions those kernels evaluate.
#
# A fixed-point value is a raw int32 with a number of integer bits m (format Qm.(31-m)). The
# emulation works on Python ints and reproduces int32 behaviour: truncating division in the
# doubling high multiply, arithmetic right shifts, saturation where the reference saturates.

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1

# Integer bits of the fixed-point formats the int8 kernels use.
SOFTMAX_SCALED_DIFF_INTEGER_BITS = 5      # exp() argument of SOFTMAX: Q5.26
SOFTMAX_ACCUMULATION_INTEGER_BITS = 12    # sum of exponentials: Q12.19
ACTIVATION_INPUT_INTEGER_BITS = 4         # argument of LOGISTIC and TANH: Q4.27


def _wrap32(x: int) -> int:
    """Two's-complement int32 wrap-around (plain int32 + and - in the reference)."""
    return ((x + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def saturating_rounding_doubling_high_mul(a: int, b: int) -> int:
    """(a * b) / 2^31 rounded to nearest (ties away from zero), saturating (-1) * (-1)."""
    if a == INT32_MIN and b == INT32_MIN:
        return INT32_MAX
    ab = a * b
    nudged = ab + ((1 << 30) if ab >= 0 else 1 - (1 << 30))
    # C integer division truncates toward zero.
    return nudged // (1 << 31) if nudged >= 0 else -((-nudged) // (1 << 31))


def rounding_divide_by_pot(x: int, exponent: int) -> int:
    """x / 2^exponent rounded to nearest, ties away from zero (gemmlowp's rounding right shift)."""
    mask = (1 << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> exponent) + (1 if remainder > threshold else 0)


def saturating_rounding_multiply_by_pot(x: int, exponent: int) -> int:
    """x * 2^exponent: a saturating left shift for exponent > 0, a rounding right shift for < 0."""
    if exponent == 0:
        return x
    if exponent < 0:
        return rounding_divide_by_pot(x, -exponent)
    threshold = (1 << (31 - exponent)) - 1
    if x > threshold:
        return INT32_MAX
    if x < -threshold:
        return INT32_MIN
    return x << exponent


def fixed_rescale(x: int, src_integer_bits: int, dst_integer_bits: int) -> int:
    """gemmlowp Rescale: the same real value in a format with another number of integer bits."""
    return saturating_rounding_multiply_by_pot(x, src_integer_bits - dst_integer_bits)


def multiply_by_quantized_multiplier(x: int, multiplier: int, shift: int) -> int:
    """TFLM's double-rounding MultiplyByQuantizedMultiplier on an int32 value."""
    left_shift = shift if shift > 0 else 0
    right_shift = 0 if shift > 0 else -shift
    shifted = _wrap32(x * (1 << left_shift))
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(shifted, multiplier), right_shift)


def multiply_by_quantized_multiplier_greater_than_one(x: int, multiplier: int, left_shift: int) -> int:
    """TFLM's double-rounding MultiplyByQuantizedMultiplierGreaterThanOne."""
    return saturating_rounding_doubling_high_mul(_wrap32(x * (1 << left_shift)), multiplier)


# Raw Q0.31 constants of the fixed-point exp (exp(-1/8), 1/3, and exp(-2^k) for k = -2..4).
_EXP_MINUS_ONE_EIGHTH = 1895147668
_ONE_THIRD = 715827883
_EXP_BARREL = ((-2, 1672461947), (-1, 1302514674), (0, 790015084), (1, 290630308),
               (2, 39332535), (3, 720401), (4, 242))
# Raw Q2.29 constants of the Newton-Raphson division: 48/17 and -32/17.
_NR_48_OVER_17 = 1515870810
_NR_MINUS_32_OVER_17 = -1010580540


def _fx_mul(a: int, b: int) -> int:
    return saturating_rounding_doubling_high_mul(a, b)


def exp_on_interval_between_negative_one_quarter_and_0_excl(a: int) -> int:
    """exp(a) for a Q0.31 value a in [-1/4, 0), as Q0.31: a 4th-order Taylor series around -1/8."""
    x = _wrap32(a + (1 << 28))               # a + 1/8
    x2 = _fx_mul(x, x)
    x3 = _fx_mul(x2, x)
    x4 = _fx_mul(x2, x2)
    x4_over_4 = rounding_divide_by_pot(x4, 2)
    poly = rounding_divide_by_pot(_wrap32(_fx_mul(_wrap32(x4_over_4 + x3), _ONE_THIRD) + x2), 1)
    return _wrap32(_EXP_MINUS_ONE_EIGHTH + _fx_mul(_EXP_MINUS_ONE_EIGHTH, _wrap32(x + poly)))


def exp_on_negative_values(a: int, integer_bits: int) -> int:
    """exp(a) for a raw fixed-point a <= 0 with `integer_bits` integer bits, as Q0.31."""
    fractional_bits = 31 - integer_bits
    one_quarter = 1 << (fractional_bits - 2)
    mask = one_quarter - 1
    a_mod_quarter_minus_one_quarter = _wrap32((a & mask) - one_quarter)
    result = exp_on_interval_between_negative_one_quarter_and_0_excl(
        fixed_rescale(a_mod_quarter_minus_one_quarter, integer_bits, 0))
    remainder = _wrap32(a_mod_quarter_minus_one_quarter - a)
    for exponent, multiplier in _EXP_BARREL:
        if integer_bits > exponent and remainder & (1 << (fractional_bits + exponent)):
            result = _fx_mul(result, multiplier)
    if integer_bits > 5 and a < -(1 << (36 - integer_bits)):   # below -32: exp() is 0
        result = 0
    return INT32_MAX if a == 0 else result


def _newton_raphson_reciprocal_q2(half_denominator: int) -> int:
    """1 / half_denominator for half_denominator in [1/2, 1), as Q2.29."""
    x = _wrap32(_NR_48_OVER_17 + _fx_mul(half_denominator, _NR_MINUS_32_OVER_17))
    for _ in range(3):
        one_minus = _wrap32((1 << 29) - _fx_mul(half_denominator, x))
        x = _wrap32(x + fixed_rescale(_fx_mul(x, one_minus), 4, 2))
    return x


def _rounding_half_sum(a: int, b: int) -> int:
    total = a + b
    total += 1 if total >= 0 else -1
    return total // 2 if total >= 0 else -((-total) // 2)


def one_over_one_plus_x_for_x_in_0_1(a: int) -> int:
    """1 / (1 + a) for a Q0.31 value a in [0, 1), as Q0.31."""
    x = _newton_raphson_reciprocal_q2(_rounding_half_sum(a, INT32_MAX))
    return fixed_rescale(x, 1, 0)             # x / 2, read as Q1.30, then to Q0.31


def one_minus_x_over_one_plus_x_for_x_in_0_1(a: int) -> int:
    """(1 - a) / (1 + a) for a Q0.31 value a in [0, 1), as Q0.31."""
    x = _newton_raphson_reciprocal_q2(_rounding_half_sum(a, INT32_MAX))
    return fixed_rescale(_wrap32(x - (1 << 29)), 2, 0)


def fixed_logistic(a: int, integer_bits: int) -> int:
    """1 / (1 + exp(-a)) for a raw fixed-point a, as Q0.31 (gemmlowp's logistic)."""
    if a == 0:
        return 1 << 30
    abs_a = a if a > 0 else _wrap32(-a)
    positive = one_over_one_plus_x_for_x_in_0_1(exp_on_negative_values(_wrap32(-abs_a), integer_bits))
    return positive if a > 0 else _wrap32(INT32_MAX - positive)


def fixed_tanh(a: int, integer_bits: int) -> int:
    """tanh(a) for a raw fixed-point a, as Q0.31 (gemmlowp's tanh)."""
    if a == 0:
        return 0
    non_positive = a if a < 0 else _wrap32(-a)
    # exp(2 * n): the same raw value read with one more integer bit.
    t = one_minus_x_over_one_plus_x_for_x_in_0_1(exp_on_negative_values(non_positive, integer_bits + 1))
    return _wrap32(-t) if a < 0 else t


def frexp_multiplier(real_multiplier: float) -> tuple[int, int]:
    """The multiplier and shift of TFLM's LOGISTIC and TANH Prepare: std::frexp, then round(q * 2^31).

    Unlike quantize_multiplier() there is no renormalisation and no flush to zero."""
    significand, shift = math.frexp(real_multiplier)
    return int(tflite_round(significand * (1 << 31))), int(shift)


def calculate_input_radius(input_integer_bits: int, input_left_shift: int, total_signed_bits: int = 31) -> int:
    """CalculateInputRadius: the largest |input| whose rescaled value stays inside the fixed-point range."""
    max_input_rescaled = (1.0 * ((1 << input_integer_bits) - 1) * float(1 << (total_signed_bits - input_integer_bits))
                          / float(1 << input_left_shift))
    return int(math.floor(max_input_rescaled))


def preprocess_softmax_scaling(beta: float, input_scale: float,
                               input_integer_bits: int = SOFTMAX_SCALED_DIFF_INTEGER_BITS) -> tuple[int, int]:
    """PreprocessSoftmaxScaling (double-rounding build): multiplier and left shift taking an int8 input
    difference to a Q(input_integer_bits) exp() argument, beta included.

    Raises ValueError when the combined multiplier is not above one (TFLM aborts there)."""
    max_real_multiplier = float((1 << 31) - 1)
    real = min(float(np.float32(beta)) * float(np.float32(input_scale)) * float(1 << (31 - input_integer_bits)),
               max_real_multiplier)
    if not real > 1.0:
        raise ValueError(f"softmax input multiplier {real!r} is not greater than one")
    multiplier, shift = quantize_multiplier(real)
    if shift < 0:
        raise ValueError(f"softmax input shift {shift} is negative")
    return multiplier, shift


def softmax_int8_params(beta: float, input_scale: float) -> dict:
    """Prepare-time parameters of TFLM's int8 -> int8 SOFTMAX: input_multiplier, input_left_shift, diff_min."""
    multiplier, shift = preprocess_softmax_scaling(beta, input_scale)
    diff_min = -calculate_input_radius(SOFTMAX_SCALED_DIFF_INTEGER_BITS, shift)
    return {"input_multiplier": multiplier, "input_left_shift": shift, "diff_min": diff_min}


def _activation_table(function, input_scale: float, input_zero_point: int, output_fraction_bits: int,
                      output_zero_point: int) -> np.ndarray:
    """TFLM's int8 LOGISTIC/TANH evaluated for every int8 input: entry i is the output for input i - 128."""
    multiplier, shift = frexp_multiplier(float(np.float32(input_scale)) * float(1 << (31 - ACTIVATION_INPUT_INTEGER_BITS)))
    if shift < 0:
        raise ValueError(f"input scale {input_scale!r} is too small for the int8 kernel (shift {shift})")
    radius = calculate_input_radius(ACTIVATION_INPUT_INTEGER_BITS, shift, 31)
    table = np.empty(256, dtype=np.int8)
    for q in range(INT8_MIN, INT8_MAX + 1):
        x = q - int(input_zero_point)
        if x <= -radius:
            out = INT8_MIN
        elif x >= radius:
            out = INT8_MAX
        else:
            arg = multiply_by_quantized_multiplier(x, multiplier, shift)
            value = rounding_divide_by_pot(function(arg, ACTIVATION_INPUT_INTEGER_BITS), 31 - output_fraction_bits)
            out = min(max(value + output_zero_point, INT8_MIN), INT8_MAX)
        table[q - INT8_MIN] = out
    return table


def logistic_int8_table(input_scale: float, input_zero_point: int) -> np.ndarray:
    """TFLM's int8 LOGISTIC (output scale 1/256, zero point -128) as a 256-entry table indexed by input + 128."""
    return _activation_table(fixed_logistic, input_scale, input_zero_point, 8, -128)


def tanh_int8_table(input_scale: float, input_zero_point: int) -> np.ndarray:
    """TFLM's int8 TANH (output scale 1/128, zero point 0) as a 256-entry table indexed by input + 128."""
    return _activation_table(fixed_tanh, input_scale, input_zero_point, 7, 0)


# ---------------------------------------------------------------------------------------------
# MEAN: the requantization constants of TFLM's int8 reference QuantizedMeanOrSum.

def mean_multiplier(input_scale: float, output_scale: float, count: int) -> tuple[int, int]:
    """MEAN's requantization of a sum of `count` int8 values: multiplier and shift for
    input_scale / (output_scale * count), formed as TFLM's reference QuantizedMeanOrSum forms it.

    TFLM quantizes input_scale / output_scale (in double, from the float32 scales), then folds the
    division by `count` into that multiplier: it shifts the multiplier left by floor(log2(count))
    (at most 32, and no further than a final right shift of 31), divides it by `count` in 64-bit
    integers, truncating, and lowers the exponent by the same shift.
    """
    if count <= 0:
        raise ValueError("MEAN averages at least one element")
    multiplier, shift = quantize_multiplier(float(np.float32(input_scale)) / float(np.float32(output_scale)))
    fold = min(count.bit_length() - 1, 32, 31 + shift)
    return _wrap32((multiplier << fold) // count), shift - fold


def mean_zero_point_sum(input_zero_point: int, count: int) -> int:
    """input_zero_point * count as TFLM subtracts it from an int32 sum (wrapped to int32)."""
    return _wrap32(int(input_zero_point) * int(count))
