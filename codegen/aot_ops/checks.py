"""Checks shared by the operator modules."""
from __future__ import annotations

from ..errors import McuforgeError


def require_int8(graph, op, tensor_indices) -> None:
    for t_index in tensor_indices:
        tensor = graph.tensor(t_index)
        if tensor is not None and tensor.dtype != "INT8":
            raise McuforgeError(
                f"{op.opcode} at node {op.index} has a {tensor.dtype} tensor ({tensor.name!r}); the aot engine runs int8 models",
                where=f"{graph.path}: operator {op.index}, tensor {t_index}",
                fix="quantize the model to full int8 with `mcuforge convert`")


def op_location(graph, op, tensor: int | None = None) -> str:
    """Where an error is: the model file, the operator (and the tensor, when one is named)."""
    where = f"{graph.path}: operator {op.index} ({op.opcode})"
    return where if tensor is None else f"{where}, tensor {tensor}"


def per_tensor_quantization(tensor) -> tuple[float, int] | None:
    """(scale, zero point) of a per-tensor quantized tensor; None when it is not quantized."""
    if tensor.scale is None:
        return None
    return float(tensor.scale[0]), int(tensor.zero_point[0])
