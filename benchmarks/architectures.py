"""Keras architectures for the benchmarks, built with random weights and quantized to int8.

Two are the public MLPerf Tiny reference networks, rebuilt layer for layer from the
mlcommons/tiny training code (benchmark/training/visual_wake_words and image_classification):

- **vww:** MobileNetV1 at width 0.25 (stem of 8 filters), 96x96x3 in, 2 classes: a 3x3/2
  convolution, 13 depthwise-separable blocks, 3x3 average pooling, a dense layer, softmax.
- **ic:** the ResNet-8 of the image-classification benchmark, 32x32x3 in, 10 classes: a 3x3
  convolution of 16 filters, three residual stages of 16, 32 and 64 filters (the last two
  strided, with 1x1/2 convolutions on the shortcut), 8x8 average pooling, a dense layer, softmax.

The others are the small architectures the AOT tests build (a convolution block, a DS-CNN that
runs in place, a residual block, a 1-D sensor network and an MLP), defined again here so that
the benchmarks import nothing from tests/.

Instruction counts and arena sizes depend on the layer stack, not on trained weight values, so
random weights (fixed seed) and random-normal calibration stand in for training.
`quantized(name, out_dir)` builds, calibrates, converts with mcuforge's `convert()` and caches
the .tflite in out_dir, next to a fingerprint that invalidates it when the builder changes.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

CALIBRATION_SAMPLES = 32


# ---- MLPerf Tiny ------------------------------------------------------------------------------

# (depthwise stride, pointwise filters) of MobileNetV1's 13 blocks at width 0.25.
_MOBILENET_V1_BLOCKS = [(1, 16), (2, 32), (1, 32), (2, 64), (1, 64), (2, 128),
                        (1, 128), (1, 128), (1, 128), (1, 128), (1, 128), (2, 256), (1, 256)]


def _conv_bn_relu(keras, x, filters, kernel_size, strides=1):
    x = keras.layers.Conv2D(filters, kernel_size, strides=strides, padding="same",
                            kernel_initializer="he_normal")(x)
    x = keras.layers.BatchNormalization()(x)
    return keras.layers.Activation("relu")(x)


def _depthwise_he_normal(keras):
    """He initialization for a depthwise kernel. Keras's "he_normal" counts every channel in the
    fan-in of a (3, 3, C, 1) kernel, though each output sees only 9 inputs; untrained, that
    shrinks the activations C-fold per block until they quantize to a single value."""
    return keras.initializers.TruncatedNormal(stddev=(2.0 / 9) ** 0.5 / 0.87962566)


def vww(keras):
    """MLPerf Tiny visual wake words: MobileNetV1 0.25, 96x96x3 -> 2."""
    x = inputs = keras.Input((96, 96, 3))
    x = _conv_bn_relu(keras, x, 8, 3, strides=2)
    for stride, filters in _MOBILENET_V1_BLOCKS:
        x = keras.layers.DepthwiseConv2D(3, strides=stride, padding="same",
                                         depthwise_initializer=_depthwise_he_normal(keras))(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.Activation("relu")(x)
        x = _conv_bn_relu(keras, x, filters, 1)
    x = keras.layers.AveragePooling2D(pool_size=tuple(x.shape[1:3]))(x)  # 3x3: the whole feature map
    x = keras.layers.Flatten()(x)
    return inputs, keras.layers.Dense(2, activation="softmax")(x)


def _residual_stage(keras, x, filters, strides):
    y = _conv_bn_relu(keras, x, filters, 3, strides=strides)
    y = keras.layers.Conv2D(filters, 3, padding="same", kernel_initializer="he_normal")(y)
    y = keras.layers.BatchNormalization()(y)
    if strides != 1:
        # The identity path changes shape with the stage: a strided 1x1 convolution matches it.
        x = keras.layers.Conv2D(filters, 1, strides=strides, padding="same", kernel_initializer="he_normal")(x)
    x = keras.layers.Add()([x, y])
    return keras.layers.Activation("relu")(x)


def ic(keras):
    """MLPerf Tiny image classification: ResNet-8 for CIFAR-10, 32x32x3 -> 10."""
    x = inputs = keras.Input((32, 32, 3))
    x = _conv_bn_relu(keras, x, 16, 3)
    x = _residual_stage(keras, x, 16, 1)
    x = _residual_stage(keras, x, 32, 2)
    x = _residual_stage(keras, x, 64, 2)
    x = keras.layers.AveragePooling2D(pool_size=int(min(x.shape[1:3])))(x)  # 8x8: the whole feature map
    x = keras.layers.Flatten()(x)
    return inputs, keras.layers.Dense(10, activation="softmax", kernel_initializer="he_normal")(x)


# ---- the small architectures of the AOT tests -------------------------------------------------

def conv_block(keras):
    """Strided convolution, depthwise with a multiplier, 1x1 convolution, both poolings, dense."""
    x = inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(x)
    x = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="valid", activation="relu6")(x)
    x = keras.layers.Conv2D(6, 1)(x)
    x = keras.layers.AveragePooling2D(2)(x)
    x = keras.layers.MaxPooling2D(2, padding="same")(x)
    x = keras.layers.Flatten()(x)
    return inputs, keras.layers.Dense(5)(x)


def ds_cnn(keras):
    """Depthwise-separable blocks of stride 1 (they run in place) after a strided stem."""
    x = inputs = keras.Input((20, 8, 1))
    x = keras.layers.Conv2D(12, (5, 3), strides=2, padding="same", activation="relu")(x)
    for _ in range(2):
        x = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu")(x)
        x = keras.layers.Conv2D(12, 1, activation="relu")(x)
    x = keras.layers.DepthwiseConv2D(3, padding="valid")(x)
    x = keras.layers.Conv2D(8, 1)(x)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu6")(x)
    x = keras.layers.Flatten()(x)
    return inputs, keras.layers.Dense(4)(x)


def residual_block(keras):
    """Two 3x3 convolutions and an identity shortcut joined by ADD."""
    x = inputs = keras.Input((8, 8, 4))
    y = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(x)
    y = keras.layers.Conv2D(4, 3, padding="same")(y)
    x = keras.layers.Add()([x, y])
    x = keras.layers.ReLU()(x)
    x = keras.layers.Flatten()(x)
    return inputs, keras.layers.Dense(3)(x)


def sensor_1d(keras):
    """1-D convolutions over a 3-axis sensor window (the converter makes them CONV_2D)."""
    x = inputs = keras.Input((64, 3))
    x = keras.layers.Conv1D(8, 5, strides=2, activation="relu")(x)
    x = keras.layers.MaxPooling1D(2)(x)
    x = keras.layers.Conv1D(8, 3, padding="same", activation="relu")(x)
    x = keras.layers.Flatten()(x)
    return inputs, keras.layers.Dense(4)(x)


def mlp(keras):
    """Dense layers around a reshape."""
    x = inputs = keras.Input((12,))
    x = keras.layers.Dense(16, activation="relu6")(x)
    x = keras.layers.Reshape((4, 4))(x)
    x = keras.layers.Flatten()(x)
    return inputs, keras.layers.Dense(6)(x)


# ---- registry and quantization ----------------------------------------------------------------

@dataclass(frozen=True)
class Architecture:
    name: str
    build: Callable            # build(keras) -> (inputs, outputs)
    seed: int
    description: str


ARCHITECTURES: dict[str, Architecture] = {a.name: a for a in [
    Architecture("vww", vww, 1, "MLPerf Tiny VWW: MobileNetV1 0.25, 96x96x3 -> 2"),
    Architecture("ic", ic, 2, "MLPerf Tiny IC: ResNet-8, 32x32x3 -> 10"),
    Architecture("conv_block", conv_block, 3, "conv / depthwise / pooling / dense block, 16x16x3 -> 5"),
    Architecture("ds_cnn", ds_cnn, 9, "small DS-CNN that runs in place, 20x8x1 -> 4"),
    Architecture("residual_block", residual_block, 5, "residual block with ADD, 8x8x4 -> 3"),
    Architecture("sensor_1d", sensor_1d, 3, "1-D sensor CNN, 64x3 -> 4"),
    Architecture("mlp", mlp, 3, "MLP with a reshape, 12 -> 6"),
]}

MLPERF_TINY = ("vww", "ic")


def _architecture(name: str) -> Architecture:
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise KeyError(f"unknown architecture {name!r}; known: {', '.join(ARCHITECTURES)}") from None


def build_model(name: str, keras=None):
    """The float Keras model of an architecture, with its seeded random weights."""
    if keras is None:
        import tensorflow as tf
        keras = tf.keras
    arch = _architecture(name)
    keras.utils.set_random_seed(arch.seed)
    inputs, outputs = arch.build(keras)
    return keras.Model(inputs, outputs, name=name)


def fingerprint(name: str) -> str:
    """Changes whenever what `quantized` would produce may change: the builders' code, the seed,
    the calibration and the TensorFlow version."""
    import tensorflow as tf

    arch = _architecture(name)
    text = "\n".join([inspect.getsource(inspect.getmodule(arch.build)), name, str(arch.seed),
                      str(CALIBRATION_SAMPLES), tf.__version__])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def is_cached(name: str, out_dir: str | Path) -> bool:
    """Whether out_dir holds this architecture's .tflite, converted from its current builder."""
    target, stamp = Path(out_dir) / f"{name}.tflite", Path(out_dir) / f"{name}.json"
    if not (target.is_file() and stamp.is_file()):
        return False
    try:
        return json.loads(stamp.read_text()).get("fingerprint") == fingerprint(name)
    except (OSError, ValueError):
        return False


