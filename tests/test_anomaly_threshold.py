"""The autoencoder's anomaly threshold: calibrated on the host on normal data
(codegen/anomaly_threshold.py), exported in the MicroPython model file's metadata block
(codegen/emit_micropython.py, docs/micropython-model-format.md), and used on the device, under
real MicroPython, by mf_anomaly.Reconstruction.from_model(mf_model.load(...))."""
from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import numpy as np
import pytest

from conftest import shared_model
from mcuforge.codegen.anomaly_threshold import (THRESHOLD_KEY, calibrate_reconstruction_threshold,
                                                reconstruction_errors)
from mcuforge.codegen.emit_micropython import (DIGEST_BYTES, FORMAT_VERSION, METADATA_MAX_BYTES, decode_metadata,
                                               encode_metadata, read_metadata, render_model_file)
from mcuforge.codegen.errors import McuforgeError
from mcuforge.codegen.reference import run_reference
from mcuforge.codegen.tflite_model import load_tflite
from mcuforge.host_tools.micropython_wasm import run_micropython

HEAP = 8 * 1024 * 1024
AD01 = "ad01_int8.tflite"
PASSES = 4          # normal data: random inputs sent through the autoencoder this many times


def _ad01() -> Path:
    return shared_model(AD01)


def _run_model(raw: bytes, x: np.ndarray) -> np.ndarray:
    return np.stack([o[0].reshape(-1) for o in run_reference(raw, [[s.reshape(1, -1)] for s in x])])


def _normal(count: int, seed: int) -> np.ndarray:
    """Deterministic 'normal operation' for ad01: random int8 inputs run through the model a few
    times. Each pass moves a sample closer to what the autoencoder reconstructs well."""
    raw = _ad01().read_bytes()
    x = np.random.default_rng(seed).integers(-128, 128, size=(count, 640)).astype(np.int8)
    for _ in range(PASSES):
        x = _run_model(raw, x)
    return x


def _noisy(x: np.ndarray, seed: int, sigma: float = 30.0) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0.0, sigma, x.shape).round()
    return np.clip(x.astype(np.int64) + noise, -128, 127).astype(np.int8)


def _quantization(path: Path):
    graph = load_tflite(path)
    inp, out = graph.tensors[graph.inputs[0]], graph.tensors[graph.outputs[0]]
    return (float(inp.scale[0]), int(inp.zero_point[0])), (float(out.scale[0]), int(out.zero_point[0]))


@pytest.fixture(scope="module")
def normal_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("normal") / "normal.npy"
    np.save(path, _normal(160, seed=1))
    return path


# -- calibration on the host -------------------------------------------------------------------------

def test_calibrates_a_percentile_of_the_normal_reconstruction_errors(normal_file):
    result = calibrate_reconstruction_threshold(_ad01(), normal_file, percentile=99.5)
    x = np.load(normal_file)
    in_q, out_q = _quantization(_ad01())
    errors = reconstruction_errors(x, _run_model(_ad01().read_bytes(), x), in_q, out_q)
    assert result["key"] == THRESHOLD_KEY and result["metric"] == "mse" and result["samples"] == 160
    assert result["threshold"] == pytest.approx(float(np.percentile(errors, 99.5)), rel=1e-12)
    assert result["min"] <= result["mean"] <= result["threshold"] <= result["max"]
    assert result["above_threshold"] == int(np.count_nonzero(errors > result["threshold"])) == 1
    assert result["std"] == pytest.approx(float(errors.std()))
    assert result["metadata"] == {"anomaly_threshold": result["threshold"], "anomaly_metric": "mse",
                                  "anomaly_percentile": 99.5, "anomaly_samples": 160}
    # The same samples as floats (model units), quantized with the input's scale: the same result.
    floats = ((x.astype(np.float32) - in_q[1]) * np.float32(in_q[0])).astype(np.float32)
    as_float = calibrate_reconstruction_threshold(_ad01(), floats, percentile=99.5)
    assert as_float["threshold"] == result["threshold"] and as_float["clipped_values"] == 0
    # An .npz under key x, and samples with the model's leading batch dimension of 1.
    npz = normal_file.with_name("normal.npz")
    np.savez(npz, x=x.reshape(-1, 1, 640), y=np.zeros(len(x)))
    assert calibrate_reconstruction_threshold(_ad01(), npz, percentile=99.5)["threshold"] == result["threshold"]
    higher = calibrate_reconstruction_threshold(_ad01(), x, percentile=100)
    assert higher["threshold"] == result["max"] and higher["above_threshold"] == 0
    mae = calibrate_reconstruction_threshold(_ad01(), x, metric="mae")
    assert mae["metric"] == "mae" and mae["threshold"] < result["threshold"]


