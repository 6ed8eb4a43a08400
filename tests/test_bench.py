"""mcuforge bench: vectors, the comparison with the host reference, latency statistics and the
report files; then whole benches on the emulated Cortex-M55 and Cortex-M4 under QEMU and on the
virtual MicroPython board, through the Python API and the CLI."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import nothing_left_running  # noqa: F401  (autouse: no QEMU or Node left behind)

from mcuforge.codegen.errors import McuforgeError
from mcuforge.codegen.tflite_model import load_tflite
from mcuforge.host_tools.bench import (
    BENCH_JSON, BENCH_MARKDOWN, HISTOGRAM_FILE, Vectors, bench_model, bench_passed, compare_outputs, elf_sections,
    latency_stats, load_vectors, nearest_rank, write_bench_files,
)
from mcuforge.host_tools.console_protocol import VectorResult

MODELS_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "models"
HELLO_WORLD = MODELS_DIR / "hello_world_int8.tflite"
MICRO_SPEECH = MODELS_DIR / "micro_speech_quantized.tflite"
MCUFORGE = str(Path(sys.executable).parent / "mcuforge")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

needs_qemu = pytest.mark.skipif(shutil.which("qemu-system-arm") is None or shutil.which("arm-none-eabi-gcc") is None,
                                reason="qemu-system-arm and arm-none-eabi-gcc are needed (Debian: qemu-system-arm, "
                                       "gcc-arm-none-eabi, libnewlib-arm-none-eabi)")
needs_node = pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed (Debian: nodejs)")


def model(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"model not present: {path}")
    return path




@pytest.fixture(scope="module")
def speech_vectors(tmp_path_factory):
    """Float features (quantized by the bench with the input's scale) and class labels."""
    rng = np.random.default_rng(7)
    path = tmp_path_factory.mktemp("vectors") / "speech.npz"
    np.savez(path, x=rng.normal(0.0, 4.0, size=(10, 49, 40)).astype(np.float32), y=rng.integers(0, 4, size=10))
    return path


# ---- vectors ------------------------------------------------------------------------------------

def test_float_vectors_are_quantized_with_the_input_scale_and_zero_point(tmp_path):
    graph = load_tflite(model(HELLO_WORLD))
    tensor = graph.tensors[graph.inputs[0]]
    scale, zero_point = float(tensor.scale[0]), int(tensor.zero_point[0])
    x = np.array([[0.0], [1.0], [3.0], [-100.0], [100.0]], dtype=np.float32)
    np.savez(tmp_path / "v.npz", x=x, y=np.sin(x))
    vectors = load_vectors(tmp_path / "v.npz", graph)
    got = [int(v[0].reshape(-1)[0]) for v in vectors.inputs]
    want = [int(np.clip(np.round(value / scale) + zero_point, -128, 127)) for value in x[:, 0]]
    assert got == want and got[3] == -128 and got[4] == 127
    assert vectors.quantized and vectors.labels is not None and len(vectors) == 5
    assert vectors.inputs[0][0].shape == tuple(tensor.shape) and vectors.inputs[0][0].dtype == np.int8

    np.savez(tmp_path / "raw.npz", x=np.array([[5], [-7]], dtype=np.int8))
    raw = load_vectors(tmp_path / "raw.npz", graph)
    assert not raw.quantized and raw.blob(1) == bytes([0xF9])


def test_bad_vector_files_say_what_to_fix(tmp_path):
    graph = load_tflite(model(MICRO_SPEECH))
    np.savez(tmp_path / "wide.npz", x=np.zeros((3, 1961), dtype=np.float32))
    with pytest.raises(McuforgeError) as info:
        load_vectors(tmp_path / "wide.npz", graph)
    assert "1961 values" in info.value.what and "takes 1960" in info.value.what and "(vectors, 1960)" in info.value.fix
    np.savez(tmp_path / "named.npz", inputs=np.zeros((3, 1960)))
    with pytest.raises(McuforgeError) as info:
        load_vectors(tmp_path / "named.npz", graph)
    assert "has no x" in info.value.what and "inputs" in info.value.what
    np.savez(tmp_path / "labels.npz", x=np.zeros((3, 1960)), y=np.zeros(2))
    with pytest.raises(McuforgeError) as info:
        load_vectors(tmp_path / "labels.npz", graph)
    assert "2 labels for 3 vectors" in info.value.what
    with pytest.raises(McuforgeError):
        load_vectors(tmp_path / "missing.npz", graph)


# ---- comparison and statistics ----------------------------------------------------------------------

def test_latency_percentiles_are_nearest_rank():
    values = list(range(1, 101))
    assert nearest_rank(values, 50) == 50 and nearest_rank(values, 95) == 95 and nearest_rank([7], 95) == 7
    stats = latency_stats([30, 10, 20, 40], "cycles")
    assert (stats["p50"], stats["p95"], stats["max"], stats["min"], stats["runs"]) == (20, 40, 40, 10, 4)


def test_compare_counts_bit_exact_runs_and_scores_against_host_and_labels():
    from mcuforge.codegen.reference import run_reference

    graph = load_tflite(model(MICRO_SPEECH))
    rng = np.random.default_rng(3)
    inputs = [[rng.integers(-128, 128, size=(1, 1960), dtype=np.int8)] for _ in range(4)]
    expected = run_reference(MICRO_SPEECH.read_bytes(), inputs)
    labels = np.array([int(np.argmax(e[0])) for e in expected])
    labels[0] = (labels[0] + 1) % 4  # the host gets 3 of 4
    vectors = Vectors(inputs, "test", labels)
    results = [VectorResult(i, 100, [expected[i % 4][0].tobytes()]) for i in range(8)]
    broken = bytearray(results[5].outputs[0])
    broken[2] = (broken[2] + 3) % 256
    results[5] = VectorResult(5, 100, [bytes(broken)])  # the second run of vector 1 drifts

    correctness, accuracy = compare_outputs(graph, vectors, expected, results)
    assert correctness["runs"] == 8 and correctness["bit_exact_runs"] == 7
    assert correctness["bit_exact_vectors"] == 3  # vector 1 was exact once, not every time
    assert correctness["mismatches"] == [{"run": 5, "vector": 1, "output": 0, "differing_values": 1,
                                          "max_abs_diff": 3.0}]
    output = accuracy["outputs"][0]
    assert output["dequantized"] and output["top1_agreement"] == 1.0 and output["max_abs_error"] == 0
    assert accuracy["labels"] == {"task": "classification", "vectors": 4, "device_top1": 0.75, "host_top1": 0.75}


def synthetic_report(passed: bool) -> dict:
    values = [100, 101, 101, 102, 140]
    return {
        "model": {"path": "m.tflite", "name": "m.tflite", "sha256": "ab" * 32}, "board": "mps3-an547",
        "target": {"kind": "firmware", "board": "mps3-an547", "core": "cortex-m55", "rtos": "baremetal",
                   "engine": "aot", "kernels": "mve", "emulated": True, "clock_hz": 32_000_000},
        "vectors": {"source": "random int8, seed 0", "count": 5, "labels": False, "quantized_from_float": False},
        "runs": 5,
        "correctness": {"runs": 5, "bit_exact_runs": 5 if passed else 4, "vectors": 5,
                        "bit_exact_vectors": 5 if passed else 4,
                        "mismatches": [] if passed else [{"run": 3, "vector": 3, "output": 0, "differing_values": 2,
                                                           "max_abs_diff": 1.0}]},
        "accuracy": {"outputs": [{"index": 0, "name": "out", "dtype": "int8", "dequantized": True,
                                  "values_per_vector": 4, "max_abs_error": 0.0, "mean_abs_error": 0.0,
                                  "top1_agreement": 1.0}], "labels": None},
        "latency": latency_stats(values, "cycles"), "latency_values": values,
        "memory": {"kind": "firmware", "flash_bytes": 30000, "ram_bytes": 28000, "arena_bytes": 5960,
                   "model_flash_bytes": 24000, "stack_hwm_bytes": 600, "heap_hwm_bytes": 0},
        "notes": [], "files": {"json": BENCH_JSON, "markdown": BENCH_MARKDOWN, "histogram": HISTOGRAM_FILE},
    }


def test_report_files_show_the_verdict_tables_and_a_histogram(tmp_path):
    write_bench_files(tmp_path, synthetic_report(passed=False))
    markdown = (tmp_path / BENCH_MARKDOWN).read_text()
    assert "**FAIL**: 4/5 runs bit-exact" in markdown
    assert "| cycles | 101 | 140 | 140 | 100 | 108.8 |" in markdown
    assert "| 3 | 3 | 0 | 2 | 1.0 |" in markdown and "![latency histogram](latency.png)" in markdown
    png = (tmp_path / HISTOGRAM_FILE).read_bytes()
    assert png.startswith(PNG_MAGIC)
    assert json.loads((tmp_path / BENCH_JSON).read_text())["latency"]["p95"] == 140
    write_bench_files(tmp_path, synthetic_report(passed=False))
    assert (tmp_path / HISTOGRAM_FILE).read_bytes() == png  # no timestamps: same report, same bytes
    assert bench_passed(synthetic_report(passed=True)) and not bench_passed(synthetic_report(passed=False))


# ---- whole benches -----------------------------------------------------------------------------------------

def check_report_files(out_dir: Path, report: dict) -> None:
    assert json.loads((out_dir / BENCH_JSON).read_text()) == json.loads(json.dumps(report))
    assert (out_dir / HISTOGRAM_FILE).read_bytes().startswith(PNG_MAGIC)
    assert "**PASS**" in (out_dir / BENCH_MARKDOWN).read_text()


@needs_qemu
@pytest.mark.qemu
@pytest.mark.parametrize("board, kernels, clock_hz", [("mps3-an547", "mve", 32_000_000),
                                                      ("mps2-an386", "dsp", 25_000_000)])
def test_bench_on_an_emulated_board_is_bit_exact_with_latency_ram_and_flash(tmp_path, speech_vectors, board, kernels,
                                                                            clock_hz):
    from mcuforge.host_tools.console_protocol import instructions_from_cycles

    report = bench_model(model(MICRO_SPEECH), board, tmp_path / "bench", vectors=speech_vectors, runs=14)
    assert bench_passed(report), report["correctness"]
    assert report["runs"] == 14 and report["vectors"] == {"source": str(speech_vectors), "count": 10, "labels": True,
                                                          "quantized_from_float": True}
    target = report["target"]
    assert (target["kind"], target["rtos"], target["engine"], target["kernels"]) == ("firmware", "baremetal", "aot",
                                                                                    kernels)
    assert target["clock_hz"] == clock_hz and target["cycle_counter"] == "systick" and target["exit_code"] == 0
    assert report["correctness"]["bit_exact_vectors"] == 10
    assert report["accuracy"]["outputs"][0]["top1_agreement"] == 1.0
    labels = report["accuracy"]["labels"]
    assert labels["task"] == "classification" and labels["device_top1"] == labels["host_top1"]

    latency = report["latency"]
    values = report["latency_values"]
    assert len(values) == 14 and latency["unit"] == "cycles" and latency["max"] == max(values) > 0
    assert latency["p50"] <= latency["p95"] <= latency["max"]
    # Runs 10.. repeat vectors 0..: under -icount the same vector costs the same instructions, run
    # after run, read through SysTick ticks of 31.25 (M55) or 40 (M4) instructions, whose phase varies.
    assert all(abs(again - first) <= 2 for again, first in zip(values[10:], values[:4]))
    assert latency["instructions"]["p50"] == instructions_from_cycles(latency["p50"], clock_hz)

    memory = report["memory"]
    elf = memory["elf"]
    assert memory["flash_bytes"] == elf["text"] + elf["data"] and memory["ram_bytes"] == elf["data"] + elf["bss"]
    assert 0 < memory["model_flash_bytes"] < memory["flash_bytes"] and memory["arena_bytes"] > 0
    assert 0 < memory["stack_hwm_bytes"] < memory["ram_bytes"]
    regions = {r["memory"]: r for r in memory["regions"]}
    assert sum(r["used"] for r in regions.values()) == sum(s["size"] for s in elf_sections(
        Path(target["project"]) / "build" / "firmware.elf"))
    check_report_files(tmp_path / "bench", report)
    log = (tmp_path / "bench" / "console.log").read_text()
    assert '{"bench":"ready"' in log and '{"done":14}' in log


@needs_node
def test_bench_on_the_virtual_micropython_board(tmp_path, speech_vectors):
    report = bench_model(model(MICRO_SPEECH), "virtual-board", tmp_path / "bench", vectors=speech_vectors, runs=4)
    assert bench_passed(report) and report["runs"] == 10  # every vector runs at least once
    target = report["target"]
    assert (target["kind"], target["engine"], target["board"]) == ("micropython", "micropython", "virtual-board")
    assert target["platform"] == "webassembly" and target["module_format"].startswith("mpy")
    assert report["latency"]["unit"] == "us" and report["latency"]["p50"] > 0
    assert report["latency"]["cycles"]["unit"].startswith("cycles")
    memory = report["memory"]
    compiled = json.loads((tmp_path / "bench" / "compiled" / "report.json").read_text())
    assert memory["model_file_bytes"] == compiled["file"]["bytes"] and memory["arena_bytes"] == compiled["arena_bytes"]
    assert memory["runtime_bytes"] > 0 and memory["model_load_ram_bytes"] > 0
    assert memory["flash_bytes"] == memory["model_file_bytes"] + memory["runtime_bytes"]
    check_report_files(tmp_path / "bench", report)


@needs_node
def test_bench_cli_on_a_virtual_board_already_running(tmp_path):
    """A MicroPython board on a port (here a virtual one that `mcuforge virtual-board` would start):
    the bench deploys to it and leaves it running."""
    from mcuforge.host_tools.virtual_board import VirtualBoard

    with VirtualBoard(tmp_path / "flash", register=True) as board:
        result = subprocess.run([MCUFORGE, "bench", str(model(HELLO_WORLD)), "--board", "virtual-board",
                                 "--port", board.port, "--runs", "3", "-o", str(tmp_path / "out"), "--json"],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert report["correctness"]["bit_exact_runs"] == 3 and report["target"]["port"] == board.port
        assert (tmp_path / "flash" / "model.mfm").is_file() and board.running
    check_report_files(tmp_path / "out", report)


@needs_node
def test_bench_fails_when_an_output_differs_from_the_host(tmp_path, monkeypatch):
    from mcuforge.codegen import reference

    real = reference.run_reference

    def one_bit_off(model_bytes, samples, *args):
        return [[(o.view(np.uint8) ^ 1).view(o.dtype) for o in outputs] for outputs in real(model_bytes, samples, *args)]

    monkeypatch.setattr(reference, "run_reference", one_bit_off)
    report = bench_model(model(HELLO_WORLD), "virtual-board", tmp_path / "bench", runs=2)
    assert not bench_passed(report) and report["correctness"]["bit_exact_runs"] == 0
    assert len(report["correctness"]["mismatches"]) == 2
    assert "**FAIL**" in (tmp_path / "bench" / BENCH_MARKDOWN).read_text()


def test_bench_cli_errors_are_short_and_name_the_option(tmp_path):
    result = subprocess.run([MCUFORGE, "bench", str(model(HELLO_WORLD)), "--board", "nrf52840dk", "-o",
                             str(tmp_path / "out")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "nrf52840dk is a physical board" in result.stderr and "--port" in result.stderr
    result = subprocess.run([MCUFORGE, "bench", str(tmp_path / "model.keras"), "--board", "mps3-an547"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "int8 .tflite" in result.stderr
