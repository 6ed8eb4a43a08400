"""One module per operator that the AOT engine implements.

Each operator module provides:
- `OPCODE`: the TFLite builtin operator name it implements, e.g. "FULLY_CONNECTED" (or a tuple
  of names when one implementation serves several);
- `KERNEL_SOURCES`, `KERNEL_HEADERS`: kernel files (relative to codegen/kernels/) its C call needs;
- `IS_VIEW`: True when the output is the input's bytes under another shape (no code, no copy);
- `check(graph, op)`: raise McuforgeError for options the kernels do not implement;
- `macs(graph, op)`: multiply-accumulates per inference;
- `emit(graph, op, ctx)`: the C statements of the call, using `ctx` for tensor addresses and
  for registering `const` arrays and parameter blocks.

Modules are discovered: adding an operator means adding a module here. Modules without
`OPCODE` hold shared helpers.
"""
from __future__ import annotations

import importlib
import pkgutil

from ..errors import McuforgeError
from ..tflite_model import Graph, Operator


def _discover() -> dict:
    operators = {}
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        if not hasattr(module, "OPCODE"):  # shared helpers, not operators
            continue
        opcodes = module.OPCODE if isinstance(module.OPCODE, tuple) else (module.OPCODE,)
        for opcode in opcodes:
            operators[opcode] = module
    return operators


OPERATORS = _discover()
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
