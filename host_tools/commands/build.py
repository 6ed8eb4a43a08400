"""`mcuforge build`: a model to a complete firmware project for a board, an RTOS and an engine,
built with that SDK's tool on --compile."""
from __future__ import annotations

import json
from pathlib import Path

import click

from mcuforge.host_tools.project import ENGINES, RTOSES


def _summary(result: dict) -> str:
    report = result["report"]
    settings = result["settings"]
    period = f"every {settings['period_ms']} ms" if settings["period_ms"] else "back to back"
    count = f"{settings['iterations']} inferences" if settings["iterations"] else "forever"
    lines = [f"wrote {result['project']}/ ({result['kind']} project: {result['board']}, {result['rtos']}, "
             f"{result['engine']} engine); README.md says how to build and flash it"]
    lines += [f"  note:     {note}" for note in result["notes"]]
    lines.append(f"  model:    {Path(result['model']).name}, arena {report.get('arena_bytes')} B; "
                 f"compile report in {result['compiled']}/")
    if result["kind"] != "micropython":
        lines.append(f"  app:      one inference {period}, {count}; telemetry and bench mode on the console "
                     f"(docs/bench-protocol.md)")
    build = result.get("build")
    if build:
        lines.append(f"  built:    {', '.join(build['artifacts'])} ({build['tool']})")
        sizes = build.get("sizes")
        if sizes:
            lines.append(f"  size:     text {sizes['text']} B, data {sizes['data']} B, bss {sizes['bss']} B "
                         f"(bss includes the arena, stack and heap)")
    return "\n".join(lines)


@click.command(name="build")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--board", required=True, help="Board name (see `mcuforge boards`) or board .toml file.")
@click.option("--rtos", type=click.Choice(RTOSES), required=True,
              help="zephyr, freertos (ESP-IDF on the ESP32-S3), baremetal, or micropython (a user C module).")
@click.option("--engine", type=click.Choice(ENGINES), default="aot", show_default=True)
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="Project folder to write.")
@click.option("--calib", type=click.Path(path_type=Path), default=None,
              help="Calibration inputs (.npy/.npz), needed to convert a Keras model.")
@click.option("--name", default="model", show_default=True,
              help="C prefix of the model's code (and the module name for --rtos micropython).")
@click.option("--period-ms", type=click.IntRange(min=0), default=1000, show_default=True,
              help="Time from one inference to the next.")
@click.option("--iterations", type=click.IntRange(min=0), default=0, show_default=True,
              help="Inferences before the application stops (0: run forever).")
@click.option("--stack-bytes", type=click.IntRange(min=1024), default=None,
              help="Stack of the application's thread (default: 8 KiB aot, 16 KiB tflm/ethos-u; 16 KiB main "
                   "stack on bare metal).")
@click.option("--kernels", type=click.Choice(["portable", "dsp", "mve"]), default=None,
              help="aot kernel family (default: the best the board's CPU has).")
@click.option("--compile", "compile_", is_flag=True,
              help="Also build it: west, idf.py, or cmake/arm-none-eabi-gcc, into OUTPUT/build.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def command(ctx: click.Context, model: Path, board: str, rtos: str, engine: str, output: Path, calib: Path | None,
            name: str, period_ms: int, iterations: int, stack_bytes: int | None, kernels: str | None, compile_: bool,
            as_json: bool) -> None:
    """Render a firmware project for MODEL (int8 .tflite, or a Keras model with --calib)."""
    from mcuforge.host_tools.firmware import AppSettings
    from mcuforge.host_tools.project import build_firmware

    settings = AppSettings(period_ms=period_ms, iterations=iterations, stack_bytes=stack_bytes)
    result = build_firmware(model, board, rtos, engine, output, calib=calib, name=name, settings=settings,
                            compile=compile_, kernels=kernels)
    if as_json:
        click.echo(json.dumps({k: v for k, v in result.items() if k != "report"}, indent=2))
    else:
        click.echo(_summary(result))
