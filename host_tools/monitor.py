"""The serial monitor: a board's console as readable, timestamped, coloured lines.

    code = Monitor(lambda: open_transport("/dev/ttyUSB0"), elf="build/firmware.elf").run()

- Every line gets a timestamp and a colour by its level (ESP-IDF `E (..)`, Zephyr `<err>`,
  `[ERROR]`, tracebacks, `{"error":..}` records: red; warnings yellow; info green; debug dim).
- The firmware's JSON lines (docs/bench-protocol.md) are decoded into words, and on a terminal
  a status line under the scrolling output keeps the latest telemetry in view.
- Fault lines (the firmware's `pc=0x.. lr=0x..`, Zephyr's `r15/pc`, ESP-IDF's `Backtrace:`) get
  their addresses decoded into function, file and line with the toolchain's addr2line, given
  the ELF.
- When the port vanishes (a USB-CDC board resetting, a cable pulled) the monitor says so and
  waits for it to come back.
- `expect` ends the monitor with EXIT_MATCHED when a line matches, or EXIT_TIMEOUT after
  `timeout` seconds: a script can wait for a board to say something.
- Keys go to the board. Ctrl-T then a key is a menu, as in idf.py monitor: Ctrl-R / r resets
  the board (DTR/RTS, or the emulator's reset), Ctrl-X / x quits, h lists the keys, Ctrl-T sends
  a Ctrl-T. Ctrl-] quits at once.
"""
from __future__ import annotations

import json
import os
import re
import select
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, TextIO

import click

from mcuforge.codegen.errors import McuforgeError

from .transport import PortGone, Transport, port_problem_fix

EXIT_OK = 0
EXIT_MATCHED = 0
EXIT_TIMEOUT = 2
EXIT_PORT_GONE = 3

CTRL_T = b"\x14"
CTRL_RBRACKET = b"\x1d"
MENU_RESET = (b"\x12", b"r", b"R")
MENU_EXIT = (b"\x18", b"x", b"X", b"q", b"Q")
MENU_HELP = (b"\x08", b"h", b"H", b"?")
RECONNECT_POLL_S = 0.25
# A partial line (a prompt such as ">>> ") is shown once the board has been quiet this long.
PARTIAL_LINE_S = 0.15

LEVEL_STYLES = {
    "error": {"fg": "red", "bold": True},
    "warning": {"fg": "yellow"},
    "info": {"fg": "green"},
    "debug": {"fg": "bright_black"},
    "telemetry": {"fg": "cyan"},
    "note": {"fg": "magenta"},
    "fault": {"fg": "red"},
}

_LEVELS = [
    ("error", re.compile(r"^(E \(\d+\)|\[\d*[:.]?\d*\s*E\]|\[E\]|\[ERR(OR)?\])|<err>|\bERROR\b|^\{\s*\"error\"|"
                         r"HardFault|Guru Meditation|\bpanic\b|Traceback \(most recent call last\)|"
                         r"^\w+(Error|Exception|Interrupt): |assert(ion)? failed", re.I)),
    ("warning", re.compile(r"^(W \(\d+\)|\[W\]|\[WARN(ING)?\])|<wrn>|\bWARNING\b|^Warning:", re.I)),
    ("info", re.compile(r"^(I \(\d+\)|\[I\]|\[INFO\])|<inf>")),
    ("debug", re.compile(r"^([DV] \(\d+\)|\[D\]|\[DEBUG\])|<dbg>")),
]

# Code addresses in fault reports.
_REGISTER_ADDRESS = re.compile(r"\b(?:r15/pc|r14/lr|pc|lr|PC|LR|MEPC|RA)\)?\s*[:=]?\s*(0x[0-9a-fA-F]{8})")
_BACKTRACE = re.compile(r"Backtrace:((?:\s+0x[0-9a-fA-F]{8}:0x[0-9a-fA-F]{8})+)")
_FAULT_HINT = re.compile(r"fault|backtrace|guru meditation|panic|exception|abort|\bpc\b|r15/pc", re.I)

# addr2line by the ELF's machine (e_machine).
_ADDR2LINE = {40: ["arm-none-eabi-addr2line"],
              94: ["xtensa-esp32s3-elf-addr2line", "xtensa-esp-elf-addr2line"],
              243: ["riscv32-esp-elf-addr2line", "riscv64-unknown-elf-addr2line"]}
