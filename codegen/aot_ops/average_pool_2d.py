"""AVERAGE_POOL_2D, int8."""
from .pool_common import check_pool as check, emit_pool, pool_macs as macs  # noqa: F401

OPCODE = "AVERAGE_POOL_2D"
KERNEL_SOURCES = ["portable/average_pool_s8.c"]
KERNEL_HEADERS = ["mf_window.h", "pooling_s8.h"]
IS_VIEW = False


def emit(graph, op, ctx) -> str:
    return emit_pool(graph, op, ctx, "mf_average_pool_s8")
