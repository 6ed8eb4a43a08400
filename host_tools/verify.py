"""`mcuforge verify`: the AOT code on a board (host gcc or an emulated Cortex-M under QEMU),
compared bit for bit with TFLM's reference interpreter on random int8 inputs."""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mcuforge.codegen.emit_aot import emit_aot, kernel_variant_for
from mcuforge.codegen.errors import McuforgeError
from mcuforge.codegen.reference import run_reference
from mcuforge.codegen.tflite_model import Graph, load_tflite

HOST = "host"


@dataclass
class Mismatch:
    sample: int
    output: int
    differing_bytes: int
    max_abs_diff: float


@dataclass
class VerifyResult:
    model: str
    board: str
    total: int
    matches: int
    mismatches: list[Mismatch] = field(default_factory=list)
    cycles: list[int] = field(default_factory=list)
    clock_hz: int | None = None
    report: dict = field(default_factory=dict)

    @property
    def instructions_per_inference(self) -> int | None:
        """Under QEMU -icount shift=0 each instruction is 1 ns, so cycles at clock_hz convert exactly."""
        if not self.cycles or not self.clock_hz:
            return None
        return round(self.cycles[0] * 1e9 / self.clock_hz)

    def details(self) -> list[str]:
        lines = [f"model: {self.model}", f"board: {self.board} (kernels: {self.report.get('kernels')})",
                 f"arena: {self.report.get('arena_bytes')} B, weights: {self.report.get('weights_bytes')} B, "
                 f"MACs: {self.report.get('macs')}"]
        if self.instructions_per_inference is not None:
            lines.append(f"instructions per inference (QEMU -icount): {self.instructions_per_inference}")
        for m in self.mismatches[:10]:
            lines.append(f"MISMATCH sample {m.sample} output {m.output}: {m.differing_bytes} bytes differ, "
                         f"max |diff| {m.max_abs_diff}")
        return lines


def _random_input(rng: np.random.Generator, tensor) -> np.ndarray:
    if tensor.dtype == "INT8":
        return rng.integers(-128, 128, size=tensor.shape, dtype=np.int8)
    if tensor.dtype == "FLOAT32":
        # Spread over (and a little beyond) the range the following QUANTIZE can represent.
        return rng.normal(0.0, 2.0, size=tensor.shape).astype(np.float32)
    raise McuforgeError(f"model input {tensor.name!r} is {tensor.dtype}", where=f"tensor {tensor.index}",
                        fix="verify handles int8 and float32 inputs")


def random_samples(graph: Graph, count: int, seed: int) -> list[list[np.ndarray]]:
    """Random inputs over the whole int8 range (and normal floats for float inputs), reproducible by seed."""
    rng = np.random.default_rng(seed)
    return [[_random_input(rng, graph.tensors[t]) for t in graph.inputs] for _ in range(count)]


def run_aot(model_dir: Path, build_dir: Path, board_name: str, blob: bytes) -> tuple[str, int | None]:
    """Build the AOT sources for `board_name` and run them on `blob`; returns console text and clock."""
    from . import firmware, qemu

    if board_name == HOST:
        exe = firmware.build_host_runner(model_dir, build_dir / "host")
        return qemu.run_host_runner(exe, blob), None
    from mcuforge.boards import load_board

    board = load_board(board_name)
    if not board.emulated or not board.qemu:
        raise McuforgeError(f"board {board.name} is not emulated here, so verify cannot run on it",
                            where="--board", fix="use host or an emulated board (see `mcuforge boards`)")
    project = firmware.render_baremetal_project(board, model_dir, build_dir / "firmware")
    elf = firmware.build_baremetal_project(project, board)
    return qemu.run_on_qemu(board, elf, blob), board.clock_hz


def _kernels_for(board_name: str, kernels: str | None) -> str:
    if kernels:
        return kernels
    if board_name == HOST:
        return "portable"
    from mcuforge.boards import load_board

    return kernel_variant_for(load_board(board_name).extensions)


def verify_model(model_path: str | Path, board_name: str, samples: int = 10, seed: int = 0,
                 keep_dir: str | Path | None = None, kernels: str | None = None) -> VerifyResult:
    """`kernels`: force a kernel family; by default the board's best (portable on the host)."""
    from .console_protocol import parse_results

    graph = load_tflite(model_path)
    model_bytes = Path(model_path).read_bytes()
    inputs = random_samples(graph, samples, seed)
    expected = run_reference(model_bytes, inputs)
    blob = b"".join(x.tobytes() for sample in inputs for x in sample)
    output_sizes = [graph.tensors[t].nbytes for t in graph.outputs]

    with tempfile.TemporaryDirectory(prefix="mcuforge-verify-") as tmp:
        work = Path(keep_dir) if keep_dir else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        report = emit_aot(graph, work / "model", kernels=_kernels_for(board_name, kernels))
        text, clock_hz = run_aot(work / "model", work, board_name, blob)
        results = parse_results(text, output_sizes)

    if len(results) != samples:
        raise McuforgeError(f"the firmware returned {len(results)} results for {samples} inputs",
                            where=f"board {board_name}", fix="rerun with --keep DIR and inspect the console output")
    verdict = VerifyResult(str(model_path), board_name, samples, 0, clock_hz=clock_hz, report=report,
                           cycles=[r.cycles for r in results])
    for i, (got, want) in enumerate(zip(results, expected)):
        sample_ok = True
        for j, (got_bytes, want_array) in enumerate(zip(got.outputs, want)):
            want_bytes = np.ascontiguousarray(want_array).tobytes()
            if got_bytes != want_bytes:  # bit for bit, whatever the element type
                sample_ok = False
                got_array = np.frombuffer(got_bytes[: len(want_bytes)], dtype=want_array.dtype)
                want_flat = want_array.ravel()[: len(got_array)]
                diff = np.abs(got_array.astype(np.float64) - want_flat.astype(np.float64))
                verdict.mismatches.append(Mismatch(i, j, int((diff != 0).sum()) + abs(len(got_bytes) - len(want_bytes)),
                                                   float(diff.max()) if len(diff) else 0.0))
        verdict.matches += sample_ok
    return verdict
