"""CONV_2D: int8 activations, int8 weights per channel or per tensor, int32 bias, groups, dilation."""
from __future__ import annotations

from ..errors import McuforgeError
from .conv_common import RowWindowInPlace, check_conv_like, emit_conv_call
from .window import window

OPCODE = "CONV_2D"
KERNEL_SOURCES = ["portable/conv_s8.c", "portable/conv_in_place.c"]
KERNEL_HEADERS = ["mf_window.h", "conv_s8.h", "mf_dsp.h", "mf_mve.h", "depthwise_conv_s8.h", "mf_row_window.h", "conv_in_place.h"]
IS_VIEW = False


def _where(graph, op):
    return f"{graph.path}: operator {op.index} (CONV_2D)"


def _geometry(graph, op):
    out_c, filter_h, filter_w, filter_in_c = graph.tensor(op.inputs[1]).shape
    return window(graph, op, filter_h, filter_w, _where(graph, op)), filter_in_c


def check(graph, op) -> None:
    check_conv_like(graph, op, _where(graph, op), channel_axis=0)
    win, filter_in_c = _geometry(graph, op)
    if win.in_c % filter_in_c or win.out_c % (win.in_c // filter_in_c):
        raise McuforgeError(f"CONV_2D at node {op.index}: {win.in_c} input channels do not split into groups of "
                            f"{filter_in_c}", where=_where(graph, op), fix="the model file is inconsistent; export it again")


def macs(graph, op) -> int:
    win, filter_in_c = _geometry(graph, op)
    return win.batches * win.out_h * win.out_w * win.out_c * win.filter_h * win.filter_w * filter_in_c


def emit(graph, op, ctx) -> str:
    win, filter_in_c = _geometry(graph, op)
    return emit_conv_call(graph, op, ctx, win, "mf_conv_s8", "mf_conv_params", {"filter_in_c": filter_in_c})


_in_place = RowWindowInPlace(lambda graph, op: _geometry(graph, op)[0])
in_place_inputs = _in_place.in_place_inputs
scratch_bytes = _in_place.scratch_bytes
