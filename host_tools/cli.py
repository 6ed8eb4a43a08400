"""The `mcuforge` command line: a thin layer over the pipeline functions.

Each command parses its options, calls one stage function and prints what it returned.
Errors in the input come out as a short message with a non-zero exit; `--debug` shows the
traceback as well.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
from importlib.metadata import version
from pathlib import Path

import click

from mcuforge.codegen.errors import McuforgeError

from .compile import ENGINES


class McuforgeGroup(click.Group):
    """Turns McuforgeError into a clean message and exit code 1 unless --debug is given."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except McuforgeError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.secho(f"error: {exc.what}", fg="red", err=True)
            if exc.where:
                click.echo(f"  where: {exc.where}", err=True)
            if exc.fix:
                click.echo(f"  fix:   {exc.fix}", err=True)
            ctx.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted; nothing was replaced", err=True)
            ctx.exit(130)


@click.group(cls=McuforgeGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show Python tracebacks on errors.")
@click.version_option(version("mcuforge"), prog_name="mcuforge")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Put int8 neural networks on microcontrollers, and keep them working."""
    ctx.ensure_object(dict)["debug"] = debug


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def boards(as_json: bool) -> None:
    """List the supported boards (one data file each in boards/)."""
    from mcuforge.boards import all_boards
    from .board_table import board_rows, format_board_table

    rows = board_rows(all_boards())
    click.echo(json.dumps(rows, indent=2) if as_json else format_board_table(rows))


@cli.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--calib", type=click.Path(path_type=Path),
              help="Calibration inputs: .npy, .npz (key x), or a folder of .npy files (one sample or a batch each).")
@click.option("--samples", type=click.IntRange(min=1), default=None,
              help="Calibrate on at most this many samples, spread evenly over the set (default: all).")
@click.option("--per-tensor", is_flag=True, help="One scale per weight tensor instead of one per output channel.")
@click.option("--eval", "eval_data", type=click.Path(path_type=Path),
              help="Held-out data (.npz with x and y, or .npy of x) to compare float and int8 and check the budget.")
@click.option("--max-drop", type=float, default=None,
              help="Classifiers: the most top-1 accuracy may drop from float to int8, in percentage points "
                   "(default 2). Without labels in y, top-1 disagreement with the float model counts instead.")
@click.option("--max-mse-increase", type=float, default=None,
              help="Regressors and autoencoders: the most the int8 MSE against y may exceed the float MSE, in percent "
                   "(default 10). Without y: the int8-vs-float MSE as a percentage of the output variance (default 1).")
@click.option("--task", type=click.Choice(["auto", "classifier", "regressor"]), default="auto", show_default=True,
              help="How to judge the evaluation (auto: labels or softmax outputs mean a classifier).")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="The int8 .tflite to write. Over budget, it is not written (a previous file stays).")
@click.option("--json", "as_json", is_flag=True, help="Print the full report as JSON.")
@click.pass_context
def convert(ctx: click.Context, model: Path, calib: Path | None, samples: int | None, per_tensor: bool,
            eval_data: Path | None, max_drop: float | None, max_mse_increase: float | None, task: str,
            output: Path, as_json: bool) -> None:
    """Convert a Keras model (.keras, .h5, SavedModel) to a full-int8 .tflite.

    With --eval, the int8 model must stay within the quality budget (--max-drop for
    classifiers, --max-mse-increase for regressors); over it, the command fails, names the
    layers where the int8 error appears, and writes nothing.
    """
    from mcuforge.codegen.native_log import native_stderr_captured
    from mcuforge.codegen.quantize import convert as convert_model
    from .summaries import convert_summary

    with _terminal_progress() as progress:
        # TensorFlow's native logging is noise at a terminal; --debug lets it through.
        with native_stderr_captured(enabled=not ctx.obj["debug"]):
            report = convert_model(model, output, calib=calib, eval_data=eval_data, num_calib_samples=samples,
                                   task=task, per_channel=not per_tensor, max_drop=max_drop,
                                   max_mse_increase=max_mse_increase, progress=progress)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    click.echo(convert_summary(report.to_dict()))
    if report.weights:
        click.echo(f"  weights: {report.weights} scales")
    if report.budget:
        budget = report.budget
        unit = " points" if budget["unit"] == "points" else "%"
        click.echo(f"  budget:  {budget['metric']} {budget['value']:.2f}{unit} (limit {budget['limit']:g}{unit}): "
                   f"within; {budget['detail']}")


@contextlib.contextmanager
def _terminal_progress():
    """A progress-bar factory drawing on the terminal, or None when stderr is not a terminal.

    The bars go to a duplicate of the terminal's stderr taken now, because TensorFlow's native
    logging is kept off file descriptor 2 while the stage runs."""
    if not sys.stderr.isatty():
        yield None
        return
    stream = os.fdopen(os.dup(sys.stderr.fileno()), "w")

    def progress(label: str, total: int):
        return click.progressbar(length=total, label=f"{label:<20}", file=stream, width=30)

    try:
        yield progress
    finally:
        stream.close()


@cli.command(name="compile")
@click.argument("models", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--engine", type=click.Choice(ENGINES), default="aot", show_default=True,
              help="aot: mcuforge's own C; tflm: C array for TFLM; ethos-u: Vela-compiled for the board's NPU.")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="Directory for the generated sources.")
@click.option("--name", default="model", show_default=True, help="C identifier prefix of the generated code.")
@click.option("--names", default=None,
              help="With several models: their names, comma-separated (default primary,fallback,minimal).")
@click.option("--board", default=None,
              help="Target board: checks that the result fits its memories, picks the aot kernel family "
                   "and, for ethos-u, the NPU configuration.")
@click.option("--kernels", type=click.Choice(["portable", "dsp", "mve"]), default=None,
              help="aot kernel family (default: from --board, else portable).")
@click.option("--threshold-data", type=click.Path(path_type=Path), default=None,
              help="micropython engine, autoencoders: normal samples (.npy, or .npz key x) to calibrate the "
                   "reconstruction-error threshold on; stored in the model file as anomaly_threshold.")
@click.option("--threshold-percentile", type=float, default=None,
              help="Percentile of the normal samples' errors that becomes the threshold [default: 99.5].")
def compile_model(models: tuple[Path, ...], engine: str, output: Path, name: str, names: str | None,
                  board: str | None, kernels: str | None, threshold_data: Path | None,
                  threshold_percentile: float | None) -> None:
    """Compile int8 .tflite models into C for an engine.

    Several models (primary, fallback, minimal) are planned into one shared arena (aot engine)."""
    from .compile import compile_model as compile_stage, compile_models
    from .summaries import compile_summary

    if len(models) == 1:
        report = compile_stage(models[0], engine, output, name=name, board=board, kernels=kernels,
                               threshold_data=threshold_data, threshold_percentile=threshold_percentile)
    elif engine != "aot":
        raise click.UsageError("several models in one shared arena need --engine aot")
    elif threshold_data is not None or threshold_percentile is not None:
        raise click.UsageError("--threshold-data calibrates one autoencoder for --engine micropython")
    else:
        report = compile_models(list(models), output, names=names.split(",") if names else None,
                                board=board, kernels=kernels)
    click.echo(compile_summary(report, output))
    calibration = report.get("anomaly_threshold")
    if calibration:
        click.echo(f"  anomaly:  threshold {calibration['threshold']:.6g} ({calibration['metric']}, "
                   f"{calibration['percentile']:g}th percentile of {calibration['samples']} normal samples; "
                   f"mean {calibration['mean']:.6g}, max {calibration['max']:.6g})")


@cli.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--board", required=True, help="host, or an emulated board: mps3-an547, mps2-an386, ...")
@click.option("--samples", type=click.IntRange(min=1), default=10, show_default=True, help="Random int8 inputs to try.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--keep", type=click.Path(path_type=Path), default=None, help="Keep the generated code and build here.")
@click.option("--kernels", type=click.Choice(["portable", "dsp", "mve"]), default=None,
              help="Kernel family (default: the best the board's CPU has).")
def verify(model: Path, board: str, samples: int, seed: int, keep: Path | None, kernels: str | None) -> None:
    """Run the AOT code on a board and compare every output bit for bit with TFLM."""
    from .verify import verify_model

    result = verify_model(model, board, samples=samples, seed=seed, keep_dir=keep, kernels=kernels)
    for line in result.details():
        click.echo(line)
    click.echo(f"bit-exact: {result.matches}/{result.total}")
    if result.matches != result.total:
        sys.exit(1)


def _add_command_modules() -> None:
    import importlib
    import pkgutil

    from . import commands

    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda i: i.name):
        cli.add_command(importlib.import_module(f"{commands.__name__}.{info.name}").command)


_add_command_modules()


def main() -> None:
    cli(prog_name="mcuforge")


if __name__ == "__main__":
    main()
