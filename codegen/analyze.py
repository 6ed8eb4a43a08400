"""Analyze a graph for the AOT engine: supported ops, MACs and activation-buffer lifetimes.

Time is measured in operator steps. A buffer is the storage of one activation tensor, or of
several when an operator is a view (RESHAPE) and its output shares the input's bytes, or when
an operator runs in place and writes its output over an input nobody reads afterwards. An
operator running in place may also need a scratch buffer, live for its own step only.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .aot_ops import operator_module
from .errors import McuforgeError
from .tflite_model import Graph


@dataclass
class Buffer:
    id: int
    tensors: list[int]
    size: int
    first: int          # first step at which the bytes must be held
    last: int           # last step at which they are read (len(ops) for graph outputs)

    def overlaps(self, other: "Buffer") -> bool:
        return self.first <= other.last and other.first <= self.last


@dataclass
class Analysis:
    graph: Graph
    buffers: list[Buffer]
    buffer_of: dict[int, int]            # tensor index -> buffer id
    macs: list[int]                       # per operator
    op_counts: dict[str, int] = field(default_factory=dict)
    live_bound: int = 0    # the largest set of tensors live at once, before any in-place sharing
    in_place_ops: set[int] = field(default_factory=set)     # operator indices that overwrite an input
    scratch_of: dict[int, int] = field(default_factory=dict)  # operator index -> scratch buffer id

    @property
    def total_macs(self) -> int:
        return sum(self.macs)

    def peak_live_bytes(self) -> int:
        """The largest total size of buffers live at one step: a lower bound for a plan of these buffers."""
        return _peak_live(self.buffers, len(self.graph.operators))


def _find(parent: dict[int, int], t: int) -> int:
    while parent[t] != t:
        parent[t] = parent[parent[t]]
        t = parent[t]
    return t


def analyze(graph: Graph, in_place: bool = True) -> Analysis:
    """`in_place`: let operators that can overwrite a dead input do so (smaller arena, a little
    copying for convolutions)."""
    modules = []
    for op in graph.operators:
        module = operator_module(graph, op)
        module.check(graph, op)
        modules.append(module)

    activations = {t.index for t in graph.tensors if not t.is_constant}
    used = {i for op in graph.operators for i in op.inputs + op.outputs if i >= 0} | set(graph.inputs) | set(graph.outputs)
    activations &= used

    # Views share storage with their input: merge them into one buffer.
    parent = {t: t for t in activations}
    for op, module in zip(graph.operators, modules):
        if module.IS_VIEW:
            parent[_find(parent, op.outputs[0])] = _find(parent, op.inputs[0])

    end = len(graph.operators)
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    produced = set(graph.inputs)
    for t in graph.inputs:
        first[t] = 0
    for step, op in enumerate(graph.operators):
        for t in op.inputs:
            if t in activations:
                if t not in produced:
                    raise McuforgeError(f"operator {op.index} ({op.opcode}) reads tensor {t} before anything writes it",
                                        where=f"{graph.path}: operator {op.index}",
                                        fix="the aot engine needs a graph in execution order without state tensors")
                last[t] = max(last.get(t, step), step)
        for t in op.outputs:
            produced.add(t)
            first.setdefault(t, step)
            last.setdefault(t, step)
    for t in graph.outputs:
        last[t] = end

    bound = _peak_live(_buffers(graph, activations, parent, first, last), end)

    # In-place execution: an op that can overwrite an input whose bytes nobody reads afterwards
    # writes its output there, and the two tensors become one buffer.
    in_place_ops: set[int] = set()
    for step, (op, module) in enumerate(zip(graph.operators, modules)):
        if not in_place or not hasattr(module, "in_place_inputs") or op.outputs[0] not in activations:
            continue
        out_root = _find(parent, op.outputs[0])
        for candidate in module.in_place_inputs(graph, op):
            if candidate not in activations:
                continue
            root = _find(parent, candidate)
            members = [t for t in activations if _find(parent, t) == root]
            if root == out_root or max(last.get(t, 0) for t in members) != step:
                continue
            if graph.tensors[op.outputs[0]].nbytes > max(graph.tensors[t].nbytes for t in members):
                continue
            parent[out_root] = root
            in_place_ops.add(op.index)
            break

    buffers = _buffers(graph, activations, parent, first, last)
    buffer_of = {t: b.id for b in buffers for t in b.tensors}
    scratch_of = {}
    for step, (op, module) in enumerate(zip(graph.operators, modules)):
        size = module.scratch_bytes(graph, op) if op.index in in_place_ops and hasattr(module, "scratch_bytes") else 0
        if size:
            scratch_of[op.index] = len(buffers)
            buffers.append(Buffer(len(buffers), [], size, step, step))
    macs = [module.macs(graph, op) for op, module in zip(graph.operators, modules)]
    return Analysis(graph, buffers, buffer_of, macs, graph.op_counts(), live_bound=bound,
                    in_place_ops=in_place_ops, scratch_of=scratch_of)


def _buffers(graph: Graph, activations: set[int], parent: dict[int, int], first: dict[int, int],
             last: dict[int, int]) -> list[Buffer]:
    groups: dict[int, list[int]] = {}
    for t in sorted(activations):
        groups.setdefault(_find(parent, t), []).append(t)
    return [Buffer(bid, members, max(graph.tensors[t].nbytes for t in members),
                   min(first.get(t, 0) for t in members),
                   max(last.get(t, first.get(t, 0)) for t in members))
            for bid, (_, members) in enumerate(sorted(groups.items()))]


def _peak_live(buffers: list[Buffer], end: int) -> int:
    return max((sum(b.size for b in buffers if b.first <= s <= b.last) for s in range(end + 1)), default=0)
