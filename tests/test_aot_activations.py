"""SOFTMAX, LOGISTIC and TANH in the AOT engine: bit-exact with TFLM's int8 reference kernels.

Keras models are built and quantized here, compiled with the host `cc` together with a small
harness, and run on crafted and random int8 inputs; every output byte must equal what TFLM's
reference interpreter gives. The host-side fixed-point arithmetic (quantization.py) and the
C fixed-point header are checked against each other and against float math.
"""
from __future__ import annotations

import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from mcuforge.codegen import quantization as q
from mcuforge.codegen.aot_ops import logistic as logistic_op
from mcuforge.codegen.aot_ops import softmax as softmax_op
from mcuforge.codegen.aot_ops import tanh as tanh_op
from mcuforge.codegen.emit_aot import KERNELS_DIR, emit_aot
from mcuforge.codegen.errors import McuforgeError
from mcuforge.codegen.tflite_model import Graph, Operator, Tensor, load_tflite

needs_cc = pytest.mark.skipif(shutil.which("cc") is None, reason="no host C compiler (cc)")

CFLAGS = ["-std=c99", "-O2", "-Wall", "-Wextra", "-Werror"]

HARNESS = r"""
#include <stdio.h>
#include "model.h"

/* Reads samples (all inputs, back to back) from stdin until it ends; writes all outputs per sample. */
int main(void)
{
    for (;;) {
        for (int i = 0; i < MODEL_NUM_INPUTS; ++i) {
            size_t got = fread(model_input(i), 1, model_input_bytes[i], stdin);
            if (got == 0 && i == 0) {
                return 0;
            }
            if (got != model_input_bytes[i]) {
                return 2;
            }
        }
        if (model_invoke() != 0) {
            return 3;
        }
        for (int o = 0; o < MODEL_NUM_OUTPUTS; ++o) {
            fwrite(model_output(o), 1, model_output_bytes[o], stdout);
        }
    }
}
"""


# ---------------------------------------------------------------------------------------------
# Host arithmetic: parameters and fixed-point primitives

def test_softmax_parameters_follow_tflm_prepare():
    # beta * scale * 2^26 = 2^22: significand 2^30, left shift 23, radius floor(31 * 2^26 / 2^23) = 248
    assert q.softmax_int8_params(1.0, 1.0 / 16) == {"input_multiplier": 1 << 30, "input_left_shift": 23,
                                                    "diff_min": -248}
    # beta scales like the input scale does
    assert q.softmax_int8_params(2.0, 1.0 / 32) == q.softmax_int8_params(1.0, 1.0 / 16)
    # a huge multiplier is capped at 2^31 - 1: only the row maximum survives
    assert q.softmax_int8_params(1.0, 1e6) == {"input_multiplier": (1 << 31) - 1, "input_left_shift": 31,
                                               "diff_min": 0}
    mult, shift = q.preprocess_softmax_scaling(1.0, 0.1)
    assert (1 << 30) <= mult < (1 << 31) and shift >= 0
    assert math.isclose(mult * 2.0 ** (shift - 31), float(np.float32(0.1)) * 2 ** 26, rel_tol=1e-9)
    with pytest.raises(ValueError):
        q.preprocess_softmax_scaling(1.0, 2.0 ** -27)


def test_input_radius_and_frexp_multiplier():
    assert q.calculate_input_radius(4, 24) == 120            # 15 * 2^27 / 2^24
    assert q.calculate_input_radius(5, 27) == 15             # floor(31 * 2^26 / 2^27)
    assert q.calculate_input_radius(4, 31) == 0
    assert q.frexp_multiplier(0.75) == (3 << 29, 0)
    for value in (1.7e5, 3.3e6, 2.0 ** 20, 123456.789):
        assert q.frexp_multiplier(value) == q.quantize_multiplier(value)


