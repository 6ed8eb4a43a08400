"""Emit for the Ethos-U engine: Vela compiles the model for the board's NPU, TFLM runs the result.

Vela (ethos-u-vela) turns every run of operators the NPU can execute into one `ethos-u` custom
operator that carries a command stream and the encoded weights; the operators it cannot place
stay as ordinary TFLite operators for the CPU. The firmware then needs what the tflm engine
gives it (the compiled model as a 16-byte-aligned `const` array, an op resolver with exactly
its operators, here AddEthosU and the CPU ones) and a tensor arena that holds Vela's scratch
area. Vela's summary says what the model costs on the NPU: SRAM and flash used, estimated
cycles and inference time, and why each CPU operator was left to the CPU.

A model that already holds an `ethos-u` operator was compiled by Vela before: it is embedded
as it is, since compiling it again would change nothing.
"""
from __future__ import annotations

import configparser
import hashlib
import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

from .c_source import c_identifier
from .emit_tflm import (model_data_header, model_data_source, op_resolver_header, replace_files_atomically,
                        resolver_methods, tflm_integration)
from .errors import McuforgeError
from .tflite_model import Graph, load_tflite, parse_tflite
from .vela_summary import parse_cpu_fallbacks, parse_operator_counts, parse_per_layer_csv, parse_summary_csv

ENGINE = "ethos-u"
ETHOSU_OP = "CUSTOM:ethos-u"
# The configuration file that ships inside the ethos-u-vela package; Vela finds it by this name.
VELA_CONFIG = "Arm/vela.ini"
VELA_TIMEOUT_S = 1800
TENSOR_ALIGNMENT = 16  # Vela's default --cpu-tensor-alignment, and TFLM's arena alignment

# Inputs of the ethos-u operator, as TFLM's ethos-u kernel reads them: the command stream, then
# the base of each memory region the command stream addresses, then the feature maps.
COMMAND_STREAM_INPUT, READ_ONLY_INPUT, SCRATCH_INPUT, SCRATCH_FAST_INPUT = 0, 1, 2, 3

# TFLM's own bookkeeping in the arena (tensor and node structs, the ethos-u driver's state),
# which the host cannot measure for a model with an NPU operator. Allowances sized from the
# 64-bit host interpreter, whose structs are larger than a Cortex-M's.
ARENA_BASE_ALLOWANCE = 2048
ARENA_PER_TENSOR_ALLOWANCE = 64
ARENA_PER_OPERATOR_ALLOWANCE = 64
ARENA_PER_CHANNEL_BYTES = 8  # per-channel multiplier and shift that TFLM keeps for a CPU convolution


@dataclass(frozen=True)
class EthosUTarget:
    """What Vela compiles for: an accelerator configuration, and optionally a system
    configuration and memory mode from Vela's vela.ini (otherwise Vela's internal defaults)."""
    accelerator: str
    system_config: str | None = None
    memory_mode: str | None = None
    board: str | None = None

    def vela_options(self) -> list[str]:
        options = ["--accelerator-config", self.accelerator]
        if self.system_config:
            options += ["--config", VELA_CONFIG, "--system-config", self.system_config, "--memory-mode", self.memory_mode]
        return options

    def to_dict(self) -> dict:
        return {"accelerator": self.accelerator, "system_config": self.system_config or "internal-default",
                "memory_mode": self.memory_mode or "internal-default"}


def vela_config_path() -> Path:
    import ethosu.vela

    return Path(ethosu.vela.__file__).resolve().parent.parent / "config_files" / VELA_CONFIG


def vela_accelerators() -> list[str]:
    from ethosu.vela.architecture_features import Accelerator

    return [accelerator.value for accelerator in Accelerator]


def vela_configurations() -> dict[str, list[str]]:
    """The system configurations and memory modes that Vela's shipped vela.ini defines."""
    parser = configparser.ConfigParser()
    parser.read(vela_config_path())
    found: dict[str, list[str]] = {"System_Config": [], "Memory_Mode": []}
    for section in parser.sections():
        kind, _, name = section.partition(".")
        if kind in found:
            found[kind].append(name)
    return found


def ethosu_board_names() -> list[str]:
    from mcuforge.boards import all_boards

    return [board.name for board in all_boards() if board.npu.startswith("ethos-u")]


def _boards_with_ethosu_text() -> str:
    names = ethosu_board_names()
    return ", ".join(names) if names else "none of the boards in boards/ has one"


