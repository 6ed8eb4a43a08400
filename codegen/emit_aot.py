"""Emit mcuforge's own ahead-of-time C for a graph: model.h, model.c, the kernels, report.json.

The output runs with no interpreter and no flatbuffer on the device. Constants (weights,
bias, requantization multipliers) are computed here, once, and written as const arrays.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import numpy as np

from .analyze import Analysis, analyze
from .aot_ops import OPERATORS
from .c_source import c_const_array, c_identifier
from .errors import McuforgeError
from .plan import MemoryPlan, plan_memory
from .tflite_model import Graph

KERNELS_DIR = Path(__file__).resolve().parent / "kernels"
TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
SHARED_KERNEL_HEADERS = ["mf_quant.h"]
IO_CTYPES = {"INT8": "int8_t", "FLOAT32": "float"}
# The firmware linker script places this section in the memory the board file marks for weights.
WEIGHTS_SECTION = ".mcuforge_weights"


@dataclass
class EmitContext:
    """What an operator module's emit() uses: tensor addresses and const-array registration."""
    name: str
    graph: Graph
    analysis: Analysis
    plan: MemoryPlan
    arena: str = ""            # the C array every tensor address is relative to
    op_index: int = 0
    constants: list[str] = field(default_factory=list)
    param_blocks: list[str] = field(default_factory=list)
    constant_bytes: int = 0

    constant_tensors: dict[int, str] = field(default_factory=dict)

    def tensor(self, tensor_index: int) -> str:
        """The address of a tensor: its place in the arena, or its const array if it is a constant."""
        tensor = self.graph.tensors[tensor_index]
        if tensor.is_constant:
            if tensor_index not in self.constant_tensors:
                self.constant_tensors[tensor_index] = self.constant(f"t{tensor_index}", tensor.data)
            return self.constant_tensors[tensor_index]
        offset = self.plan.offsets[self.analysis.buffer_of[tensor_index]]
        return f"({self.arena} + {offset})"

    def runs_in_place(self, op_index: int) -> bool:
        return op_index in self.analysis.in_place_ops

    def scratch(self, op_index: int) -> str:
        return f"({self.arena} + {self.plan.offsets[self.analysis.scratch_of[op_index]]})"

    def constant(self, suffix: str, values: np.ndarray) -> str:
        ident = f"{self.name}_n{self.op_index}_{suffix}"
        values = np.ascontiguousarray(values)
        self.constants.append(c_const_array(ident, values, align=16 if values.dtype.itemsize == 1 else 4,
                                            section=WEIGHTS_SECTION))
        self.constant_bytes += values.nbytes
        return ident

    def params(self, ctype: str, fields: dict, suffix: str = "params") -> str:
        ident = f"{self.name}_n{self.op_index}_{suffix}"
        body = "\n".join(f"    .{key} = {value}," for key, value in fields.items())
        self.param_blocks.append(f"static const {ctype} {ident} = {{\n{body}\n}};\n")
        return ident


def _io_entries(graph: Graph, ctx: EmitContext, indices: list[int]) -> list[dict]:
    entries = []
    for t in indices:
        tensor = graph.tensors[t]
        if tensor.dtype not in IO_CTYPES:
            raise McuforgeError(f"model {'input' if t in graph.inputs else 'output'} {tensor.name!r} is {tensor.dtype}",
                                where=f"{graph.path}: tensor {t}",
                                fix="convert with int8 (or float32) input and output (`mcuforge convert` gives int8)")
        entries.append({"index": t, "nbytes": tensor.nbytes, "address": ctx.tensor(t), "ctype": IO_CTYPES[tensor.dtype]})
    return entries


def io_details(graph: Graph, indices: list[int]) -> list[dict]:
    details = []
    for t in indices:
        tensor = graph.tensors[t]
        details.append({"name": tensor.name, "shape": list(tensor.shape), "dtype": tensor.dtype.lower(),
                        **tensor.quant_summary()})
    return details


KERNEL_VARIANTS = ("portable", "dsp", "mve")
PORTABLE_FALLBACK_SUFFIX = "_portable.inc"  # not a .c, so build systems do not compile it on its own


def kernel_variant_for(extensions) -> str:
    """The fastest kernel family a core can run: Helium (MVE), else Arm DSP (SMLAD), else portable C."""
    extensions = set(extensions or ())
    if "mve" in extensions:
        return "mve"
    if "dsp" in extensions:
        return "dsp"
    return "portable"


def _kernel_file(source: str, variant: str) -> Path:
    """An optimized version of a kernel when one exists for `variant`; the portable one otherwise."""
    optimized = KERNELS_DIR / variant / Path(source).name
    return optimized if variant != "portable" and optimized.exists() else KERNELS_DIR / source


