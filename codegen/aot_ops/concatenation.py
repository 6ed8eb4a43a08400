"""CONCATENATION, int8, along any axis.

TFLM's int8 kernel copies bytes: it does not requantize, so its result means what the model says
only when every input has the output's scale and zero point (the converter arranges that). Models
that differ are refused rather than copied into wrong values.
"""
from __future__ import annotations

import numpy as np

from ..errors import McuforgeError
from .checks import op_location as _where, per_tensor_quantization as _quantization, require_int8

OPCODE = "CONCATENATION"
KERNEL_SOURCES = ["portable/concatenation_s8.c"]
KERNEL_HEADERS = ["concatenation_s8.h"]
IS_VIEW = False


def _axis(graph, op) -> int:
    rank = len(graph.tensor(op.outputs[0]).shape)
    axis = int(op.options.get("axis", 0))
    return axis + rank if axis < 0 else axis


def check(graph, op) -> None:
    inputs = [t for t in op.inputs if t >= 0]
    if not inputs:
        raise McuforgeError(f"CONCATENATION at node {op.index} has no inputs", where=_where(graph, op),
                            fix="the model file is inconsistent; export it again")
    require_int8(graph, op, inputs + [op.outputs[0]])
    activation = op.options.get("activation", "NONE")
    if activation != "NONE":
        raise McuforgeError(f"CONCATENATION at node {op.index} fuses activation {activation}; TFLM accepts none",
                            where=_where(graph, op), fix="apply the activation in a separate layer")
    output = graph.tensor(op.outputs[0])
    rank = len(output.shape)
    axis = _axis(graph, op)
    if not 0 <= axis < rank:
        raise McuforgeError(f"CONCATENATION at node {op.index} has axis {op.options.get('axis')} for a "
                            f"{rank}-D output", where=_where(graph, op),
                            fix="the model file is inconsistent; export it again")
    for t in inputs + [op.outputs[0]]:
        tensor = graph.tensor(t)
        if tensor.per_channel:
            raise McuforgeError(f"CONCATENATION at node {op.index} has a per-channel quantized tensor "
                                f"({tensor.name!r})", where=_where(graph, op, t),
                            fix="quantize activations per tensor (`mcuforge convert` does this)")
    wanted = _quantization(output)
    for t in inputs:
        got = _quantization(graph.tensor(t))
        if got != wanted:
            raise McuforgeError(
                f"CONCATENATION at node {op.index}: input tensor {t} has scale/zero point {got} but the output has "
                f"{wanted}; TFLM's int8 concatenation copies bytes without requantizing, so the result would be wrong",
                where=_where(graph, op, t),
                fix="let the converter give all inputs of the concatenation the output's quantization "
                    "(it does for models quantized with `mcuforge convert`)")
    total = 0
    for t in inputs:
        shape = graph.tensor(t).shape
        if len(shape) != rank or any(shape[d] != output.shape[d] for d in range(rank) if d != axis):
            raise McuforgeError(f"CONCATENATION at node {op.index}: input tensor {t} has shape {list(shape)}, "
                                f"which does not fit output {list(output.shape)} along axis {axis}",
                                where=_where(graph, op, t), fix="the model file is inconsistent; export it again")
        total += shape[axis]
    if total != output.shape[axis]:
        raise McuforgeError(f"CONCATENATION at node {op.index}: the inputs add up to {total} along axis {axis}, "
                            f"the output has {output.shape[axis]}", where=_where(graph, op),
                            fix="the model file is inconsistent; export it again")


def macs(graph, op) -> int:
    return 0


def emit(graph, op, ctx) -> str:
    output = graph.tensor(op.outputs[0])
    axis = _axis(graph, op)
    outer = int(np.prod(output.shape[:axis], dtype=np.int64))
    inner = int(np.prod(output.shape[axis + 1:], dtype=np.int64))
    output_row = output.shape[axis] * inner
    lines, offset = [], 0
    for k, t in enumerate(i for i in op.inputs if i >= 0):
        tensor = graph.tensor(t)
        source = ctx.constant(f"input{k}", tensor.data) if tensor.is_constant else ctx.tensor(t)
        row = tensor.shape[axis] * inner
        if row:
            lines.append(f"mf_concatenation_s8({source}, {ctx.tensor(op.outputs[0])} + {offset}, "
                         f"{outer}, {row}, {output_row});")
        offset += row
    return "\n    ".join(lines) or "/* CONCATENATION of empty tensors */"
