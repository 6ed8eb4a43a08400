"""`mcuforge optimize`: make a float Keras model smaller before converting it (prune, distill)."""
from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path

import click

from mcuforge.codegen import optimize as stage


@click.group(name="optimize")
def command() -> None:
    """Make a float Keras model smaller before it is converted to int8."""


_PATH = click.Path(path_type=Path)


def _common(function):
    """Options shared by the optimize commands."""
    for option in reversed([
        click.option("--data", type=_PATH, required=True,
                     help="Training data: .npz with x (inputs) and y (labels or targets; optional for distill)."),
        click.option("--eval", "eval_data", type=_PATH, default=None,
                     help=f"Held-out .npz (x, y) to measure quality before and after "
                          f"(default: hold out {stage.HOLDOUT:.0%} of --data)."),
        click.option("-o", "--output", type=_PATH, required=True, help="The .keras model to write."),
        click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--tflite", type=_PATH, default=None,
                     help="Also write the int8 .tflite of the result (calibrated on --data inputs)."),
        click.option("--json", "as_json", is_flag=True, help="Print the full report as JSON."),
    ]):
        function = option(function)
    return function


@command.command()
@click.argument("model", type=_PATH)
@click.option("--sparsity", type=float, default=0.5, show_default=True,
              help="Share of the Dense/Conv kernel weights to set to zero, in [0, 1).")
@click.option("--exclude", multiple=True, metavar="LAYER", help="A layer to leave dense (repeatable).")
@click.option("--epochs", type=click.IntRange(min=1), default=stage.PRUNE_EPOCHS, show_default=True,
              help="Fine-tuning epochs.")
@click.option("--learning-rate", type=float, default=stage.PRUNE_LEARNING_RATE, show_default=True,
              help="Adam learning rate.")
@_common
@click.pass_context
def prune(ctx: click.Context, model: Path, sparsity: float, exclude: tuple[str, ...], epochs: int,
          learning_rate: float, data: Path, eval_data: Path | None, output: Path, batch_size: int, seed: int,
          tflite: Path | None, as_json: bool) -> None:
    """Prune MODEL's smallest weights to --sparsity while fine-tuning on --data.

    The sparsity rises gradually during fine-tuning; pruned weights stay exact zeros.
    """
    with _stage(ctx) as progress:
        report = stage.prune(model, data, output, target_sparsity=sparsity, epochs=epochs, batch_size=batch_size,
                             learning_rate=learning_rate, eval_data=eval_data, exclude=exclude, seed=seed,
                             tflite_path=tflite, progress=progress)
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else _prune_summary(report.to_dict()))


@command.command()
@click.option("--teacher", type=_PATH, required=True, help="The trained Keras model to learn from.")
@click.option("--student", type=_PATH, required=True, help="The smaller Keras model to train (same input and output shapes).")
@click.option("--temperature", type=float, default=stage.DISTILL_TEMPERATURE, show_default=True,
              help="Softens the outputs compared (1: plain softmax).")
@click.option("--alpha", type=float, default=stage.DISTILL_ALPHA, show_default=True,
              help="Weight of the hard-label loss in [0, 1]; the rest goes to the teacher's outputs.")
@click.option("--epochs", type=click.IntRange(min=1), default=stage.DISTILL_EPOCHS, show_default=True,
              help="Training epochs.")
@click.option("--learning-rate", type=float, default=stage.DISTILL_LEARNING_RATE, show_default=True,
              help="Adam learning rate.")
@_common
@click.pass_context
def distill(ctx: click.Context, teacher: Path, student: Path, temperature: float, alpha: float, epochs: int,
            learning_rate: float, data: Path, eval_data: Path | None, output: Path, batch_size: int, seed: int,
            tflite: Path | None, as_json: bool) -> None:
    """Train --student on --teacher's softened outputs over --data."""
    with _stage(ctx) as progress:
        report = stage.distill(teacher, student, data, output, temperature=temperature, alpha=alpha, epochs=epochs,
                               batch_size=batch_size, learning_rate=learning_rate, eval_data=eval_data, seed=seed,
                               tflite_path=tflite, progress=progress)
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else _distill_summary(report.to_dict()))


@contextlib.contextmanager
def _stage(ctx: click.Context):
    """TensorFlow's native logging kept off the terminal (unless --debug); progress bars on a terminal."""
    from mcuforge.codegen.native_log import native_stderr_captured

    debug = bool(ctx.find_root().obj and ctx.find_root().obj.get("debug"))
    stream = os.fdopen(os.dup(sys.stderr.fileno()), "w") if sys.stderr.isatty() else None

    def progress(label: str, total: int):
        return click.progressbar(length=total, label=f"{label:<20}", file=stream, width=30)

    try:
        with native_stderr_captured(enabled=not debug):
            yield progress if stream else None
    finally:
        if stream:
            stream.close()


def _quality(value: float, metric: str) -> str:
    return f"{100 * value:.1f}%" if "top-1" in metric else f"{value:.4g}"


def _int8_line(report: dict) -> list[str]:
    int8 = report.get("int8")
    if not int8:
        return []
    return [f"  int8:     {int8['path']} ({int8['bytes']} B, {int8['deflated_bytes']} B deflated)"]


def _prune_summary(report: dict) -> str:
    metric = report["quality"]["metric"]
    pruned = [row for row in report["layers"] if row["pruned"]]
    per_layer = ", ".join(f"{row['layer']} {100 * row['sparsity']:.0f}%" for row in pruned)
    kept = [row["layer"] for row in report["layers"] if not row["pruned"]]
    lines = [f"wrote {report['target']} ({report['model_bytes']} B; {report['parameters']} parameters, "
             f"{report['nonzero_parameters']} non-zero)",
             f"  sparsity: {100 * report['sparsity']:.1f}% of {sum(r['weights'] for r in pruned)} prunable weights "
             f"(target {100 * report['target_sparsity']:.0f}%): {per_layer}"
             + (f"; left dense: {', '.join(kept)}" if kept else ""),
             f"  {metric}: {_quality(report['before'], metric)} before, {_quality(report['after'], metric)} after "
             f"({report['quality']['evaluated_on']})"]
    return "\n".join(lines + _int8_line(report) + [f"  note: {note}" for note in report["notes"]])


def _distill_summary(report: dict) -> str:
    metric = report["quality"]["metric"]
    lines = [f"wrote {report['target']} ({report['model_bytes']} B; {report['student_parameters']} parameters, "
             f"teacher {report['teacher_parameters']})",
             f"  {metric}: teacher {_quality(report['teacher_quality'], metric)}; student "
             f"{_quality(report['before'], metric)} before, {_quality(report['after'], metric)} after "
             f"({report['quality']['evaluated_on']})",
             f"  training: {report['epochs']} epochs, temperature {report['temperature']:g}, alpha {report['alpha']:g}"]
    return "\n".join(lines + _int8_line(report) + [f"  note: {note}" for note in report["notes"]])
