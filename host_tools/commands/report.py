"""`mcuforge report DIR`: show again what `mcuforge compile` reported, from DIR/report.json."""
from __future__ import annotations

import json
from pathlib import Path

import click

from mcuforge.codegen.errors import McuforgeError

REPORT_FILE = "report.json"


def load_compile_report(out_dir: str | Path) -> dict:
    """The report.json that `mcuforge compile` wrote into `out_dir`."""
    out_dir = Path(out_dir)
    path = out_dir / REPORT_FILE
    fix = f"pass the directory that `mcuforge compile MODEL -o DIR` wrote, or compile into {out_dir} first"
    if not out_dir.is_dir():
        raise McuforgeError(f"no such directory: {out_dir}", where=str(out_dir), fix=fix)
    if not path.is_file():
        raise McuforgeError(f"no {REPORT_FILE} in {out_dir}", where=str(path), fix=fix)
    try:
        report = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise McuforgeError(f"{REPORT_FILE} is not valid JSON ({exc})", where=str(path),
                            fix=f"compile again to rewrite it: mcuforge compile MODEL -o {out_dir}") from None
    if not isinstance(report, dict) or "engine" not in report:
        raise McuforgeError(f"{REPORT_FILE} is not a compile report (it names no engine)", where=str(path), fix=fix)
    return report


def layer_lines(report: dict) -> list[str]:
    layers = report.get("layers") or []
    if not layers:
        return ["  (no per-layer figures in this report)"]
    if report["engine"] == "aot":
        header = f"  {'#':>3}  {'operator':<22} {'output shape':<18} {'MACs':>10} {'offset':>8} {'bytes':>8}"
        rows = [f"  {l['index']:>3}  {l['op']:<22} {str(l.get('output_shape')):<18} {l.get('macs') or 0:>10} "
                f"{'' if l.get('arena_offset') is None else l['arena_offset']:>8} {l.get('output_bytes') or 0:>8}"
                for l in layers]
    else:
        header = f"  {'#':>3}  {'operator':<22} {'on':<4} {'output shape':<18} {'cycles':>9} {'MACs':>10}"
        rows = [f"  {l['index']:>3}  {l['op']:<22} {l.get('target', ''):<4} {str(l.get('output_shape')):<18} "
                f"{'-' if l.get('cycles') is None else l['cycles']:>9} {'-' if l.get('macs') is None else l['macs']:>10}"
                for l in layers]
    return [header, *rows]


@click.command(name="report")
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print report.json as it is.")
@click.option("--layers", "with_layers", is_flag=True, help="Also list the layers with their figures.")
def command(directory: Path, as_json: bool, with_layers: bool) -> None:
    """Show the summary of a compile output directory again (from its report.json)."""
    from mcuforge.host_tools.summaries import compile_summary

    report = load_compile_report(directory)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(compile_summary(report, directory, action="report of"))
    if with_layers:
        click.echo("  layers:")
        for line in layer_lines(report):
            click.echo(line)
