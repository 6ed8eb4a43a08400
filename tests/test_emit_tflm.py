"""emit_tflm on the published reference models: aligned array, exact op resolver, measured arena."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mcuforge.codegen import emit_tflm as emit_module
from mcuforge.codegen.emit_tflm import emit_tflm, resolver_methods
from mcuforge.codegen.errors import McuforgeError
from mcuforge.codegen.reference import _allocates, run_reference
from mcuforge.codegen.tflite_model import Graph, Operator, load_tflite

MODELS_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "models"
MODELS = sorted(MODELS_DIR.glob("*.tflite")) if MODELS_DIR.is_dir() else []
needs_models = pytest.mark.skipif(not MODELS, reason=f"reference models not present in {MODELS_DIR}")

# The registration method of each operator the reference models use, as named in TFLM's
# tensorflow/lite/micro/micro_mutable_op_resolver.h.
TFLM_METHODS = {
    "FULLY_CONNECTED": "AddFullyConnected", "CONV_2D": "AddConv2D", "DEPTHWISE_CONV_2D": "AddDepthwiseConv2D",
    "AVERAGE_POOL_2D": "AddAveragePool2D", "RESHAPE": "AddReshape", "SOFTMAX": "AddSoftmax",
}


@pytest.fixture(scope="module")
def emitted(tmp_path_factory):
    if not MODELS:
        pytest.skip(f"reference models not present in {MODELS_DIR}")
    root = tmp_path_factory.mktemp("tflm")
    return {path.stem: (path, root / path.stem, emit_tflm(path, root / path.stem, name=path.stem)) for path in MODELS}


def _array_bytes(source: str, name: str) -> bytes:
    body = source.split(f"{name}_data[] = {{", 1)[1].split("};", 1)[0]
    return bytes(int(token, 16) for token in body.replace("\n", " ").split(",") if token.strip())


@needs_models
@pytest.mark.slow
def test_files_and_report(emitted):
    for stem, (model, out, report) in emitted.items():
        assert sorted(p.name for p in out.iterdir()) == sorted(
            [f"{stem}_data.h", f"{stem}_data.cc", f"{stem}_op_resolver.h", "report.json"])
        assert json.loads((out / "report.json").read_text()) == report
        graph = load_tflite(model)
        assert report["engine"] == "tflm"
        assert report["model_bytes"] == model.stat().st_size
        assert report["ops"] == graph.op_counts()
        for key, indices in (("input", graph.inputs), ("output", graph.outputs)):
            assert [entry["shape"] for entry in report[key]] == [list(graph.tensors[i].shape) for i in indices]
            assert all(entry["dtype"] == "int8" for entry in report[key])
            assert [entry["zero_point"] for entry in report[key]] == [int(graph.tensors[i].zero_point[0]) for i in indices]
            assert [entry["scale"] for entry in report[key]] == pytest.approx([float(graph.tensors[i].scale[0]) for i in indices])


@needs_models
@pytest.mark.slow
def test_array_is_aligned_and_equals_the_model(emitted):
    for stem, (model, out, report) in emitted.items():
        source = (out / f"{stem}_data.cc").read_text()
        assert f"alignas(16) const unsigned char {stem}_data[]" in source
        assert f"const unsigned int {stem}_data_len = {model.stat().st_size};" in source
        assert _array_bytes(source, stem) == model.read_bytes()
        header = (out / f"{stem}_data.h").read_text()
        assert 'extern "C"' in header and f"extern const unsigned char {stem}_data[];" in header


@needs_models
@pytest.mark.slow
def test_resolver_lists_exactly_the_ops(emitted):
    for stem, (model, out, report) in emitted.items():
        header = (out / f"{stem}_op_resolver.h").read_text()
        ops = set(load_tflite(model).op_counts())
        expected = sorted(TFLM_METHODS[op] for op in ops)
        called = sorted(line.split("resolver.")[1].split("(")[0] for line in header.splitlines() if "resolver.Add" in line)
        assert called == expected
        assert f"{stem}_op_count = {len(ops)};" in header
        assert f"tflite::MicroMutableOpResolver<{stem}_op_count>" in header
        assert report["op_resolver"]["op_count"] == len(ops)


@needs_models
@pytest.mark.slow
def test_arena_is_the_smallest_that_allocates(emitted):
    for stem, (model, out, report) in emitted.items():
        arena = report["arena_bytes"]
        assert _allocates(str(model), arena), f"{stem}: TFLM cannot allocate with the reported {arena} bytes"
        assert not _allocates(str(model), arena - 1), f"{stem}: TFLM allocates with {arena - 1} bytes too"
        assert f"#define {stem.upper()}_TFLM_ARENA_BYTES {arena}" in (out / f"{stem}_data.h").read_text()
        # Allocation succeeded in a subprocess, so it is safe here: the model also runs with it.
        graph = load_tflite(model)
        x = np.zeros(graph.tensors[graph.inputs[0]].shape, dtype=np.int8)
        (output,), = run_reference(model.read_bytes(), [[x]], arena_size=arena)
        assert output.shape == graph.tensors[graph.outputs[0]].shape


STUB_RESOLVER = """
#pragma once
typedef enum { kTfLiteOk = 0, kTfLiteError = 1 } TfLiteStatus;
namespace tflite {
template <unsigned int tOpCount>
class MicroMutableOpResolver {
 public:
  const char* names[tOpCount];
  unsigned int count = 0;
%s
 private:
  TfLiteStatus Register(const char* name) {
    if (count >= tOpCount) return kTfLiteError;  // as TFLM: the resolver is full
    names[count++] = name;
    return kTfLiteOk;
  }
};
}  // namespace tflite
"""


@needs_models
@pytest.mark.slow
@pytest.mark.skipif(not (shutil.which("gcc") and shutil.which("g++")), reason="needs the host gcc and g++")
def test_generated_sources_compile_and_hold_the_model(emitted, tmp_path):
    """The data files build as C++ and their header from C; the resolver registers what it should.

    TFLM itself is not on this machine, so a stand-in resolver with TFLM's method names
    records the registrations.
    """
    include = tmp_path / "include" / "tensorflow" / "lite" / "micro"
    include.mkdir(parents=True)
    methods = "\n".join(f'  TfLiteStatus {m}() {{ return Register("{m}"); }}' for m in sorted(TFLM_METHODS.values()))
    (include / "micro_mutable_op_resolver.h").write_text(STUB_RESOLVER % methods)
    c_lines = ["#include <stdio.h>", "#include <stdint.h>"]
    cc_lines = ["#include <cstdio>"]
    c_main, cc_calls = [], []
    sources = []
    for stem, (_, out, _) in emitted.items():
        c_lines.append(f'#include "{stem}_data.h"')
        cc_lines.append(f'#include "{stem}_op_resolver.h"')
        # FNV-1a over the array, computed by the compiled program from the C side.
        c_main.append(f'  {{ uint32_t h = 2166136261u; for (unsigned i = 0; i < {stem}_data_len; i++) '
                      f'{{ h ^= {stem}_data[i]; h *= 16777619u; }} '
                      f'printf("data {stem} %u %u %u\\n", {stem}_data_len, (unsigned)((uintptr_t){stem}_data % 16), h); }}')
        cc_calls.append(f'  {{ {stem}_op_resolver_t r; int s = {stem}_register_ops(r); printf("ops {stem} %d %u", s, r.count); '
                        f'for (unsigned i = 0; i < r.count; i++) printf(" %s", r.names[i]); printf("\\n"); }}')
        sources.append(out / f"{stem}_data.cc")
    (tmp_path / "main.c").write_text("\n".join(c_lines) + '\nvoid print_resolvers(void);\nint main(void) {\n'
                                     + "\n".join(c_main) + "\n  print_resolvers();\n  return 0;\n}\n")
    (tmp_path / "resolvers.cc").write_text("\n".join(cc_lines) + '\nextern "C" void print_resolvers(void) {\n'
                                           + "\n".join(cc_calls) + "\n}\n")
    includes = [f"-I{out}" for _, out, _ in emitted.values()] + [f"-I{tmp_path / 'include'}"]
    objects = []
    for source, compiler in [(tmp_path / "main.c", ["gcc", "-std=c99"]), (tmp_path / "resolvers.cc", ["g++", "-std=c++17"]),
                             *[(s, ["g++", "-std=c++11"]) for s in sources]]:
        obj = tmp_path / (source.name + ".o")
        subprocess.run([*compiler, "-Wall", "-Werror", "-c", str(source), "-o", str(obj), *includes],
                       check=True, capture_output=True, text=True)
        objects.append(str(obj))
    subprocess.run(["g++", *objects, "-o", str(tmp_path / "check")], check=True, capture_output=True)
    lines = subprocess.run([str(tmp_path / "check")], check=True, capture_output=True, text=True).stdout.splitlines()
    results = {(line.split()[0], line.split()[1]): line.split()[2:] for line in lines}
    for stem, (model, _, _) in emitted.items():
        data = model.read_bytes()
        h = 2166136261
        for byte in data:
            h = ((h ^ byte) * 16777619) & 0xFFFFFFFF
        assert results[("data", stem)] == [str(len(data)), "0", str(h)]
        status, count, *names = results[("ops", stem)]
        ops = load_tflite(model).op_counts()
        assert status == "0" and int(count) == len(ops)
        assert sorted(names) == sorted(TFLM_METHODS[op] for op in ops)


def _graph(opcodes: list[str]) -> Graph:
    return Graph("custom.tflite", [], [Operator(i, code, [], []) for i, code in enumerate(opcodes)], [], [])


def test_resolver_methods_map_names_and_custom_ops():
    methods = resolver_methods(_graph(["CONV_2D", "CUSTOM:ethos-u", "CONV_2D", "MAX_POOL_2D", "QUANTIZE"]))
    assert methods == [("CONV_2D", "AddConv2D"), ("CUSTOM:ethos-u", "AddEthosU"),
                       ("MAX_POOL_2D", "AddMaxPool2D"), ("QUANTIZE", "AddQuantize")]


def test_op_without_tflm_kernel_is_refused():
    with pytest.raises(McuforgeError) as err:
        resolver_methods(_graph(["FULLY_CONNECTED", "RELU", "LSTM", "CUSTOM:my_op"]))
    assert "LSTM (first at operator 2)" in err.value.what
    assert "CUSTOM:my_op (first at operator 3)" in err.value.what
    assert "FULLY_CONNECTED" in err.value.fix and "UNIDIRECTIONAL_SEQUENCE_LSTM" in err.value.fix
    assert err.value.where == "custom.tflite"


@needs_models
def test_failed_run_leaves_previous_output_intact(tmp_path, monkeypatch):
    model = MODELS_DIR / "hello_world_int8.tflite"
    out = tmp_path / "tflm"
    emit_tflm(model, out, name="hello")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    (out / "keep.txt").write_text("the user's file")

    truncated = tmp_path / "truncated.tflite"
    truncated.write_bytes(model.read_bytes()[:300])
    with pytest.raises(McuforgeError):
        emit_tflm(truncated, out, name="hello")

    def fail(path):
        raise McuforgeError("arena measurement failed", where=str(path))
    monkeypatch.setattr(emit_module, "measure_tflm_arena", fail)
    with pytest.raises(McuforgeError):
        emit_tflm(MODELS_DIR / "kws_ref_model.tflite", out, name="hello")

    after = {p.name: p.read_bytes() for p in out.iterdir() if p.name != "keep.txt"}
    assert after == before
    assert (out / "keep.txt").read_text() == "the user's file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tflm", "truncated.tflite"]  # no staging dirs left


@needs_models
@pytest.mark.slow
def test_ethos_u_model_needs_a_given_arena(tmp_path):
    vela = Path(sys.executable).parent / "vela"
    if not vela.exists():
        pytest.skip("Vela (ethos-u-vela) is not installed next to this Python")
    subprocess.run([str(vela), str(MODELS_DIR / "hello_world_int8.tflite"), "--accelerator-config", "ethos-u55-128",
                    "--output-dir", str(tmp_path / "vela")], check=True, capture_output=True, timeout=300)
    npu_model = tmp_path / "vela" / "hello_world_int8_vela.tflite"
    assert load_tflite(npu_model).op_counts() == {"CUSTOM:ethos-u": 1}
    with pytest.raises(McuforgeError) as err:
        emit_tflm(npu_model, tmp_path / "out", name="npu")
    assert "ethos-u" in err.value.what and "ethos-u engine" in err.value.fix
    assert not (tmp_path / "out").exists()

    report = emit_tflm(npu_model, tmp_path / "out", name="npu", arena_bytes=4096)
    assert report["arena_bytes"] == 4096 and report["arena_source"] == "given by the caller"
    assert report["op_resolver"]["methods"] == ["AddEthosU"]
    assert "resolver.AddEthosU()" in (tmp_path / "out" / "npu_op_resolver.h").read_text()