def target_for_board(board) -> EthosUTarget:
    """The Vela target of a board (a `mcuforge.boards.Board`): its `npu` and `npu_config`."""
    if not board.npu.startswith("ethos-u"):
        raise McuforgeError(f"board {board.name} has no Ethos-U NPU (npu = {board.npu!r}), so the ethos-u engine "
                            "cannot target it",
                            where=f"{board.path}: npu",
                            fix=f"pick a board with an Ethos-U: {_boards_with_ethosu_text()}; or use one of this "
                                f"board's engines: {', '.join(board.engines)}")
    if board.npu not in vela_accelerators():
        raise McuforgeError(f"Vela has no accelerator configuration {board.npu!r}", where=f"{board.path}: npu",
                            fix=f"use one of: {', '.join(vela_accelerators())}")
    system_config = board.npu_config.get("system_config")
    memory_mode = board.npu_config.get("memory_mode")
    if bool(system_config) != bool(memory_mode):
        missing = "memory_mode" if system_config else "system_config"
        raise McuforgeError(f"board {board.name} gives only one of npu_config.system_config and npu_config.memory_mode",
                            where=f"{board.path}: npu_config.{missing}",
                            fix="give both (Vela needs the pair from its vela.ini), or neither for Vela's defaults")
    if system_config:
        known = vela_configurations()
        for field, value, kind in (("system_config", system_config, "System_Config"),
                                   ("memory_mode", memory_mode, "Memory_Mode")):
            if value not in known[kind]:
                raise McuforgeError(f"Vela's {VELA_CONFIG} defines no {kind} named {value!r}",
                                    where=f"{board.path}: npu_config.{field}",
                                    fix=f"use one of: {', '.join(known[kind])}")
    return EthosUTarget(board.npu, system_config, memory_mode, board.name)


@dataclass
class VelaRun:
    command: list[str]          # as a person would type it, without this machine's paths
    compiled: bytes             # the compiled .tflite
    summary: dict               # parse_summary_csv
    layers: list[dict]          # parse_per_layer_csv
    fallbacks: list[dict]       # parse_cpu_fallbacks
    operator_counts: dict       # Vela's own counts, after its lowering


def run_vela(model_path: str | Path, target: EthosUTarget) -> VelaRun:
    """Compile a .tflite with Vela (the ethos-u-vela package of this Python) and read its outputs."""
    model_path = Path(model_path)
    options = target.vela_options() + ["--verbose-performance"]
    with tempfile.TemporaryDirectory(prefix="mcuforge-vela-") as tmp:
        out = Path(tmp) / "out"
        argv = [sys.executable, "-m", "ethosu.vela", str(model_path.resolve()), *options, "--output-dir", str(out)]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=VELA_TIMEOUT_S, cwd=tmp)
        except subprocess.TimeoutExpired:
            raise McuforgeError(f"Vela did not finish within {VELA_TIMEOUT_S} s", where=str(model_path),
                                fix="check the model's size; try Vela by hand: vela --verbose-progress MODEL") from None
        log = done.stdout + "\n" + done.stderr
        compiled = sorted(out.glob("*_vela.tflite"))
        if done.returncode != 0 or not compiled:
            last = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()][-3:]
            raise McuforgeError(f"Vela could not compile {model_path.name}: " + (" | ".join(last) or f"exit {done.returncode}"),
                                where=str(model_path),
                                fix="check that the model is an int8 .tflite (`mcuforge convert` makes one) and that "
                                    "the board's npu_config suits its NPU")
        summaries = sorted(out.glob("*_summary_*.csv"))
        per_layer = sorted(out.glob("*_per-layer.csv"))
        if not summaries:
            raise McuforgeError("Vela wrote no summary CSV", where=str(model_path),
                                fix="use the Vela version pinned in pyproject.toml (ethos-u-vela)")
        summary = parse_summary_csv(summaries[0].read_text(), where=summaries[0].name)
        layers = parse_per_layer_csv(per_layer[0].read_text(), where=per_layer[0].name) if per_layer else []
        return VelaRun(command=["vela", model_path.name, *options], compiled=compiled[0].read_bytes(),
                       summary=summary, layers=layers, fallbacks=parse_cpu_fallbacks(log),
                       operator_counts=parse_operator_counts(done.stdout))


def is_vela_compiled(graph: Graph) -> bool:
    return any(op.opcode == ETHOSU_OP for op in graph.operators)


