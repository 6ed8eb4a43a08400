"""`mcuforge compile`: one int8 model to the sources of an engine, with a report.

For the aot engine and an Arm board, the report also carries the flash the model takes on
that board, measured by compiling the sources for it. For the ethos-u engine, the board's
NPU and its configuration decide what Vela compiles for.

Next to report.json (for tools) every engine writes report.md and, where the report has
per-layer figures, a chart of them (for people).
"""
from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from pathlib import Path

from mcuforge.codegen.errors import McuforgeError

ENGINES = ("aot", "tflm", "ethos-u", "micropython")


@contextlib.contextmanager
def _staged(out_dir: Path):
    """A fresh directory to compile into; it replaces out_dir only if the block succeeds, so a
    failed compile (or a model that does not fit) leaves the previous output untouched."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.staging.", dir=out_dir.parent))
    try:
        yield staging
        retired = out_dir.with_name(f".{out_dir.name}.retired")
        shutil.rmtree(retired, ignore_errors=True)
        if out_dir.exists():
            out_dir.rename(retired)
        staging.rename(out_dir)
        shutil.rmtree(retired, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _check_board_fit(board_data, report: dict, engine: str) -> None:
    from .board_fit import check_fit

    report["board_fit"] = [region.to_dict() for region in check_fit(board_data, report, engine)]


def _load_board_for(board: str | None, engine: str):
    if board is None:
        return None, None
    from mcuforge.boards import load_board

    board_data = load_board(board)
    ethosu_target = None
    if engine == "ethos-u":
        from mcuforge.codegen.emit_ethosu import target_for_board

        # Before the engines check: a board without an Ethos-U is told which boards have one.
        ethosu_target = target_for_board(board_data)
    if engine not in board_data.engines:
        raise McuforgeError(f"board {board_data.name} does not support the {engine} engine",
                            where=f"{board_data.path}: engines",
                            fix=f"use one of: {', '.join(board_data.engines)}")
    return board_data, ethosu_target


def compile_model(model_path: str | Path, engine: str, out_dir: str | Path, name: str = "model",
                  board: str | None = None, kernels: str | None = None, metadata: dict | None = None,
                  threshold_data: str | Path | None = None, threshold_percentile: float | None = None) -> dict:
    """One model for one engine into out_dir. With a board, the result is checked against every
    memory region of the board before anything replaces out_dir.

    micropython engine only: `metadata` (key/values stored in the model file) and
    `threshold_data` (normal samples, .npy/.npz: the autoencoder's reconstruction-error threshold
    at `threshold_percentile` is calibrated on them and stored as metadata `anomaly_threshold`;
    the report carries the calibration under "anomaly_threshold")."""
    out_dir = Path(out_dir)
    if engine not in ENGINES:
        raise McuforgeError(f"unknown engine {engine!r}", where="--engine", fix=f"use one of {', '.join(ENGINES)}")
    if (metadata or threshold_data is not None or threshold_percentile is not None) and engine != "micropython":
        option = "--threshold-data" if threshold_data is not None or threshold_percentile is not None else "metadata"
        raise McuforgeError(f"{option} is stored in the MicroPython model file; the {engine} engine has no place "
                            f"for it", where=option, fix="compile with --engine micropython, or leave the option out")
    if threshold_percentile is not None and threshold_data is None:
        raise McuforgeError("--threshold-percentile without --threshold-data", where="--threshold-percentile",
                            fix="pass the normal samples to calibrate on: --threshold-data normal.npy")
    board_data, ethosu_target = _load_board_for(board, engine)
    calibration = None
    if threshold_data is not None:
        from mcuforge.codegen.anomaly_threshold import DEFAULT_PERCENTILE, calibrate_reconstruction_threshold

        calibration = calibrate_reconstruction_threshold(
            model_path, threshold_data, DEFAULT_PERCENTILE if threshold_percentile is None else threshold_percentile)
        metadata = {**(metadata or {}), **calibration["metadata"]}
    with _staged(out_dir) as staging:
        if engine == "aot":
            from mcuforge.codegen.emit_aot import emit_aot, kernel_variant_for
            from mcuforge.codegen.tflite_model import load_tflite

            if kernels is None:
                kernels = kernel_variant_for(board_data.extensions) if board_data else "portable"
            report = emit_aot(load_tflite(model_path), staging, name=name, kernels=kernels)
            _add_flash_bytes(staging, board_data, report)
        elif engine == "tflm":
            from mcuforge.codegen.emit_tflm import emit_tflm

            report = emit_tflm(model_path, staging, name=name)
        elif engine == "micropython":
            from mcuforge.codegen.emit_micropython import emit_micropython
            from mcuforge.codegen.tflite_model import load_tflite

            report = emit_micropython(load_tflite(model_path), staging, name=name, metadata=metadata)
            if calibration is not None:
                report["anomaly_threshold"] = {k: v for k, v in calibration.items() if k != "metadata"}
        else:
            from mcuforge.codegen.emit_ethosu import emit_ethosu

            report = emit_ethosu(model_path, staging, name=name, target=ethosu_target)
        if board_data is not None:
            report["board"] = board_data.name
            _check_board_fit(board_data, report, engine)
        write_human_reports(staging, report)
    return report


def compile_models(model_paths: list[str | Path], out_dir: str | Path, names: list[str] | None = None,
                   board: str | None = None, kernels: str | None = None) -> dict:
    """Several models (primary, fallback, minimal) for the aot engine, planned into one shared
    arena, since a device runs only one of them at a time."""
    from mcuforge.codegen.emit_aot import MODEL_ROLES, emit_aot_models, kernel_variant_for
    from mcuforge.codegen.tflite_model import load_tflite

    out_dir = Path(out_dir)
    names = list(names) if names else [MODEL_ROLES[i] if i < len(MODEL_ROLES) else f"model{i}"
                                       for i in range(len(model_paths))]
    if len(names) != len(model_paths):
        raise McuforgeError(f"{len(model_paths)} models but {len(names)} names", where="--names",
                            fix="give one name per model, comma-separated, or none")
    board_data, _ = _load_board_for(board, "aot")
    if kernels is None:
        kernels = kernel_variant_for(board_data.extensions) if board_data else "portable"
    with _staged(out_dir) as staging:
        report = emit_aot_models([(n, load_tflite(p)) for n, p in zip(names, model_paths)], staging, kernels=kernels)
        _add_flash_bytes(staging, board_data, report)
        if board_data is not None:
            report["board"] = board_data.name
            _check_board_fit(board_data, report, "aot")
        write_human_reports(staging, report)
    return report


def _add_flash_bytes(model_dir: Path, board_data, report: dict) -> None:
    if board_data is not None and board_data.is_arm:
        from .firmware import model_flash_bytes

        report["flash_bytes"] = model_flash_bytes(model_dir, board_data)["total"]


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
