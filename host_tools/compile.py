"""`mcuforge compile`: one int8 model to the sources of an engine, with a report.

For the aot engine and an Arm board, the report also carries the flash the model takes on
that board, measured by compiling the sources for it. For the ethos-u engine, the board's
NPU and its configuration decide what Vela compiles for.

Next to report.json (for tools) every engine writes report.md and, where the report has
per-layer figures, a chart of them (for people).
"""
from __future__ import annotations

import json
from pathlib import Path

from mcuforge.codegen.errors import McuforgeError

ENGINES = ("aot", "tflm", "ethos-u")


def compile_model(model_path: str | Path, engine: str, out_dir: str | Path, name: str = "model",
                  board: str | None = None, kernels: str | None = None) -> dict:
    out_dir = Path(out_dir)
    if engine not in ENGINES:
        raise McuforgeError(f"unknown engine {engine!r}", where="--engine", fix=f"use one of {', '.join(ENGINES)}")
    board_data = None
    ethosu_target = None
    if board is not None:
        from mcuforge.boards import load_board

        board_data = load_board(board)
        if engine == "ethos-u":
            from mcuforge.codegen.emit_ethosu import target_for_board

            # Before the engines check: a board without an Ethos-U is told which boards have one.
            ethosu_target = target_for_board(board_data)
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
    elif engine == "tflm":
        from mcuforge.codegen.emit_tflm import emit_tflm

        report = emit_tflm(model_path, out_dir, name=name)
    else:
        from mcuforge.codegen.emit_ethosu import emit_ethosu

        report = emit_ethosu(model_path, out_dir, name=name, target=ethosu_target)
    write_human_reports(out_dir, report)
    return report


def write_human_reports(out_dir: str | Path, report: dict) -> None:
    """Write report.md and the per-layer chart next to the sources, and report.json again so
    that it lists them. Rendering happens in memory first: a failure there writes nothing."""
    from mcuforge.codegen.emit_tflm import replace_files_atomically

    from .report_render import CHART_FILE, render_report_files

    out_dir = Path(out_dir)
    files = render_report_files(report)
    report["report_files"] = sorted(files)
    files["report.json"] = json.dumps(report, indent=2) + "\n"
    replace_files_atomically(out_dir, files)
    if CHART_FILE not in files:
        (out_dir / CHART_FILE).unlink(missing_ok=True)  # a chart from an earlier compile would mislead
