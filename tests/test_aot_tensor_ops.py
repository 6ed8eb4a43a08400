"""CONCATENATION, PAD/PADV2 and MEAN in the AOT engine: Keras models built and quantized here,
compiled with the host cc and compared bit for bit with TFLM's reference interpreter; and the
clear refusals of what TFLM's kernels would get wrong or cannot run."""
import copy

import numpy as np
import pytest

from conftest import quantize_builders

from mcuforge.codegen.aot_ops import operator_module
from mcuforge.codegen.errors import McuforgeError
from mcuforge.codegen.quantization import mean_multiplier
from mcuforge.codegen.tflite_model import load_tflite
from mcuforge.host_tools.verify import verify_model

pytestmark = pytest.mark.slow


def _concat(keras):
    # Two branches of one input: the converter gives both the concatenation's quantization.
    x = inputs = keras.Input((8, 8, 3))
    a = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(x)
    b = keras.layers.Conv2D(5, 1)(x)
    x = keras.layers.Concatenate(axis=-1)([a, b])
    x = keras.layers.Concatenate(axis=1)([x, keras.layers.Conv2D(9, 3, padding="same")(x)])
    x = keras.layers.Flatten()(x)
    return inputs, keras.layers.Dense(4)(x)


def _pad(keras):
    x = inputs = keras.Input((6, 6, 2))
    x = keras.layers.ZeroPadding2D(((1, 2), (0, 3)))(x)                                   # PAD
    x = keras.layers.Conv2D(4, 3)(x)
    x = keras.ops.pad(x, [[0, 0], [1, 1], [2, 0], [0, 1]], constant_values=0.5)          # PADV2
    x = keras.layers.Flatten()(x)
    return inputs, keras.layers.Dense(3)(x)


def _mean(keras):
    x = inputs = keras.Input((7, 5, 3))
    x = keras.layers.Conv2D(6, 3, padding="same")(x)
    pooled = keras.layers.GlobalAveragePooling2D()(x)                                     # axes [1, 2]
    pooled_4d = keras.layers.Flatten()(keras.layers.GlobalAveragePooling2D(keepdims=True)(x))
    rows = keras.layers.Flatten()(keras.ops.mean(x, axis=1))                              # keep_dims false
    columns = keras.layers.Flatten()(keras.ops.mean(x, axis=[2, 3], keepdims=True))
    x = keras.layers.Concatenate()([pooled, pooled_4d, rows, columns])
    return inputs, keras.layers.Dense(4)(x)


def _mean_only(keras):
    # MEAN straight from the input to the output: the model whose quantization is edited below.
    x = inputs = keras.Input((6, 4, 5))
    return inputs, keras.ops.mean(x, axis=[1, 2], keepdims=True)


BUILDERS = {"concat": _concat, "pad": _pad, "mean": _mean, "mean_only": _mean_only}


def _same_quantization_variant(source, target):
    """The single-MEAN model with the output quantized exactly like the input: older TFLM releases
    took a separate (truncating) int8 path for that case; the installed one must be matched too."""
    import flatbuffers
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(source.read_bytes(), 0))
    subgraph = model.subgraphs[0]
    given = subgraph.tensors[subgraph.inputs[0]].quantization
    taken = subgraph.tensors[subgraph.outputs[0]].quantization
    taken.scale, taken.zeroPoint = list(given.scale), list(given.zeroPoint)
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    target.write_bytes(bytes(builder.Output()))
    return target


@pytest.fixture(scope="module")
def int8_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("tensor_ops")
    models = quantize_builders(BUILDERS, root, seed=5)
    models["mean_same_quant"] = _same_quantization_variant(models["mean_only"], root / "mean_same_quant.tflite")
    return models


EXPECTED_OPS = {
    "concat": {"CONCATENATION": 2},
    "pad": {"PAD": 1, "PADV2": 1},
    "mean": {"MEAN": 4, "CONCATENATION": 1},
    "mean_only": {"MEAN": 1},
    "mean_same_quant": {"MEAN": 1},
}


