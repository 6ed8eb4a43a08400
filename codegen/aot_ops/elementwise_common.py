"""Shared pieces of the binary elementwise operators (ADD, MUL): broadcasting and checks."""
from __future__ import annotations

import numpy as np

from ..errors import McuforgeError
from .checks import require_int8

MAX_DIMS = 6
ACTIVATIONS = ("NONE", "RELU", "RELU6", "RELU_N1_TO_1")


def _where(graph, op):
    return f"{graph.path}: operator {op.index} ({op.opcode})"


def broadcast_initializer(shape1, shape2, out_shape) -> str:
    """C initializer of mf_broadcast: per output dimension, how far each input index moves."""
    ndim = max(len(out_shape), 1)
    out = [1] * (ndim - len(out_shape)) + list(out_shape)
    strides = []
    for shape in (shape1, shape2):
        padded = [1] * (ndim - len(shape)) + list(shape)
        contiguous = [int(np.prod(padded[d + 1:], dtype=np.int64)) for d in range(ndim)]
        strides.append([0 if padded[d] == 1 and out[d] != 1 else contiguous[d] for d in range(ndim)])
    broadcast = int(tuple(shape1) != tuple(out_shape) or tuple(shape2) != tuple(out_shape))
    count = int(np.prod(out, dtype=np.int64))
    fmt = lambda values: "{ " + ", ".join(str(v) for v in values) + " }"  # noqa: E731
    return (f"{{ .count = {count}, .broadcast = {broadcast}, .ndim = {ndim}, .shape = {fmt(out)}, "
            f".stride1 = {fmt(strides[0])}, .stride2 = {fmt(strides[1])} }}")


def check_binary(graph, op) -> None:
    where = _where(graph, op)
    require_int8(graph, op, [op.inputs[0], op.inputs[1], op.outputs[0]])
    activation = op.options.get("activation", "NONE")
    if activation not in ACTIVATIONS:
        raise McuforgeError(f"{op.opcode} at node {op.index} fuses activation {activation}", where=where,
                            fix=f"use one of {', '.join(ACTIVATIONS)}")
    shapes = [graph.tensor(i).shape for i in (op.inputs[0], op.inputs[1], op.outputs[0])]
    if max(len(s) for s in shapes) > MAX_DIMS:
        raise McuforgeError(f"{op.opcode} at node {op.index} has more than {MAX_DIMS} dimensions", where=where,
                            fix=f"reshape to at most {MAX_DIMS} dimensions")
    try:
        expected = np.broadcast_shapes(shapes[0], shapes[1])
    except ValueError:
        expected = None
    if expected is None or tuple(expected) != tuple(shapes[2]):
        raise McuforgeError(f"{op.opcode} at node {op.index}: shapes {list(shapes[0])} and {list(shapes[1])} do not "
                            f"broadcast to the output shape {list(shapes[2])}", where=where,
                            fix="the model file is inconsistent; export it again")


def binary_shapes(graph, op):
    return graph.tensor(op.inputs[0]).shape, graph.tensor(op.inputs[1]).shape, graph.tensor(op.outputs[0]).shape


def same_shape_inputs(graph, op) -> list[int]:
    """Inputs with the output's shape can be overwritten in place: each element is read before it is written."""
    out_shape = graph.tensor(op.outputs[0]).shape
    return [t for t in op.inputs[:2] if graph.tensor(t).shape == out_shape]