def _align(size: int) -> int:
    return -(-size // TENSOR_ALIGNMENT) * TENSOR_ALIGNMENT


def _used_tensors(graph: Graph) -> set[int]:
    used = set(graph.inputs) | set(graph.outputs)
    for op in graph.operators:
        used.update(t for t in op.inputs + op.outputs if t >= 0)
    return used


def npu_tensors(graph: Graph) -> dict[str, int]:
    """Bytes of the command streams, read-only data (weights), and scratch areas of the
    ethos-u operators of a compiled model; tensors shared between operators count once."""
    roles = {"command_stream_bytes": COMMAND_STREAM_INPUT, "read_only_bytes": READ_ONLY_INPUT,
             "scratch_bytes": SCRATCH_INPUT, "scratch_fast_bytes": SCRATCH_FAST_INPUT}
    sizes = {}
    for key, position in roles.items():
        seen = {op.inputs[position] for op in graph.operators
                if op.opcode == ETHOSU_OP and len(op.inputs) > position and op.inputs[position] >= 0}
        if key == "scratch_fast_bytes":  # in most memory modes it is the scratch tensor itself
            seen -= {op.inputs[SCRATCH_INPUT] for op in graph.operators if op.opcode == ETHOSU_OP}
        sizes[key] = sum(graph.tensors[t].nbytes for t in seen)
    return sizes


def estimate_tflm_arena(graph: Graph) -> tuple[int, str]:
    """An arena size that holds every non-constant tensor of a compiled model at once (Vela's
    scratch area among them) plus TFLM's bookkeeping. An upper bound: TFLM's planner overlaps
    tensors whose lifetimes do not, which the host cannot measure with the NPU operator in."""
    used = _used_tensors(graph)
    tensors = sum(_align(graph.tensors[t].nbytes) for t in used if not graph.tensors[t].is_constant)
    channels = 0
    for op in graph.operators:
        if op.opcode == ETHOSU_OP:
            continue
        for t in op.inputs:
            tensor = graph.tensor(t)
            if tensor is not None and tensor.is_constant and tensor.per_channel:
                channels += len(tensor.scale)
    bookkeeping = (ARENA_BASE_ALLOWANCE + ARENA_PER_TENSOR_ALLOWANCE * len(used)
                   + ARENA_PER_OPERATOR_ALLOWANCE * len(graph.operators) + ARENA_PER_CHANNEL_BYTES * channels)
    source = (f"estimated: {tensors} B for all non-constant tensors at once (Vela's scratch area, inputs, outputs, "
              f"CPU operator tensors; {TENSOR_ALIGNMENT}-byte aligned) plus {bookkeeping} B allowed for TFLM's bookkeeping")
    return tensors + bookkeeping, source


def _output_names(graph: Graph, op) -> list[str]:
    return [graph.tensors[t].name for t in op.outputs if t >= 0]


def _layers(source: Graph, compiled: Graph, vela_layers: list[dict], fallbacks: list[dict]) -> list[dict]:
    """One entry per operator of the source model: where it runs, and Vela's estimates for it.

    Vela names each lowered operator by its output tensor, and the last one lowered from a
    source operator carries that operator's output name; so the rows up to and including the
    one with that name belong to it (a softmax becomes twenty-odd NPU operations)."""
    cpu_names = {name for op in compiled.operators if op.opcode != ETHOSU_OP for name in _output_names(compiled, op)}
    reasons = {f["tensor"]: f["reason"] for f in fallbacks}
    owner = {name: op.index for op in source.operators for name in _output_names(source, op)}
    rows_of: dict[int, list[dict]] = {op.index: [] for op in source.operators}
    pending: list[dict] = []
    for row in vela_layers:
        pending.append(row)
        if row["name"] in owner:
            rows_of[owner[row["name"]]] += pending
            pending = []
    layers = []
    for op in source.operators:
        names = _output_names(source, op)
        on_cpu = any(name in cpu_names or name in reasons for name in names)
        rows = rows_of[op.index]
        out = op.outputs[0] if op.outputs else -1
        layer = {
            "index": op.index,
            "name": names[0] if names else "",
            "op": op.opcode,
            "target": "CPU" if on_cpu else "NPU",
            "output_shape": list(source.tensors[out].shape) if out >= 0 else [],
            # Vela estimates the NPU only: a CPU operator has no cycle figure.
            "cycles": sum(r["cycles"] for r in rows) if vela_layers and not on_cpu else None,
            "npu_cycles": sum(r["npu_cycles"] for r in rows) if vela_layers and not on_cpu else None,
            "macs": sum(r["macs"] for r in rows) if vela_layers and not on_cpu else None,
            "vela_ops": [r["vela_op"] for r in rows],
        }
        if on_cpu:
            layer["reason"] = next((reasons[name] for name in names if name in reasons),
                                   "Vela left it to the CPU without a supported-operator warning")
        layers.append(layer)
    return layers


def _op_split(layers: list[dict]) -> dict:
    split = {"npu": 0, "cpu": 0, "npu_ops": {}, "cpu_ops": {}}
    for layer in layers:
        side = layer["target"].lower()
        split[side] += 1
        split[f"{side}_ops"][layer["op"]] = split[f"{side}_ops"].get(layer["op"], 0) + 1
    split["total"] = split["npu"] + split["cpu"]
    return split


def _passthrough_layers(compiled: Graph) -> list[dict]:
    return [{"index": op.index, "name": (_output_names(compiled, op) or [""])[0], "op": op.opcode,
             "target": "NPU" if op.opcode == ETHOSU_OP else "CPU",
             "output_shape": list(compiled.tensors[op.outputs[0]].shape) if op.outputs else [],
             "cycles": None, "npu_cycles": None, "macs": None, "vela_ops": []}
            for op in compiled.operators]


def emit_ethosu(model_path: str | Path, out_dir: str | Path, name: str = "model",
                target: EthosUTarget | None = None) -> dict:
    """Compile `model_path` with Vela for `target` (or embed it as it is if Vela compiled it
    already) and write {name}_data.h/.cc, {name}_op_resolver.h, {name}_vela.tflite and
    report.json into `out_dir`; return the report."""
    model_path, out_dir = Path(model_path), Path(out_dir)
    ident = c_identifier(name)
    source = load_tflite(model_path)
    if not source.operators:
        raise McuforgeError("the model has no operators", where=str(model_path), fix="export the model again")
    source_bytes = model_path.read_bytes()
    already_compiled = is_vela_compiled(source)
    notes = []
    if already_compiled:
        compiled_bytes, compiled, run = source_bytes, source, None
        notes.append("the model already holds an ethos-u operator (Vela compiled it before): embedded as it is, "
                     "so Vela's estimates are not available and the NPU configuration it was compiled for is not checked")
    else:
        if target is None:
            raise McuforgeError("the ethos-u engine needs the NPU to compile for", where="--board",
                                fix=f"pass --board with a board that has an Ethos-U: {_boards_with_ethosu_text()}")
        run = run_vela(model_path, target)
        compiled_bytes = run.compiled
        compiled = parse_tflite(compiled_bytes, f"{model_path.stem}_vela.tflite (Vela's output)")
    methods = resolver_methods(compiled)
    arena_bytes, arena_source = estimate_tflm_arena(compiled)
    tensors = npu_tensors(compiled)
    if run is not None:
        layers = _layers(source, compiled, run.layers, run.fallbacks)
        split = _op_split(layers)
        memory = {**run.summary["memory"], "source": "Vela's summary"}
        performance = run.summary["performance"]
        if split["cpu"]:
            notes.append(f"{split['cpu']} operator(s) run on the CPU; Vela's cycles and inference time cover the NPU part only")
        vela = {"version": version("ethos-u-vela"), "command": " ".join(run.command), "config": run.summary["config"],
                "weights": run.summary["weights"], "operator_counts_after_lowering": run.operator_counts,
                "per_layer": run.layers}
    else:
        layers = _passthrough_layers(compiled)
        split = _op_split(layers)
        split["note"] = "counts the ethos-u operators (each one a compiled NPU subgraph) and the CPU operators"
        memory = {"sram_bytes": tensors["scratch_bytes"] + tensors["scratch_fast_bytes"],
                  "flash_bytes": tensors["read_only_bytes"],
                  "source": "sizes of the ethos-u operators' scratch and read-only tensors in the model"}
        performance = None
        vela = None
    fallbacks = [{"index": layer["index"], "op": layer["op"], "name": layer["name"], "reason": layer["reason"]}
                 for layer in layers if layer["target"] == "CPU" and "reason" in layer]
    compiled_name = f"{ident}_vela.tflite"
    files = {
        f"{ident}_data.h": model_data_header(ident, compiled_bytes, compiled_name, arena_bytes, arena_source),
        f"{ident}_data.cc": model_data_source(ident, compiled_bytes, compiled_name),
        f"{ident}_op_resolver.h": op_resolver_header(ident, methods, compiled.op_counts(), compiled_name),
        compiled_name: compiled_bytes,
    }
    report = {
        "engine": ENGINE,
        "name": ident,
        "model": model_path.name,
        "model_sha256": hashlib.sha256(source_bytes).hexdigest(),
        "board": target.board if target else None,
        "npu": target.to_dict() if target else None,
        "already_compiled": already_compiled,
        "compiled_model": compiled_name,
        "compiled_model_sha256": hashlib.sha256(compiled_bytes).hexdigest(),
        "model_bytes": len(compiled_bytes),
        "arena_bytes": arena_bytes,
        "arena_source": arena_source,
        "ops": compiled.op_counts(),
        "source_ops": source.op_counts(),
        "op_split": split,
        "cpu_fallbacks": fallbacks,
        "memory": memory,
        "npu_tensors": tensors,
        "performance": performance,
        "macs": performance["macs"] if performance else None,
        "layers": layers,
        "vela": vela,
        "notes": notes,
        **tflm_integration(compiled, ident, methods, files),
    }
    files["report.json"] = json.dumps(report, indent=2) + "\n"
    replace_files_atomically(out_dir, files)
    return report
