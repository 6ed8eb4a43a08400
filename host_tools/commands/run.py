"""`mcuforge run`: flash, then monitor, in one command."""
from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path

import click

from mcuforge.codegen.errors import McuforgeError

# How long QEMU may take to exit once the firmware's UART has gone.
QEMU_EXIT_WAIT_S = 5.0


@click.command(name="run")
@click.argument("project_dir", metavar="DIR", type=click.Path(path_type=Path))
@click.option("--board", required=True, help="Board file name (mcuforge boards lists them).")
@click.option("--port", "-p", default=None, help="The board's console port (and, for ESP32, its flashing port).")
@click.option("--elf", type=click.Path(path_type=Path), default=None,
              help="ELF to decode faults with (default: the one in DIR/build).")
@click.option("--log", "log_file", type=click.Path(path_type=Path), default=None, help="Append the lines to this file.")
@click.option("--expect", default=None, metavar="REGEX",
              help="Exit 0 as soon as one of the board's lines (as sent, before decoding) matches.")
@click.option("--timeout", type=click.FloatRange(min=0), default=None, help="Give up after this many seconds.")
@click.option("--keep", is_flag=True, help="Emulated boards: leave QEMU running when the monitor ends.")
@click.option("--color/--no-color", default=None)
@click.pass_context
def command(ctx: click.Context, project_dir: Path, board: str, port: str | None, elf: Path | None,
            log_file: Path | None, expect: str | None, timeout: float | None, keep: bool, color: bool | None) -> None:
    """Flash the firmware built in DIR, then show the board's console (see `mcuforge monitor`).

    On an emulated board the monitor ends when the firmware does, with its exit status.
    """
    from mcuforge.boards import load_board
    from mcuforge.host_tools.commands.flash import describe
    from mcuforge.host_tools.flash import find_firmware, flash
    from mcuforge.host_tools.monitor import EXIT_OK, EXIT_PORT_GONE, KeyReader, Monitor
    from mcuforge.host_tools.transport import open_transport

    board_data = load_board(board)
    result = flash(project_dir, board_data, port, paused=True)
    for line in describe(result)[:1] + result.notes:
        click.echo(line)
    emulator = result.emulator
    console = emulator.port if emulator is not None else port
    if console is None:
        raise McuforgeError(f"{board_data.name} was flashed through a debug probe; the monitor needs its console port",
                            where="--port", fix="pass the board's serial console, e.g. --port /dev/ttyACM0")
    if elf is None and board_data.is_arm:
        try:
            elf = find_firmware(project_dir, board_data)
        except McuforgeError:
            elf = None
        if elf is not None and elf.suffix != ".elf":
            elf = None
    keys = KeyReader.for_terminal()
    code = 0
    try:
        monitor = Monitor(lambda: open_transport(console, board_data.console.get("baud", 115200)), log=log_file,
                          expect=expect, timeout=timeout,
                          elf=elf, color=color, keys=keys, reconnect=emulator is None,
                          stop_when=(lambda: not emulator.running) if emulator is not None else None,
                          on_connect=lambda t: emulator.resume() if emulator is not None else None)
        code = monitor.run()
        if emulator is not None and expect is None and code in (EXIT_OK, EXIT_PORT_GONE):
            # The UART went away with QEMU: the firmware ended, and its exit status is the answer.
            if code == EXIT_PORT_GONE:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    emulator.process.wait(timeout=QEMU_EXIT_WAIT_S)
            status = emulator.exit_code()
            code = status if status is not None else code
    finally:
        if keys is not None:
            keys.close()
        if emulator is not None and not keep:
            emulator.stop()
        elif emulator is not None:
            click.echo(f"QEMU keeps running: mcuforge monitor --port {emulator.port} (pid {emulator.pid})")
    ctx.exit(code)
