"""QUANTIZE: float32 -> int8 (models with float input) and int8 -> int8 requantization."""
from __future__ import annotations

import numpy as np

from ..errors import McuforgeError
from ..quantization import quantize_multiplier

OPCODE = "QUANTIZE"
KERNEL_SOURCES = ["portable/quantize.c"]
KERNEL_HEADERS = ["quantize.h"]
IS_VIEW = False


def _where(graph, op):
    return f"{graph.path}: operator {op.index} (QUANTIZE)"


def check(graph, op) -> None:
    source, result = graph.tensor(op.inputs[0]), graph.tensor(op.outputs[0])
    if result.dtype != "INT8" or source.dtype not in ("FLOAT32", "INT8"):
        raise McuforgeError(f"QUANTIZE at node {op.index} converts {source.dtype} to {result.dtype}",
                            where=_where(graph, op), fix="the aot engine quantizes float32 or int8 to int8")
    if result.per_channel:
        raise McuforgeError(f"QUANTIZE at node {op.index} quantizes per channel", where=_where(graph, op),
                            fix="use per-tensor quantization for activations")


def macs(graph, op) -> int:
    return 0


def emit(graph, op, ctx) -> str:
    source, result = graph.tensor(op.inputs[0]), graph.tensor(op.outputs[0])
    count = int(np.prod(result.shape, dtype=np.int64))
    src, dst = ctx.tensor(op.inputs[0]), ctx.tensor(op.outputs[0])
    if source.dtype == "FLOAT32":
        params = ctx.params("mf_affine_params", {"count": count, "scale": repr(float(np.float32(result.scale[0]))),
                                                 "zero_point": int(result.zero_point[0])})
        return f"mf_quantize_f32_s8(&{params}, (const float *){src}, {dst});"
    multiplier, shift = quantize_multiplier(float(np.float32(source.scale[0])) / float(np.float32(result.scale[0])))
    params = ctx.params("mf_requantize_params", {"count": count, "input_zero_point": int(source.zero_point[0]),
                                                 "output_zero_point": int(result.zero_point[0]),
                                                 "multiplier": multiplier, "shift": shift})
    return f"mf_requantize_s8(&{params}, {src}, {dst});"


def in_place_inputs(graph, op) -> list[int]:
    """Element i is written at byte i, at or before where element i was read (float32 or int8 input)."""
    return [op.inputs[0]]
