"""The optimized kernel families (dsp: Arm SIMD32/SMLAD; mve: Helium) against the portable one.

Every family must give TFLM's outputs bit for bit. Under QEMU -icount the instruction count of an
inference is deterministic, so an optimized family is also checked to run fewer instructions than
the portable one on the same board: that is what makes it an optimization.
"""
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from mcuforge.codegen.aot_ops.conv_common import in_place_scratch_bytes, row_window_in_place
from mcuforge.codegen.aot_ops.window import Window, leading_padding, out_size
from mcuforge.codegen.emit_aot import KERNELS_DIR, PORTABLE_FALLBACK_SUFFIX
from mcuforge.codegen.tflite_model import load_tflite
from mcuforge.host_tools.console_protocol import parse_results
from mcuforge.host_tools.verify import run_aot, verify_model

from conftest import shared_model

OPTIMIZED_KERNELS = ["fully_connected_s8.c", "conv_s8.c", "depthwise_conv_s8.c", "average_pool_s8.c",
                     "conv_in_place.c"]
# (board, optimized family): a Cortex-M4 with the DSP extension, a Cortex-M55 with Helium.
OPTIMIZED_BOARDS = [("mps2-an386", "dsp"), ("mps3-an547", "mve")]

needs_arm_tools = pytest.mark.skipif(
    shutil.which("arm-none-eabi-gcc") is None or shutil.which("qemu-system-arm") is None,
    reason="arm-none-eabi-gcc and qemu-system-arm are needed (Debian: gcc-arm-none-eabi, qemu-system-arm)")
needs_cc = pytest.mark.skipif(shutil.which("cc") is None, reason="no host C compiler (cc)")


def _check_optimized_report(report: dict, family: str, ops: set[str]) -> None:
    assert report["kernels"] == family
    used = {"FULLY_CONNECTED": "fully_connected_s8.c", "CONV_2D": "conv_s8.c", "DEPTHWISE_CONV_2D": "depthwise_conv_s8.c",
            "AVERAGE_POOL_2D": "average_pool_s8.c"}
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


def test_every_optimized_family_has_its_kernels():
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


# ---- the kernel harness -------------------------------------------------------------------------
# A stand-in model that runs the portable and an optimized family's kernels side by side.
#
# The generated "model" has the AOT C API (model.h: inputs, outputs, model_invoke), so the firmware
# and the host runner build and run it like any model. Its inference runs every case twice, once
# with the portable kernel and once with the optimized one, on the same input bytes (the input
# vector), times each call with port_cycles(), and writes both outputs and both times. Both kernel
# families are compiled into one image: each kernel source is included by a small wrapper that
# renames its entry points (ref_* for portable, opt_* for the family), so their static helpers stay
# apart.
#
# Cases are random geometries and requantization constants (every edge the kernels branch on:
# strides, dilation, padding, groups, depth multipliers, channel tails, positive and zero shifts,
# biases too large for the fast requantization, clamps), plus named cases shaped like the layers of
# the reference models, which the speed tests compare.

INPUT_BYTES = 16384
MAX_MACS = 150_000
# Kernel sources wrapped for each side: (wrapper, kernel file, entry points renamed).
CONV = ["mf_conv_s8", "mf_conv_s8_runs_in_place"]
DEPTHWISE = ["mf_depthwise_conv_s8"]
IN_PLACE = ["mf_conv_s8_in_place", "mf_depthwise_conv_s8_in_place"]
WRAPPED = [
    ("conv", "conv_s8.c", CONV),
    ("depthwise", "depthwise_conv_s8.c", DEPTHWISE),
    ("pool", "average_pool_s8.c", ["mf_average_pool_s8"]),
    ("conv_in_place", "conv_in_place.c", IN_PLACE + CONV),
    ("depthwise_in_place", "depthwise_conv_in_place.c", IN_PLACE + DEPTHWISE),
]


@dataclass
class Case:
    name: str
    kind: str                      # conv, depthwise, pool, conv_in_place, depthwise_in_place
    win: Window
    in_bytes: int
    out_bytes: int
    fields: dict = field(default_factory=dict)   # C initializers of the params struct, besides win
    arrays: dict = field(default_factory=dict)   # name -> (C type, values)
    scratch: int = 0


