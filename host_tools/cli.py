"""The `mcuforge` command line: a thin layer over the pipeline functions.

Each command parses its options, calls one stage function and prints what it returned.
Errors in the input come out as a short message with a non-zero exit; `--debug` shows the
traceback as well.
"""
from __future__ import annotations

import json
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
@click.option("--calib", type=click.Path(path_type=Path), help="Calibration inputs (.npy or .npz).")
@click.option("--eval", "eval_data", type=click.Path(path_type=Path), help="Held-out data (.npz with x, y) to compare float and int8.")
@click.option("--samples", type=int, default=None, help="Use at most this many calibration samples.")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="The int8 .tflite to write.")
@click.option("--json", "as_json", is_flag=True, help="Print the full report as JSON.")
@click.pass_context
def convert(ctx: click.Context, model: Path, calib: Path | None, eval_data: Path | None, samples: int | None,
            output: Path, as_json: bool) -> None:
    """Convert a Keras model (.keras, .h5, SavedModel) to a full-int8 .tflite."""
    from mcuforge.codegen.native_log import native_stderr_captured
    from mcuforge.codegen.quantize import convert as convert_model
    from .summaries import convert_summary

    # TensorFlow's native logging is noise at a terminal; --debug lets it through.
    with native_stderr_captured(enabled=not ctx.obj["debug"]):
        report = convert_model(model, output, calib=calib, eval_data=eval_data, num_calib_samples=samples)
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else convert_summary(report.to_dict()))


@cli.command(name="compile")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--engine", type=click.Choice(ENGINES), default="aot", show_default=True)
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="Directory for the generated sources.")
@click.option("--name", default="model", show_default=True, help="C identifier prefix of the generated code.")
@click.option("--board", default=None, help="Target board: picks the aot kernel family from its CPU extensions.")
@click.option("--kernels", type=click.Choice(["portable", "dsp", "mve"]), default=None,
              help="aot kernel family (default: from --board, else portable).")
def compile_model(model: Path, engine: str, output: Path, name: str, board: str | None, kernels: str | None) -> None:
    """Compile an int8 .tflite into C for an engine (aot: mcuforge's own C; tflm: C array for TFLM)."""
    from .compile import compile_model as compile_stage
    from .summaries import compile_summary

    report = compile_stage(model, engine, output, name=name, board=board, kernels=kernels)
    click.echo(compile_summary(report, output))


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
