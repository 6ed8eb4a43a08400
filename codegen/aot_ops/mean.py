"""MEAN, int8, over any axes, with or without keep_dims.

The TFLM this project verifies against has one int8 path for MEAN, reference QuantizedMeanOrSum:
sum the raw values in int32, subtract input_zero_point x count, requantize by a multiplier that
folds in 1/count, add the output zero point and clamp. That path is taken for every int8 MEAN,
including 4-D means over axes 1 and 2 and means whose input and output quantization are equal
(older TFLM releases had separate kernels for those two cases; the installed one does not use
them, which tests/test_aot_tensor_ops.py checks against the interpreter).
"""
from __future__ import annotations

import numpy as np

from ..errors import McuforgeError
from ..quantization import mean_multiplier, mean_zero_point_sum
from .checks import op_location as _where, require_int8

OPCODE = "MEAN"
KERNEL_SOURCES = ["portable/mean_s8.c"]
KERNEL_HEADERS = ["mean_s8.h"]
IS_VIEW = False

MAX_DIMS = 5  # TFLM's reduce kernels index at most 5 dimensions; the kernel's MF_MEAN_MAX_DIMS


INCONSISTENT = "the model file is inconsistent; export it again"


def _fail(graph, op, what: str, tensor: int | None = None, fix: str = INCONSISTENT):
    raise McuforgeError(f"MEAN at node {op.index} {what}", where=_where(graph, op, tensor), fix=fix)


def _axes(graph, op) -> list[int]:
    """The reduced axes, made non-negative and without repeats, in the order given."""
    rank = len(graph.tensor(op.inputs[0]).shape)
    axes = []
    for a in graph.tensor(op.inputs[1]).data.ravel():
        a = int(a) + rank if int(a) < 0 else int(a)
        if a not in axes:
            axes.append(a)
    return axes


def _count(graph, op) -> int:
    shape = graph.tensor(op.inputs[0]).shape
    return int(np.prod([shape[a] for a in _axes(graph, op)], dtype=np.int64))


def check(graph, op) -> None:
    if len(op.inputs) != 2:
        _fail(graph, op, f"has {len(op.inputs)} inputs; input and axes expected")
    require_int8(graph, op, [op.inputs[0], op.outputs[0]])
    source, result = graph.tensor(op.inputs[0]), graph.tensor(op.outputs[0])
    rank = len(source.shape)
    if rank > MAX_DIMS:
        _fail(graph, op, f"averages a {rank}-D tensor; TFLM's MEAN handles at most {MAX_DIMS} dimensions",
              fix="reshape to at most 5 dimensions first")
    axis = graph.tensor(op.inputs[1])
    if axis is None or not axis.is_constant:
        _fail(graph, op, "has computed axes", op.inputs[1], fix="use constant axes")
    if axis.dtype != "INT32":
        _fail(graph, op, f"has {axis.dtype} axes; TFLM requires int32", op.inputs[1],
              fix="export the axes as int32")
    for a in axis.data.ravel():
        if not -rank <= int(a) < rank:
            _fail(graph, op, f"has axis {int(a)} for a {rank}-D input", op.inputs[1])
    if any(d <= 0 for d in source.shape):
        _fail(graph, op, f"averages an empty tensor of shape {list(source.shape)}",
              fix="remove the empty tensor from the model")
    axes = _axes(graph, op)
    kept = [source.shape[d] for d in range(rank) if d not in axes]
    if int(np.prod(kept, dtype=np.int64)) != int(np.prod(result.shape, dtype=np.int64)):
        _fail(graph, op, f"reduces shape {list(source.shape)} over axes {axes} but its output has shape "
                         f"{list(result.shape)}")
    for t in (op.inputs[0], op.outputs[0]):
        tensor = graph.tensor(t)
        if tensor.scale is None:
            _fail(graph, op, f"has an int8 tensor without quantization ({tensor.name!r})", t,
                  fix="quantize the model to full int8 with `mcuforge convert`")
        if tensor.per_channel:
            _fail(graph, op, "has a per-channel quantized activation", t,
                  fix="quantize activations per tensor (`mcuforge convert` does this)")


def macs(graph, op) -> int:
    return int(np.prod(graph.tensor(op.inputs[0]).shape, dtype=np.int64))


def _groups(shape, axes) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(size, stride) of kept and of reduced dimensions, merging neighbours of the same kind."""
    strides = [int(np.prod(shape[d + 1:], dtype=np.int64)) for d in range(len(shape))]
    kept: list[tuple[int, int]] = []
    reduced: list[tuple[int, int]] = []
    previous = None
    for d, size in enumerate(shape):
        if size == 1:
            continue
        kind = d in axes
        group = reduced if kind else kept
        if previous == kind:
            # The previous dimension of this kind is this one's outer neighbour: one longer dimension.
            outer_size, _ = group[-1]
            group[-1] = (outer_size * size, strides[d])
        else:
            group.append((size, strides[d]))
        previous = kind
    return kept, reduced or [(1, 1)]


def emit(graph, op, ctx) -> str:
    source, result = graph.tensor(op.inputs[0]), graph.tensor(op.outputs[0])
    count = _count(graph, op)
    kept, reduced = _groups(source.shape, _axes(graph, op))
    multiplier, shift = mean_multiplier(source.scale[0], result.scale[0], count)

    def as_c(values):
        values = list(values) or [0]
        return "{" + ", ".join(str(int(v)) for v in values) + "}"

    params = ctx.params("mf_mean_params", {
        "kept_rank": len(kept),
        "kept_size": as_c(s for s, _ in kept),
        "kept_stride": as_c(st for _, st in kept),
        "reduced_rank": len(reduced),
        "reduced_size": as_c(s for s, _ in reduced),
        "reduced_stride": as_c(st for _, st in reduced),
        "input_zero_sum": mean_zero_point_sum(int(source.zero_point[0]), count),
        "multiplier": multiplier,
        "shift": shift,
        "output_offset": int(result.zero_point[0]),
    })
    return f"mf_mean_s8(&{params}, {ctx.tensor(op.inputs[0])}, {ctx.tensor(op.outputs[0])});"
