"""LOGISTIC: int8 input, int8 output with scale 1/256 and zero point -128.

TFLM's int8 kernel evaluates the logistic in Q4.27 fixed point. Its output depends on the input
value alone, so that same integer arithmetic runs here for all 256 int8 inputs and the device
looks the results up in a 256-byte table.
"""
from __future__ import annotations

import numpy as np

from ..errors import McuforgeError
from ..quantization import logistic_int8_table
from .checks import require_int8

OPCODE = "LOGISTIC"
KERNEL_SOURCES = ["portable/logistic_s8.c"]
KERNEL_HEADERS = ["logistic_s8.h"]
IS_VIEW = False


def check_table_activation(graph, op, output_scale: float, output_zero_point: int, scale_text: str, table) -> None:
    """Checks shared by LOGISTIC and TANH, whose int8 kernels write a fixed output quantization."""
    where = f"{graph.path}: operator {op.index} ({op.opcode})"
    require_int8(graph, op, [op.inputs[0], op.outputs[0]])
    source, result = graph.tensor(op.inputs[0]), graph.tensor(op.outputs[0])
    if tuple(source.shape) != tuple(result.shape):
        raise McuforgeError(f"{op.opcode} at node {op.index}: input shape {list(source.shape)} and output shape "
                            f"{list(result.shape)} differ", where=where,
                            fix="the model file is inconsistent; export it again")
    if source.scale is None or len(source.scale) != 1 or result.scale is None or len(result.scale) != 1:
        raise McuforgeError(f"{op.opcode} at node {op.index} needs per-tensor input and output quantization",
                            where=where, fix="quantize the model to full int8 with `mcuforge convert`")
    if np.float32(result.scale[0]) != np.float32(output_scale) or int(result.zero_point[0]) != output_zero_point:
        raise McuforgeError(f"{op.opcode} at node {op.index} has output scale {float(result.scale[0])!r} and zero "
                            f"point {int(result.zero_point[0])}; TFLM's int8 kernel always writes scale {scale_text} "
                            f"and zero point {output_zero_point}, so this output would be misread", where=where,
                            fix="convert the model again with the TFLite converter, which quantizes this output that "
                                "way (`mcuforge convert`)")
    try:
        table(float(source.scale[0]), int(source.zero_point[0]))
    except ValueError as exc:
        raise McuforgeError(f"{op.opcode} at node {op.index}: {exc}", where=where,
                            fix="check the quantization of the activation's input") from None


def emit_table_activation(graph, op, ctx, ctype: str, function: str, table) -> str:
    source = graph.tensor(op.inputs[0])
    values = table(float(source.scale[0]), int(source.zero_point[0]))
    table_name = ctx.constant("table", values)
    size = int(np.prod(source.shape, dtype=np.int64))
    params = ctx.params(ctype, {"size": size, "table": table_name})
    return f"{function}(&{params}, {ctx.tensor(op.inputs[0])}, {ctx.tensor(op.outputs[0])});"


def check(graph, op) -> None:
    check_table_activation(graph, op, 1.0 / 256.0, -128, "1/256", logistic_int8_table)


def macs(graph, op) -> int:
    return 0


def emit(graph, op, ctx) -> str:
    return emit_table_activation(graph, op, ctx, "mf_logistic_params", "mf_logistic_s8", logistic_int8_table)
