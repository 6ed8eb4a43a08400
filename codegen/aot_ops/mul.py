"""MUL, int8, with numpy-style broadcasting."""
from __future__ import annotations

import numpy as np

from ..quantization import activation_range, quantize_multiplier
from .elementwise_common import (binary_shapes, broadcast_initializer, check_binary as check,  # noqa: F401
                                 same_shape_inputs as in_place_inputs)

OPCODE = "MUL"
KERNEL_SOURCES = ["portable/mul_s8.c"]
KERNEL_HEADERS = ["mf_broadcast.h", "mul_s8.h"]
IS_VIEW = False


def macs(graph, op) -> int:
    return int(np.prod(graph.tensor(op.outputs[0]).shape, dtype=np.int64))


def emit(graph, op, ctx) -> str:
    in1, in2, out = (graph.tensor(i) for i in (op.inputs[0], op.inputs[1], op.outputs[0]))
    real = float(np.float32(in1.scale[0])) * float(np.float32(in2.scale[0])) / float(np.float32(out.scale[0]))
    multiplier, shift = quantize_multiplier(real)
    act_min, act_max = activation_range(op.options.get("activation", "NONE"), out.scale[0], out.zero_point[0])
    params = ctx.params("mf_mul_params", {
        "bc": broadcast_initializer(*binary_shapes(graph, op)),
        "input1_offset": -int(in1.zero_point[0]), "input2_offset": -int(in2.zero_point[0]),
        "output_offset": int(out.zero_point[0]), "output_multiplier": multiplier, "output_shift": shift,
        "act_min": act_min, "act_max": act_max,
    })
    return (f"mf_mul_s8(&{params}, {ctx.tensor(op.inputs[0])}, {ctx.tensor(op.inputs[1])}, "
            f"{ctx.tensor(op.outputs[0])});")

