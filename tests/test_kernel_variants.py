"""The optimized kernel families (dsp: Arm SIMD32/SMLAD; mve: Helium) against the portable one.

Every family must give TFLM's outputs bit for bit. Under QEMU -icount the instruction count of an
inference is deterministic, so an optimized family is also checked to run fewer instructions than
the portable one on the same board: that is what makes it an optimization.
"""
import shutil
from pathlib import Path

import numpy as np
import pytest

from mcuforge.codegen.emit_aot import KERNELS_DIR
from mcuforge.codegen.tflite_model import load_tflite
from mcuforge.host_tools.console_protocol import parse_results
from mcuforge.host_tools.verify import run_aot, verify_model

from conftest import shared_model

OPTIMIZED_KERNELS = ["fully_connected_s8.c", "conv_s8.c", "depthwise_conv_s8.c"]
# (board, optimized family): a Cortex-M4 with the DSP extension, a Cortex-M55 with Helium.
OPTIMIZED_BOARDS = [("mps2-an386", "dsp"), ("mps3-an547", "mve")]

needs_arm_tools = pytest.mark.skipif(
    shutil.which("arm-none-eabi-gcc") is None or shutil.which("qemu-system-arm") is None,
    reason="arm-none-eabi-gcc and qemu-system-arm are needed (Debian: gcc-arm-none-eabi, qemu-system-arm)")
needs_cc = pytest.mark.skipif(shutil.which("cc") is None, reason="no host C compiler (cc)")


def _check_optimized_report(report: dict, family: str, ops: set[str]) -> None:
    assert report["kernels"] == family
    used = {"FULLY_CONNECTED": "fully_connected_s8.c", "CONV_2D": "conv_s8.c", "DEPTHWISE_CONV_2D": "depthwise_conv_s8.c"}
    if family == "mve":
        used["ADD"] = "add_s8.c"
    for op, kernel_file in used.items():
        if op in ops:
            assert report["kernel_files"][kernel_file] == family, report["kernel_files"]


def compare_families(model: Path, board: str, family: str, samples: int, seed: int = 5):
    """Verify `model` on `board` with the portable and the optimized kernels; both must be bit-exact,
    and the optimized ones must take fewer instructions per inference. Returns both counts."""
    portable = verify_model(model, board, samples=samples, seed=seed, kernels="portable")
    optimized = verify_model(model, board, samples=samples, seed=seed, kernels=family)
    assert portable.matches == samples, portable.details()
    assert optimized.matches == samples, optimized.details()
    _check_optimized_report(optimized.report, family, set(load_tflite(model).op_counts()))
    assert portable.report["kernels"] == "portable"
    assert set(portable.report["kernel_files"].values()) == {"portable"}
    assert optimized.instructions_per_inference < portable.instructions_per_inference, (
        f"{family} kernels took {optimized.instructions_per_inference} instructions per inference on {board}, "
        f"portable {portable.instructions_per_inference}")
    return portable.instructions_per_inference, optimized.instructions_per_inference


def test_every_optimized_family_has_the_three_kernels():
    for family in ("dsp", "mve"):
        for kernel in OPTIMIZED_KERNELS:
            assert (KERNELS_DIR / family / kernel).is_file(), f"{family}/{kernel} is missing"


# ---- host: the same sources without the extensions (their plain C paths) -------------------------

@needs_cc
@pytest.mark.parametrize("family", ["dsp", "mve"])
def test_fallback_paths_are_bit_exact_on_the_host(family):
    """Compiled for a core without DSP/MVE (here the host), each optimized file falls back to plain C."""
    result = verify_model(shared_model("ad01_int8.tflite"), "host", samples=10, seed=2, kernels=family)
    assert result.matches == 10, result.details()
    _check_optimized_report(result.report, family, {"FULLY_CONNECTED"})


# ---- requantization helpers, probed on edge cases ----------------------------------------------

