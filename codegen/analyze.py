"""Analyze a graph for the AOT engine: supported ops, MACs and activation-buffer lifetimes.

Time is measured in operator steps. A buffer is the storage of one activation tensor, or of
several when an operator is a view (RESHAPE) and its output shares the input's bytes.
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

    @property
    def total_macs(self) -> int:
        return sum(self.macs)

    def peak_live_bytes(self) -> int:
        """The largest total size of buffers live at one step: a lower bound for any plan without in-place ops."""
        steps = len(self.graph.operators) + 1
        return max((sum(b.size for b in self.buffers if b.first <= s <= b.last) for s in range(steps)), default=0)


def _find(parent: dict[int, int], t: int) -> int:
    while parent[t] != t:
        parent[t] = parent[parent[t]]
        t = parent[t]
    return t


def analyze(graph: Graph) -> Analysis:
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

    groups: dict[int, list[int]] = {}
    for t in sorted(activations):
        groups.setdefault(_find(parent, t), []).append(t)
    buffers, buffer_of = [], {}
    for bid, (root, members) in enumerate(sorted(groups.items())):
        size = max(graph.tensors[t].nbytes for t in members)
        buffers.append(Buffer(bid, members, size,
                              min(first.get(t, 0) for t in members),
                              max(last.get(t, first.get(t, 0)) for t in members)))
        for t in members:
            buffer_of[t] = bid

    macs = [module.macs(graph, op) for op, module in zip(graph.operators, modules)]
    return Analysis(graph, buffers, buffer_of, macs, graph.op_counts())
