"""`mcuforge compile`: one int8 model to the sources of an engine, with a report.

For the aot engine and an Arm board, the report also carries the flash the model takes on
that board, measured by compiling the sources for it.
"""
from __future__ import annotations

import json
from pathlib import Path

from mcuforge.codegen.errors import McuforgeError

ENGINES = ("aot", "tflm")


def compile_model(model_path: str | Path, engine: str, out_dir: str | Path, name: str = "model",
                  board: str | None = None, kernels: str | None = None) -> dict:
    out_dir = Path(out_dir)
    board_data = None
    if board is not None:
        from mcuforge.boards import load_board

        board_data = load_board(board)
        if engine not in board_data.engines:
            raise McuforgeError(f"board {board_data.name} does not support the {engine} engine",
                                where=f"{board_data.path}: engines",
                                fix=f"use one of: {', '.join(board_data.engines)}")
    if engine == "aot":
        from mcuforge.codegen.emit_aot import emit_aot, kernel_variant_for
        from mcuforge.codegen.tflite_model import load_tflite

        if kernels is None:
            kernels = kernel_variant_for(board_data.extensions) if board_data else "portable"
        report = emit_aot(load_tflite(model_path), out_dir, name=name, kernels=kernels)
        if board_data is not None and board_data.is_arm:
            from .firmware import model_flash_bytes

            report["board"] = board_data.name
            report["flash_bytes"] = model_flash_bytes(out_dir, board_data)["total"]
            (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        return report
    if engine == "tflm":
        from mcuforge.codegen.emit_tflm import emit_tflm

        return emit_tflm(model_path, out_dir, name=name)
    raise McuforgeError(f"unknown engine {engine!r}", where="--engine", fix=f"use one of {', '.join(ENGINES)}")