def _window(in_h, in_w, in_c, out_c, fh, fw, sh, sw, dh, dw, padding, batches=1) -> Window | None:
    oh, ow = out_size(padding, in_h, fh, sh, dh), out_size(padding, in_w, fw, sw, dw)
    if oh <= 0 or ow <= 0:
        return None
    if padding == "SAME":
        ph, pw = leading_padding(sh, dh, in_h, fh, oh), leading_padding(sw, dw, in_w, fw, ow)
    else:
        ph = pw = 0
    return Window(batches, in_h, in_w, in_c, oh, ow, out_c, fh, fw, sh, sw, dh, dw, ph, pw)


def _requant(rng, channels: int, fan_in: int, big_bias: bool, odd: bool) -> tuple[dict, dict]:
    """Bias, multipliers, shifts, offsets and clamp: usual values, and with `odd` the edges."""
    mult = rng.integers(2**30, 2**31, size=channels, dtype=np.int64)
    shift = rng.integers(-11, 0, size=channels)
    bias = rng.integers(-fan_in * 2000, fan_in * 2000 + 1, size=channels)
    if odd:
        picks = rng.integers(0, 6, size=channels)
        shift = np.where(picks == 0, 0, shift)
        shift = np.where(picks == 1, rng.integers(1, 4, size=channels), shift)
        shift = np.where(picks == 2, -rng.integers(20, 32, size=channels), shift)
        mult = np.where(picks == 3, 2**30, mult)
    if big_bias:
        bias = np.where(rng.random(channels) < 0.5, bias, rng.integers(-2**30, 2**30, size=channels))
    clamp = rng.integers(0, 3)
    out_off = int(rng.integers(-128, 128))
    act = [(-128, 127), (out_off, 127), tuple(sorted(rng.integers(-128, 128, size=2)))][clamp]
    fields = {"input_offset": int(rng.integers(-127, 129)), "output_offset": out_off,
              "act_min": int(act[0]), "act_max": int(act[1])}
    arrays = {"bias": ("int32_t", bias.astype(np.int32)), "multiplier": ("int32_t", mult.astype(np.int32)),
              "shift": ("int32_t", shift.astype(np.int32))}
    return fields, arrays


def conv_case(rng, name, win: Window, filter_in_c: int | None = None, big_bias=False, odd=False,
              kind="conv") -> Case:
    fic = filter_in_c or win.in_c
    fields, arrays = _requant(rng, win.out_c, win.filter_h * win.filter_w * fic, big_bias, odd)
    arrays["filter"] = ("int8_t", rng.integers(-128, 128, size=win.out_c * win.filter_h * win.filter_w * fic))
    fields["filter_in_c"] = fic
    case = Case(name, kind, win, win.batches * win.in_h * win.in_w * win.in_c,
                win.batches * win.out_h * win.out_w * win.out_c, fields, arrays)
    if kind.endswith("in_place"):
        case.scratch = in_place_scratch_bytes(win)
    return case


def depthwise_case(rng, name, win: Window, big_bias=False, odd=False, kind="depthwise") -> Case:
    fields, arrays = _requant(rng, win.out_c, win.filter_h * win.filter_w, big_bias, odd)
    arrays["filter"] = ("int8_t", rng.integers(-128, 128, size=win.filter_h * win.filter_w * win.out_c))
    fields["depth_multiplier"] = win.out_c // win.in_c
    case = Case(name, kind, win, win.batches * win.in_h * win.in_w * win.in_c,
                win.batches * win.out_h * win.out_w * win.out_c, fields, arrays)
    if kind.endswith("in_place"):
        case.scratch = in_place_scratch_bytes(win)
    return case


def pool_case(rng, name, win: Window) -> Case:
    lo, hi = sorted(int(v) for v in rng.integers(-128, 128, size=2))
    act = (-128, 127) if rng.random() < 0.5 else (lo, hi)
    return Case(name, "pool", win, win.batches * win.in_h * win.in_w * win.in_c,
                win.batches * win.out_h * win.out_w * win.out_c, {"act_min": act[0], "act_max": act[1]})