_ADDR2LINE_PACKAGES = {40: "binutils-arm-none-eabi (with gcc-arm-none-eabi)",
                       94: "the ESP-IDF toolchain (idf.py's xtensa-esp-elf)",
                       243: "a RISC-V toolchain (riscv32-esp-elf)"}


def line_level(line: str) -> str | None:
    for level, pattern in _LEVELS:
        if pattern.search(line):
            return level
    return None


# ---- telemetry ---------------------------------------------------------------------------

def _hz(value) -> str:
    if not isinstance(value, (int, float)) or value <= 0:
        return "?"
    return f"{value / 1e6:g} MHz"


def _bytes(value) -> str:
    return "n/a" if value is None else f"{value} B"


def _result(result) -> str:
    if isinstance(result, dict):
        if "class" in result:
            return f"class {result['class']} (score {result.get('score')})"
        if "hex" in result:
            return f"output {result['hex'][:16]}…"
    return str(result)


def decode_record(line: str, clock_hz: int | None = None) -> tuple[str, str, dict] | None:
    """A JSON line of the console protocol as (kind, words, record); None for other lines."""
    text = line.strip()
    if not text.startswith("{"):
        return None
    try:
        record = json.loads(text)
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    if record.get("hello") == "mcuforge":
        iterations = record.get("iterations")
        return "hello", (f"firmware up: {record.get('board')} {record.get('rtos')}/{record.get('engine')}, "
                         f"model {record.get('model')!r}, {_hz(record.get('clock_hz'))}, "
                         f"cycles from {record.get('cycle_counter')}, every {record.get('period_ms')} ms, "
                         f"{'forever' if not iterations else f'{iterations} inferences'}, "
                         f"inputs {record.get('inputs')} B, outputs {record.get('outputs')} B "
                         f"(protocol {record.get('protocol')})"), record
    if "inference" in record:
        cycles = record.get("cycles")
        timing = f"{cycles:,} cycles" if isinstance(cycles, int) else "? cycles"
        if isinstance(cycles, int) and clock_hz:
            timing += f" ({cycles / clock_hz * 1e6:.1f} µs)"
        uptime = record.get("uptime_ms")
        return "inference", (f"inference {record['inference']}: {timing}, {_result(record.get('result'))}, "
                             f"stack {_bytes(record.get('stack_hwm'))}, heap {_bytes(record.get('heap_hwm'))}, "
                             f"up {uptime / 1000:.1f} s" if isinstance(uptime, (int, float)) else
                             f"inference {record['inference']}: {timing}, {_result(record.get('result'))}"), record
    if record.get("bench") == "ready":
        return "bench", f"bench mode: inputs {record.get('inputs')} B, outputs {record.get('outputs')} B", record
    if "vec" in record:
        outs = record.get("out") or []
        shown = ", ".join(o[:16] + ("…" if len(o) > 16 else "") for o in outs if isinstance(o, str))
        return "vector", f"vector {record['vec']}: {record.get('cycles')} cycles, out [{shown}]", record
    if "done" in record:
        return "done", f"bench done: {record['done']} vectors", record
    if "stopped" in record:
        return "stopped", f"firmware stopped after {record['stopped']} inferences", record
    if "error" in record:
        return "error", f"firmware error: {record['error']}", record
    return "record", "  ".join(f"{k}={v}" for k, v in record.items()), record


@dataclass
class TelemetryView:
    """The running summary the status line shows."""

    clock_hz: int | None = None
    board: str | None = None
    inferences: int = 0
    cycles: list[int] = field(default_factory=list)
    last: dict | None = None

    def add(self, kind: str, record: dict) -> None:
        if kind == "hello":
            self.clock_hz = record.get("clock_hz") if isinstance(record.get("clock_hz"), int) else None
            self.board = record.get("board")
            self.inferences, self.cycles = 0, []
        elif kind == "inference":
            self.inferences += 1
            self.last = record
            if isinstance(record.get("cycles"), int):
                self.cycles = (self.cycles + [record["cycles"]])[-1000:]

    def status(self) -> str | None:
        if not self.inferences:
            return None
        ordered = sorted(self.cycles)
        parts = [f"{self.board or 'board'}: {self.inferences} inference{'' if self.inferences == 1 else 's'}"]
        if ordered:
            parts.append(f"cycles min {ordered[0]:,} p50 {ordered[len(ordered) // 2]:,} max {ordered[-1]:,}")
        last = self.last or {}
        parts.append(f"stack {_bytes(last.get('stack_hwm'))}")
        parts.append(f"heap {_bytes(last.get('heap_hwm'))}")
        if isinstance(last.get("uptime_ms"), (int, float)):
            parts.append(f"up {last['uptime_ms'] / 1000:.1f} s")
        return " | ".join(parts)


