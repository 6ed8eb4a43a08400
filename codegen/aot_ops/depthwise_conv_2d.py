"""DEPTHWISE_CONV_2D: int8, per-channel or per-tensor weights, any depth multiplier, dilation."""
from __future__ import annotations

from ..errors import McuforgeError
from .conv_common import RowWindowInPlace, check_conv_like, emit_conv_call
from .window import window

OPCODE = "DEPTHWISE_CONV_2D"
KERNEL_SOURCES = ["portable/depthwise_conv_s8.c", "portable/depthwise_conv_in_place.c"]
KERNEL_HEADERS = ["mf_window.h", "depthwise_conv_s8.h", "mf_dsp.h", "mf_mve.h", "conv_s8.h", "mf_row_window.h", "conv_in_place.h"]
IS_VIEW = False


def _where(graph, op):
    return f"{graph.path}: operator {op.index} (DEPTHWISE_CONV_2D)"


def _geometry(graph, op):
    _, filter_h, filter_w, _ = graph.tensor(op.inputs[1]).shape
    return window(graph, op, filter_h, filter_w, _where(graph, op))


def check(graph, op) -> None:
    check_conv_like(graph, op, _where(graph, op), channel_axis=3)
    win = _geometry(graph, op)
    if win.out_c % win.in_c or graph.tensor(op.inputs[1]).shape[3] != win.out_c:
        raise McuforgeError(f"DEPTHWISE_CONV_2D at node {op.index}: {win.out_c} output channels are not a multiple "
                            f"of {win.in_c} input channels", where=_where(graph, op),
                            fix="the model file is inconsistent; export it again")


def macs(graph, op) -> int:
    win = _geometry(graph, op)
    return win.batches * win.out_h * win.out_w * win.out_c * win.filter_h * win.filter_w


def emit(graph, op, ctx) -> str:
    win = _geometry(graph, op)
    return emit_conv_call(graph, op, ctx, win, "mf_depthwise_conv_s8", "mf_depthwise_conv_params", {"depth_multiplier": win.out_c // win.in_c})


_in_place = RowWindowInPlace(lambda graph, op: _geometry(graph, op))
in_place_inputs = _in_place.in_place_inputs
scratch_bytes = _in_place.scratch_bytes