def _smallest_plan(graph: Graph) -> tuple[Analysis, MemoryPlan]:
    """Plan with and without in-place execution and keep the smaller arena (ties: no in-place,
    which copies nothing)."""
    plain = analyze(graph, in_place=False)
    plain_plan = plan_memory(plain)
    shared = analyze(graph, in_place=True)
    if not shared.in_place_ops:
        return plain, plain_plan
    shared_plan = plan_memory(shared)
    return (shared, shared_plan) if shared_plan.arena_bytes < plain_plan.arena_bytes else (plain, plain_plan)


def render_aot_sources(graph: Graph, name: str = "model", source_bytes: bytes | None = None,
                       kernels: str = "portable", shared_arena: str | None = None) -> tuple[dict[str, str], dict]:
    """The generated files (file name -> text) and the report, without touching the disk.

    `shared_arena`: the name of an arena that several models share (see emit_aot_models);
    by default the model owns a static arena of its own."""
    if kernels not in KERNEL_VARIANTS:
        raise McuforgeError(f"unknown kernel family {kernels!r}", where="kernels", fix=f"use one of {', '.join(KERNEL_VARIANTS)}")
    name = c_identifier(name)
    analysis, plan = _smallest_plan(graph)
    arena = shared_arena or f"{name}_arena"
    ctx = EmitContext(name, graph, analysis, plan, arena=arena)
    steps, kernel_sources, kernel_headers = [], [], []
    for op, macs in zip(graph.operators, analysis.macs):
        module = OPERATORS[op.opcode]
        ctx.op_index = op.index
        steps.append({"index": op.index, "opcode": op.opcode, "macs": macs, "code": module.emit(graph, op, ctx)})
        kernel_sources += [k for k in module.KERNEL_SOURCES if k not in kernel_sources]
        kernel_headers += [k for k in module.KERNEL_HEADERS if k not in kernel_headers]
    sha256 = hashlib.sha256(source_bytes).hexdigest() if source_bytes is not None else ""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES_DIR), keep_trailing_newline=True,
                             undefined=jinja2.StrictUndefined)
    values = dict(name=name, NAME=name.upper(), source=Path(graph.path).name, sha256=sha256,
                  arena_bytes=max(plan.arena_bytes, 1), inputs=_io_entries(graph, ctx, graph.inputs),
                  outputs=_io_entries(graph, ctx, graph.outputs), constants=ctx.constants,
                  param_blocks=ctx.param_blocks, steps=steps, kernel_headers=kernel_headers,
                  arena=arena, shared_arena=shared_arena)
    files = {
        f"{name}.h": env.get_template("aot_model.h.j2").render(values),
        f"{name}.c": env.get_template("aot_model.c.j2").render(values),
    }
    for header in SHARED_KERNEL_HEADERS + kernel_headers:
        files[header] = (KERNELS_DIR / header).read_text()
    kernel_files = {Path(source).name: _kernel_file(source, kernels) for source in kernel_sources}
    for file_name, path in kernel_files.items():
        files[file_name] = path.read_text()
        if path.parent.name != "portable":
            # An optimized kernel falls back to the portable one on a core without its
            # extension; it includes it rather than keeping a copy.
            files[f"{Path(file_name).stem}{PORTABLE_FALLBACK_SUFFIX}"] = (KERNELS_DIR / "portable" / file_name).read_text()
    report = {
        "engine": "aot",
        "name": name,
        "model": {"path": str(graph.path), "sha256": sha256},
        "ops": analysis.op_counts,
        "arena_bytes": plan.arena_bytes,
        "arena_strategy": plan.strategy,
        "largest_live_set_bytes": analysis.live_bound,
        "in_place_ops": sorted(analysis.in_place_ops),
        "weights_bytes": ctx.constant_bytes,
        "macs": analysis.total_macs,
        "kernels": kernels,
        "kernel_files": {file_name: path.parent.name for file_name, path in kernel_files.items()},
        "sources": sorted(f for f in files if f.endswith(".c")),
        "input": io_details(graph, graph.inputs),
        "output": io_details(graph, graph.outputs),
        "layers": _layers(graph, analysis, plan),
    }
    return files, report