# A stand-in model with the generated C API whose "inference" runs the requantization helpers on
# its input cases (x, multiplier, shift) and writes, per case: mf_quant.h's reference,
# mf_requantize_fast() (mf_dsp.h), and mf_mve_requantize() (mf_mve.h; the reference again on a
# core without Helium).
PROBE_CASES = 96
PROBE_H = f"""\
#include <stdint.h>
#define MODEL_NUM_INPUTS 1
#define MODEL_NUM_OUTPUTS 1
#define MODEL_ARENA_BYTES {PROBE_CASES * 24}
extern const uint32_t model_input_bytes[MODEL_NUM_INPUTS];
extern const uint32_t model_output_bytes[MODEL_NUM_OUTPUTS];
void *model_input(int index);
const void *model_output(int index);
int model_invoke(void);
"""
PROBE_C = f"""\
#include <stddef.h>
#include "model.h"
#include "mf_quant.h"
#include "mf_dsp.h"
#include "mf_mve.h"
#define CASES {PROBE_CASES}
static int32_t cases[CASES * 3] __attribute__((aligned(16)));
static int32_t results[CASES * 3] __attribute__((aligned(16)));
const uint32_t model_input_bytes[MODEL_NUM_INPUTS] = {{ sizeof cases }};
const uint32_t model_output_bytes[MODEL_NUM_OUTPUTS] = {{ sizeof results }};
void *model_input(int index) {{ return index == 0 ? (void *)cases : NULL; }}
const void *model_output(int index) {{ return index == 0 ? (const void *)results : NULL; }}
int model_invoke(void)
{{
    int32_t x[CASES] __attribute__((aligned(16))), m[CASES] __attribute__((aligned(16))), s[CASES] __attribute__((aligned(16)));
    for (int i = 0; i < CASES; i++) {{
        x[i] = cases[3 * i];
        m[i] = cases[3 * i + 1];
        s[i] = cases[3 * i + 2];
        results[3 * i] = mf_multiply_by_quantized_multiplier(x[i], m[i], s[i]);
        results[3 * i + 1] = mf_requantize_fast(x[i], m[i], s[i]);
    }}
    for (int i = 0; i < CASES; i += 4) {{
#if MF_HAVE_MVE
        int32_t v[4] __attribute__((aligned(16)));
        vstrwq_s32(v, mf_mve_requantize(vldrwq_s32(x + i), vldrwq_s32(m + i), vldrwq_s32(s + i)));
        for (int k = 0; k < 4; k++) results[3 * (i + k) + 2] = v[k];
#else
        for (int k = 0; k < 4; k++) results[3 * (i + k) + 2] = results[3 * (i + k)];
#endif
    }}
    return 0;
}}
"""


