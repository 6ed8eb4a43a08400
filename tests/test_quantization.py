import math

import numpy as np
import pytest

from mcuforge.codegen.quantization import activation_range, conv_multipliers, quantize_multiplier, tflite_round


@pytest.mark.parametrize("value", [1e-9, 3.7e-5, 0.0012345, 0.25, 0.5, 0.9999999, 1.0, 3.14159, 1234.5])
def test_multiplier_reconstructs_the_real_value(value):
    significand, shift = quantize_multiplier(value)
    assert (1 << 30) <= significand < (1 << 31)
    assert math.isclose(significand * 2.0 ** (shift - 31), value, rel_tol=2 ** -30)


def test_significand_rounding_up_to_two_pow_31_renormalises():
    # frexp gives 0.99999999999 -> rounds to 2^31, which must become 2^30 with shift + 1
    significand, shift = quantize_multiplier(1.0 - 1e-12)
    assert (significand, shift) == (1 << 30, 1)


def test_zero_and_tiny_multipliers_give_zero():
    assert quantize_multiplier(0.0) == (0, 0)
    assert quantize_multiplier(2.0 ** -40) == (0, 0)


def test_round_half_away_from_zero():
    assert [tflite_round(v) for v in (0.5, 1.5, 2.5, -0.5, -2.5, 2.4999)] == [1, 2, 3, -1, -3, 2]


def test_activation_ranges():
    assert activation_range("NONE", 0.1, 3) == (-128, 127)
    assert activation_range("RELU", 0.1, -20) == (-20, 127)
    assert activation_range("RELU6", 0.05, -128) == (-128, -8)   # 6 / 0.05 = 120 steps above zero point
    assert activation_range("RELU_N1_TO_1", 0.01, 0) == (-100, 100)
    with pytest.raises(ValueError):
        activation_range("TANH", 0.1, 0)


def test_per_channel_multipliers_use_each_filter_scale():
    mults, shifts = conv_multipliers(0.5, np.array([0.01, 0.02], dtype=np.float32), 0.25)
    real = mults * 2.0 ** (shifts.astype(float) - 31)
    assert np.allclose(real, [0.02, 0.04], rtol=1e-6)
