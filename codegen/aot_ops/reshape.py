"""RESHAPE, EXPAND_DIMS and SQUEEZE: the output is the input's bytes under another shape, so it is an
alias of the input, not a copy."""
from __future__ import annotations

from ..errors import McuforgeError

OPCODE = ("RESHAPE", "EXPAND_DIMS", "SQUEEZE")
KERNEL_SOURCES: list[str] = []
KERNEL_HEADERS: list[str] = []
IS_VIEW = True


def check(graph, op) -> None:
    source = graph.tensor(op.inputs[0])
    if source.is_constant:
        raise McuforgeError(f"{op.opcode} at node {op.index} reshapes a constant tensor",
                            where=f"{graph.path}: operator {op.index} ({op.opcode})",
                            fix="fold the constant reshape into the model before export")
    if source.nbytes != graph.tensor(op.outputs[0]).nbytes:
        raise McuforgeError(f"{op.opcode} at node {op.index} changes the byte size of its tensor",
                            where=f"{graph.path}: operator {op.index} ({op.opcode})",
                            fix="the model file is inconsistent; export it again")


def macs(graph, op) -> int:
    return 0


def emit(graph, op, ctx) -> str:
    return f"/* {op.opcode}: {ctx.tensor(op.outputs[0])} aliases {ctx.tensor(op.inputs[0])} */"
