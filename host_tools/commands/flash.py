"""`mcuforge flash`: put a built firmware on a board (or start it on an emulated one)."""
from __future__ import annotations

from pathlib import Path

import click


def describe(result) -> list[str]:
    lines = [f"flashed {result.board} with {result.tool}: {', '.join(result.firmware)}"]
    lines += result.notes
    if result.emulator is not None:
        emulator = result.emulator
        lines += [f"UART on {emulator.port} (QEMU pid {emulator.pid}; `kill {emulator.pid}` stops it)",
                  f"the CPU waits for a monitor: mcuforge monitor --port {emulator.port} "
                  f"(or flash with --no-wait to start it at once)"]
    elif result.command:
        lines.append("command: " + " ".join(result.command))
    return lines


@click.command(name="flash")
@click.argument("project_dir", metavar="DIR", type=click.Path(path_type=Path))
@click.option("--board", required=True, help="Board file name (mcuforge boards lists them).")
@click.option("--port", "-p", default=None,
              help="Serial port (ESP32); the debug probe's serial number (pyocd, openocd, STM32CubeProgrammer).")
@click.option("--no-wait", is_flag=True, help="Emulated boards: start the CPU now, without waiting for a monitor.")
@click.option("--merged-image", type=click.Path(path_type=Path), default=None,
              help="ESP32: also write every file at its offset into one image (esptool merge-bin).")
def command(project_dir: Path, board: str, port: str | None, no_wait: bool, merged_image: Path | None) -> None:
    """Flash the firmware built in DIR: esptool (ESP32), a probe tool (Cortex-M) or QEMU (emulated)."""
    from mcuforge.boards import load_board
    from mcuforge.host_tools.flash import esp_flash_plan, flash, merge_esp_image

    board_data = load_board(board)
    if merged_image is not None and board_data.flash["tool"] == "esptool":
        merge_esp_image(esp_flash_plan(project_dir, board_data), merged_image)
        click.echo(f"merged image: {merged_image}")
    result = flash(project_dir, board_data, port, paused=not no_wait)
    for line in describe(result):
        click.echo(line)