# Layers shaped like those of the reference models (kws_ref_model, MobileNet, ResNet-8), for the
# per-layer-type speed comparison: (name, builder).
def layer_cases(rng) -> list[Case]:
    return [
        conv_case(rng, "pointwise 64->64 (DS-CNN)", _window(25, 5, 64, 64, 1, 1, 1, 1, 1, 1, "SAME")),
        conv_case(rng, "pointwise 64->64 in place", _window(25, 5, 64, 64, 1, 1, 1, 1, 1, 1, "SAME"),
                  kind="conv_in_place"),
        conv_case(rng, "conv 10x4 stride 2, 1->64 (DS-CNN stem)", _window(49, 10, 1, 64, 10, 4, 2, 2, 1, 1, "SAME")),
        conv_case(rng, "conv 3x3, 16->16 (ResNet)", _window(12, 12, 16, 16, 3, 3, 1, 1, 1, 1, "SAME")),
        depthwise_case(rng, "depthwise 3x3, 64 (DS-CNN)", _window(25, 5, 64, 64, 3, 3, 1, 1, 1, 1, "SAME")),
        depthwise_case(rng, "depthwise 3x3, 64 in place", _window(25, 5, 64, 64, 3, 3, 1, 1, 1, 1, "SAME"),
                       kind="depthwise_in_place"),
        depthwise_case(rng, "depthwise 3x3 stride 2, 32 (MobileNet)", _window(12, 12, 32, 32, 3, 3, 2, 2, 1, 1, "SAME")),
        depthwise_case(rng, "depthwise multiplier 8 (micro_speech)", _window(10, 8, 1, 8, 10, 8, 2, 2, 1, 1, "SAME")),
        pool_case(rng, "average pool 25x5, 64 (DS-CNN)", _window(25, 5, 64, 64, 25, 5, 1, 1, 1, 1, "VALID")),
    ]


def case_macs(case: Case) -> int:
    w = case.win
    taps = w.filter_h * w.filter_w * (case.fields.get("filter_in_c", 1) if case.kind.startswith("conv") else 1)
    return w.batches * w.out_h * w.out_w * w.out_c * taps


def random_cases(rng, count: int) -> list[Case]:
    cases = []
    while len(cases) < count:
        kind = ["conv", "conv", "depthwise", "depthwise", "pool", "conv_in_place", "depthwise_in_place"][
            rng.integers(0, 7)]
        in_h, in_w = (int(v) for v in rng.integers(1, 11, size=2))
        fh, fw = (int(v) for v in rng.integers(1, 6, size=2))
        if rng.random() < 0.2:
            fh, fw = 1, 1  # 1x1: the pointwise paths (in place without scratch when the stride is 1 too)
            if rng.random() < 0.5:
                stride = (1, 1)
        stride = (int(rng.choice([1, 1, 2, 3])), int(rng.choice([1, 1, 2, 3])))
        dilation = (int(rng.choice([1, 1, 1, 2])), int(rng.choice([1, 1, 1, 2])))
        padding = "SAME" if rng.random() < 0.6 else "VALID"
        batches = 2 if rng.random() < 0.1 else 1
        odd, big_bias = rng.random() < 0.4, rng.random() < 0.3
        name = f"random {len(cases)}"
        if kind in ("conv", "conv_in_place"):
            groups = int(rng.choice([1, 1, 1, 2, 3])) if kind == "conv" else 1
            fic = int(rng.integers(1, 40)) if rng.random() < 0.8 else int(rng.integers(40, 90))
            out_c = groups * int(rng.integers(1, 24 if groups > 1 else 70))
            in_c = fic * groups
            if kind == "conv_in_place":
                stride, out_c = (1, stride[1]), min(out_c, in_c)
            win = _window(in_h, in_w, in_c, out_c, fh, fw, *stride, *dilation, padding, batches)
            if win is None or (kind == "conv_in_place" and not row_window_in_place(win)):
                continue
            cases.append(conv_case(rng, name, win, fic, big_bias, odd, kind))
        elif kind in ("depthwise", "depthwise_in_place"):
            in_c = int(rng.integers(1, 70)) if rng.random() < 0.8 else 1
            dm = 1 if kind == "depthwise_in_place" or rng.random() < 0.6 else int(rng.choice([2, 3, 5, 8, 18]))
            if kind == "depthwise_in_place":
                stride = (1, stride[1])
            win = _window(in_h, in_w, in_c, in_c * dm, fh, fw, *stride, *dilation, padding, batches)
            if win is None or (kind == "depthwise_in_place" and not row_window_in_place(win)):
                continue
            cases.append(depthwise_case(rng, name, win, big_bias, odd, kind))
        else:
            in_c = int(rng.integers(1, 70))
            if rng.random() < 0.2:
                in_h, in_w, fh, fw = 18, 18, 18, 18  # more than 256 taps: the int32 sums
            win = _window(in_h, in_w, in_c, in_c, fh, fw, *stride, 1, 1, padding, batches)
            if win is None:
                continue
            cases.append(pool_case(rng, name, win))
        last = cases[-1] if cases else None
        if last is not None and (last.in_bytes > INPUT_BYTES or last.out_bytes > INPUT_BYTES
                                 or last.in_bytes + last.scratch > INPUT_BYTES or case_macs(last) > MAX_MACS):
            cases.pop()
    return cases


