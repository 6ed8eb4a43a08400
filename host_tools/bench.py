"""The board-in-the-loop bench: a model's outputs on a board, compared with the host reference,
with latency, RAM and flash.

    report = bench_model("model.tflite", "mps3-an547", out_dir="bench", vectors="eval.npz", runs=100)

1. The target runs the model:
   - a firmware board (Cortex-M, ESP32-S3): the application of `mcuforge build` (aot engine,
     bare metal where the board allows it) is built and flashed, and its console's bench mode
     (docs/bench-protocol.md) is driven through a DUT (host_tools/dut.py): emulated boards
     under QEMU, physical boards on --port;
   - a MicroPython board (`virtual-board`, or a port running MicroPython with
     --engine micropython): the device runtime and the model file (.mfm) are deployed, and the
     model runs through the raw REPL (mpremote's transport); the virtual board is started
     for the bench when no port is given.
2. The vectors (an .npz with `x`, float data quantized with the input's scale and zero point,
   and optional labels `y`; random int8 otherwise) run one per inference, `runs` inferences in
   all (the vectors are repeated to fill them, and each runs at least once). Every output is
   compared with TFLM's reference interpreter on the host: bit-exact count, and for
   dequantized outputs top-1 agreement and the largest error; with labels, accuracy of both.
3. Latency over the runs (p50, p95, max; nearest rank) in the board's cycles: DWT/SysTick
   counts on firmware (under QEMU -icount, a repeatable instruction count), time.ticks_us on
   MicroPython (converted at machine.freq()).
4. RAM and flash: the ELF's sections per memory of the board, the compile report, and the
   stack and heap high-water marks the firmware reports; on MicroPython, the model file and
   runtime on the board's flash and gc.mem_free() around loading and invoking.

bench.json holds everything; bench.md and latency.png are for people.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import shutil
import struct
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from mcuforge.codegen.errors import McuforgeError

from .dut import VIRTUAL_BOARD, Dut, ExpectTimeout, FlashService

BENCH_JSON = "bench.json"
BENCH_MARKDOWN = "bench.md"
HISTOGRAM_FILE = "latency.png"
CONSOLE_LOG = "console.log"
REPORT_VERSION = 1
DEFAULT_RUNS = 100
DEFAULT_SEED = 0
# The bench firmware's loop: one inference every 100 ms until `bench` pauses it; the telemetry
# after the session gives the stack and heap high-water marks.
BENCH_PERIOD_MS = 100
HELLO_TIMEOUT_EMULATED_S = 20.0
HELLO_TIMEOUT_PHYSICAL_S = 5.0
READY_ATTEMPTS = 3
RUN_TIMEOUT_S = 60.0
MISMATCHES_KEPT = 20
PERCENTILES = (50, 95)
HISTOGRAM_DPI = 100

Progress = Callable[[int, int], None]


# ---- vectors ----------------------------------------------------------------------------------

@dataclass
class Vectors:
    """One list of input arrays per vector (the model's own dtypes and shapes), and labels."""
    inputs: list[list[np.ndarray]]
    source: str
    labels: np.ndarray | None = None
    quantized: bool = False      # float data was quantized with the input's scale/zero point

    def __len__(self) -> int:
        return len(self.inputs)

    def blob(self, index: int) -> bytes:
        """What one `run` line carries: all the inputs back to back."""
        return b"".join(np.ascontiguousarray(x).tobytes() for x in self.inputs[index])


def random_vectors(graph, count: int, seed: int = DEFAULT_SEED) -> Vectors:
    from .verify import random_samples

    return Vectors(random_samples(graph, count, seed), f"random int8, seed {seed}")


def _quantize(values: np.ndarray, tensor) -> np.ndarray:
    scale = float(tensor.scale[0]) if tensor.scale is not None and len(tensor.scale) else 0.0
    if scale <= 0:
        raise McuforgeError(f"input {tensor.name!r} is int8 without a scale, so float data cannot be quantized for it",
                            where=f"tensor {tensor.index}", fix="give int8 data in x")
    zero_point = int(tensor.zero_point[0])
    return np.clip(np.round(values.astype(np.float64) / scale) + zero_point, -128, 127).astype(np.int8)


def _input_arrays(data: np.ndarray, tensor, key: str, path: Path) -> tuple[list[np.ndarray], bool]:
    from mcuforge.codegen.tflite_model import NUMPY_DTYPES

    per_vector = int(np.prod(tensor.shape[1:] if len(tensor.shape) > 1 else tensor.shape, dtype=np.int64))
    full = int(np.prod(tensor.shape, dtype=np.int64))
    data = np.asarray(data)
    if data.ndim == 0 or data.shape[0] == 0:
        raise McuforgeError(f"{key} holds no vectors", where=f"{path}: {key}", fix="give one vector per row")
    if int(np.prod(data.shape[1:], dtype=np.int64)) != full:
        raise McuforgeError(f"{key} has shape {data.shape}: each vector has {int(np.prod(data.shape[1:]))} values, "
                            f"and input {tensor.name!r} takes {full} (shape {list(tensor.shape)})",
                            where=f"{path}: {key}",
                            fix=f"give {key} the shape (vectors, {', '.join(str(d) for d in tensor.shape[1:]) or per_vector})")
    quantized = False
    if tensor.dtype == "INT8":
        if data.dtype == np.int8:
            values = data
        elif np.issubdtype(data.dtype, np.number) or data.dtype == np.bool_:
            values, quantized = _quantize(data, tensor), True
        else:
            raise McuforgeError(f"{key} has dtype {data.dtype}", where=f"{path}: {key}", fix="give numbers")
    elif tensor.dtype in NUMPY_DTYPES:
        values = data.astype(NUMPY_DTYPES[tensor.dtype])
    else:
        raise McuforgeError(f"input {tensor.name!r} is {tensor.dtype}, which the bench cannot feed",
                            where=f"tensor {tensor.index}", fix="bench a model with int8 or float32 inputs")
    return [np.ascontiguousarray(v.reshape(tensor.shape)) for v in values], quantized


def load_vectors(path: str | Path, graph) -> Vectors:
    """Vectors from an .npz: `x` (one input; `x0`, `x1`, ... for several), one vector per row.
    Float data for an int8 input is quantized with that input's scale and zero point; int8
    data is taken as it is. `y`: optional labels (class indices, one-hot rows, or values)."""
    path = Path(path)
    if not path.is_file():
        raise McuforgeError(f"vectors file not found: {path}", where="--vectors",
                            fix="give an .npz with x (and optionally y), as numpy.savez writes it")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise McuforgeError(f"cannot read {path} as an .npz: {exc}", where="--vectors",
                            fix="write it with numpy.savez(path, x=inputs, y=labels)") from None
    if not hasattr(archive, "files"):
        raise McuforgeError(f"{path} is a single array, not an .npz", where="--vectors",
                            fix="write it with numpy.savez(path, x=inputs, y=labels)")
    tensors = [graph.tensors[t] for t in graph.inputs]
    keys = ["x"] if len(tensors) == 1 else [f"x{i}" for i in range(len(tensors))]
    if len(tensors) == 1 and "x" not in archive.files and "x0" in archive.files:
        keys = ["x0"]
    missing = [k for k in keys if k not in archive.files]
    if missing:
        raise McuforgeError(f"{path} has no {', '.join(missing)} (it has {', '.join(archive.files) or 'nothing'})",
                            where="--vectors", fix=f"store the model's input{'s' if len(keys) > 1 else ''} as "
                                                   f"{', '.join(keys)} (one vector per row), and labels as y")
    per_input, quantized = [], False
    for key, tensor in zip(keys, tensors):
        arrays, was_quantized = _input_arrays(archive[key], tensor, key, path)
        per_input.append(arrays)
        quantized |= was_quantized
    counts = {len(a) for a in per_input}
    if len(counts) != 1:
        raise McuforgeError(f"the inputs hold different numbers of vectors ({', '.join(map(str, sorted(counts)))})",
                            where=str(path), fix="give every input the same number of rows")
    labels = archive["y"] if "y" in archive.files else None
    if labels is not None and (labels.ndim == 0 or len(labels) != len(per_input[0])):
        raise McuforgeError(f"y has {0 if labels.ndim == 0 else len(labels)} labels for {len(per_input[0])} vectors",
                            where=f"{path}: y", fix="give one label (or one row) per vector")
    return Vectors([list(v) for v in zip(*per_input)], str(path), labels, quantized)


# ---- comparing with the host --------------------------------------------------------------------

def _dequantized(values: np.ndarray, tensor) -> tuple[np.ndarray, bool]:
    if tensor.dtype in ("INT8", "INT16", "UINT8") and tensor.scale is not None and len(tensor.scale) == 1:
        return (values.astype(np.float64) - float(tensor.zero_point[0])) * float(tensor.scale[0]), True
    return values.astype(np.float64), tensor.dtype in ("FLOAT32", "FLOAT16")


def _per_vector(values: np.ndarray) -> np.ndarray:
    return values.reshape(len(values), -1)


def _label_accuracy(labels: np.ndarray, device: np.ndarray, host: np.ndarray) -> dict:
    """Accuracy of output 0 against y: top-1 for a classifier (several scores per vector),
    errors for a regressor. `device` and `host`: (vectors, values), dequantized."""
    labels = np.asarray(labels)
    width = device.shape[1]
    if not np.issubdtype(labels.dtype, np.number):
        return {"task": "unknown", "note": f"y has dtype {labels.dtype}, not numbers"}
    rows = labels.reshape(len(labels), -1).astype(np.float64)
    if width > 1 and rows.shape[1] == 1 and np.all(rows == np.round(rows)):
        classes = rows[:, 0].astype(np.int64)
    elif width > 1 and rows.shape[1] == width:
        classes = rows.argmax(axis=1)  # one-hot or scores
    elif rows.shape[1] == width:
        return {"task": "regression",
                "device_mae": float(np.abs(device - rows).mean()), "host_mae": float(np.abs(host - rows).mean()),
                "device_rmse": float(np.sqrt(((device - rows) ** 2).mean())),
                "host_rmse": float(np.sqrt(((host - rows) ** 2).mean()))}
    else:
        return {"task": "unknown", "note": f"y of shape {list(labels.shape)} does not fit output 0 ({width} values)"}
    return {"task": "classification", "vectors": int(len(classes)),
            "device_top1": float((device.argmax(axis=1) == classes).mean()),
            "host_top1": float((host.argmax(axis=1) == classes).mean())}


def compare_outputs(graph, vectors: Vectors, expected: list[list[np.ndarray]], results) -> tuple[dict, dict]:
    """(correctness, accuracy) of the device's results (run i ran vector i % len(vectors))
    against the reference's outputs, one list per vector."""
    out_tensors = [graph.tensors[t] for t in graph.outputs]
    mismatches, exact_runs = [], 0
    vector_exact: dict[int, bool] = {}   # every run of the vector was bit-exact
    first_runs: dict[int, list[bytes]] = {}
    for run, result in enumerate(results):
        vector = run % len(vectors)
        first_runs.setdefault(vector, result.outputs)
        same = True
        for j, (got, want) in enumerate(zip(result.outputs, expected[vector])):
            want_bytes = np.ascontiguousarray(want).tobytes()
            if got != want_bytes:
                same = False
                if len(mismatches) < MISMATCHES_KEPT:
                    got_values = np.frombuffer(got[:len(want_bytes)], dtype=want.dtype)
                    diff = np.abs(got_values.astype(np.float64) - want.reshape(-1)[:len(got_values)].astype(np.float64))
                    mismatches.append({"run": run, "vector": vector, "output": j,
                                       "differing_values": int((diff != 0).sum()),
                                       "max_abs_diff": float(diff.max()) if len(diff) else None})
        exact_runs += same
        vector_exact[vector] = vector_exact.get(vector, True) and same
    correctness = {"runs": len(results), "bit_exact_runs": exact_runs, "vectors": len(vectors),
                   "bit_exact_vectors": sum(vector_exact.values()), "mismatches": mismatches}

    seen = sorted(first_runs)
    outputs = []
    device0 = host0 = None
    for j, tensor in enumerate(out_tensors):
        want = np.stack([np.asarray(expected[v][j]) for v in seen])
        got = np.stack([np.frombuffer(first_runs[v][j], dtype=want.dtype).reshape(want.shape[1:]) for v in seen])
        device, dequantized = _dequantized(_per_vector(got), tensor)
        host, _ = _dequantized(_per_vector(want), tensor)
        error = np.abs(device - host)
        entry = {"index": j, "name": tensor.name, "dtype": tensor.dtype.lower(), "dequantized": dequantized,
                 "values_per_vector": int(device.shape[1]),
                 "max_abs_error": float(error.max()), "mean_abs_error": float(error.mean())}
        if device.shape[1] > 1:
            entry["top1_agreement"] = float((device.argmax(axis=1) == host.argmax(axis=1)).mean())
        outputs.append(entry)
        if j == 0:
            device0, host0 = device, host
    accuracy = {"outputs": outputs, "labels": None}
    if vectors.labels is not None and device0 is not None:
        accuracy["labels"] = _label_accuracy(np.asarray(vectors.labels)[seen], device0, host0)
    return correctness, accuracy


# ---- latency --------------------------------------------------------------------------------------

def nearest_rank(values, percent: float):
    """The smallest value that at least `percent` % of the values do not exceed."""
    ordered = sorted(values)
    if not ordered:
        return None
    rank = max(1, -(-len(ordered) * percent // 100))
    return ordered[int(rank) - 1]


def latency_stats(values: list[int | float], unit: str) -> dict:
    stats = {"unit": unit, "runs": len(values)}
    if values:
        stats.update({f"p{p}": nearest_rank(values, p) for p in PERCENTILES})
        stats.update({"min": min(values), "max": max(values), "mean": float(np.mean(values))})
    return stats


def _scaled(stats: dict, factor: float, unit: str, digits: int | None = 1) -> dict:
    """The stats in another unit; digits=None rounds to whole numbers."""
    keys = [f"p{p}" for p in PERCENTILES] + ["min", "max", "mean"]
    return {"unit": unit, **{k: round(stats[k] * factor, digits) for k in keys if stats.get(k) is not None}}


# ---- sizes -----------------------------------------------------------------------------------------

SHF_ALLOC = 0x2
SHT_NOBITS = 8


def elf_sections(elf: str | Path) -> list[dict]:
    """The allocated sections of an ELF32 little-endian file: name, address, size, and whether
    it takes flash (a NOBITS section such as .bss takes RAM only)."""
    data = Path(elf).read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 1 or data[5] != 1:
        raise McuforgeError(f"{elf} is not a 32-bit little-endian ELF", where=str(elf),
                            fix="give the firmware.elf that the build wrote")
    shoff, = struct.unpack_from("<I", data, 0x20)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x2E)
    headers = [struct.unpack_from("<IIIIIIIIII", data, shoff + i * shentsize) for i in range(shnum)]
    names_at = headers[shstrndx][4]

    def name(offset: int) -> str:
        end = data.index(b"\0", names_at + offset)
        return data[names_at + offset:end].decode(errors="replace")

    return [{"name": name(h[0]), "address": h[3], "size": h[5], "flash": h[1] != SHT_NOBITS}
            for h in headers if h[2] & SHF_ALLOC and h[5] > 0]


def memory_use(elf: str | Path, board) -> list[dict]:
    """Bytes of the ELF's sections in each memory of the board (by address)."""
    sections = elf_sections(elf)
    regions = []
    for memory in board.memories:
        inside = [s for s in sections if memory.origin <= s["address"] < memory.origin + memory.length]
        used = sum(s["size"] for s in inside)
        regions.append({"memory": memory.name, "length": memory.length, "used": used,
                        "percent": round(100 * used / memory.length, 1) if memory.length else None,
                        "sections": [s["name"] for s in inside]})
    return regions


# ---- running on a firmware board -------------------------------------------------------------------

@dataclass
class DeviceRun:
    results: list                      # console_protocol.VectorResult, one per run
    latency_unit: str                  # what each result's `cycles` counts: cycles or us
    target: dict
    memory: dict
    notes: list[str] = field(default_factory=list)
    instructions: list[int] = field(default_factory=list)   # under QEMU -icount: per run


def choose_rtos(board, engine: str) -> str:
    """Bare metal where the board allows it (it builds with arm-none-eabi-gcc alone), else the
    first RTOS the board file lists for the engine."""
    from .project import supported_combinations

    combinations = supported_combinations(board)
    for rtos in ("baremetal", "freertos", "zephyr"):
        if (rtos, engine) in combinations:
            return rtos
    raise McuforgeError(f"board {board.name} runs no bench firmware with the {engine} engine",
                        where=f"{board.path}: rtos / engines",
                        fix="use --engine micropython for a MicroPython board, or another engine the board lists")


def _await_hello(dut: Dut, emulated: bool) -> dict | None:
    timeout = HELLO_TIMEOUT_EMULATED_S if emulated else HELLO_TIMEOUT_PHYSICAL_S
    try:
        return dut.expect_record("hello", timeout=timeout)
    except ExpectTimeout:
        if emulated:
            raise
        return None  # the board may have said hello before the console was open


def _enter_bench_mode(dut: Dut, input_bytes: int) -> str:
    """Sends `bench` until the ready line comes (a polled UART may drop a byte); its line."""
    for attempt in range(READY_ATTEMPTS):
        dut.write("\nbench\n")  # the empty line first resynchronizes after noise
        try:
            record = dut.expect_record("bench", timeout=max(2 * BENCH_PERIOD_MS / 1000, 3.0), bench="ready")
        except ExpectTimeout:
            if attempt == READY_ATTEMPTS - 1:
                raise
            continue
        if sum(record.get("inputs", [])) != input_bytes:
            raise McuforgeError(f"the board's firmware takes {record.get('inputs')} input bytes, the model "
                                f"{input_bytes}: it runs another model", where=dut.port,
                                fix="flash the bench firmware built from this model")
        return _line(record)
    raise AssertionError("unreachable")


def run_firmware_bench(model: Path, board, vectors: Vectors, runs: int, work_dir: Path, *, port: str | None,
                       probe: str | None, rtos: str | None, engine: str, kernels: str | None,
                       progress: Progress | None, log: Callable[[str], None]) -> DeviceRun:
    from .console_protocol import instructions_from_cycles, parse_results
    from .firmware import AppSettings
    from .project import build_firmware

    emulated = board.flash.get("tool") == "qemu"
    if not emulated and port is None:
        raise McuforgeError(f"{board.name} is a physical board: the bench talks to it over its console",
                            where="--port", fix="give the board's serial port, e.g. --port /dev/ttyACM0")
    rtos = rtos or choose_rtos(board, engine)
    log(f"building the bench firmware for {board.name} ({rtos}, {engine} engine)")
    built = build_firmware(model, board, rtos, engine, work_dir / "firmware", settings=AppSettings(
        period_ms=BENCH_PERIOD_MS, iterations=0), compile=True, kernels=kernels)
    report, build = built["report"], built["build"]
    output_sizes = [int(np.prod(e["shape"])) * np.dtype(e["dtype"]).itemsize for e in report["output"]]
    input_bytes = sum(len(x.tobytes()) for x in vectors.inputs[0])
    log(f"flashing {board.name}" + (" (QEMU)" if emulated else f" (console {port})"))
    lines, telemetry, exit_code = [], None, None
    with Dut(FlashService(built["project"], board, port=port, probe=probe), log=work_dir / CONSOLE_LOG) as dut:
        hello = _await_hello(dut, emulated)
        lines.append(_enter_bench_mode(dut, input_bytes))
        if progress:
            progress(0, runs)
        for run in range(runs):
            dut.write_line("run " + vectors.blob(run % len(vectors)).hex())
            record = dut.expect_record("vec", timeout=RUN_TIMEOUT_S)
            lines.append(_line(record))
            if progress:
                progress(run + 1, runs)
        dut.write_line("end")
        lines.append(_line(dut.expect_record("done", timeout=RUN_TIMEOUT_S)))
        with contextlib.suppress(ExpectTimeout):
            telemetry = dut.expect_record("inference", timeout=3 * BENCH_PERIOD_MS / 1000 + 5)
        if emulated:
            dut.write_line("quit")
            with contextlib.suppress(ExpectTimeout, McuforgeError):
                dut.expect_record("stopped", timeout=10)
            exit_code = dut.wait_exit(10)
        described = dut.service.describe()
    results = parse_results("\n".join(lines), output_sizes)
    clock_hz = (hello or {}).get("clock_hz") or board.clock_hz
    counter = (hello or {}).get("cycle_counter")
    target = {"kind": "firmware", "board": board.name, "core": board.core, "rtos": rtos, "engine": engine,
              "kernels": report.get("kernels"), "emulated": emulated, "link": described, "clock_hz": clock_hz,
              "cycle_counter": counter, "project": built["project"]}
    if exit_code is not None:
        target["exit_code"] = exit_code
    memory = {"kind": "firmware", "arena_bytes": report.get("arena_bytes"),
              "weights_bytes": report.get("weights_bytes"), "model_flash_bytes": report.get("flash_bytes")}
    sizes = build.get("sizes")
    if sizes:
        memory.update({"flash_bytes": sizes["text"] + sizes["data"], "ram_bytes": sizes["data"] + sizes["bss"],
                       "elf": sizes})
    elf = next((Path(a) for a in build.get("artifacts", []) if str(a).endswith(".elf")), None)
    if elf is not None and elf.is_file():
        with contextlib.suppress(McuforgeError, struct.error, ValueError, IndexError):
            memory["regions"] = memory_use(elf, board)
    if telemetry is not None:
        memory["stack_hwm_bytes"] = telemetry.get("stack_hwm")
        memory["heap_hwm_bytes"] = telemetry.get("heap_hwm")
    run = DeviceRun(results, "cycles", target, memory)
    if counter == "systick" and emulated:
        run.notes.append("QEMU has no cycle counter: SysTick at the core clock under -icount shift=0 counts "
                         "1 ns per instruction, so cycles are a repeatable cost, not the silicon's timing")
        run.instructions = [instructions_from_cycles(r.cycles, clock_hz) for r in results]
    return run


# ---- running on a MicroPython board --------------------------------------------------------------------

# Runs on the board once: loads the model and defines the per-vector call. Names start with _mfb
# so that nothing of the user's REPL session is overwritten.
_MICROPYTHON_SETUP = """\
import gc, sys, time, os, json, binascii
gc.collect()
_mfb_free_boot = gc.mem_free()
import mf_model
gc.collect()
_mfb_free0 = gc.mem_free()
_mfb_m = mf_model.load(%(model)r)
gc.collect()
_mfb_free1 = gc.mem_free()
_mfb_n = 0
_mfb_alloc = 0
_mfb_sizes = [t.nbytes for t in _mfb_m.inputs]
def _mfb_run(h):
    global _mfb_n, _mfb_alloc
    x = binascii.unhexlify(h)
    if len(_mfb_sizes) > 1:
        parts, at = [], 0
        for n in _mfb_sizes:
            parts.append(x[at:at + n])
            at += n
        x = parts
    gc.collect()
    a = gc.mem_alloc()
    t = time.ticks_us()
    y = _mfb_m.invoke(x)
    t = time.ticks_diff(time.ticks_us(), t)
    a = gc.mem_alloc() - a
    if a > _mfb_alloc:
        _mfb_alloc = a
    ys = y if isinstance(y, list) else [y]
    print(json.dumps({"vec": _mfb_n, "cycles": t, "out": [binascii.hexlify(o).decode() for o in ys]}))
    _mfb_n += 1
def _mfb_size(p):
    try:
        return os.stat(p)[6]
    except OSError:
        return 0
try:
    import machine
    _mfb_hz = machine.freq()
    _mfb_hz = _mfb_hz[0] if isinstance(_mfb_hz, tuple) else _mfb_hz
except Exception:
    _mfb_hz = None
try:
    _mfb_lib = sum(_mfb_size(%(lib)r + "/" + f) for f in os.listdir(%(lib)r) if f.startswith("mf_"))
except OSError:
    _mfb_lib = 0
print(json.dumps({"bench": "ready", "inputs": _mfb_sizes, "outputs": [t.nbytes for t in _mfb_m.outputs]}))
print(json.dumps({"platform": sys.platform, "version": ".".join(str(v) for v in sys.implementation.version[:3]),
                  "backend": _mfb_m.backend, "freq_hz": _mfb_hz, "mem_free_before_import": _mfb_free_boot,
                  "mem_free_before_load": _mfb_free0,
                  "mem_free_after_load": _mfb_free1, "model_file_bytes": _mfb_size(%(model)r),
                  "runtime_bytes": _mfb_lib, "arena_bytes": _mfb_m.arena_bytes}))
"""
_MICROPYTHON_END = """\
gc.collect()
print(json.dumps({"done": _mfb_n}))
print(json.dumps({"invoke_alloc_bytes": _mfb_alloc, "mem_free": gc.mem_free()}))
"""


def _raw_exec(transport, code: str, port: str, what: str) -> list[str]:
    from mpremote.transport import TransportError

    try:
        out, err = transport.exec_raw(code, timeout=RUN_TIMEOUT_S)
    except TransportError as exc:
        raise McuforgeError(f"the board stopped answering while {what}: {exc}", where=port,
                            fix="check the board (mcuforge monitor), reset it and run the bench again") from None
    if err:
        raise McuforgeError(f"the board failed while {what}:\n{err.decode(errors='replace').strip()}", where=port,
                            fix="check that the runtime and the model file deployed intact (mcuforge deploy)")
    return [line.strip() for line in out.decode(errors="replace").splitlines() if line.strip()]


def _record(lines: list[str], key: str, port: str, what: str) -> dict:
    """The JSON line that has `key` (MicroPython's json orders keys its own way)."""
    for line in lines:
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict) and key in record:
                    return record
    raise McuforgeError(f"the board printed no {{\"{key}\":...}} record while {what}: {lines[-3:]}", where=port,
                        fix="check the board's console (mcuforge monitor)")


def _line(record: dict) -> str:
    return json.dumps(record, separators=(",", ":"))


def run_micropython_bench(model: Path, board, vectors: Vectors, runs: int, work_dir: Path, *, port: str | None,
                          progress: Progress | None, log: Callable[[str], None]) -> DeviceRun:
    from mpremote.transport_serial import SerialTransport

    from .compile import compile_model
    from .console_protocol import parse_results
    from .deploy import LIB_DIR, MODEL_STEM, deploy, enter_raw_repl

    board_file = board
    report = compile_model(model, "micropython", work_dir / "compiled",
                           board=board_file.name if board_file is not None else None)
    model_file = work_dir / "compiled" / report["file"]["name"]
    output_sizes = [int(np.prod(e["shape"])) for e in report["output"]]
    virtual = None
    scratch = None
    if port is None:
        if board_file is not None:
            raise McuforgeError(f"{board_file.name} runs MicroPython on a port the bench cannot guess", where="--port",
                                fix="give the board's serial port, or use --board virtual-board")
        from .virtual_board import VirtualBoard

        scratch = tempfile.mkdtemp(prefix="mcuforge-bench-flash-")
        virtual = VirtualBoard(scratch).start()
        port = virtual.port
        log(f"started a virtual MicroPython board on {port}")
    try:
        log(f"deploying the runtime and {model_file.name} to {port}")
        deployed = deploy(port, model=model_file, log=log)
        root = deployed.board.root.rstrip("/")
        model_path = f"{root}/{MODEL_STEM}{model_file.suffix}"  # where deploy puts the model
        baud = board_file.console.get("baud", 115200) if board_file is not None else 115200
        with contextlib.redirect_stdout(io.StringIO()):
            transport = SerialTransport(port, baudrate=baud, timeout=RUN_TIMEOUT_S)
        try:
            enter_raw_repl(transport, port, log=log)
            setup = _raw_exec(transport, _MICROPYTHON_SETUP % {"model": model_path, "lib": f"{root}/{LIB_DIR}"}, port,
                              "loading the model")
            info = _record(setup, "backend", port, "loading the model")
            lines = [_line(_record(setup, "bench", port, "loading the model"))]
            if progress:
                progress(0, runs)
            for run in range(runs):
                out = _raw_exec(transport, f"_mfb_run({vectors.blob(run % len(vectors)).hex()!r})", port,
                                f"running vector {run % len(vectors)}")
                lines.append(_line(_record(out, "vec", port, f"running vector {run % len(vectors)}")))
                if progress:
                    progress(run + 1, runs)
            end = _raw_exec(transport, _MICROPYTHON_END, port, "collecting memory figures")
            lines.append(_line(_record(end, "done", port, "collecting memory figures")))
            stats = _record(end, "invoke_alloc_bytes", port, "collecting memory figures")
            with contextlib.suppress(Exception):
                transport.exit_raw_repl()
        finally:
            with contextlib.suppress(Exception):
                transport.close()
    finally:
        if virtual is not None:
            virtual.stop()
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    results = parse_results("\n".join(lines), output_sizes)
    name = VIRTUAL_BOARD if board_file is None else board_file.name
    target = {"kind": "micropython", "board": name, "engine": "micropython", "port": "started for the bench"
              if virtual is not None else port, "micropython": info.get("version"), "platform": info.get("platform"),
              "backend": info.get("backend"), "module_format": deployed.module_format,
              "clock_hz": info.get("freq_hz"), "cycle_counter": "time.ticks_us"}
    memory = {"kind": "micropython", "model_file_bytes": info.get("model_file_bytes"),
              "runtime_bytes": info.get("runtime_bytes"), "arena_bytes": info.get("arena_bytes"),
              "flash_bytes": (info.get("model_file_bytes") or 0) + (info.get("runtime_bytes") or 0),
              "runtime_import_ram_bytes": info["mem_free_before_import"] - info["mem_free_before_load"],
              "model_load_ram_bytes": info["mem_free_before_load"] - info["mem_free_after_load"],
              "invoke_alloc_bytes": stats.get("invoke_alloc_bytes"), "mem_free_bytes": stats.get("mem_free"),
              "mem_free_before_load": info.get("mem_free_before_load")}
    # What stays allocated while the model is in use; an invoke's allocations are garbage after it.
    memory["ram_bytes"] = memory["runtime_import_ram_bytes"] + memory["model_load_ram_bytes"]
    run = DeviceRun(results, "us", target, memory)
    if virtual is not None:
        run.notes.append("the virtual board's clock is the host's: its microseconds say how the interpreter "
                         "fares on this machine, not on a microcontroller")
    return run


# ---- the stage ---------------------------------------------------------------------------------------------

def target_kind(board: str, engine: str | None, port: str | None) -> str:
    """micropython or firmware: the virtual board, --engine micropython, or a port the registry
    knows as a virtual board mean MicroPython."""
    if board == VIRTUAL_BOARD or engine == "micropython":
        return "micropython"
    if port:
        from .transport import lookup_port

        entry = lookup_port(port)
        if entry and entry.get("kind") == "virtual-board":
            return "micropython"
    return "firmware"


def bench_model(model: str | Path, board: str, out_dir: str | Path, *, port: str | None = None,
                vectors: str | Path | None = None, runs: int = DEFAULT_RUNS, seed: int = DEFAULT_SEED,
                rtos: str | None = None, engine: str | None = None, kernels: str | None = None,
                probe: str | None = None, progress: Progress | None = None,
                log: Callable[[str], None] = lambda _: None) -> dict:
    """Bench `model` (an int8 .tflite) on `board`; writes bench.json, bench.md and latency.png
    into out_dir and returns the report (see the module docstring)."""
    from mcuforge.codegen.reference import run_reference
    from mcuforge.codegen.tflite_model import load_tflite

    started = time.monotonic()
    model = Path(model)
    if model.suffix != ".tflite" or not model.is_file():
        raise McuforgeError(f"the bench takes an int8 .tflite, and {model} is "
                            f"{'not there' if not model.exists() else 'not one'}", where="MODEL",
                            fix="convert the model first (mcuforge convert MODEL --calib ... -o model.tflite)")
    if runs < 1:
        raise McuforgeError(f"runs must be at least 1, got {runs}", where="--runs", fix="give --runs 1 or more")
    kind = target_kind(board, engine, port)
    board_data = None
    if board != VIRTUAL_BOARD:
        from mcuforge.boards import load_board

        board_data = load_board(board)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    graph = load_tflite(model)
    model_bytes = model.read_bytes()
    vector_set = load_vectors(vectors, graph) if vectors else random_vectors(graph, min(runs, DEFAULT_RUNS), seed)
    total = max(runs, len(vector_set))
    log(f"computing the host reference for {len(vector_set)} vector(s)")
    expected = run_reference(model_bytes, vector_set.inputs)

    if kind == "micropython":
        device = run_micropython_bench(model, board_data, vector_set, total, out_dir, port=port, progress=progress,
                                       log=log)
    else:
        device = run_firmware_bench(model, board_data, vector_set, total, out_dir, port=port, probe=probe,
                                    rtos=rtos, engine=engine or "aot", kernels=kernels, progress=progress, log=log)
    correctness, accuracy = compare_outputs(graph, vector_set, expected, device.results)
    counts = [r.cycles for r in device.results]
    if device.latency_unit == "us":
        latency = latency_stats(counts, "us")
        clock = device.target.get("clock_hz")
        if clock:
            latency["cycles"] = _scaled(latency, clock / 1e6, "cycles (ticks_us x machine.freq())", None)
    else:
        latency = latency_stats(counts, "cycles")
        clock = device.target.get("clock_hz")
        if clock:
            latency["us"] = _scaled(latency, 1e6 / clock, f"us at {clock / 1e6:g} MHz")
        if device.instructions:
            latency["instructions"] = {k: v for k, v in latency_stats(device.instructions, "instructions").items()
                                       if k != "runs"}
    report = {
        "tool": "mcuforge bench", "version": REPORT_VERSION,
        "model": {"path": str(model), "name": model.name, "sha256": hashlib.sha256(model_bytes).hexdigest()},
        "board": device.target["board"], "target": device.target,
        "vectors": {"source": vector_set.source, "count": len(vector_set), "labels": vector_set.labels is not None,
                    "quantized_from_float": vector_set.quantized},
        "runs": total, "correctness": correctness, "accuracy": accuracy, "latency": latency,
        "memory": device.memory, "notes": device.notes, "latency_values": counts,
        "files": {"json": BENCH_JSON, "markdown": BENCH_MARKDOWN, "histogram": HISTOGRAM_FILE},
        "seconds": round(time.monotonic() - started, 2),
    }
    if (out_dir / CONSOLE_LOG).is_file() and kind == "firmware":
        report["files"]["console_log"] = CONSOLE_LOG
    write_bench_files(out_dir, report)
    return report


def bench_passed(report: dict) -> bool:
    correctness = report["correctness"]
    return correctness["bit_exact_runs"] == correctness["runs"]


# ---- what people read ------------------------------------------------------------------------------------

def latency_histogram_png(report: dict) -> bytes:
    """A histogram of the per-run latencies (report["latency_values"]) as PNG bytes (no version
    stamp: same input, same bytes)."""
    from matplotlib.figure import Figure

    latency = report["latency"]
    values = report.get("latency_values") or []
    figure = Figure(figsize=(6.4, 3.2), dpi=HISTOGRAM_DPI, layout="constrained")
    ax = figure.subplots()
    if values:
        low, high = min(values), max(values)
        bins = 1 if low == high else min(40, max(5, len(set(values))))
        span = (low - 0.5, high + 0.5) if low == high else None
        ax.hist(values, bins=bins, range=span, color="#1f77b4", edgecolor="white")
        for key, style in (("p50", "--"), ("p95", ":")):
            if latency.get(key) is not None:
                ax.axvline(latency[key], color="#d62728", linestyle=style, linewidth=1, label=f"{key} {latency[key]:g}")
        ax.legend(fontsize=7, loc="upper right")
    ax.set_xlabel(f"latency ({latency['unit']})", fontsize=8)
    ax.set_ylabel("runs", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.set_title(f"{report['model']['name']} on {report['board']}: {latency['runs']} runs", fontsize=9, loc="left")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _number(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.1f}"
    return f"{int(value):,}"


def bench_markdown(report: dict) -> str:
    from .report_render import _table, human_bytes, human_hz

    target, correctness, accuracy = report["target"], report["correctness"], report["accuracy"]
    latency, memory = report["latency"], report["memory"]
    verdict = "PASS" if bench_passed(report) else "FAIL"
    lines = [f"# Bench: {report['model']['name']} on {report['board']}", ""]
    if target["kind"] == "firmware":
        how = (f"{target['rtos']} firmware, {target['engine']} engine ({target.get('kernels')} kernels), "
               f"{target['core']} at {human_hz(target.get('clock_hz'))}, "
               f"{'emulated by QEMU' if target.get('emulated') else target.get('link')}")
    else:
        how = (f"MicroPython {target.get('micropython')} ({target.get('platform')}), device runtime as "
               f"{target.get('module_format')}, interpreter backend {target.get('backend')}")
    lines += [f"**{verdict}**: {correctness['bit_exact_runs']}/{correctness['runs']} runs bit-exact with the host "
              f"reference (TFLM).", "", f"- target: {how}",
              f"- vectors: {report['vectors']['count']} from {report['vectors']['source']}"
              + (" (float data quantized with the input's scale and zero point)"
                 if report["vectors"]["quantized_from_float"] else "")
              + f"; {report['runs']} runs", f"- model sha256: `{report['model']['sha256'][:16]}…`", ""]

    lines += ["## Outputs against the host", ""]
    rows = [[o["index"], o["name"], "yes" if o["dequantized"] else "no", _percent(o.get("top1_agreement")),
             f"{o['max_abs_error']:.6g}", f"{o['mean_abs_error']:.6g}"] for o in accuracy["outputs"]]
    lines += _table(["output", "tensor", "dequantized", "top-1 agreement", "max abs error", "mean abs error"], rows)
    lines += [f"Bit-exact: {correctness['bit_exact_runs']} of {correctness['runs']} runs, "
              f"{correctness['bit_exact_vectors']} of {correctness['vectors']} vectors.", ""]
    if correctness["mismatches"]:
        rows = [[m["run"], m["vector"], m["output"], m["differing_values"], m["max_abs_diff"]]
                for m in correctness["mismatches"]]
        lines += _table(["run", "vector", "output", "values that differ", "max abs diff"], rows)
    labels = accuracy.get("labels")
    if labels:
        lines += ["## Accuracy against the labels", ""]
        if labels["task"] == "classification":
            lines += _table(["", "top-1 accuracy"], [["device", _percent(labels["device_top1"])],
                                                      ["host", _percent(labels["host_top1"])]])
        elif labels["task"] == "regression":
            lines += _table(["", "MAE", "RMSE"], [["device", f"{labels['device_mae']:.6g}", f"{labels['device_rmse']:.6g}"],
                                                  ["host", f"{labels['host_mae']:.6g}", f"{labels['host_rmse']:.6g}"]])
        else:
            lines += [labels.get("note", ""), ""]

    lines += ["## Latency", ""]
    header = ["", "p50", "p95", "max", "min", "mean"]
    rows = [[latency["unit"], *(_number(latency.get(k)) for k in header[1:])]]
    for key in ("instructions", "us", "cycles"):
        extra = latency.get(key)
        if isinstance(extra, dict):
            rows.append([extra["unit"], *(_number(extra.get(k)) for k in header[1:])])
    lines += _table(header, rows)
    lines += [f"Over {latency['runs']} runs (nearest-rank percentiles).", "",
              f"![latency histogram]({report['files']['histogram']})", ""]

    lines += ["## Memory", ""]
    if memory["kind"] == "firmware":
        rows = [["flash (ELF text + data)", human_bytes(memory.get("flash_bytes"))],
                ["RAM, static (ELF data + bss: arena, stack, heap included)", human_bytes(memory.get("ram_bytes"))],
                ["model flash (code + weights)", human_bytes(memory.get("model_flash_bytes"))],
                ["tensor arena", human_bytes(memory.get("arena_bytes"))],
                ["stack high-water mark", human_bytes(memory.get("stack_hwm_bytes"))],
                ["heap high-water mark", human_bytes(memory.get("heap_hwm_bytes"))]]
        lines += _table(["", "bytes"], rows)
        if memory.get("regions"):
            rows = [[r["memory"], human_bytes(r["used"]), human_bytes(r["length"]), f"{r['percent']}%",
                     ", ".join(r["sections"])] for r in memory["regions"]]
            lines += _table(["memory", "used", "size", "used %", "sections"], rows)
    else:
        rows = [["flash: model file", human_bytes(memory.get("model_file_bytes"))],
                ["flash: runtime modules", human_bytes(memory.get("runtime_bytes"))],
                ["RAM: runtime imported (gc.mem_free before - after)",
                 human_bytes(memory.get("runtime_import_ram_bytes"))],
                ["RAM: model loaded (gc.mem_free before - after)", human_bytes(memory.get("model_load_ram_bytes"))],
                ["RAM: allocated during one invoke, garbage included (most)",
                 human_bytes(memory.get("invoke_alloc_bytes"))],
                ["tensor arena", human_bytes(memory.get("arena_bytes"))],
                ["gc.mem_free after the bench", human_bytes(memory.get("mem_free_bytes"))]]
        lines += _table(["", "bytes"], rows)
    if report.get("notes"):
        lines += ["## Notes", ""] + [f"- {note}" for note in report["notes"]] + [""]
    return "\n".join(lines)


def write_bench_files(out_dir: Path, report: dict) -> None:
    """bench.json (with the per-run latencies), bench.md and latency.png."""
    (out_dir / HISTOGRAM_FILE).write_bytes(latency_histogram_png(report))
    (out_dir / BENCH_MARKDOWN).write_text(bench_markdown(report) + "\n")
    (out_dir / BENCH_JSON).write_text(json.dumps(report, indent=2) + "\n")