# ---- fault decoding ----------------------------------------------------------------------

def elf_machine(elf: Path) -> int | None:
    try:
        header = elf.read_bytes()[:20]
    except OSError:
        return None
    if header[:4] != b"\x7fELF":
        return None
    return int.from_bytes(header[18:20], "little" if header[5] == 1 else "big")


def fault_addresses(line: str) -> list[int]:
    """The code addresses a fault or backtrace line names, in order, without repeats."""
    if not _FAULT_HINT.search(line):
        return []
    found = []
    backtrace = _BACKTRACE.search(line)
    if backtrace:
        found += [int(pair.split(":")[0], 16) for pair in backtrace.group(1).split()]
    found += [int(match, 16) for match in _REGISTER_ADDRESS.findall(line)]
    unique = []
    for address in found:
        address &= ~1  # the Thumb bit of a return address
        if address not in (0, 0xFFFFFFFE) and address not in unique:
            unique.append(address)
    return unique


class AddressDecoder:
    """Function, file and line of code addresses, with the addr2line that matches the ELF."""

    def __init__(self, elf: str | Path):
        self.elf = Path(elf)
        if not self.elf.is_file():
            raise McuforgeError(f"ELF not found: {self.elf}", where="--elf",
                                fix="give the firmware's ELF, e.g. build/firmware.elf")
        machine = elf_machine(self.elf)
        if machine is None:
            raise McuforgeError(f"not an ELF file: {self.elf}", where="--elf",
                                fix="give the .elf the build produced, not a .bin or .hex")
        candidates = _ADDR2LINE.get(machine, ["addr2line"])
        self.tool = next((shutil.which(c) for c in candidates if shutil.which(c)), None)
        self.missing = None if self.tool else (f"{candidates[0]} is not installed; install "
                                               f"{_ADDR2LINE_PACKAGES.get(machine, 'binutils')} to decode addresses")
        self._cache: dict[int, str] = {}

    def decode(self, addresses: list[int]) -> list[str]:
        if self.tool is None:
            return []
        wanted = [a for a in addresses if a not in self._cache]
        if wanted:
            result = subprocess.run([self.tool, "-pfiaC", "-e", str(self.elf), *[f"0x{a:08x}" for a in wanted]],
                                    capture_output=True, text=True)
            # One entry per address, starting "0x...: "; inlined frames continue it on further lines.
            entries, current = [], None
            for line in result.stdout.splitlines():
                if re.match(r"^0x[0-9a-fA-F]+: ", line):
                    current = [line]
                    entries.append(current)
                elif current is not None:
                    current.append(line.strip())
            for address, entry in zip(wanted, entries):
                self._cache[address] = "\n".join(entry)
        return [self._cache[a] for a in addresses if a in self._cache and "?? ??:0" not in self._cache[a]]


# ---- the monitor -------------------------------------------------------------------------

class KeyReader:
    """Keys from a terminal in raw mode, on a thread; None where stdin is not a terminal."""

    def __init__(self, stream=None):
        import termios
        import tty

        self._fd = (stream or sys.stdin).fileno()
        self._saved = termios.tcgetattr(self._fd)
        tty.setraw(self._fd)
        self._keys: list[bytes] = []
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._read, name="monitor-keys", daemon=True).start()

    @classmethod
    def for_terminal(cls) -> "KeyReader | None":
        try:
            return cls() if sys.stdin.isatty() else None
        except (OSError, ValueError):
            return None

    def _read(self) -> None:
        while not self._closed:
            ready, _, _ = select.select([self._fd], [], [], 0.2)
            if ready:
                try:
                    data = os.read(self._fd, 64)
                except OSError:
                    return
                with self._lock:
                    self._keys.append(data)

    def take(self) -> bytes:
        with self._lock:
            data = b"".join(self._keys)
            self._keys.clear()
        return data

    def close(self) -> None:
        import termios

        self._closed = True
        termios.tcsetattr(self._fd, termios.TCSADRAIN, self._saved)


