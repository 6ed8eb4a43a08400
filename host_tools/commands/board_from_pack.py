"""`mcuforge board-from-pack FILE.pdsc --device NAME`: write a board file for one device of a CMSIS pack."""
from __future__ import annotations

from pathlib import Path

import click

from mcuforge.codegen.errors import McuforgeError


@click.command(name="board-from-pack")
@click.argument("pdsc", type=click.Path(path_type=Path))
@click.option("--device", required=True, help="The device or variant of the pack (Dname or Dvariant).")
@click.option("--name", "board_name", default=None,
              help="The board's name (default: the device name in lowercase, e.g. stm32f407vg).")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="The board file to write (default: boards/NAME.toml of this project).")
@click.option("--force", is_flag=True, help="Overwrite the output file if it exists.")
def command(pdsc: Path, device: str, board_name: str | None, output: Path | None, force: bool) -> None:
    """Make a board file from a CMSIS device pack description (.pdsc).

    CPU, FPU, DSP/MVE, clock and memories come from the pack; RTOSes, engines, flashing
    (pyocd) and console (UART 115200) get defaults to review before use.
    """
    from mcuforge.boards import BOARDS_DIR, parse_board_file
    from mcuforge.boards.from_pack import board_from_pdsc, board_toml

    board = board_from_pdsc(pdsc, device, name=board_name)
    output = output or BOARDS_DIR / f"{board['name']}.toml"
    if output.suffix != ".toml" or output.stem != board["name"]:
        raise McuforgeError(f"the board file for {board['name']!r} must be named {board['name']}.toml",
                            where=f"-o {output}",
                            fix=f"use -o {output.with_name(board['name'] + '.toml')}, or --name {output.stem}")
    if output.exists() and not force:
        raise McuforgeError(f"{output} exists; not overwriting it", where=f"-o {output}",
                            fix="pass --force to replace it, or choose another -o or --name")
    header = (f"Made by `mcuforge board-from-pack` from {pdsc.name}, device {device}.\n"
              "Review rtos, engines, flash and console: the pack does not describe the board around the chip.")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(board_toml(board, header))
    parse_board_file(output)  # the file as written must load
    click.echo(f"wrote {output} (board {board['name']}: {board['cpu']['core']}, "
               f"{len(board['memory'])} memories)")
