"""Does a compiled model fit the board? Every memory region is checked against what lands in it.

The board file says which memory holds which kind of content (code, rodata, weights, data,
bss, stack, heap, arena). The model's report says how many bytes of each kind it needs.
Figures that cannot be measured here (the TFLM runtime, which is not built on the host) are
estimates and are labelled as such in the result.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from mcuforge.boards import Board
from mcuforge.codegen.errors import McuforgeError

# The firmware's own stack and heap (firmware_templates/baremetal) and the application around the
# model: startup, console and the inference loop, measured on the bare-metal build.
DEFAULT_STACK_BYTES = 16 * 1024
DEFAULT_HEAP_BYTES = 4 * 1024
APP_CODE_BYTES = 4 * 1024
APP_RAM_BYTES = 512
# TFLM's interpreter, allocator and kernels are not built here; typical Cortex-M figures for a
# reference-kernel build (code) and the interpreter objects outside the arena (RAM).
TFLM_RUNTIME_CODE_BYTES = 96 * 1024
TFLM_RUNTIME_RAM_BYTES = 2 * 1024
# MicroPython: the heap taken by importing the interpreter modules (measured under MicroPython,
# benchmarks/micropython_inference.py) and the firmware image itself (a stock build).
MICROPYTHON_INTERPRETER_RAM_BYTES = 33 * 1024
MICROPYTHON_FIRMWARE_BYTES = 640 * 1024


@dataclass
class Need:
    kind: str          # code, weights, arena, stack, heap, data
    what: str          # human description
    bytes: int
    estimated: bool = False


@dataclass
class RegionUse:
    memory: str
    length: int
    needs: list[Need] = field(default_factory=list)

    @property
    def used(self) -> int:
        return sum(n.bytes for n in self.needs)

    @property
    def fits(self) -> bool:
        return self.used <= self.length

    def to_dict(self) -> dict:
        return {"memory": self.memory, "length": self.length, "used": self.used, "fits": self.fits,
                "needs": [{"kind": n.kind, "what": n.what, "bytes": n.bytes, "estimated": n.estimated}
                          for n in self.needs]}


def model_needs(report: dict, engine: str, stack_bytes: int = DEFAULT_STACK_BYTES,
                heap_bytes: int = DEFAULT_HEAP_BYTES) -> list[Need]:
    """What a model built with `engine` needs, by kind of content, from its compile report."""
    needs = [Need("stack", "stack", stack_bytes), Need("heap", "heap", heap_bytes),
             Need("code", "application and startup", APP_CODE_BYTES, estimated=True),
             Need("bss", "application data", APP_RAM_BYTES, estimated=True)]
    if engine == "aot":
        needs.append(Need("arena", "tensor arena (planned)", report["arena_bytes"]))
        if "flash_bytes" in report:
            code = max(report["flash_bytes"] - report["weights_bytes"], 0)
            needs.append(Need("code", "model code (arm-none-eabi-size)", code))
        else:
            needs.append(Need("code", "model code", 8 * 1024, estimated=True))
        needs.append(Need("weights", "weights and constants", report["weights_bytes"]))
    elif engine in ("tflm", "ethos-u"):
        needs.append(Need("arena", "tensor arena (measured with TFLM)" if engine == "tflm" else "tensor arena",
                          report["arena_bytes"]))
        needs.append(Need("bss", "TFLM interpreter objects", TFLM_RUNTIME_RAM_BYTES, estimated=True))
        needs.append(Need("code", "TFLM runtime and kernels", TFLM_RUNTIME_CODE_BYTES, estimated=True))
        needs.append(Need("weights", "model flatbuffer", report["model_bytes"]))
    elif engine == "micropython":
        needs.append(Need("heap", "loaded model and interpreter (MicroPython heap)",
                          report["load_ram_bytes"] + MICROPYTHON_INTERPRETER_RAM_BYTES))
        needs.append(Need("code", "MicroPython firmware", MICROPYTHON_FIRMWARE_BYTES, estimated=True))
        needs.append(Need("weights", "model file on the filesystem", report["file"]["bytes"]))
    else:
        raise McuforgeError(f"no memory model for engine {engine!r}", where="--engine",
                            fix="use aot, tflm, ethos-u or micropython")
    return needs


def place_needs(board: Board, needs: list[Need]) -> list[RegionUse]:
    regions = {m.name: RegionUse(m.name, m.length) for m in board.memories}
    for need in needs:
        regions[board.memory_for(need.kind).name].needs.append(need)
    return [r for r in regions.values() if r.needs]


def _suggestions(board: Board, engine: str, report: dict, short: list[RegionUse]) -> list[str]:
    kinds_short = {n.kind for r in short for n in r.needs}
    tips = []
    if engine == "tflm":
        tips.append("the aot engine needs no interpreter and usually a smaller arena: --engine aot")
    if engine == "aot" and board.npu.startswith("ethos-u"):
        tips.append("run it on the NPU: --engine ethos-u")
    weights_home = board.memory_for("weights").name
    roomy = [m for m in board.memories if m.name != weights_home and m.length >= report.get("weights_bytes", 0)
             and any(k in m.holds for k in ("code", "rodata", "weights"))]
    if "weights" in kinds_short and roomy:
        tips.append(f"put the weights in external flash: add 'weights' to the holds of memory {roomy[0].name!r} "
                    f"in {board.path.name}")
    elif "weights" in kinds_short:
        tips.append("this board has no external flash for weights; a board with more flash would help")
    if engine == "ethos-u":
        tips.append("ask Vela to optimise for size: --optimise Size")
    tips.append("prune and shrink the model: mcuforge optimize prune MODEL --data DATA.npz --sparsity 0.5")
    if "arena" in kinds_short:
        tips.append("a smaller input (fewer samples per window, a lower resolution) shrinks the arena")
    return tips


def check_fit(board: Board, report: dict, engine: str) -> list[RegionUse]:
    """The use of each memory region; raises McuforgeError naming every region that overflows."""
    regions = place_needs(board, model_needs(report, engine))
    short = [r for r in regions if not r.fits]
    if short:
        lines = []
        for region in short:
            parts = ", ".join(f"{n.what} {n.bytes}{' (est.)' if n.estimated else ''}" for n in region.needs)
            lines.append(f"{region.memory}: needs {region.used} B, has {region.length} B "
                         f"({region.used - region.length} B over; {parts})")
        raise McuforgeError(
            f"the model does not fit board {board.name} with the {engine} engine:\n  " + "\n  ".join(lines),
            where=f"{board.path}: memory " + ", ".join(r.memory for r in short),
            fix="; or ".join(_suggestions(board, engine, report, short)))
    return regions