def test_fixed_point_primitives():
    big, small = q.INT32_MAX, q.INT32_MIN
    assert q.saturating_rounding_doubling_high_mul(small, small) == big
    assert q.saturating_rounding_doubling_high_mul(1 << 30, 1 << 30) == 1 << 29
    # ties: +1.5 goes to 2, -1.5 to -1 (the nudge, then truncation toward zero)
    assert q.saturating_rounding_doubling_high_mul(3, 1 << 30) == 2
    assert q.saturating_rounding_doubling_high_mul(-3, 1 << 30) == -1
    assert q.saturating_rounding_doubling_high_mul(-5, 1 << 29) == -1     # -1.25
    assert [q.rounding_divide_by_pot(x, 1) for x in (5, -5, 4, -4, 3, -3)] == [3, -3, 2, -2, 2, -2]
    assert q.rounding_divide_by_pot(-6, 2) == -2 and q.rounding_divide_by_pot(6, 2) == 2
    assert q.saturating_rounding_multiply_by_pot(1 << 28, 3) == big
    assert q.saturating_rounding_multiply_by_pot(-(1 << 28), 3) == small
    assert q.saturating_rounding_multiply_by_pot(12345, 2) == 49380
    assert q.saturating_rounding_multiply_by_pot(10, -2) == 3
    assert q.multiply_by_quantized_multiplier(100, 1 << 30, -1) == 25
    assert q.multiply_by_quantized_multiplier(-100, 1 << 30, 2) == -200
    assert q.multiply_by_quantized_multiplier_greater_than_one(-3, 1 << 30, 4) == -24


def test_fixed_point_functions_approximate_their_real_values():
    for integer_bits in (4, 5):
        one = 1 << (31 - integer_bits)
        assert q.exp_on_negative_values(0, integer_bits) == q.INT32_MAX
        for real in (-0.001, -0.25, -0.3, -1.0, -2.5, -7.9, -15.0):
            got = q.exp_on_negative_values(round(real * one), integer_bits) / 2.0 ** 31
            assert got == pytest.approx(math.exp(real), abs=1e-6)
        for real in (-7.5, -2.0, -0.4, 0.1, 1.0, 3.3, 7.9):
            raw = round(real * one)
            assert q.fixed_logistic(raw, integer_bits) / 2.0 ** 31 == pytest.approx(1 / (1 + math.exp(-real)), abs=1e-6)
            assert q.fixed_tanh(raw, integer_bits) / 2.0 ** 31 == pytest.approx(math.tanh(real), abs=1e-6)
    for real in (0.0, 0.1, 0.5, 0.9, 0.999):
        got = q.one_over_one_plus_x_for_x_in_0_1(round(real * 2.0 ** 31)) / 2.0 ** 31
        assert got == pytest.approx(1 / (1 + real), abs=2e-8)
        got = q.one_minus_x_over_one_plus_x_for_x_in_0_1(round(real * 2.0 ** 31)) / 2.0 ** 31
        assert got == pytest.approx((1 - real) / (1 + real), abs=2e-8)


@pytest.mark.parametrize("scale, zero_point", [(0.02, 0), (0.0842, -1), (0.5, 17), (1e-4, 3), (6.0, -128)])
def test_activation_tables_track_the_real_functions(scale, zero_point):
    x = (np.arange(-128, 128) - zero_point) * np.float32(scale)
    sig = q.logistic_int8_table(scale, zero_point).astype(int)
    tanh = q.tanh_int8_table(scale, zero_point).astype(int)
    assert np.all(np.diff(sig) >= 0) and np.all(np.diff(tanh) >= 0)
    assert np.max(np.abs((sig + 128) / 256 - 1 / (1 + np.exp(-x)))) <= 1 / 256 + 1e-9
    assert np.max(np.abs(tanh / 128 - np.tanh(x))) <= 1 / 128 + 1e-9