class Monitor:
    def __init__(self, open_transport: Callable[[], Transport], *, out: TextIO | None = None,
                 log: str | Path | None = None, expect: str | None = None, timeout: float | None = None,
                 elf: str | Path | None = None, color: bool | None = None, keys: KeyReader | None = None,
                 reconnect: bool = True, stop_when: Callable[[], bool] | None = None,
                 on_connect: Callable[[Transport], None] | None = None, clock: Callable[[], float] = time.time):
        self._open = open_transport
        self.out = out or sys.stdout
        self.color = self.out.isatty() if color is None else color
        self.live = self.color and self.out.isatty()
        self.expect = None
        if expect is not None:
            try:
                self.expect = re.compile(expect)
            except re.error as exc:
                raise McuforgeError(f"--expect is not a valid regular expression: {exc}", where=f"--expect {expect!r}",
                                    fix="escape special characters, e.g. \\{ for a brace") from None
        self.timeout = timeout
        self.decoder = AddressDecoder(elf) if elf else None
        self.keys = keys
        self.reconnect = reconnect
        self.stop_when = stop_when
        self.on_connect = on_connect
        self.clock = clock
        self.view = TelemetryView()
        self.matched: str | None = None
        self._log = open(log, "a", encoding="utf-8") if log else None
        self._pending = bytearray()
        self._pending_since = 0.0
        self._line_open = False
        self._status_shown = False
        self._menu = False
        self._quit = False
        self._transport: Transport | None = None
        if self.decoder is not None and self.decoder.missing:
            self.note(self.decoder.missing)

    # -- output --

    def _style(self, text: str, kind: str | None) -> str:
        if not self.color or kind is None:
            return text
        return click.style(text, **LEVEL_STYLES[kind])

    def _stamp(self) -> str:
        now = self.clock()
        return time.strftime("%H:%M:%S", time.localtime(now)) + f".{int(now * 1000) % 1000:03d}"

    def _write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()

    def _clear_status(self) -> None:
        if self._status_shown:
            self._write("\r\x1b[K")
            self._status_shown = False

    def _draw_status(self) -> None:
        status = self.view.status()
        if self.live and status and not self._line_open:
            self._write(self._style(status, "note"))
            self._status_shown = True

    def _emit(self, text: str, kind: str | None, logged: str | None = None) -> None:
        """Shows one line; the log gets `logged` (the board's own line) or the text shown."""
        self._clear_status()
        if self._line_open:
            # A message in the middle of a partial line (a prompt) goes below it; the line is
            # shown again whole when it completes.
            self._write("\r\n" if self.keys else "\n")
            self._line_open = False
        stamp = self._stamp()
        self._write(f"{self._style(stamp, 'debug')} {self._style(text, kind)}\r\n" if self.keys else
                    f"{self._style(stamp, 'debug')} {self._style(text, kind)}\n")
        if self._log:
            self._log.write(f"{stamp} {text if logged is None else logged}\n")
            self._log.flush()

    def note(self, text: str) -> None:
        """The monitor's own messages."""
        self._emit(f"--- {text}", "note")

    def line(self, raw: str) -> None:
        """One complete line from the board."""
        text = raw.rstrip("\r\n")
        if self._line_open:
            # The start of this line was shown already (a prompt); finish it.
            self._write(text[self._open_length:] + ("\r\n" if self.keys else "\n"))
            self._line_open = False
            if self._log:
                self._log.write(f"{self._stamp()} {text}\n")
        else:
            decoded = decode_record(text, self.view.clock_hz)
            if decoded is not None:
                kind, words, record = decoded
                self.view.add(kind, record)
                self._emit(words, "error" if kind == "error" else "telemetry", logged=text)
            else:
                self._emit(text, line_level(text))
        if self.decoder is not None:
            for entry in self.decoder.decode(fault_addresses(text)):
                for part in entry.splitlines():
                    self._emit(f"    {part}", "fault")
        if self.expect is not None and self.matched is None and self.expect.search(text):
            self.matched = text
        self._draw_status()

    def _partial(self, text: str) -> None:
        self._clear_status()
        if not self._line_open:
            self._write(f"{self._style(self._stamp(), 'debug')} ")
            self._open_length = 0
            self._line_open = True
        self._write(text[self._open_length:])
        self._open_length = len(text)

    def feed(self, data: bytes) -> None:
        """Bytes from the board: complete lines are shown, a partial one waits a little."""
        if data:
            self._pending += data
            self._pending_since = time.monotonic()
        while True:
            end = self._pending.find(b"\n")
            if end < 0:
                break
            chunk = bytes(self._pending[:end + 1])
            del self._pending[:end + 1]
            self.line(chunk.decode("utf-8", "replace"))
        if self._pending and time.monotonic() - self._pending_since >= PARTIAL_LINE_S:
            self._partial(bytes(self._pending).decode("utf-8", "replace").rstrip("\r"))

    # -- keys --

    def _help(self) -> None:
        self.note("keys: Ctrl-T Ctrl-R (or r) reset the board | Ctrl-T Ctrl-X (or x) quit | Ctrl-T Ctrl-T send "
                  "Ctrl-T | Ctrl-] quit | everything else goes to the board")

    def _handle_keys(self, data: bytes) -> None:
        to_board = bytearray()
        for byte in (data[i:i + 1] for i in range(len(data))):
            if self._menu:
                self._menu = False
                if byte in MENU_RESET:
                    self._reset()
                elif byte in MENU_EXIT:
                    self._quit = True
                elif byte == CTRL_T:
                    to_board += byte
                elif byte in MENU_HELP:
                    self._help()
                else:
                    self.note(f"unknown menu key {byte!r}; Ctrl-T h lists them")
            elif byte == CTRL_T:
                self._menu = True
            elif byte == CTRL_RBRACKET:
                self._quit = True
            else:
                to_board += byte
        if to_board and self._transport is not None:
            self._transport.write(bytes(to_board))

    def _reset(self) -> None:
        if self._transport is None:
            self.note("no board connected to reset")
            return
        try:
            self._transport.reset()
            self.note("reset the board")
        except McuforgeError as exc:
            self.note(f"cannot reset: {exc.what} ({exc.fix})")

    # -- the loop --

    def _connect(self, deadline: float | None, first: bool) -> Transport | None:
        """Opens the port, waiting for it to (re)appear; None when the deadline passed or we stop."""
        waited = False
        while True:
            try:
                transport = self._open()
                if waited:
                    self.note(f"{transport.port} is {'there' if first else 'back'}")
                if self.on_connect is not None:
                    self.on_connect(transport)
                return transport
            except PortGone as gone:
                if not waited:
                    self.note(f"waiting for {gone.port}: {gone.cause}" if first else
                              f"waiting for {gone.port} to come back")
                waited = True
            if self._stopping() or (deadline is not None and time.monotonic() >= deadline):
                return None
            time.sleep(RECONNECT_POLL_S)
            if self.keys is not None:
                self._handle_keys(self.keys.take())

    def _stopping(self) -> bool:
        return self._quit or (self.stop_when is not None and self.stop_when())

    def run(self) -> int:
        """Shows the console until the user quits, `expect` matches or times out, `timeout` is
        over, or `stop_when` holds; the exit code."""
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        if self.keys is not None:
            self.note("Ctrl-] quits, Ctrl-T h lists the menu keys")
        port_gone = False
        try:
            self._transport = self._connect(deadline, first=True)
            while True:
                if self._transport is None:
                    port_gone = not self._stopping() and (deadline is None or time.monotonic() < deadline)
                    break
                try:
                    self.feed(self._transport.read(4096, timeout=0.05))
                except PortGone as gone:
                    self.feed(b"")
                    self.note(f"{gone.port} vanished: {gone.cause}")
                    self._transport.close()
                    self._transport = None
                    if not self.reconnect or self._stopping():
                        port_gone = not self._stopping()
                        break
                    self._transport = self._connect(deadline, first=False)
                    continue
                if self.keys is not None:
                    self._handle_keys(self.keys.take())
                if self.matched is not None or self._quit:
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    break
                if self.stop_when is not None and self.stop_when():
                    self.feed(self._drain())  # what the board said last is still on its way
                    break
            if self.matched is not None:
                return EXIT_MATCHED
            if self.expect is not None:
                self.note(f"no line matched {self.expect.pattern!r}" +
                          (f" within {self.timeout:g} s" if self.timeout is not None else ""))
                return EXIT_TIMEOUT
            return EXIT_PORT_GONE if port_gone else EXIT_OK
        finally:
            if self._pending:
                self.line(bytes(self._pending).decode("utf-8", "replace"))
                self._pending.clear()
            self._clear_status()
            if self._transport is not None:
                self._transport.close()
            if self._log:
                self._log.close()

    def _drain(self) -> bytes:
        data = b""
        try:
            while self._transport is not None:
                chunk = self._transport.read(4096, timeout=0.1)
                if not chunk:
                    break
                data += chunk
        except PortGone:
            pass
        return data


def check_port_exists(port: str) -> None:
    if not os.path.exists(port) and "://" not in port:
        raise McuforgeError(f"no such port: {port}", where="--port",
                            fix=port_problem_fix("not there") + "; or pass --wait to wait for it to appear")
