"""One module per operator that the AOT engine implements.

Each operator module provides:
- `KERNEL_SOURCES`: kernel files (relative to codegen/kernels/) its C call needs;
- `IS_VIEW`: True when the output is the input's bytes under another shape (no code, no copy);
- `check(graph, op)`: raise McuforgeError for options the kernels do not implement;
- `macs(graph, op)`: multiply-accumulates per inference;
- `emit(graph, op, ctx)`: the C statements of the call, using `ctx` for tensor addresses and
  for registering `const` arrays.
"""
from __future__ import annotations

from ..errors import McuforgeError
from ..tflite_model import Graph, Operator
from . import fully_connected, reshape
from .checks import require_int8  # noqa: F401  (re-exported for operator modules)

OPERATORS = {
    "FULLY_CONNECTED": fully_connected,
    "RESHAPE": reshape,
}

SUPPORTED_OPS = tuple(sorted(OPERATORS))


def operator_module(graph: Graph, op: Operator):
    module = OPERATORS.get(op.opcode)
    if module is None:
        first_seen: dict[str, int] = {}
        for other in graph.operators:
            if other.opcode not in OPERATORS:
                first_seen.setdefault(other.opcode, other.index)
        others = [f"{name} (first at node {i})" for name, i in first_seen.items() if name != op.opcode]
        also = f"; the model also uses unsupported {', '.join(others)}" if others else ""
        raise McuforgeError(
            f"unsupported operator {op.opcode} at node {op.index}{also}",
            where=f"{graph.path}: operator {op.index} ({op.opcode})",
            fix=f"the aot engine supports: {', '.join(SUPPORTED_OPS)}; use --engine tflm for this model")
    return module

