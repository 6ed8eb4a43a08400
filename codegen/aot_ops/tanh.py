"""TANH: int8 input, int8 output with scale 1/128 and zero point 0.

TFLM's int8 kernel evaluates tanh in Q4.27 fixed point. Its output depends on the input value
alone, so that same integer arithmetic runs here for all 256 int8 inputs and the device looks
the results up in a 256-byte table.
"""
from __future__ import annotations

from ..quantization import tanh_int8_table
from .logistic import check_table_activation, emit_table_activation

OPCODE = "TANH"
KERNEL_SOURCES = ["portable/tanh_s8.c"]
KERNEL_HEADERS = ["tanh_s8.h"]
IS_VIEW = False


def check(graph, op) -> None:
    check_table_activation(graph, op, 1.0 / 128.0, 0, "1/128", tanh_int8_table)


def macs(graph, op) -> int:
    return 0


def emit(graph, op, ctx) -> str:
    return emit_table_activation(graph, op, ctx, "mf_tanh_params", "mf_tanh_s8", tanh_int8_table)