def _probe_cases(seed: int) -> np.ndarray:
    """(x, multiplier, shift) triples: random ones, and exact ties of the final rounding shift."""
    rng = np.random.default_rng(seed)
    n = PROBE_CASES
    x = rng.integers(-2**31, 2**31, size=n, dtype=np.int64)
    mult = rng.integers(2**30, 2**31, size=n, dtype=np.int64)
    shift = rng.integers(-31, 32, size=n, dtype=np.int64)
    # Small sums with small shifts, the usual case.
    x[: n // 4] = rng.integers(-5000, 5000, size=n // 4)
    shift[: n // 4] = rng.integers(-12, 3, size=n // 4)
    # multiplier 2^30 halves an even x exactly, so x = 2 * (k * 2^e + 2^(e-1)) lands on a tie at shift -e,
    # for positive and negative k alike: where rounding half up and half away from zero differ.
    ties = slice(n // 4, n // 2)
    e = rng.integers(1, 20, size=n // 4)
    k = rng.integers(-2000, 2000, size=n // 4)
    x[ties] = 2 * (k * (1 << e) + (1 << (e - 1)))
    mult[ties] = 2**30
    shift[ties] = -e
    # Extremes: INT32_MIN/MAX inputs and multipliers (saturation of the doubling high multiply).
    extremes = [(-2**31, -2**31, 0), (-2**31, 2**31 - 1, 0), (2**31 - 1, 2**31 - 1, -31), (-2**31, 2**30, -31),
                (-2**31, -2**31, -5), (-1, 2**30, -1), (1, 2**30, -1), (0, 0, 0), (-2**31, 2**30, 31), (3, 2**31 - 1, 31)]
    for i, case in enumerate(extremes):
        x[n // 2 + i], mult[n // 2 + i], shift[n // 2 + i] = case
    return np.stack([x, mult, shift], axis=1).astype(np.int32)


def _run_probe(tmp_path: Path, board: str, samples: int = 4) -> np.ndarray:
    model_dir = tmp_path / "probe"
    model_dir.mkdir()
    (model_dir / "model.h").write_text(PROBE_H)
    (model_dir / "model.c").write_text(PROBE_C)
    for header in ("mf_quant.h", "mf_dsp.h", "mf_mve.h"):
        shutil.copy(KERNELS_DIR / header, model_dir / header)
    blob = b"".join(_probe_cases(seed).tobytes() for seed in range(samples))
    text, _ = run_aot(model_dir, tmp_path, board, blob)
    results = parse_results(text, [PROBE_CASES * 12])
    assert len(results) == samples
    return np.stack([np.frombuffer(r.outputs[0], dtype="<i4").reshape(PROBE_CASES, 3) for r in results])


def _check_probe(values: np.ndarray) -> None:
    reference, fast, vector = values[..., 0], values[..., 1], values[..., 2]
    np.testing.assert_array_equal(fast, reference, err_msg="mf_requantize_fast differs from mf_quant.h")
    np.testing.assert_array_equal(vector, reference, err_msg="mf_mve_requantize differs from mf_quant.h")


def test_probe_cases_include_ties():
    cases = _probe_cases(0).astype(np.int64)
    tie = cases[PROBE_CASES // 4]
    exponent = -tie[2]
    assert tie[1] == 2**30 and (tie[0] // 2) % (1 << exponent) == 1 << (exponent - 1)


@needs_cc
def test_requantization_helpers_on_the_host(tmp_path):
    _check_probe(_run_probe(tmp_path, "host"))


@pytest.mark.qemu
@needs_arm_tools
@pytest.mark.parametrize("board", ["mps2-an386", "mps3-an547"])
def test_requantization_helpers_under_qemu(tmp_path, board):
    """On the Cortex-M55 this runs the Helium requantization (VQRDMULH, VRSHL) on real MVE semantics."""
    _check_probe(_run_probe(tmp_path, board))


# ---- shared reference models ------------------------------------------------------------------

@pytest.mark.qemu
@needs_arm_tools
@pytest.mark.parametrize("board,family", OPTIMIZED_BOARDS)
def test_fully_connected_model_is_bit_exact_and_faster(board, family):
    compare_families(shared_model("ad01_int8.tflite"), board, family, samples=10)


@pytest.mark.qemu
@needs_arm_tools
def test_dsp_kernels_also_run_on_the_cortex_m55():
    """The M55 has the DSP extension too: the dsp family must be exact there as well."""
    result = verify_model(shared_model("ad01_int8.tflite"), "mps3-an547", samples=3, seed=1, kernels="dsp")
    assert result.matches == 3, result.details()


@pytest.mark.qemu
@needs_arm_tools
@pytest.mark.parametrize("board,family", OPTIMIZED_BOARDS)
@pytest.mark.parametrize("name", ["kws_ref_model.tflite", "micro_speech_quantized.tflite", "str_ww_ref_model.tflite"])
def test_conv_models_are_bit_exact_and_faster(name, board, family):
    """DS-CNN keyword spotting (CONV_2D 10x4 stride 2, 1x1, depthwise 3x3), micro_speech (depthwise
    with depth multiplier 8) and the streaming wake word model (1-D depthwise, 1x1)."""
    compare_families(shared_model(name), board, family, samples=3)


# ---- Keras models: the geometry cases -----------------------------------------------------------

def _strided(keras):
    """Stride 2 with SAME padding on odd and even sizes, depth multiplier 2, odd channel counts."""
    x = inputs = keras.Input((15, 12, 3))
    x = keras.layers.Conv2D(5, 3, strides=2, padding="same", activation="relu")(x)
    x = keras.layers.DepthwiseConv2D(3, strides=2, depth_multiplier=2, padding="same")(x)
    x = keras.layers.Conv2D(7, 1, activation="relu6")(x)
    x = keras.layers.DepthwiseConv2D(2, padding="valid")(x)
    x = keras.layers.Flatten()(x)
    return inputs, keras.layers.Dense(3)(x)


def _dilated(keras):
    """Dilation along both axes and along one, VALID and SAME, depth multiplier 3 (no full block)."""
    x = inputs = keras.Input((17, 14, 7))
    x = keras.layers.Conv2D(6, (3, 2), dilation_rate=2, padding="valid", activation="relu")(x)
    x = keras.layers.DepthwiseConv2D(3, dilation_rate=(2, 1), depth_multiplier=3, padding="same")(x)
    x = keras.layers.Conv2D(5, (2, 3), dilation_rate=(1, 2), padding="same")(x)
    x = keras.layers.Flatten()(x)
    return inputs, keras.layers.Dense(4)(x)


def _wide(keras):
    """Receptive fields too large for the im2col buffer (61 channels x 3x3), read row by row and tap
    by tap (dilated); channel counts that leave tails after blocks of 16, 8, 4 and 3."""
    x = inputs = keras.Input((7, 6, 61))
    a = keras.layers.Conv2D(21, 3, padding="same", activation="relu")(x)
    b = keras.layers.Conv2D(5, 3, dilation_rate=2, padding="same")(x)
    a = keras.layers.DepthwiseConv2D(3, padding="same")(a)
    b = keras.layers.DepthwiseConv2D(3, depth_multiplier=18, padding="same")(b)
    x = keras.layers.Concatenate()([a, b])
    x = keras.layers.Conv2D(37, 1)(x)
    x = keras.layers.Flatten()(x)
    return inputs, keras.layers.Dense(9)(x)


def _dense(keras):
    """FULLY_CONNECTED with several rows of input (batches), odd depths, and a single output."""
    x = inputs = keras.Input((4, 13))
    x = keras.layers.Dense(7, activation="relu")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(29)(x)
    return inputs, keras.layers.Dense(1)(x)


def _residual(keras):
    """Residual ADDs of same-shape tensors (Helium ADD), one with an odd element count."""
    x = inputs = keras.Input((9, 7, 5))
    y = keras.layers.Conv2D(5, 3, padding="same", activation="relu")(x)
    x = keras.layers.Add()([x, y])
    y = keras.layers.DepthwiseConv2D(3, padding="same")(x)
    x = keras.layers.Add()([y, x])
    x = keras.layers.Flatten()(x)
    return inputs, keras.layers.Dense(6)(x)


BUILDERS = {"strided": _strided, "dilated": _dilated, "wide": _wide, "dense": _dense, "residual": _residual}
# Each builder once with per-channel weight scales (mcuforge convert) and the conv ones once per tensor.
CASES = [(name, True) for name in BUILDERS] + [("strided", False), ("dilated", False)]


def _quantize_per_tensor(tf, model, calib: np.ndarray, out: Path) -> None:
    # Exported with a batch of one: from the Keras model itself the batch would stay dynamic (SHAPE ops).
    saved = out.with_suffix(".saved_model")
    model.export(str(saved), input_signature=[tf.TensorSpec([1, *calib.shape[1:]], tf.float32)], verbose=False)
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    converter._experimental_disable_per_channel = True  # one weight scale per tensor
    converter.representative_dataset = lambda: ([calib[i:i + 1]] for i in range(len(calib)))
    out.write_bytes(converter.convert())


@pytest.fixture(scope="module")
def keras_models(tmp_path_factory):
    tf = pytest.importorskip("tensorflow")
    from mcuforge.codegen.quantize import convert

    keras = tf.keras
    root = tmp_path_factory.mktemp("kernel_variants")
    models = {}
    for name, per_channel in CASES:
        keras.utils.set_random_seed(7)
        inputs, outputs = BUILDERS[name](keras)
        model = keras.Model(inputs, outputs)
        calib = np.random.default_rng(1).normal(size=(32, *inputs.shape[1:])).astype(np.float32)
        path = root / f"{name}_{'channel' if per_channel else 'tensor'}.tflite"
        if per_channel:
            model.save(root / f"{name}.keras")
            np.save(root / f"{name}_calib.npy", calib)
            convert(root / f"{name}.keras", path, calib=root / f"{name}_calib.npy")
        else:
            _quantize_per_tensor(tf, model, calib, path)
        models[(name, per_channel)] = path
    return models


@pytest.mark.slow
def test_keras_cases_cover_the_kernel_paths(keras_models):
    graph = load_tflite(keras_models[("strided", False)])
    weights = [graph.tensor(op.inputs[1]) for op in graph.operators if op.opcode in ("CONV_2D", "DEPTHWISE_CONV_2D")]
    assert weights and all(not w.per_channel for w in weights)
    graph = load_tflite(keras_models[("wide", True)])
    depthwise = [op for op in graph.operators if op.opcode == "DEPTHWISE_CONV_2D"]
    multipliers = sorted(graph.tensor(op.outputs[0]).shape[3] // graph.tensor(op.inputs[0]).shape[3] for op in depthwise)
    assert multipliers == [1, 18]
    dense = load_tflite(keras_models[("dense", True)])
    assert dense.op_counts().get("FULLY_CONNECTED") == 3
    assert load_tflite(keras_models[("residual", True)]).op_counts().get("ADD") == 2


@pytest.mark.slow
@needs_cc
@pytest.mark.parametrize("family", ["dsp", "mve"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{'channel' if c[1] else 'tensor'}")
def test_keras_fallback_paths_are_bit_exact_on_the_host(keras_models, case, family):
    result = verify_model(keras_models[case], "host", samples=10, seed=3, kernels=family)
    assert result.matches == 10, result.details()


@pytest.mark.slow
@pytest.mark.qemu
@needs_arm_tools
@pytest.mark.parametrize("board,family", OPTIMIZED_BOARDS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{'channel' if c[1] else 'tensor'}")
def test_keras_models_are_bit_exact_and_faster(keras_models, case, board, family):
    compare_families(keras_models[case], board, family, samples=10)
