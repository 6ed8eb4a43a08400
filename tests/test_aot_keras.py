"""Tier 2: Keras models built and quantized here, compiled by the AOT engine with the host gcc,
and compared bit for bit with TFLM's reference interpreter."""
import pytest

from mcuforge.codegen.tflite_model import load_tflite
from mcuforge.host_tools.verify import verify_model

from conftest import load_architectures, quantize_builders

pytestmark = pytest.mark.slow


def _dilated(keras):
    x = inputs = keras.Input((20, 20, 2))
    x = keras.layers.Conv2D(4, 3, dilation_rate=2, padding="same", activation="relu")(x)
    x = keras.layers.DepthwiseConv2D(3, dilation_rate=2, padding="same")(x)
    x = keras.layers.AveragePooling2D(3, strides=2, padding="same")(x)
    x = keras.layers.Flatten()(x)
    return inputs, keras.layers.Dense(3, activation="relu")(x)


architectures = load_architectures()
BUILDERS = {"conv_block": architectures.conv_block, "dilated": _dilated,
            "sensor_1d": architectures.sensor_1d, "mlp": architectures.mlp}


@pytest.fixture(scope="module")
def int8_models(tmp_path_factory):
    return quantize_builders(BUILDERS, tmp_path_factory.mktemp("keras"), seed=3)


@pytest.mark.parametrize("name", list(BUILDERS))
def test_keras_model_is_bit_exact_on_host(int8_models, name):
    result = verify_model(int8_models[name], "host", samples=25, seed=11)
    assert result.total == 25
    assert result.matches == 25, result.details()


def test_expected_operators_were_exercised(int8_models):
    seen = set()
    for path in int8_models.values():
        seen |= set(load_tflite(path).op_counts())
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "AVERAGE_POOL_2D", "MAX_POOL_2D", "FULLY_CONNECTED", "RESHAPE"} <= seen
