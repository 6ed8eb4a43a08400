"""Shared checks and parameters of AVERAGE_POOL_2D and MAX_POOL_2D."""
from __future__ import annotations

from ..errors import McuforgeError
from ..quantization import activation_range
from .checks import require_int8
from .window import window

ACTIVATIONS = ("NONE", "RELU", "RELU6", "RELU_N1_TO_1")


def _where(graph, op):
    return f"{graph.path}: operator {op.index} ({op.opcode})"


def pool_window(graph, op):
    return window(graph, op, op.options.get("filterHeight", 1), op.options.get("filterWidth", 1), _where(graph, op))


def check_pool(graph, op) -> None:
    require_int8(graph, op, [op.inputs[0], op.outputs[0]])
    activation = op.options.get("activation", "NONE")
    if activation not in ACTIVATIONS:
        raise McuforgeError(f"{op.opcode} at node {op.index} fuses activation {activation}", where=_where(graph, op),
                            fix=f"use one of {', '.join(ACTIVATIONS)}")
    win = pool_window(graph, op)
    source, result = graph.tensor(op.inputs[0]), graph.tensor(op.outputs[0])
    if win.in_c != win.out_c:
        raise McuforgeError(f"{op.opcode} at node {op.index} changes the channel count", where=_where(graph, op),
                            fix="the model file is inconsistent; export it again")
    if (source.scale[0], source.zero_point[0]) != (result.scale[0], result.zero_point[0]):
        raise McuforgeError(f"{op.opcode} at node {op.index} has different input and output quantization",
                            where=_where(graph, op), fix="TFLite's int8 pooling keeps the input's scale and zero point")


def pool_macs(graph, op) -> int:
    win = pool_window(graph, op)
    return win.batches * win.out_h * win.out_w * win.out_c * win.filter_h * win.filter_w


def emit_pool(graph, op, ctx, function: str) -> str:
    win = pool_window(graph, op)
    output = graph.tensor(op.outputs[0])
    act_min, act_max = activation_range(op.options.get("activation", "NONE"), output.scale[0], output.zero_point[0])
    params = ctx.params("mf_pool_params", {"win": win.c_initializer(), "act_min": act_min, "act_max": act_max})
    return f"{function}(&{params}, {ctx.tensor(op.inputs[0])}, {ctx.tensor(op.outputs[0])});"