def test_errors_are_summed_in_order_like_the_device():
    a = np.array([[100, -100, 3]], np.int8)
    b = np.array([[-100, 100, 2]], np.int8)
    total = 0.0
    for x, y in zip(a[0].tolist(), b[0].tolist()):
        d = (x - 5) * 0.25 - (y + 3) * 0.5
        total += d * d
    assert reconstruction_errors(a, b, (0.25, 5), (0.5, -3))[0] == total / 3


def test_bad_normal_data_and_non_autoencoders_get_clear_errors(tmp_path, normal_file):
    x = np.load(normal_file)
    cases = {
        "wrong shape": (x[:, :320], "wrong shape", "[N, 640]"),
        "int32": (x.astype(np.int32), "dtype int32", "int8"),
        "nan": (np.full((2, 640), np.nan, np.float32), "NaN", "clean"),
        "empty": (x[:0], "no samples", "at least one"),
    }
    for label, (data, what, fix) in cases.items():
        with pytest.raises(McuforgeError) as info:
            calibrate_reconstruction_threshold(_ad01(), data)
        assert what in info.value.what and fix in str(info.value), label
    several = tmp_path / "several.npz"
    np.savez(several, a=x, b=x)
    with pytest.raises(McuforgeError, match="none is named 'x'") as info:
        calibrate_reconstruction_threshold(_ad01(), several)
    assert str(several) in info.value.where
    with pytest.raises(McuforgeError, match="outside 0..100"):
        calibrate_reconstruction_threshold(_ad01(), x, percentile=150)
    with pytest.raises(McuforgeError, match="unknown reconstruction metric"):
        calibrate_reconstruction_threshold(_ad01(), x, metric="rmse")
    speech = shared_model("micro_speech_quantized.tflite")
    with pytest.raises(McuforgeError) as info:
        calibrate_reconstruction_threshold(speech, np.zeros((2, 1960), np.int8))
    assert "not an autoencoder" in info.value.what and "[1, 4]" in info.value.what
    assert str(speech) in info.value.where


# -- the metadata block ------------------------------------------------------------------------------

def test_metadata_block_round_trips_and_rejects_what_it_cannot_hold():
    meta = {"anomaly_threshold": 2.2298921835628316, "anomaly_samples": 160, "anomaly_metric": "mse",
            "site": "pump 3 \u00e9tage", "n": -7}
    block = encode_metadata(meta)
    assert len(block) % 4 == 0 and decode_metadata(block) == meta
    assert encode_metadata(dict(reversed(list(meta.items())))) == block     # key order: sorted, stable
    assert encode_metadata({}) == encode_metadata(None) == b""
    for bad, what in (({"Bad-Key": 1}, "not a lower-case identifier"), ({"flag": True}, "bool"),
                      ({"x": float("nan")}, "nan"), ({"x": [1, 2]}, "list"),
                      ({"big": "v" * METADATA_MAX_BYTES}, "more than")):
        with pytest.raises(McuforgeError, match=what):
            encode_metadata(bad)


def test_a_changed_threshold_changes_only_the_metadata_and_the_digest():
    graph = load_tflite(_ad01())
    plain, _ = render_model_file(graph, "ad01")
    one, report = render_model_file(graph, "ad01", metadata={THRESHOLD_KEY: 1.25})
    two, _ = render_model_file(graph, "ad01", metadata={THRESHOLD_KEY: 1.75})
    assert report["metadata"] == {THRESHOLD_KEY: 1.25} and read_metadata(one) == {THRESHOLD_KEY: 1.25}
    assert struct.unpack_from("<H", one, 4)[0] == FORMAT_VERSION == 2
    assert len(one) == len(two)
    changed = np.flatnonzero(np.frombuffer(one, np.uint8) != np.frombuffer(two, np.uint8))
    assert len([i for i in changed if i < len(one) - DIGEST_BYTES]) == 1      # "1.25" -> "1.75"
    # Adding metadata leaves every byte before it in place, but the file size and metadata size.
    body = len(plain) - DIGEST_BYTES
    diff = np.flatnonzero(np.frombuffer(plain[:body], np.uint8) != np.frombuffer(one[:body], np.uint8))
    assert set(diff.tolist()) <= set(range(8, 12)) | set(range(88, 92))
    assert struct.unpack_from("<I", one, 88)[0] == len(one) - len(plain) == report["metadata_bytes"]


