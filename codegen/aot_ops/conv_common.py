"""Requantization constants shared by CONV_2D and DEPTHWISE_CONV_2D."""
from __future__ import annotations

import numpy as np

from ..errors import McuforgeError
from ..quantization import activation_range, conv_multipliers
from .checks import require_int8

ACTIVATIONS = ("NONE", "RELU", "RELU6", "RELU_N1_TO_1")


def check_conv_like(graph, op, where: str, channel_axis: int) -> None:
    activation = op.options.get("activation", "NONE")
    if activation not in ACTIVATIONS:
        raise McuforgeError(f"{op.opcode} at node {op.index} fuses activation {activation}", where=where,
                            fix=f"use one of {', '.join(ACTIVATIONS)}")
    require_int8(graph, op, [op.inputs[0], op.inputs[1], op.outputs[0]])
    filt = graph.tensor(op.inputs[1])
    if not filt.is_constant:
        raise McuforgeError(f"{op.opcode} at node {op.index} has non-constant weights", where=where,
                            fix="freeze the weights into the model")
    if filt.per_channel and filt.quantized_dimension != channel_axis:
        raise McuforgeError(f"{op.opcode} at node {op.index} is quantized along axis {filt.quantized_dimension}",
                            where=where, fix=f"quantize weights per output channel (axis {channel_axis})")
    if np.any(filt.zero_point != 0):
        raise McuforgeError(f"{op.opcode} at node {op.index} has asymmetric weights", where=where,
                            fix="quantize weights symmetrically (TFLite's int8 scheme does)")
    bias = graph.tensor(op.inputs[2]) if len(op.inputs) > 2 else None
    if bias is not None and (bias.dtype != "INT32" or not bias.is_constant):
        raise McuforgeError(f"{op.opcode} at node {op.index} has a {bias.dtype} bias; int32 constant expected",
                            where=where, fix="quantize the model to full int8 with `mcuforge convert`")


def requant_fields(graph, op, ctx, channels: int) -> dict:
    """Per-channel multipliers/shifts (replicated for per-tensor weights), bias, offsets, clamp."""
    input_t, filt, output = graph.tensor(op.inputs[0]), graph.tensor(op.inputs[1]), graph.tensor(op.outputs[0])
    bias = graph.tensor(op.inputs[2]) if len(op.inputs) > 2 else None
    scales = filt.scale if filt.per_channel else np.repeat(filt.scale, channels)
    multipliers, shifts = conv_multipliers(input_t.scale[0], scales, output.scale[0])
    act_min, act_max = activation_range(op.options.get("activation", "NONE"), output.scale[0], output.zero_point[0])
    return {
        "input_offset": -int(input_t.zero_point[0]),
        "output_offset": int(output.zero_point[0]),
        "act_min": act_min, "act_max": act_max,
        "bias": ctx.constant("bias", bias.data) if bias is not None else "NULL",
        "multiplier": ctx.constant("multiplier", multipliers),
        "shift": ctx.constant("shift", shifts),
    }


def row_window_in_place(win) -> bool:
    """Whether conv_in_place.c may write the output over the input (see that file for why)."""
    return (win.stride_h == 1 and win.out_h <= win.in_h
            and win.out_w * win.out_c <= win.in_w * win.in_c)


def in_place_scratch_bytes(win) -> int:
    """The output rows conv_in_place.c holds back: the row being computed and pad_h rows before it,
    whose input rows the following output rows still read (mf_in_place_scratch_rows in mf_row_window.h)."""
    rows = min(win.pad_h + 1, win.out_h)
    return rows * win.out_w * win.out_c


def emit_conv_call(graph, op, ctx, win, function: str, params_type: str, shape_fields: dict) -> str:
    """The C call of a convolution: its parameter block (window, filter, requantization and the
    op's own `shape_fields`), run in place through `<function>_in_place` when the planner chose
    that for this op."""
    fields = {"win": win.c_initializer(), **shape_fields,
              "filter": ctx.constant("filter", graph.tensor(op.inputs[1]).data)}
    fields.update(requant_fields(graph, op, ctx, win.out_c))
    params = ctx.params(params_type, fields)
    if ctx.runs_in_place(op.index):
        return f"{function}_in_place(&{params}, {ctx.tensor(op.outputs[0])}, {ctx.scratch(op.index)});"
    return f"{function}(&{params}, {ctx.tensor(op.inputs[0])}, {ctx.tensor(op.outputs[0])});"


class RowWindowInPlace:
    """in_place_inputs/scratch_bytes for a convolution module, from its window geometry."""

    def __init__(self, window_of):
        self.window_of = window_of

    def in_place_inputs(self, graph, op) -> list[int]:
        return [op.inputs[0]] if row_window_in_place(self.window_of(graph, op)) else []

    def scratch_bytes(self, graph, op) -> int:
        return in_place_scratch_bytes(self.window_of(graph, op))