PARAM_TYPES = {"conv": "mf_conv_params", "conv_in_place": "mf_conv_params", "depthwise": "mf_depthwise_conv_params",
               "depthwise_in_place": "mf_depthwise_conv_params", "pool": "mf_pool_params"}
CALLS = {
    "conv": "{side}_conv_s8(&case{i}, input, out)",
    "depthwise": "{side}_depthwise_conv_s8(&case{i}, input, out)",
    "pool": "{side}_average_pool_s8(&case{i}, input, out)",
    "conv_in_place": "{side}_conv_s8_in_place(&case{i}, work, work + {in_bytes})",
    "depthwise_in_place": "{side}_depthwise_conv_s8_in_place(&case{i}, work, work + {in_bytes})",
}


def _c_array(name: str, ctype: str, values) -> str:
    body = ", ".join(str(int(v)) for v in np.asarray(values).ravel())
    return f"static const {ctype} {name}[] __attribute__((aligned(16))) = {{ {body} }};\n"


def harness_sources(cases: list[Case]) -> tuple[str, str, int]:
    """model.h, model.c, and the output bytes of one inference."""
    out_total = sum(2 * c.out_bytes for c in cases) + 8 * len(cases)
    header = f"""#include <stdint.h>
#define MODEL_NUM_INPUTS 1
#define MODEL_NUM_OUTPUTS 1
#define MODEL_ARENA_BYTES {INPUT_BYTES}
extern const uint32_t model_input_bytes[MODEL_NUM_INPUTS];
extern const uint32_t model_output_bytes[MODEL_NUM_OUTPUTS];
void *model_input(int index);
const void *model_output(int index);
int model_invoke(void);
"""
    decls = []
    for side in ("ref", "opt"):
        decls += [f"void {side}_conv_s8(const mf_conv_params *p, const int8_t *input, int8_t *output);",
                  f"void {side}_depthwise_conv_s8(const mf_depthwise_conv_params *p, const int8_t *input, int8_t *output);",
                  f"void {side}_average_pool_s8(const mf_pool_params *p, const int8_t *input, int8_t *output);",
                  f"void {side}_conv_s8_in_place(const mf_conv_params *p, int8_t *data, int8_t *scratch);",
                  f"void {side}_depthwise_conv_s8_in_place(const mf_depthwise_conv_params *p, int8_t *data, int8_t *scratch);"]
    body = [f"""#include <stddef.h>
#include <string.h>
#include "model.h"
#include "conv_s8.h"
#include "depthwise_conv_s8.h"
#include "pooling_s8.h"
uint64_t port_cycles(void);
{chr(10).join(decls)}
static int8_t input[{INPUT_BYTES}] __attribute__((aligned(16)));
static int8_t work[{INPUT_BYTES}] __attribute__((aligned(16)));
static uint8_t results[{out_total}] __attribute__((aligned(16)));
const uint32_t model_input_bytes[MODEL_NUM_INPUTS] = {{ sizeof input }};
const uint32_t model_output_bytes[MODEL_NUM_OUTPUTS] = {{ sizeof results }};
void *model_input(int index) {{ return index == 0 ? (void *)input : NULL; }}
const void *model_output(int index) {{ return index == 0 ? (const void *)results : NULL; }}
"""]
    for i, c in enumerate(cases):
        for key, (ctype, values) in c.arrays.items():
            body.append(_c_array(f"case{i}_{key}", ctype, values))
        fields = [f".win = {c.win.c_initializer()}"] + [f".{k} = {v}" for k, v in c.fields.items()]
        fields += [f".{k} = case{i}_{k}" for k in c.arrays]
        body.append(f"static const {PARAM_TYPES[c.kind]} case{i} = {{ {', '.join(fields)} }};\n")
    body.append("int model_invoke(void)\n{\n    uint8_t *r = results;\n    uint64_t t;\n    uint32_t dt;\n")
    for i, c in enumerate(cases):
        in_place = c.kind.endswith("in_place")
        for side in ("ref", "opt"):
            call = CALLS[c.kind].format(side=side, i=i, in_bytes=c.in_bytes)
            prep = f"memcpy(work, input, {c.in_bytes}); " if in_place else ""
            out = "int8_t *out = (int8_t *)r; " if not in_place else ""
            copy = f"memcpy(r, work, {c.out_bytes}); " if in_place else ""
            body.append(f"    {{ {out}{prep}t = port_cycles(); {call}; dt = (uint32_t)(port_cycles() - t); "
                        f"{copy}r += {c.out_bytes}; memcpy(results + {out_total - 8 * len(cases)} + {8 * i + (4 if side == 'opt' else 0)}, &dt, 4); }}\n")
    body.append("    return 0;\n}\n")
    return header, "".join(body), out_total