@needs_cc
def test_c_fixed_point_header_matches_the_host_emulation(tmp_path):
    rng = np.random.default_rng(5)
    q5 = [0, -1, -2, q.INT32_MIN, q.INT32_MIN + 1, -(1 << 24), -(1 << 26), -(1 << 30)]
    q5 += [int(v) for v in rng.integers(q.INT32_MIN, 1, size=300)]
    q5 += [int(v) for v in -rng.integers(0, 1 << 27, size=200)]
    q0 = [0, 1, q.INT32_MAX, 1 << 30] + [int(v) for v in rng.integers(0, q.INT32_MAX, size=200)]
    anyv = [0, 1, -1, 1 << 27, -(1 << 27), (1 << 31) - 1, -(1 << 31) + 1]
    anyv += [int(v) for v in rng.integers(-(1 << 31) + 1, 1 << 31, size=200)]
    anyv += [int(v) for v in rng.integers(-(1 << 30), 1 << 30, size=200)]
    sums = [1 << 19, (1 << 19) + 1, 500 << 19, 3 << 27, q.INT32_MAX] + [int(v) for v in rng.integers(1 << 19, 1 << 31, 100)]
    program = tmp_path / "fx.c"
    program.write_text(
        '#include <stdio.h>\n#include <stdlib.h>\n#include "mf_fixedpoint.h"\n'
        "int main(int argc, char **argv)\n{\n"
        "    (void)argc;\n    int32_t v;\n    char f = argv[1][0];\n"
        '    while (scanf("%d", &v) == 1) {\n'
        "        int bits = 0;\n"
        "        switch (f) {\n"
        '        case \'e\': printf("%d %d\\n", mf_exp_on_negative_values(v, 5), mf_exp_on_negative_values(v / 2, 4)); break;\n'
        '        case \'r\': printf("%d %d\\n", mf_one_over_one_plus_x_for_x_in_0_1(v), mf_one_minus_x_over_one_plus_x_for_x_in_0_1(v)); break;\n'
        '        case \'a\': printf("%d %d\\n", mf_fx_logistic(v, 4), mf_fx_tanh(v, 4)); break;\n'
        '        case \'s\': { int32_t s = mf_fx_reciprocal(v, 12, &bits); printf("%d %d\\n", s, bits); } break;\n'
        "        default: return 1;\n        }\n    }\n    return 0;\n}\n")
    exe = tmp_path / "fx"
    subprocess.run(["cc", *CFLAGS, "-fsanitize=undefined", "-fno-sanitize-recover=all", f"-I{KERNELS_DIR}",
                    str(program), "-o", str(exe)], check=True, capture_output=True)

    def run(flag, values):
        out = subprocess.run([str(exe), flag], input=" ".join(map(str, values)), capture_output=True, text=True,
                             check=True).stdout.split()
        return [tuple(int(t) for t in out[i:i + 2]) for i in range(0, len(out), 2)]

    assert run("e", q5) == [(q.exp_on_negative_values(v, 5), q.exp_on_negative_values(int(v / 2), 4)) for v in q5]
    assert run("r", q0) == [(q.one_over_one_plus_x_for_x_in_0_1(v), q.one_minus_x_over_one_plus_x_for_x_in_0_1(v))
                            for v in q0]
    assert run("a", anyv) == [(q.fixed_logistic(v, 4), q.fixed_tanh(v, 4)) for v in anyv]
    expected = []
    for v in sums:
        headroom = 32 - v.bit_length()
        expected.append((q.one_over_one_plus_x_for_x_in_0_1(((v << headroom) - (1 << 31))), 12 - headroom))
    assert run("s", sums) == expected


# ---------------------------------------------------------------------------------------------
# Checks: what the kernels do not implement is refused with node and reason

