"""The MLPerf Tiny architectures of the benchmarks (benchmarks/architectures.py): VWW
(MobileNetV1 0.25) and IC (ResNet-8) build with the published shapes and layer stacks, and the
AOT engine runs them bit for bit like TFLM, on the host and on an emulated Cortex-M55."""
import pytest

from mcuforge.codegen.emit_aot import render_aot_sources
from mcuforge.codegen.tflite_model import load_tflite
from mcuforge.host_tools.verify import verify_model

from conftest import load_architectures, require_tool

pytestmark = pytest.mark.slow


architectures = load_architectures()

EXPECTED = {
    # name: (input shape, output shape, operator counts, MACs of the published layer stack)
    "vww": ((1, 96, 96, 3), (1, 2),
            {"CONV_2D": 14, "DEPTHWISE_CONV_2D": 13, "AVERAGE_POOL_2D": 1, "FULLY_CONNECTED": 1, "SOFTMAX": 1},
            7_491_968),
    "ic": ((1, 32, 32, 3), (1, 10),
           {"CONV_2D": 9, "ADD": 3, "AVERAGE_POOL_2D": 1, "FULLY_CONNECTED": 1, "SOFTMAX": 1},
           12_505_728),
}


@pytest.fixture(scope="module")
def int8_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("architectures")
    return {name: architectures.quantized(name, root) for name in EXPECTED}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_keras_model_has_the_published_shapes(name):
    import tensorflow as tf

    model = architectures.build_model(name, tf.keras)
    input_shape, output_shape, _, _ = EXPECTED[name]
    assert tuple(model.inputs[0].shape[1:]) == input_shape[1:]
    assert tuple(model.outputs[0].shape[1:]) == output_shape[1:]


@pytest.mark.parametrize("name", list(EXPECTED))
def test_int8_model_has_the_layer_stack_and_fits_the_live_set(int8_models, name):
    graph = load_tflite(int8_models[name])
    input_shape, output_shape, ops, macs = EXPECTED[name]
    assert tuple(graph.tensors[graph.inputs[0]].shape) == input_shape
    assert tuple(graph.tensors[graph.outputs[0]].shape) == output_shape
    assert graph.tensors[graph.inputs[0]].dtype == graph.tensors[graph.outputs[0]].dtype == "INT8"
    assert graph.op_counts() == ops
    _, report = render_aot_sources(graph)
    assert report["macs"] == macs
    assert report["arena_bytes"] <= report["largest_live_set_bytes"]


def test_quantized_models_are_cached(int8_models, tmp_path):
    path = int8_models["ic"]
    stamp = path.stat().st_mtime_ns
    assert architectures.is_cached("ic", path.parent)
    assert architectures.quantized("ic", path.parent) == path
    assert path.stat().st_mtime_ns == stamp


@pytest.mark.parametrize("name", list(EXPECTED))
def test_bit_exact_on_host(int8_models, name):
    result = verify_model(int8_models[name], "host", samples=10, seed=21)
    assert result.matches == result.total == 10, result.details()


@pytest.mark.qemu
@pytest.mark.parametrize("kernels", ["portable", "mve"])
@pytest.mark.parametrize("name", list(EXPECTED))
def test_bit_exact_on_emulated_cortex_m55(int8_models, name, kernels):
    require_tool("qemu-system-arm", "qemu-system-arm")
    require_tool("arm-none-eabi-gcc", "gcc-arm-none-eabi")
    result = verify_model(int8_models[name], "mps3-an547", samples=3, seed=22, kernels=kernels)
    assert result.matches == result.total == 3, result.details()
    assert result.instructions_per_inference > 0
