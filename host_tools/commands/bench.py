"""`mcuforge bench`: the board-in-the-loop test bench."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from mcuforge.host_tools.bench import DEFAULT_RUNS, DEFAULT_SEED, bench_passed


def _figure(stats: dict | None) -> str:
    if not stats:
        return "n/a"
    return (f"p50 {stats['p50']:,} / p95 {stats['p95']:,} / max {stats['max']:,} {stats['unit']}"
            if stats.get("p50") is not None else "n/a")


def human_bytes(count: int | None) -> str:
    if count is None:
        return "n/a"
    return f"{count} B" if count < 1024 else f"{count / 1024:.1f} KiB"


def summary(report: dict, out_dir: Path) -> list[str]:
    correctness, accuracy, latency, memory = (report["correctness"], report["accuracy"], report["latency"],
                                              report["memory"])
    target = report["target"]
    lines = [f"bench: {report['model']['name']} on {report['board']} ({target['kind']}, {target['engine']} engine), "
             f"{report['runs']} runs of {report['vectors']['count']} vector(s) from {report['vectors']['source']}"]
    lines.append(f"  bit-exact:  {correctness['bit_exact_runs']}/{correctness['runs']} runs, "
                 f"{correctness['bit_exact_vectors']}/{correctness['vectors']} vectors")
    for output in accuracy["outputs"]:
        agreement = output.get("top1_agreement")
        lines.append(f"  output {output['index']}:   max abs error {output['max_abs_error']:.6g}"
                     + (f", top-1 agreement {100 * agreement:.1f}%" if agreement is not None else "")
                     + (" (dequantized)" if output["dequantized"] else ""))
    labels = accuracy.get("labels")
    if labels and labels.get("task") == "classification":
        lines.append(f"  labels:     top-1 device {100 * labels['device_top1']:.1f}%, "
                     f"host {100 * labels['host_top1']:.1f}%")
    elif labels and labels.get("task") == "regression":
        lines.append(f"  labels:     MAE device {labels['device_mae']:.6g}, host {labels['host_mae']:.6g}")
    lines.append(f"  latency:    {_figure(latency)}")
    for key in ("instructions", "us", "cycles"):
        if isinstance(latency.get(key), dict):
            lines.append(f"              {_figure(latency[key])}")
    if memory["kind"] == "firmware":
        lines.append(f"  flash:      {human_bytes(memory.get('flash_bytes'))} (model "
                     f"{human_bytes(memory.get('model_flash_bytes'))})")
        lines.append(f"  RAM:        {human_bytes(memory.get('ram_bytes'))} static (arena "
                     f"{human_bytes(memory.get('arena_bytes'))}), stack high-water "
                     f"{human_bytes(memory.get('stack_hwm_bytes'))}")
    else:
        lines.append(f"  flash:      model file {human_bytes(memory.get('model_file_bytes'))}, runtime "
                     f"{human_bytes(memory.get('runtime_bytes'))}")
        lines.append(f"  RAM:        runtime {human_bytes(memory.get('runtime_import_ram_bytes'))}, model "
                     f"{human_bytes(memory.get('model_load_ram_bytes'))} (gc.mem_free); one invoke allocates "
                     f"{human_bytes(memory.get('invoke_alloc_bytes'))}")
    files = report["files"]
    lines.append(f"  report:     {out_dir / files['markdown']}, {out_dir / files['json']}, {out_dir / files['histogram']}")
    for mismatch in correctness["mismatches"][:5]:
        lines.append(f"  MISMATCH run {mismatch['run']} (vector {mismatch['vector']}) output {mismatch['output']}: "
                     f"{mismatch['differing_values']} values differ, max |diff| {mismatch['max_abs_diff']}")
    return lines


@click.command(name="bench")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--board", required=True,
              help="Board name (mcuforge boards), or virtual-board for a virtual MicroPython board.")
@click.option("--port", "-p", default=None,
              help="The console port of a physical board, or of a MicroPython board already running (emulated "
                   "boards get a QEMU of their own, and --board virtual-board without a port a virtual board).")
@click.option("--vectors", type=click.Path(path_type=Path), default=None,
              help=".npz with x (float data is quantized with the input's scale and zero point) and optionally "
                   "labels y. Default: min(RUNS, 100) random int8 vectors.")
@click.option("--runs", type=click.IntRange(min=1), default=DEFAULT_RUNS, show_default=True,
              help="Inferences to time; the vectors repeat to fill them, and each runs at least once.")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="Folder for bench.json, bench.md, latency.png and the firmware (default: bench-BOARD).")
@click.option("--engine", type=click.Choice(["aot", "tflm", "ethos-u", "micropython"]), default=None,
              help="aot (default on firmware boards), or micropython to bench the device runtime on --port.")
@click.option("--rtos", default=None, help="RTOS of the bench firmware (default: baremetal where the board has it).")
@click.option("--kernels", type=click.Choice(["portable", "dsp", "mve"]), default=None,
              help="aot kernel family (default: the best the board's CPU has).")
@click.option("--probe", default=None, help="Debug probe serial number, for Cortex-M boards flashed through one.")
@click.option("--seed", type=int, default=DEFAULT_SEED, show_default=True, help="Seed of the random vectors.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def command(model: Path, board: str, port: str | None, vectors: Path | None, runs: int, output: Path | None,
            engine: str | None, rtos: str | None, kernels: str | None, probe: str | None, seed: int,
            as_json: bool) -> None:
    """Run MODEL (int8 .tflite) on a board and compare every output with the host reference.

    Builds and flashes the bench firmware (or deploys the MicroPython runtime and model file),
    streams the vectors over the console, and reports bit-exactness, accuracy, latency in cycles
    (p50, p95, max), RAM and flash. Exits 1 when an output differs from the host's.
    """
    from mcuforge.host_tools.bench import bench_model

    out_dir = output or Path(f"bench-{board}")
    bar = None
    err = click.get_text_stream("stderr")

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if not err.isatty():
            return
        if bar is None:
            bar = click.progressbar(length=total, label="running vectors", show_pos=True, file=err)
            bar.__enter__()
        bar.update(done - bar.pos)

    def log(text: str) -> None:
        if not as_json:
            click.secho(text, fg="bright_black", err=True)

    try:
        report = bench_model(model, board, out_dir, port=port, vectors=vectors, runs=runs, seed=seed, rtos=rtos,
                             engine=engine, kernels=kernels, probe=probe, progress=progress, log=log)
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        for line in summary(report, out_dir):
            click.echo(line)
    if not bench_passed(report):
        sys.exit(1)