def write_harness_model(model_dir: Path, family: str, cases: list[Case]) -> int:
    """The stand-in model's sources in model_dir; returns its output bytes."""
    model_dir.mkdir(parents=True, exist_ok=True)
    for header in KERNELS_DIR.glob("*.h"):
        shutil.copy(header, model_dir / header.name)
    for side, kernel_family in (("ref", "portable"), ("opt", family)):
        for wrapper, source, names in WRAPPED:
            path = KERNELS_DIR / kernel_family / source
            if not path.exists():
                path = KERNELS_DIR / "portable" / source
            # A .h name, so that the build copies it without compiling it on its own.
            impl = f"{side}_{Path(source).stem}_impl.h"
            (model_dir / impl).write_text(path.read_text())
            # An optimized kernel includes the portable one as its fallback, as emit_aot ships it.
            (model_dir / f"{Path(source).stem}{PORTABLE_FALLBACK_SUFFIX}").write_text(
                (KERNELS_DIR / "portable" / source).read_text())
            renames = "".join(f"#define {n} {side}_{n[3:]}\n" for n in names)
            (model_dir / f"{side}_{wrapper}.c").write_text(f'{renames}#include "{impl}"\n')
    header, source, out_total = harness_sources(cases)
    (model_dir / "model.h").write_text(header)
    (model_dir / "model.c").write_text(source)
    return out_total


def harness_results(cases: list[Case], output: bytes) -> list[tuple[bytes, bytes, int, int]]:
    """Per case: portable output, optimized output, portable time, optimized time."""
    pos, results = 0, []
    times = np.frombuffer(output[len(output) - 8 * len(cases):], dtype="<u4").reshape(-1, 2)
    for c, (t_ref, t_opt) in zip(cases, times):
        ref = output[pos:pos + c.out_bytes]
        opt = output[pos + c.out_bytes:pos + 2 * c.out_bytes]
        pos += 2 * c.out_bytes
        results.append((ref, opt, int(t_ref), int(t_opt)))
    return results


# ---- kernel by kernel: random geometries and the reference models' layers ------------------------
#
# py builds one image with the portable kernels and a family's optimized ones, runs
# both on the same input bytes and returns both outputs and times: every case must match bit for
# bit. The random cases cover the branches of the optimized paths (strides, dilation, padding,
# groups, depth multipliers, channel tails, in-place drivers, shifts of either sign, biases too
# large for the fast requantization, clamps); the layer cases are shaped like the reference models'
# layers, and under QEMU each must also take fewer instructions than the portable kernel.

def _run_harness(tmp_path: Path, board: str, family: str, cases) -> list:
    out_bytes = write_harness_model(tmp_path / "model", family, cases)
    blob = np.random.default_rng(17).integers(-128, 128, size=INPUT_BYTES).astype(np.int8).tobytes()
    text, _ = run_aot(tmp_path / "model", tmp_path, board, blob)
    results = parse_results(text, [out_bytes])
    assert len(results) == 1, text[-2000:]
    return harness_results(cases, results[0].outputs[0])


