"""Static memory plan: an offset in one arena for every activation buffer.

TFLM's planner places buffers greedily, largest first. We run the same first-fit placement
under several orderings and keep the smallest arena; each ordering wins on some graph shapes.
"""
from __future__ import annotations

from dataclasses import dataclass

from .analyze import Analysis, Buffer

ALIGNMENT = 4  # int8 kernels need word alignment at most; the arena itself is 16-aligned


def _align(n: int, alignment: int) -> int:
    return (n + alignment - 1) // alignment * alignment


@dataclass
class MemoryPlan:
    offsets: dict[int, int]     # buffer id -> byte offset in the arena
    arena_bytes: int
    strategy: str
    peak_live_bytes: int        # lower bound: the largest set of buffers live at once


ORDERINGS = {
    "size": lambda b: (-b.size, b.first),
    "first-use": lambda b: (b.first, -b.size),
    "lifetime": lambda b: (-(b.last - b.first), -b.size),
    "size-x-lifetime": lambda b: (-b.size * (b.last - b.first + 1), b.first),
}


def _first_fit(buffers: list[Buffer], alignment: int) -> tuple[dict[int, int], int]:
    placed: list[tuple[Buffer, int]] = []
    offsets: dict[int, int] = {}
    for buf in buffers:
        busy = sorted((off, off + other.size) for other, off in placed if other.overlaps(buf))
        offset = 0
        for start, stop in busy:
            if offset + buf.size <= start:
                break
            offset = max(offset, _align(stop, alignment))
        offsets[buf.id] = offset
        placed.append((buf, offset))
    arena = max((off + b.size for b, off in placed), default=0)
    return offsets, _align(arena, alignment)


def plan_memory(analysis: Analysis, alignment: int = ALIGNMENT) -> MemoryPlan:
    best = None
    for name, key in ORDERINGS.items():
        offsets, size = _first_fit(sorted(analysis.buffers, key=key), alignment)
        if best is None or size < best.arena_bytes:
            best = MemoryPlan(offsets, size, name, analysis.peak_live_bytes())
    return best