# -- on the device ---------------------------------------------------------------------------------

def test_compiled_threshold_is_used_on_the_device(tmp_path, normal_file):
    from click.testing import CliRunner

    from mcuforge.host_tools.cli import cli

    out = tmp_path / "mp"
    result = CliRunner().invoke(cli, ["compile", str(_ad01()), "--engine", "micropython", "--name", "ad01",
                                      "--threshold-data", str(normal_file), "--threshold-percentile", "99.5",
                                      "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "anomaly:  threshold" in result.output
    report = json.loads((out / "report.json").read_text())
    calibration = report["anomaly_threshold"]
    threshold = calibration["threshold"]
    assert calibration["samples"] == 160 and calibration["percentile"] == 99.5
    assert report["metadata"][THRESHOLD_KEY] == threshold
    content = (out / "ad01.mfm").read_bytes()
    assert read_metadata(content)[THRESHOLD_KEY] == threshold
    assert report["file"]["sha256"] == hashlib.sha256(content[:-DIGEST_BYTES]).hexdigest()

    normal = _normal(4, seed=2)              # held out: not in the calibration data
    noisy = _noisy(normal, seed=3)
    samples = np.concatenate([normal, noisy])
    in_q, out_q = _quantization(_ad01())
    expected = reconstruction_errors(samples, _run_model(_ad01().read_bytes(), samples), in_q, out_q)
    assert expected[:4].max() < threshold < expected[4:].min()

    run = run_micropython(f"""
import struct, mf_model, mf_anomaly
m = mf_model.load('ad01.mfm')
print('META', m.format_version, sorted(m.metadata), m.metadata['anomaly_metric'], m.metadata['anomaly_samples'])
print('THRESHOLD', struct.pack('<d', m.anomaly_threshold).hex())
r = mf_anomaly.Reconstruction.from_model(m)
with open('samples.in', 'rb') as f:
    for i in range({len(samples)}):
        x = f.read(640)
        err, bad = r.score(x, m.invoke(x))
        print('SCORE', i, struct.pack('<d', err).hex(), bad)
""", files={"/flash/ad01.mfm": content, "/flash/samples.in": samples.tobytes()}, heapsize=HEAP,
                          timeout=300).check()
    lines = run.stdout.splitlines()
    assert "META 2 ['anomaly_metric', 'anomaly_percentile', 'anomaly_samples', 'anomaly_threshold'] mse 160" in lines
    threshold_hex = next(line for line in lines if line.startswith("THRESHOLD")).split()[1]
    device_threshold = struct.unpack("<d", bytes.fromhex(threshold_hex))[0]
    assert device_threshold == pytest.approx(threshold, rel=1e-15, abs=0)
    scores = [line.split() for line in lines if line.startswith("SCORE")]
    assert len(scores) == len(samples)
    for (_, i, err_hex, flag), want in zip(scores, expected):
        err = struct.unpack("<d", bytes.fromhex(err_hex))[0]
        assert err == want, f"sample {i}: device error {err}, host {want}"     # same arithmetic, bit for bit
        assert flag == ("True" if int(i) >= 4 else "False"), f"sample {i}: error {err}, threshold {threshold}"


def _with_version(content: bytes, version: int) -> bytes:
    patched = bytearray(content[:-DIGEST_BYTES])
    struct.pack_into("<H", patched, 4, version)
    return bytes(patched) + hashlib.sha256(patched).digest()


def _resealed(content: bytes, at: int, value: bytes) -> bytes:
    patched = bytearray(content[:-DIGEST_BYTES])
    patched[at:at + len(value)] = value
    return bytes(patched) + hashlib.sha256(patched).digest()


def test_old_files_without_metadata_still_load_and_bad_metadata_is_refused():
    graph = load_tflite(shared_model("hello_world_int8.tflite"))
    plain, _ = render_model_file(graph, "hello")
    version1 = _with_version(plain, 1)          # a version-1 file: the same layout without metadata
    tagged, _ = render_model_file(graph, "hello", metadata={"anomaly_threshold": 0.5, "site": "pump"})
    end = len(tagged) - DIGEST_BYTES
    meta_at = end - struct.unpack_from("<I", tagged, 88)[0]
    # A newer writer's value type ('q'): kept as bytes. A value length past the block: refused.
    unknown = _resealed(tagged, meta_at + 4 + 1, b"q")
    overrun = _resealed(tagged, meta_at + 4 + 2, struct.pack("<H", 200))
    v1_with_metadata = _with_version(tagged, 1)   # version 1 has no metadata: the block is stray bytes
    files = {"/flash/v1.mfm": version1, "/flash/plain.mfm": plain, "/flash/tagged.mfm": tagged,
             "/flash/unknown.mfm": unknown, "/flash/overrun.mfm": overrun, "/flash/v1meta.mfm": v1_with_metadata}
    run = run_micropython("""
import mf_model, mf_anomaly
for name in ('v1', 'plain', 'tagged', 'unknown', 'overrun', 'v1meta'):
    try:
        m = mf_model.load(name + '.mfm')
    except mf_model.ModelFormatError as e:
        print('ERROR', name, e)
        continue
    out = m.invoke(m.quantize([1.0]))
    print('LOADED', name, m.format_version, sorted(m.metadata.items()), m.anomaly_threshold, len(out))
    try:
        r = mf_anomaly.Reconstruction.from_model(m)
        print('THRESHOLD', name, r.threshold)
    except ValueError as e:
        print('NOTHRESHOLD', name, e)
""", files=files, heapsize=HEAP).check()
    lines = run.stdout.splitlines()
    assert "LOADED v1 1 [] None 1" in lines
    assert "LOADED plain 2 [] None 1" in lines
    assert "LOADED tagged 2 [('anomaly_threshold', 0.5), ('site', 'pump')] 0.5 1" in lines
    assert "THRESHOLD tagged 0.5" in lines
    assert any(line.startswith("NOTHRESHOLD v1 no reconstruction threshold") for line in lines)
    assert "LOADED unknown 2 [('anomaly_threshold', b'0.5'), ('site', 'pump')] b'0.5' 1" in lines
    overrun_error = next(line for line in lines if line.startswith("ERROR overrun"))
    assert "metadata entry 0" in overrun_error and "runs past the metadata block" in overrun_error
    stray = next(line for line in lines if line.startswith("ERROR v1meta"))
    assert "between the last section and the sha256 trailer" in stray


def test_threshold_options_need_the_micropython_engine(tmp_path, normal_file):
    from mcuforge.host_tools.compile import compile_model

    with pytest.raises(McuforgeError, match="--threshold-data is stored in the MicroPython model file"):
        compile_model(_ad01(), "aot", tmp_path / "aot", threshold_data=normal_file)
    with pytest.raises(McuforgeError, match="--threshold-percentile without --threshold-data"):
        compile_model(_ad01(), "micropython", tmp_path / "mp", threshold_percentile=99.0)
    with pytest.raises(McuforgeError, match="wrong shape"):
        bad = tmp_path / "bad.npy"
        np.save(bad, np.zeros((3, 10), np.float32))
        compile_model(_ad01(), "micropython", tmp_path / "mp", threshold_data=bad)
    assert not (tmp_path / "aot").exists() and not (tmp_path / "mp").exists()


def test_damaged_metadata_gives_format_errors_not_crashes():
    """Random bytes changed in the metadata block (and its size in the header), loaded without the
    sha256 check that would refuse them first: each loads or raises ModelFormatError."""
    import random

    graph = load_tflite(shared_model("hello_world_int8.tflite"))
    content, _ = render_model_file(graph, "hello", metadata={"anomaly_threshold": 0.125, "anomaly_metric": "mse",
                                                             "anomaly_samples": 160, "site": "pump"})
    end = len(content) - DIGEST_BYTES
    start = end - struct.unpack_from("<I", content, 88)[0]
    rng = random.Random(4)
    files = {}
    for i in range(60):
        mutant = bytearray(content)
        for _ in range(rng.randint(1, 3)):
            at = rng.choice([rng.randrange(start, end), rng.randrange(88, 92)])
            mutant[at] = rng.randrange(256)
        files[f"/flash/m{i}.mfm"] = bytes(mutant)
    run = run_micropython("""
import mf_model
counts = {}
for i in range(60):
    try:
        m = mf_model.load('m%d.mfm' % i, verify=False)
        kind = 'loaded'
    except mf_model.ModelFormatError:
        kind = 'refused'
    except Exception as e:
        kind = type(e).__name__
        print('ESCAPED', i, repr(e))
    counts[kind] = counts.get(kind, 0) + 1
print('COUNTS', sorted(counts.items()))
""", files=files, heapsize=HEAP).check()
    assert "ESCAPED" not in run.stdout, run.stdout
    assert "refused" in run.stdout
