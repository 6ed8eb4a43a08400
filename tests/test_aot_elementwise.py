"""Tier 2: ADD, MUL (same shape and broadcast), QUANTIZE and DEQUANTIZE in Keras-built models,
compiled by the AOT engine and compared bit for bit with TFLM's reference interpreter."""
import numpy as np
import pytest

from mcuforge.codegen.tflite_model import load_tflite
from mcuforge.host_tools.verify import verify_model

from conftest import load_architectures, quantize_builders

pytestmark = pytest.mark.slow


def _broadcast(keras):
    x = inputs = keras.Input((6, 6, 4))
    pooled = keras.layers.MaxPooling2D(6)(x)                       # (1, 1, 4): broadcast over rows and columns
    gate = keras.layers.Conv2D(4, 1, activation="relu")(pooled)
    x = keras.layers.Multiply()([x, gate])
    x = keras.layers.Add()([x, pooled])                            # broadcast ADD
    x = keras.layers.Flatten()(x)
    return inputs, keras.layers.Dense(2)(x)


BUILDERS = {"resnet_block": load_architectures().residual_block, "broadcast": _broadcast}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    import tensorflow as tf

    keras = tf.keras
    root = tmp_path_factory.mktemp("elementwise")
    paths = quantize_builders(BUILDERS, root, seed=5, calib_seed=1)

    # A model that keeps float input and output: QUANTIZE in front, DEQUANTIZE behind.
    inputs, outputs = load_architectures().residual_block(keras)
    model = keras.Model(inputs, outputs)
    calib = np.random.default_rng(2).normal(size=(64, 8, 8, 4)).astype(np.float32)
    # A fixed batch of 1 keeps Flatten a plain RESHAPE.
    fixed_input = keras.Input(batch_shape=(1, 8, 8, 4))
    converter = tf.lite.TFLiteConverter.from_keras_model(keras.Model(fixed_input, model(fixed_input)))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([c[None]] for c in calib)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    (root / "float_io.tflite").write_bytes(converter.convert())
    paths["float_io"] = root / "float_io.tflite"
    return paths


def test_residual_add_is_bit_exact(models):
    assert "ADD" in load_tflite(models["resnet_block"]).op_counts()
    result = verify_model(models["resnet_block"], "host", samples=30, seed=3)
    assert result.matches == result.total == 30, result.details()


def test_broadcast_mul_and_add_are_bit_exact(models):
    counts = load_tflite(models["broadcast"]).op_counts()
    assert counts.get("MUL") and counts.get("ADD")
    result = verify_model(models["broadcast"], "host", samples=30, seed=4)
    assert result.matches == result.total == 30, result.details()


def test_float_input_and_output_are_bit_exact(models):
    graph = load_tflite(models["float_io"])
    assert {"QUANTIZE", "DEQUANTIZE"} <= set(graph.op_counts())
    assert graph.tensors[graph.inputs[0]].dtype == "FLOAT32" and graph.tensors[graph.outputs[0]].dtype == "FLOAT32"
    result = verify_model(models["float_io"], "host", samples=30, seed=5)
    assert result.matches == result.total == 30, result.details()
