"""`mcuforge monitor`: a board's console, timestamped, coloured and decoded."""
from __future__ import annotations

from pathlib import Path

import click


def qemu_resume(transport) -> None:
    """An emulated board that `mcuforge flash` left waiting starts once its monitor is there."""
    resume = getattr(transport, "resume", None)
    if resume is not None:
        resume()


@click.command(name="monitor")
@click.option("--port", "-p", required=True, help="Serial port, or the pseudo-terminal of an emulated/virtual board.")
@click.option("--baud", "-b", type=int, default=115200, show_default=True)
@click.option("--elf", type=click.Path(path_type=Path), default=None, help="Firmware ELF: decode fault addresses.")
@click.option("--log", "log_file", type=click.Path(path_type=Path), default=None, help="Append the lines to this file.")
@click.option("--expect", default=None, metavar="REGEX",
              help="Exit 0 as soon as one of the board's lines (as sent, before decoding) matches.")
@click.option("--timeout", type=click.FloatRange(min=0), default=None,
              help="Give up after this many seconds (exit 2 when --expect did not match).")
@click.option("--no-reconnect", is_flag=True, help="Exit (code 3) when the port vanishes instead of waiting for it.")
@click.option("--color/--no-color", default=None, help="Colour by level (default: when writing to a terminal).")
@click.pass_context
def command(ctx: click.Context, port: str, baud: int, elf: Path | None, log_file: Path | None, expect: str | None,
            timeout: float | None, no_reconnect: bool, color: bool | None) -> None:
    """Show a board's console: timestamps, colours by level, decoded telemetry and faults.

    Keys go to the board; Ctrl-] quits; Ctrl-T then Ctrl-R resets the board, Ctrl-T then h
    lists the menu. Exit codes: 0 (quit, or --expect matched), 2 (--expect timed out),
    3 (the port vanished with --no-reconnect).
    """
    from mcuforge.host_tools.monitor import KeyReader, Monitor
    from mcuforge.host_tools.transport import open_transport

    keys = KeyReader.for_terminal()
    try:
        monitor = Monitor(lambda: open_transport(port, baud), log=log_file, expect=expect, timeout=timeout, elf=elf,
                          color=color, keys=keys, reconnect=not no_reconnect, on_connect=qemu_resume)
        code = monitor.run()
    finally:
        if keys is not None:
            keys.close()
    ctx.exit(code)