@pytest.mark.parametrize("name", list(EXPECTED_OPS))
def test_model_is_bit_exact_on_host(int8_models, name):
    counts = load_tflite(int8_models[name]).op_counts()
    for opcode, count in EXPECTED_OPS[name].items():
        assert counts.get(opcode) == count, counts
    result = verify_model(int8_models[name], "host", samples=25, seed=11)
    assert result.total == 25
    assert result.matches == 25, result.details()


def _ops(graph, opcode):
    return [op for op in graph.operators if op.opcode == opcode]


def test_converter_gives_concatenation_inputs_the_output_quantization(int8_models):
    graph = load_tflite(int8_models["concat"])
    concats = _ops(graph, "CONCATENATION")
    assert sorted(op.options["axis"] for op in concats) == [-1, 1]
    for op in concats:
        output = graph.tensor(op.outputs[0])
        for t in op.inputs:
            assert (graph.tensor(t).scale[0], graph.tensor(t).zero_point[0]) == (output.scale[0], output.zero_point[0])


def test_mean_variants_cover_the_tflm_cases(int8_models):
    graph = load_tflite(int8_models["mean"])
    seen = {(tuple(int(a) for a in graph.tensor(op.inputs[1]).data), op.options["keepDims"])
            for op in _ops(graph, "MEAN")}
    assert {((1, 2), True), ((1, 2), False), ((1,), False), ((2, 3), True)} <= seen
    same = load_tflite(int8_models["mean_same_quant"])
    op = same.operators[0]
    assert (same.tensor(op.inputs[0]).scale[0], same.tensor(op.inputs[0]).zero_point[0]) == \
        (same.tensor(op.outputs[0]).scale[0], same.tensor(op.outputs[0]).zero_point[0])


def _refusal(graph, op):
    with pytest.raises(McuforgeError) as caught:
        operator_module(graph, op).check(graph, op)
    assert f"node {op.index}" in caught.value.what
    assert caught.value.where and caught.value.fix
    return caught.value.what


def test_concatenation_with_different_quantization_is_refused(int8_models):
    graph = load_tflite(int8_models["concat"])
    op = _ops(graph, "CONCATENATION")[0]
    graph.tensors[op.inputs[1]].scale = graph.tensors[op.inputs[1]].scale * 2
    assert "without requantizing" in _refusal(graph, op)


def test_concatenation_with_fused_activation_is_refused(int8_models):
    graph = load_tflite(int8_models["concat"])
    op = _ops(graph, "CONCATENATION")[0]
    op.options["activation"] = "RELU"
    assert "RELU" in _refusal(graph, op)


def test_pad_with_int64_paddings_is_refused(int8_models):
    graph = load_tflite(int8_models["pad"])
    op = _ops(graph, "PAD")[0]
    paddings = graph.tensors[op.inputs[1]]
    graph.tensors[op.inputs[1]] = _with(paddings, dtype="INT64", data=paddings.data.astype(np.int64))
    assert "int32" in _refusal(graph, op)


def test_padv2_fill_must_share_the_output_quantization(int8_models):
    graph = load_tflite(int8_models["pad"])
    op = _ops(graph, "PADV2")[0]
    graph.tensors[op.inputs[2]].zero_point = graph.tensors[op.inputs[2]].zero_point + 1
    assert "fill value" in _refusal(graph, op)


def test_mean_with_computed_axes_is_refused(int8_models):
    graph = load_tflite(int8_models["mean_only"])
    op = graph.operators[0]
    graph.tensors[op.inputs[1]] = _with(graph.tensors[op.inputs[1]], data=None)
    assert "axes" in _refusal(graph, op)


def _with(tensor, **changes):
    changed = copy.copy(tensor)
    for key, value in changes.items():
        setattr(changed, key, value)
    return changed


def test_mean_multiplier_folds_the_count_like_tflm():
    # The ratio 0.5 is 2^30 x 2^(0 - 31); 1/35 is folded in with floor(log2(35)) = 5 more bits, truncating.
    multiplier, shift = mean_multiplier(0.5, 1.0, 35)
    assert (multiplier, shift) == (((1 << 30) << 5) // 35, 0 - 5)
    # 2^-30 has shift -29: the fold stops at 2 bits (not log2(1024) = 10), where the right shift reaches 31.
    multiplier, shift = mean_multiplier(2.0 ** -30, 1.0, 1 << 10)
    assert shift == -31