def _single_op_graph(opcode, in_shape, out_dtype="INT8", out_scale=1 / 256, out_zero_point=-128,
                     in_scale=0.1, options=None):
    tensors = [
        Tensor(0, "x", tuple(in_shape), "INT8", np.array([in_scale], np.float32), np.array([3])),
        Tensor(1, "y", tuple(in_shape), out_dtype, np.array([out_scale], np.float32), np.array([out_zero_point])),
    ]
    return Graph("unit.tflite", tensors, [Operator(0, opcode, [0], [1], options or {})], [0], [1])


def test_softmax_check_refusals():
    good = _single_op_graph("SOFTMAX", (2, 10), options={"beta": 1.0})
    softmax_op.check(good, good.operators[0])
    cases = [
        (dict(out_scale=1 / 255), "requires scale 1/256 and zero point -128"),
        (dict(out_zero_point=0), "requires scale 1/256 and zero point -128"),
        (dict(out_dtype="INT16", out_zero_point=-32768), "int16 output"),
        (dict(in_shape=(1, 5000)), "over 5000 values"),
        (dict(in_scale=1e-9), "too small"),
        (dict(options={}), "no beta"),
    ]
    for overrides, message in cases:
        kwargs = {"in_shape": (2, 10), "options": {"beta": 1.0}, **overrides}
        graph = _single_op_graph("SOFTMAX", **kwargs)
        with pytest.raises(McuforgeError) as info:
            softmax_op.check(graph, graph.operators[0])
        assert message in info.value.what and "node 0" in info.value.what
        assert "operator 0" in info.value.where and info.value.fix


@pytest.mark.parametrize("module, opcode, scale, zero_point", [(logistic_op, "LOGISTIC", 1 / 256, -128),
                                                                (tanh_op, "TANH", 1 / 128, 0)])
def test_logistic_and_tanh_check_refusals(module, opcode, scale, zero_point):
    good = _single_op_graph(opcode, (1, 8), out_scale=scale, out_zero_point=zero_point)
    module.check(good, good.operators[0])
    for kwargs in (dict(out_scale=scale * 2, out_zero_point=zero_point), dict(out_scale=scale, out_zero_point=5),
                   dict(out_scale=scale, out_zero_point=zero_point, in_scale=1e-12),
                   dict(out_scale=scale, out_zero_point=zero_point, out_dtype="INT16")):
        graph = _single_op_graph(opcode, (1, 8), **kwargs)
        with pytest.raises(McuforgeError) as info:
            module.check(graph, graph.operators[0])
        assert f"{opcode} at node 0" in info.value.what and info.value.fix


# ---------------------------------------------------------------------------------------------
# Keras models, converted to int8, compiled with cc, compared with TFLM bit for bit

def _convert(tf, model, calib_scale: float) -> bytes:
    shape = tuple(model.inputs[0].shape[1:])

    def representative():
        rng = np.random.default_rng(1)
        for _ in range(48):
            yield [(rng.normal(size=(1, *shape)) * calib_scale).astype(np.float32)]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    return converter.convert()


