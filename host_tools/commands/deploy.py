"""`mcuforge deploy`: install the MicroPython runtime, a model and a config on a board."""
from __future__ import annotations

from pathlib import Path

import click


@click.command(name="deploy")
@click.option("--port", "-p", required=True, help="The board's serial port (or a virtual board's).")
@click.option("--model", type=click.Path(path_type=Path), default=None, help="MicroPython model file (.mfm).")
@click.option("--config", type=click.Path(path_type=Path), default=None, help="Runtime config (JSON).")
@click.option("--baud", type=int, default=115200, show_default=True)
@click.option("--no-reset", is_flag=True, help="Do not soft-reset the board afterwards.")
def command(port: str, model: Path | None, config: Path | None, baud: int, no_reset: bool) -> None:
    """Compile the runtime for the board's .mpy version and copy what changed."""
    from mcuforge.host_tools.deploy import deploy

    bar = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            if total == 0:
                return
            bar = click.progressbar(length=total, label="copying", show_pos=True, file=click.get_text_stream("stderr"))
            bar.__enter__()
        bar.update(done - bar.pos)

    try:
        report = deploy(port, model=model, config=config, baud=baud, reset=not no_reset, progress=progress,
                        log=lambda text: click.secho(text, fg="yellow", err=True))
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
    board = report.board
    version = ".".join(str(v) for v in board.version[:3])
    click.echo(f"board: MicroPython {version} ({board.platform}), modules as {report.module_format}")
    click.echo(f"copied {len(report.copied)} file(s), {report.bytes_copied} bytes; "
               f"{len(report.unchanged)} unchanged; {report.seconds:.1f} s")
    for path in report.copied:
        click.echo(f"  + {path}")
    for path in report.removed:
        click.echo(f"  - {path}")
    if not no_reset:
        click.echo("soft-reset: the board runs boot.py and main.py")
