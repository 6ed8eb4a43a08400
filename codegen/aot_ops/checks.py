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
