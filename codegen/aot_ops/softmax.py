"""SOFTMAX: int8 input, int8 output with scale 1/256 and zero point -128 (what TFLM's int8 kernel requires).

TFLM evaluates it in fixed point: beta * input scale becomes a multiplier and left shift that take
each difference from the row maximum into a Q5.26 exp() argument, and differences below diff_min
are dropped. Those three numbers are computed here, as TFLM's Prepare computes them.
"""
from __future__ import annotations

import numpy as np

from ..errors import McuforgeError
from ..quantization import softmax_int8_params
from .checks import require_int8

OPCODE = "SOFTMAX"
KERNEL_SOURCES = ["portable/softmax_s8.c"]
KERNEL_HEADERS = ["softmax_s8.h", "mf_fixedpoint.h"]
IS_VIEW = False

OUTPUT_SCALE = np.float32(1.0 / 256.0)
OUTPUT_ZERO_POINT = -128
# The sum of exponentials is accumulated in Q12.19: 4095 maximal terms still fit.
MAX_DEPTH = 4095


def _where(graph, op):
    return f"{graph.path}: operator {op.index} (SOFTMAX)"


def _dims(graph, op) -> tuple[int, int]:
    shape = graph.tensor(op.inputs[0]).shape
    depth = int(shape[-1])
    rows = int(np.prod(shape[:-1], dtype=np.int64))
    return rows, depth


def check(graph, op) -> None:
    where = _where(graph, op)
    source, result = graph.tensor(op.inputs[0]), graph.tensor(op.outputs[0])
    if source.dtype == "INT8" and result.dtype == "INT16":
        raise McuforgeError(f"SOFTMAX at node {op.index} writes an int16 output; the aot engine implements int8 -> int8",
                            where=where, fix="convert with int8 activations throughout (`mcuforge convert`)")
    require_int8(graph, op, [op.inputs[0], op.outputs[0]])
    if len(source.shape) < 1 or tuple(source.shape) != tuple(result.shape):
        raise McuforgeError(f"SOFTMAX at node {op.index}: input shape {list(source.shape)} and output shape "
                            f"{list(result.shape)} differ", where=where,
                            fix="the model file is inconsistent; export it again")
    if source.scale is None or len(source.scale) != 1 or result.scale is None or len(result.scale) != 1:
        raise McuforgeError(f"SOFTMAX at node {op.index} needs per-tensor input and output quantization",
                            where=where, fix="quantize the model to full int8 with `mcuforge convert`")
    if np.float32(result.scale[0]) != OUTPUT_SCALE or int(result.zero_point[0]) != OUTPUT_ZERO_POINT:
        raise McuforgeError(f"SOFTMAX at node {op.index} has output scale {float(result.scale[0])!r} and zero point "
                            f"{int(result.zero_point[0])}; the int8 softmax of TFLM (and of the aot engine) "
                            f"requires scale 1/256 and zero point -128", where=where,
                            fix="convert the model again with the TFLite converter, which quantizes softmax outputs "
                                "that way (`mcuforge convert`)")
    if "beta" not in op.options:
        raise McuforgeError(f"SOFTMAX at node {op.index} has no options, so no beta (TFLM would read beta 0 and fail)",
                            where=where, fix="the model file is damaged or hand-made; export it again")
    _, depth = _dims(graph, op)
    if not 1 <= depth <= MAX_DEPTH:
        raise McuforgeError(f"SOFTMAX at node {op.index} is taken over {depth} values; the int8 kernel supports "
                            f"1 to {MAX_DEPTH}", where=where,
                            fix="use --engine tflm for this model")
    beta = op.options["beta"]
    try:
        softmax_int8_params(beta, float(source.scale[0]))
    except ValueError as exc:
        raise McuforgeError(f"SOFTMAX at node {op.index}: beta {beta!r} times input scale "
                            f"{float(source.scale[0])!r} is too small for the int8 kernel ({exc})", where=where,
                            fix="TFLM rejects this softmax too; check beta and the quantization of the softmax input"
                            ) from None


def macs(graph, op) -> int:
    return 0


def emit(graph, op, ctx) -> str:
    source = graph.tensor(op.inputs[0])
    rows, depth = _dims(graph, op)
    fixed = softmax_int8_params(op.options["beta"], float(source.scale[0]))
    params = ctx.params("mf_softmax_params", {"rows": rows, "depth": depth, **fixed})
    return f"mf_softmax_s8(&{params}, {ctx.tensor(op.inputs[0])}, {ctx.tensor(op.outputs[0])});"
