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