def _layers(graph: Graph, analysis: Analysis, plan: MemoryPlan) -> list[dict]:
    """One entry per operator: what it computes and where its output lives in the arena."""
    layers = []
    for op, macs in zip(graph.operators, analysis.macs):
        out = op.outputs[0]
        buffer_id = analysis.buffer_of.get(out)
        layers.append({
            "index": op.index,
            "name": graph.tensors[out].name,
            "op": op.opcode,
            "input_shapes": [list(graph.tensors[t].shape) for t in op.inputs
                             if t >= 0 and not graph.tensors[t].is_constant],
            "output_shape": list(graph.tensors[out].shape),
            "macs": macs,
            "arena_offset": plan.offsets[buffer_id] if buffer_id is not None else None,
            "output_bytes": graph.tensors[out].nbytes,
        })
    return layers


def write_directory_atomically(out_dir: Path, files: dict[str, str | bytes]) -> None:
    """Write all files into a fresh directory, then swap it in: a failure leaves the old one intact."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        for file_name, content in files.items():
            target = staging / file_name
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                target.write_bytes(content)
            else:
                target.write_text(content)
        if out_dir.exists():
            retired = out_dir.with_name(f".{out_dir.name}.old")
            shutil.rmtree(retired, ignore_errors=True)
            out_dir.rename(retired)
            staging.rename(out_dir)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def emit_aot(graph: Graph, out_dir: str | Path, name: str = "model", kernels: str = "portable") -> dict:
    """Write the AOT sources and report.json into out_dir; return the report.

    `kernels`: portable, dsp or mve (see kernel_variant_for); every family is bit-exact with the others."""
    source_bytes = Path(graph.path).read_bytes() if Path(graph.path).is_file() else None
    files, report = render_aot_sources(graph, name, source_bytes, kernels)
    files["report.json"] = json.dumps(report, indent=2) + "\n"
    write_directory_atomically(Path(out_dir), files)
    return report


SHARED_ARENA = "mcuforge_shared_arena"
MODEL_ROLES = ("primary", "fallback", "minimal")


def emit_aot_models(graphs: list[tuple[str, Graph]], out_dir: str | Path, kernels: str = "portable") -> dict:
    """Several models (e.g. primary, fallback and minimal) into one directory, planned into one
    shared arena: only one runs at a time, so the arena is the largest of their plans.

    `graphs`: (name, graph) pairs; each model gets its own `<name>.h`/`<name>.c` and C prefix."""
    names = [c_identifier(name) for name, _ in graphs]
    if len(set(names)) != len(names):
        raise McuforgeError(f"model names must differ: {names}", where="--names", fix="give each model its own name")
    files: dict[str, str] = {}
    models = []
    for name, graph in zip(names, (g for _, g in graphs)):
        source_bytes = Path(graph.path).read_bytes() if Path(graph.path).is_file() else None
        model_files, model_report = render_aot_sources(graph, name, source_bytes, kernels, shared_arena=SHARED_ARENA)
        files.update(model_files)
        files[f"{name}.report.json"] = json.dumps(model_report, indent=2) + "\n"
        models.append(model_report)
    arena_bytes = max(max(m["arena_bytes"] for m in models), 1)
    files[f"{SHARED_ARENA}.h"] = (
        f"/* One arena for models that never run at the same time. Generated by mcuforge. */\n"
        f"#ifndef {SHARED_ARENA.upper()}_H\n#define {SHARED_ARENA.upper()}_H\n\n#include <stdint.h>\n\n"
        f"#define {SHARED_ARENA.upper()}_BYTES {arena_bytes}\n"
        f"extern int8_t {SHARED_ARENA}[{SHARED_ARENA.upper()}_BYTES];\n\n#endif\n")
    files[f"{SHARED_ARENA}.c"] = (
        f'#include "{SHARED_ARENA}.h"\n\n'
        f'int8_t {SHARED_ARENA}[{SHARED_ARENA.upper()}_BYTES] '
        f'__attribute__((aligned(16), section(".bss.mcuforge_arena")));\n')
    report = {
        "engine": "aot",
        "kernels": kernels,
        "arena_bytes": arena_bytes,
        "arena_bytes_if_separate": sum(m["arena_bytes"] for m in models),
        "weights_bytes": sum(m["weights_bytes"] for m in models),
        "macs": sum(m["macs"] for m in models),
        "ops": {op: sum(m["ops"].get(op, 0) for m in models) for m in models for op in m["ops"]},
        "models": [{"name": m["name"], "role": MODEL_ROLES[i] if i < len(MODEL_ROLES) else f"model {i}",
                    "model": m["model"], "arena_bytes": m["arena_bytes"], "weights_bytes": m["weights_bytes"],
                    "macs": m["macs"], "ops": m["ops"], "input": m["input"], "output": m["output"]}
                   for i, m in enumerate(models)],
    }
    files["report.json"] = json.dumps(report, indent=2) + "\n"
    write_directory_atomically(Path(out_dir), files)
    return report
