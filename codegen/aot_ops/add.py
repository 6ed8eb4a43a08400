"""ADD, int8, with numpy-style broadcasting."""
from __future__ import annotations

import numpy as np

from ..quantization import activation_range, quantize_multiplier
from .elementwise_common import (binary_shapes, broadcast_initializer, check_binary as check,  # noqa: F401
                                 same_shape_inputs as in_place_inputs)

OPCODE = "ADD"
KERNEL_SOURCES = ["portable/add_s8.c"]
KERNEL_HEADERS = ["mf_broadcast.h", "add_s8.h"]
IS_VIEW = False
LEFT_SHIFT_INT8 = 20  # TFLM's headroom for int8 ADD


def macs(graph, op) -> int:
    return 0


def emit(graph, op, ctx) -> str:
    in1, in2, out = (graph.tensor(i) for i in (op.inputs[0], op.inputs[1], op.outputs[0]))
    s1, s2, so = (float(np.float32(t.scale[0])) for t in (in1, in2, out))
    twice_max = 2.0 * max(s1, s2)
    m1, sh1 = quantize_multiplier(s1 / twice_max)
    m2, sh2 = quantize_multiplier(s2 / twice_max)
    mo, sho = quantize_multiplier(twice_max / ((1 << LEFT_SHIFT_INT8) * so))
    act_min, act_max = activation_range(op.options.get("activation", "NONE"), out.scale[0], out.zero_point[0])
    params = ctx.params("mf_add_params", {
        "bc": broadcast_initializer(*binary_shapes(graph, op)),
        "input1_offset": -int(in1.zero_point[0]), "input2_offset": -int(in2.zero_point[0]),
        "output_offset": int(out.zero_point[0]), "left_shift": LEFT_SHIFT_INT8,
        "input1_multiplier": m1, "input1_shift": sh1, "input2_multiplier": m2, "input2_shift": sh2,
        "output_multiplier": mo, "output_shift": sho, "act_min": act_min, "act_max": act_max,
    })
    return (f"mf_add_s8(&{params}, {ctx.tensor(op.inputs[0])}, {ctx.tensor(op.inputs[1])}, "
            f"{ctx.tensor(op.outputs[0])});")