def _check_matches(cases, results) -> None:
    bad = [f"{c.name} ({c.kind}, {c.win}, {c.fields})" for c, (ref, opt, _, _) in zip(cases, results) if ref != opt]
    assert not bad, f"{len(bad)} of {len(cases)} cases differ from the portable kernels:\n" + "\n".join(bad[:10])


@needs_cc
@pytest.mark.parametrize("family", ["dsp", "mve"])
def test_kernels_match_portable_on_the_host(tmp_path, family):
    """The plain C paths that the optimized files fall back to without the extensions."""
    rng = np.random.default_rng(101)
    cases = layer_cases(rng) + random_cases(rng, 200)
    _check_matches(cases, _run_harness(tmp_path, "host", family, cases))


@pytest.mark.qemu
@needs_arm_tools
@pytest.mark.parametrize("board,family", OPTIMIZED_BOARDS + [("mps3-an547", "dsp")])
@pytest.mark.parametrize("seed", [102, 103])
def test_kernels_match_portable_under_qemu(tmp_path, board, family, seed):
    rng = np.random.default_rng(seed)
    cases = random_cases(rng, 120)
    _check_matches(cases, _run_harness(tmp_path, board, family, cases))


@pytest.mark.qemu
@needs_arm_tools
@pytest.mark.parametrize("board,family", OPTIMIZED_BOARDS + [("mps3-an547", "dsp")])
def test_optimized_kernels_beat_portable_layer_by_layer(tmp_path, board, family):
    """Pointwise, strided and 3x3 convolutions, depthwise (3x3, strided, depth multiplier 8, in place),
    average pooling: each optimized kernel, timed alone, runs fewer instructions than the portable one."""
    cases = layer_cases(np.random.default_rng(104))
    results = _run_harness(tmp_path, board, family, cases)
    _check_matches(cases, results)
    slower = [f"{c.name}: optimized {t_opt} ticks, portable {t_ref}" for c, (_, _, t_ref, t_opt) in zip(cases, results)
              if not t_opt < t_ref]
    assert not slower, "\n".join(slower)


@pytest.mark.qemu
@needs_arm_tools
@pytest.mark.skipif(shutil.which("make") is None, reason="make is needed to rebuild the firmware with other flags")
@pytest.mark.parametrize("board,family", OPTIMIZED_BOARDS)
@pytest.mark.parametrize("level", ["-Os", "-O0"])
def test_kernels_match_portable_at_other_optimization_levels(tmp_path, board, family, level):
    """Zephyr builds with -Os, debug builds with -O0 (where the Helium kernels take their intrinsic
    loops instead of the assembly): inline assembly that misstates what it reads or writes shows up
    when the register allocation changes. The rendered project's Makefile is rebuilt with `level`."""
    import subprocess

    from mcuforge.boards import load_board
    from mcuforge.host_tools import firmware
    from mcuforge.host_tools.qemu import qemu_command

    rng = np.random.default_rng(105)
    cases = layer_cases(rng) + random_cases(rng, 80)
    out_bytes = write_harness_model(tmp_path / "model", family, cases)
    project = firmware.render_baremetal_project(load_board(board), tmp_path / "model", tmp_path / "firmware")
    makefile = project / "Makefile"
    lines = makefile.read_text().splitlines()
    lines = [line.replace(" -O2 ", f" {level} ") if line.startswith("CFLAGS") else line for line in lines]
    assert any(level in line for line in lines if line.startswith("CFLAGS")), "no -O2 in the Makefile's CFLAGS"
    makefile.write_text("\n".join(lines) + "\n")
    build = subprocess.run(["make", "-j4"], cwd=project, capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-3000:]
    (tmp_path / "inputs.bin").write_bytes(
        np.random.default_rng(17).integers(-128, 128, size=INPUT_BYTES).astype(np.int8).tobytes())
    run = subprocess.run(qemu_command(load_board(board), project / "build" / "firmware.elf"), cwd=tmp_path,
                         capture_output=True, timeout=300)
    results = parse_results(run.stdout.decode(errors="replace"), [out_bytes])
    assert len(results) == 1, run.stdout[-2000:]
    _check_matches(cases, harness_results(cases, results[0].outputs[0]))


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