def _with_softmax_beta(model_bytes: bytes, beta: float) -> bytes:
    """The same model with every SOFTMAX's beta replaced (the converter never writes beta != 1)."""
    import flatbuffers
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(model_bytes, 0))
    patched = 0
    for op in model.subgraphs[0].operators:
        if isinstance(op.builtinOptions, schema.SoftmaxOptionsT):
            op.builtinOptions.beta = beta
            patched += 1
    assert patched
    builder = flatbuffers.Builder(len(model_bytes) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _build_models(tf) -> dict[str, tuple[bytes, str]]:
    """name -> (model bytes, kind of inputs to craft)."""
    keras = tf.keras
    layers = keras.layers
    keras.utils.set_random_seed(7)
    models = {}

    x = inp = keras.Input((12,))
    dense = layers.Dense(10)
    y = layers.Softmax()(dense(x))
    model = keras.Model(inp, y)
    kernel, bias = dense.get_weights()
    dense.set_weights([kernel * 6.0, bias])            # wide logit spreads
    models["dense_softmax"] = (_convert(tf, model, 1.0), "random")

    x = inp = keras.Input((4, 10))
    rows = _convert(tf, keras.Model(inp, layers.Softmax()(x)), 3.0)
    models["rows_softmax"] = (rows, "rows")
    models["rows_softmax_beta_0.37"] = (_with_softmax_beta(rows, 0.37), "rows")
    models["rows_softmax_beta_6"] = (_with_softmax_beta(rows, 6.0), "rows")
    x = inp = keras.Input((4, 10))
    models["rows_softmax_wide"] = (_convert(tf, keras.Model(inp, layers.Softmax()(x)), 40.0), "rows")
    x = inp = keras.Input((500,))
    models["deep_softmax"] = (_convert(tf, keras.Model(inp, layers.Softmax()(x)), 2.0), "rows")

    x = inp = keras.Input((8,))
    h = layers.Dense(16)(x)
    models["dense_sigmoid_tanh"] = (_convert(tf, keras.Model(inp, [layers.Activation("sigmoid")(h),
                                                                   layers.Activation("tanh")(h)]), 1.0), "random")
    for calib in (0.05, 2.5, 40.0):
        x = inp = keras.Input((256,))
        both = keras.Model(inp, [layers.Activation("sigmoid")(x), layers.Activation("tanh")(x)])
        models[f"all_values_{calib}"] = (_convert(tf, both, calib), "all_values")
    return models


def _row_values(rng, depth: int) -> np.ndarray:
    """One row of crafted logits: the cases where softmax arithmetic is at its edges."""
    kind = rng.integers(0, 9)
    if kind == 0:
        return np.full(depth, rng.integers(-128, 128))                     # all equal
    if kind == 1:
        return np.full(depth, rng.choice([-128, 127]))                     # all at an extreme
    if kind == 2:                                                          # one-hot: largest spread
        row = np.full(depth, -128)
        row[rng.integers(depth)] = 127
        return row
    if kind == 3:                                                          # max and max - k: diff_min boundary
        top = rng.integers(-100, 128)
        row = np.full(depth, top - rng.integers(0, 256))
        row[rng.integers(depth)] = top
        return row
    if kind == 4:
        return rng.choice([-128, 127], size=depth)                         # only extremes
    if kind == 5:
        centre = rng.integers(-128, 128)
        return centre + rng.integers(-3, 4, size=depth)                    # near ties
    return rng.integers(-128, 128, size=depth)                             # random


def _samples(kind: str, shape: tuple[int, ...], count: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    depth = shape[-1]
    rows = int(np.prod(shape[:-1]))
    samples = [np.full(shape, -128), np.full(shape, 127), np.zeros(shape, dtype=np.int64)]
    for _ in range(count - len(samples)):
        if kind == "all_values":
            samples.append(rng.permutation(np.arange(-128, 128)).reshape(shape))
        elif kind == "rows":
            samples.append(np.stack([_row_values(rng, depth) for _ in range(rows)]).reshape(shape))
        else:
            mode = rng.integers(0, 4)
            if mode == 0:
                samples.append(rng.choice([-128, 127], size=shape))
            else:
                samples.append(rng.integers(-128, 128, size=shape))
    return [np.clip(s, -128, 127).astype(np.int8) for s in samples]


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    import tensorflow as tf

    root = tmp_path_factory.mktemp("activations")
    paths = {}
    for name, (model_bytes, kind) in _build_models(tf).items():
        path = root / f"{name}.tflite"
        path.write_bytes(model_bytes)
        paths[name] = (path, kind)
    return paths


def _compile_and_run(path: Path, work: Path, samples: list[list[np.ndarray]]) -> list[list[np.ndarray]]:
    graph = load_tflite(path)
    out = work / "model"
    emit_aot(graph, out)
    (work / "harness.c").write_text(HARNESS)
    exe = work / "run"
    sources = sorted(str(p) for p in out.glob("*.c"))
    result = subprocess.run(["cc", *CFLAGS, "-fsanitize=undefined", "-fno-sanitize-recover=all", f"-I{out}",
                             *sources, str(work / "harness.c"), "-o", str(exe)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    blob = b"".join(x.tobytes() for sample in samples for x in sample)
    run = subprocess.run([str(exe)], input=blob, capture_output=True, timeout=60)
    assert run.returncode == 0, run.stderr.decode(errors="replace")
    shapes = [graph.tensors[t].shape for t in graph.outputs]
    sizes = [int(np.prod(s)) for s in shapes]
    per_sample = sum(sizes)
    assert len(run.stdout) == per_sample * len(samples)
    outputs = []
    for i in range(len(samples)):
        chunk = np.frombuffer(run.stdout, dtype=np.int8, count=per_sample, offset=i * per_sample)
        parts, start = [], 0
        for size, shape in zip(sizes, shapes):
            parts.append(chunk[start:start + size].reshape(shape))
            start += size
        outputs.append(parts)
    return outputs


MODEL_NAMES = ["dense_softmax", "rows_softmax", "rows_softmax_beta_0.37", "rows_softmax_beta_6", "rows_softmax_wide",
               "deep_softmax", "dense_sigmoid_tanh", "all_values_0.05", "all_values_2.5", "all_values_40.0"]
SAMPLES = 300


@pytest.mark.slow
@needs_cc
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_aot_is_bit_exact_with_tflm(converted, name, tmp_path):
    from mcuforge.codegen.reference import run_reference

    path, kind = converted[name]
    graph = load_tflite(path)
    assert len(graph.inputs) == 1
    samples = [[x] for x in _samples(kind, graph.tensors[graph.inputs[0]].shape, SAMPLES, seed=len(name))]
    expected = run_reference(path.read_bytes(), samples)
    got = _compile_and_run(path, tmp_path, samples)
    exact = 0
    for i, (want_outputs, got_outputs) in enumerate(zip(expected, got)):
        same = all(np.array_equal(w.astype(np.int8).reshape(g.shape), g) for w, g in zip(want_outputs, got_outputs))
        exact += same
        if not same:
            diffs = [np.argwhere(w.astype(np.int8).reshape(g.shape) != g)[:3].tolist()
                     for w, g in zip(want_outputs, got_outputs)]
            pytest.fail(f"{name}: sample {i} differs at {diffs}; input {samples[i][0].ravel()[:40].tolist()}")
    assert exact == SAMPLES


@pytest.mark.slow
def test_models_exercise_the_intended_cases(converted):
    ops = set()
    for path, _ in converted.values():
        ops |= set(load_tflite(path).op_counts())
    assert {"SOFTMAX", "LOGISTIC", "TANH", "FULLY_CONNECTED"} <= ops

    def softmax_params(name):
        graph = load_tflite(converted[name][0])
        op = next(o for o in graph.operators if o.opcode == "SOFTMAX")
        beta = op.options["beta"]
        return beta, q.softmax_int8_params(beta, float(graph.tensor(op.inputs[0]).scale[0]))

    assert softmax_params("rows_softmax")[0] == 1.0
    assert softmax_params("rows_softmax_beta_6")[0] == 6.0
    assert softmax_params("rows_softmax_beta_0.37")[0] == pytest.approx(0.37)
    # A wide input scale drops most differences (diff_min near zero); a narrow one keeps all of them.
    assert -64 < softmax_params("rows_softmax_wide")[1]["diff_min"] < 0
    assert softmax_params("rows_softmax_beta_0.37")[1]["diff_min"] < -255
    # The exhaustive models cover tables that saturate inside the int8 range and ones that do not.
    scales = [float(load_tflite(converted[f"all_values_{c}"][0]).tensors[0].scale[0]) for c in (0.05, 2.5, 40.0)]
    assert scales[0] < 0.01 < scales[1] < 0.1 < 0.5 < scales[2]
