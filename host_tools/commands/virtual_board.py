"""`mcuforge virtual-board`: a MicroPython board with no hardware, on a pseudo-terminal."""
from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import click

from mcuforge.codegen.errors import McuforgeError


def default_flash_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "mcuforge" / "virtual-board"


def parse_address(text: str, option: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    try:
        number = int(port)
        if not 0 <= number <= 65535:
            raise ValueError
    except ValueError:
        raise McuforgeError(f"{text!r} is not HOST:PORT", where=option, fix="write it as 127.0.0.1:7001") from None
    return host or "127.0.0.1", number


@click.command(name="virtual-board")
@click.option("--flash-dir", type=click.Path(path_type=Path), default=None,
              help="Host folder that holds the board's flash (default: ~/.local/share/mcuforge/virtual-board).")
@click.option("--sensor-trace", type=click.Path(path_type=Path), default=None,
              help="CSV (t,adc0,pin4,...) that machine.ADC and machine.Pin inputs read, over virtual time.")
@click.option("--lora-peer", "lora_peers", multiple=True, metavar="HOST:PORT",
              help="Link UART(1) to a simulated LoRa radio that sends to this UDP address (repeatable).")
@click.option("--lora-listen", default="127.0.0.1:0", show_default=True, metavar="HOST:PORT",
              help="Where the LoRa radio receives packets (port 0: any free port, printed).")
@click.option("--lora-sf", type=click.IntRange(6, 12), default=7, show_default=True, help="LoRa spreading factor.")
@click.option("--lora-loss", type=click.FloatRange(0.0, 1.0), default=0.0, show_default=True,
              help="Chance that a LoRa packet is lost.")
@click.option("--uart-pty", is_flag=True, help="Put UART(1) on a pseudo-terminal of its own instead.")
@click.option("--heap-kb", type=click.IntRange(min=16), default=1024, show_default=True,
              help="MicroPython's initial heap (the WebAssembly port grows it: running out of RAM is not simulated).")
@click.option("--flash-kb", type=click.IntRange(min=64), default=4096, show_default=True, help="Flash size (statvfs, ENOSPC).")
@click.option("--port-file", type=click.Path(path_type=Path), default=None,
              help="Also write the port's path to this file (for scripts).")
def command(flash_dir: Path | None, sensor_trace: Path | None, lora_peers: tuple[str, ...], lora_listen: str,
            lora_sf: int, lora_loss: float, uart_pty: bool, heap_kb: int, flash_kb: int,
            port_file: Path | None) -> None:
    """Run a virtual MicroPython board (the WebAssembly port) behind a pseudo-terminal.

    mpremote, pyserial and `mcuforge monitor`/`deploy` use its port like a board's. Files
    persist in the flash folder; Ctrl-C stops the board.
    """
    from mcuforge.host_tools.virtual_board import LoraRadio, UartPty, UdpLoraChannel, VirtualBoard

    if lora_peers and uart_pty:
        raise McuforgeError("UART(1) can go to a LoRa radio or to a pseudo-terminal, not both",
                            where="--lora-peer / --uart-pty", fix="drop one of them")
    flash_dir = flash_dir or default_flash_dir()
    uart, uart_text = None, "not connected"
    if lora_peers:
        channel = UdpLoraChannel(parse_address(lora_listen, "--lora-listen"),
                                 [parse_address(p, "--lora-peer") for p in lora_peers], loss=lora_loss)
        uart = LoraRadio(channel, spreading_factor=lora_sf)
        host, port = channel.address
        uart_text = (f"LoRa radio SF{lora_sf}/125 kHz, listening on {host}:{port}, "
                     f"sending to {', '.join(lora_peers)}")
    elif uart_pty:
        uart = UartPty()
        uart_text = uart.port
    board = VirtualBoard(flash_dir, sensor_trace=sensor_trace, uart=uart, heap_bytes=heap_kb * 1024,
                         flash_bytes=flash_kb * 1024, register=True)
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    board.start()
    try:
        if port_file is not None:
            port_file.write_text(board.port + "\n")
        click.secho(f"virtual board on {board.port}", fg="green", bold=True)
        click.echo(f"  flash:        {flash_dir}")
        click.echo(f"  sensor trace: {sensor_trace or 'none (ADC reads 0)'}")
        click.echo(f"  UART(1):      {uart_text}")
        click.echo(f"try: mpremote connect {board.port} exec \"import machine; print(machine.unique_id())\"")
        click.echo("Ctrl-C stops the board.", err=True)
        while not stop.wait(0.5):
            if board.stopped_reason:
                raise McuforgeError(f"the virtual board stopped: {board.stopped_reason}", where=str(flash_dir),
                                    fix="run with --debug and report the error; check that Node 20 or later "
                                        "and the MicroPython WebAssembly package are installed")
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        board.stop()
        if port_file is not None:
            port_file.unlink(missing_ok=True)
    click.echo("virtual board stopped")
