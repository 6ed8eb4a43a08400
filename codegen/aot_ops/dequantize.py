"""DEQUANTIZE: int8 -> float32 (models with float output)."""
from __future__ import annotations

import numpy as np

from ..errors import McuforgeError

OPCODE = "DEQUANTIZE"
KERNEL_SOURCES = ["portable/quantize.c"]
KERNEL_HEADERS = ["quantize.h"]
IS_VIEW = False


def check(graph, op) -> None:
    source, result = graph.tensor(op.inputs[0]), graph.tensor(op.outputs[0])
    if source.dtype != "INT8" or result.dtype != "FLOAT32" or source.per_channel:
        raise McuforgeError(f"DEQUANTIZE at node {op.index} converts {source.dtype} to {result.dtype}",
                            where=f"{graph.path}: operator {op.index} (DEQUANTIZE)",
                            fix="the aot engine dequantizes per-tensor int8 activations to float32 (constant "
                                "float16 weights are not supported)")


def macs(graph, op) -> int:
    return 0


def emit(graph, op, ctx) -> str:
    source = graph.tensor(op.inputs[0])
    count = int(np.prod(source.shape, dtype=np.int64))
    params = ctx.params("mf_affine_params", {"count": count, "scale": repr(float(np.float32(source.scale[0]))),
                                             "zero_point": int(source.zero_point[0])})
    return f"mf_dequantize_s8_f32(&{params}, {ctx.tensor(op.inputs[0])}, (float *){ctx.tensor(op.outputs[0])});"
