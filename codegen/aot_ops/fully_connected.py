"""FULLY_CONNECTED: int8 activations, int8 weights (per tensor or per channel), int32 bias."""
from __future__ import annotations

import numpy as np

from ..errors import McuforgeError
from ..quantization import activation_range, conv_multipliers
from .checks import require_int8

OPCODE = "FULLY_CONNECTED"
KERNEL_SOURCES = ["portable/fully_connected_s8.c"]
KERNEL_HEADERS = ["fully_connected_s8.h", "mf_dsp.h", "mf_mve.h"]
IS_VIEW = False
ACTIVATIONS = ("NONE", "RELU", "RELU6", "RELU_N1_TO_1")


def _where(graph, op):
    return f"{graph.path}: operator {op.index} (FULLY_CONNECTED)"


def _dims(graph, op):
    weights = graph.tensor(op.inputs[1])
    output = graph.tensor(op.outputs[0])
    output_depth, accum_depth = weights.shape[-2], weights.shape[-1]
    batches = int(np.prod(output.shape, dtype=np.int64)) // output_depth
    return batches, accum_depth, output_depth


def check(graph, op) -> None:
    activation = op.options.get("activation", "NONE")
    if activation not in ACTIVATIONS:
        raise McuforgeError(f"FULLY_CONNECTED at node {op.index} fuses activation {activation}",
                            where=_where(graph, op), fix=f"use one of {', '.join(ACTIVATIONS)}")
    if op.options.get("weightsFormat", 0) != 0:
        raise McuforgeError(f"FULLY_CONNECTED at node {op.index} uses shuffled weights",
                            where=_where(graph, op), fix="export the model with the default weights format")
    require_int8(graph, op, [op.inputs[0], op.inputs[1], op.outputs[0]])
    weights = graph.tensor(op.inputs[1])
    if not weights.is_constant:
        raise McuforgeError(f"FULLY_CONNECTED at node {op.index} has non-constant weights",
                            where=_where(graph, op), fix="freeze the weights into the model")
    bias = graph.tensor(op.inputs[2]) if len(op.inputs) > 2 else None
    if bias is not None and (bias.dtype != "INT32" or not bias.is_constant):
        raise McuforgeError(f"FULLY_CONNECTED at node {op.index} has a {bias.dtype} bias; int32 constant expected",
                            where=_where(graph, op), fix="quantize the model to full int8 with `mcuforge convert`")
    batches, accum_depth, _ = _dims(graph, op)
    input_elems = int(np.prod(graph.tensor(op.inputs[0]).shape, dtype=np.int64))
    if batches * accum_depth != input_elems:
        raise McuforgeError(f"FULLY_CONNECTED at node {op.index}: input of {input_elems} values does not split into "
                            f"{batches} rows of {accum_depth}", where=_where(graph, op),
                            fix="the model file is inconsistent; export it again")


def macs(graph, op) -> int:
    batches, accum_depth, output_depth = _dims(graph, op)
    return batches * accum_depth * output_depth


def emit(graph, op, ctx) -> str:
    input_t, weights = graph.tensor(op.inputs[0]), graph.tensor(op.inputs[1])
    bias = graph.tensor(op.inputs[2]) if len(op.inputs) > 2 else None
    output = graph.tensor(op.outputs[0])
    batches, accum_depth, output_depth = _dims(graph, op)
    multipliers, shifts = conv_multipliers(input_t.scale[0], weights.scale, output.scale[0])
    act_min, act_max = activation_range(op.options.get("activation", "NONE"), output.scale[0], output.zero_point[0])
    weights_name = ctx.constant("weights", weights.data.reshape(output_depth, accum_depth))
    bias_name = ctx.constant("bias", bias.data) if bias is not None else "NULL"
    mult_name = ctx.constant("multiplier", multipliers)
    shift_name = ctx.constant("shift", shifts)
    params = ctx.params("mf_fully_connected_params", {
        "input_offset": -int(input_t.zero_point[0]),
        "filter_offset": -int(weights.zero_point[0]) if not weights.per_channel else 0,
        "output_offset": int(output.zero_point[0]),
        "act_min": act_min, "act_max": act_max,
        "batches": batches, "accum_depth": accum_depth, "output_depth": output_depth,
        "per_channel": int(len(multipliers) > 1),
        "weights": weights_name, "bias": bias_name, "multiplier": mult_name, "shift": shift_name,
    })
    return f"mf_fully_connected_s8(&{params}, {ctx.tensor(op.inputs[0])}, {ctx.tensor(op.outputs[0])});"