def quantized(name: str, out_dir: str | Path, force: bool = False) -> Path:
    """`out_dir/<name>.tflite`: the architecture built with a fixed seed, calibrated on random
    normal inputs and converted to full int8. Reused while its fingerprint still matches
    (`force` rebuilds it). `out_dir/<name>.json` records the fingerprint and the wall-clock
    seconds the build and the conversion took."""
    from mcuforge.codegen.quantize import convert

    started = time.perf_counter()
    out_dir = Path(out_dir)
    target = out_dir / f"{name}.tflite"
    if not force and is_cached(name, out_dir):
        return target
    model = build_model(name)
    arch = _architecture(name)
    calib = np.random.default_rng(arch.seed).normal(size=(CALIBRATION_SAMPLES, *model.inputs[0].shape[1:]))
    with tempfile.TemporaryDirectory(prefix=f"mcuforge-arch-{name}-") as tmp:
        keras_path, calib_path = Path(tmp) / f"{name}.keras", Path(tmp) / "calib.npy"
        model.save(keras_path)
        np.save(calib_path, calib.astype(np.float32))
        report = convert(keras_path, target, calib=calib_path)
    record = {"fingerprint": fingerprint(name), "architecture": name, "seed": arch.seed,
              "calibration_samples": CALIBRATION_SAMPLES, "convert_seconds": report.seconds,
              "build_and_convert_seconds": round(time.perf_counter() - started, 3), "ops": report.ops}
    (out_dir / f"{name}.json").write_text(json.dumps(record, indent=2) + "\n")
    return target


def conversion_record(name: str, out_dir: str | Path) -> dict:
    """What `quantized` wrote next to the .tflite: fingerprint, seconds, operator counts."""
    return json.loads((Path(out_dir) / f"{name}.json").read_text())
