"""A device under test (DUT): a board's console as a stream that tests and scripts wait on.

    with open_dut("mps3-an547", firmware="build/firmware.elf") as dut:
        hello = dut.expect_record("hello")              # the console protocol's JSON lines
        dut.write_line("bench")
        dut.expect(r'"bench":"ready"', timeout=5)       # a regex over the console text
        dut.reset()

`expect()` searches what the board has printed since the last match, waiting up to `timeout`
seconds for more; it returns the `re.Match` and moves past it, so consecutive calls walk through
the output in order. A timeout raises `ExpectTimeout` with the board's recent console lines; a
console that closes (the firmware ended under QEMU, a cable pulled) raises `ConsoleClosed`.
Output is read on a background thread, so nothing is lost while the test does other things.

What is behind the console is a `Service`, one per kind of link, each a small plug-in:

    SerialService(port)                  a board on a serial port (reset through DTR/RTS)
    QemuService(board, elf)              an emulated board: QEMU with its UART on a pty, started
                                         paused and resumed once the DUT reads (no early line
                                         lost); reset through QMP
    VirtualBoardService(files=...)       a virtual MicroPython board (real MicroPython under Node);
                                         `files` is copied into its flash first; reset power-cycles it
    FlashService(project, board, port)   `mcuforge flash` first (QEMU, esptool or a debug probe),
                                         then the board's console

`open_dut(board, firmware=, port=)` picks the service from the board file, as the pytest
fixtures (host_tools/pytest_plugin.py) and `mcuforge bench` do. All reach the console through
host_tools/transport.py.
"""
from __future__ import annotations

import codecs
import contextlib
import json
import re
import shutil
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from pathlib import Path

from mcuforge.codegen.errors import McuforgeError

from .transport import DEFAULT_BAUD, PortGone, Transport, open_transport, port_problem_fix

VIRTUAL_BOARD = "virtual-board"
DEFAULT_TIMEOUT_S = 10.0
RECENT_LINES = 15
# Text before the last match beyond this many characters is dropped, so that a long session
# (a bench of thousands of vectors) does not keep its whole console in memory.
KEEP_CHARS = 256 * 1024
READ_CHUNK = 4096
PROJECT_MANIFEST = "mcuforge_project.json"


class ExpectTimeout(McuforgeError):
    """Nothing matched within the timeout."""


class ConsoleClosed(McuforgeError):
    """The console went away before anything matched."""


# ---- services: what is behind the console ----------------------------------------------------

class Service(ABC):
    """Starts what is behind a DUT's console, opens the console, and stops it again."""

    kind = "service"
    elf: Path | None = None          # for decoding fault addresses, when known
    board: str | None = None

    @abstractmethod
    def start(self) -> Transport:
        """Starts the board (or finds it) and opens its console."""

    def ready(self) -> None:
        """Called once the DUT reads the console: a board held back until then may run."""

    def stop(self) -> None:
        """Stops what start() started (not a board that was there before)."""

    def describe(self) -> str:
        return self.kind

    def exit_code(self) -> int | None:
        """The firmware's exit status, where the board can end (QEMU); None while it runs."""
        return None

    def wait(self, timeout: float) -> int | None:
        """Waits for the firmware to end; its exit status, or None."""
        return None


class SerialService(Service):
    """A board already on a port: serial, or one mcuforge started (the registry tells)."""

    kind = "serial"

    def __init__(self, port: str, baud: int = DEFAULT_BAUD, board: str | None = None, elf: str | Path | None = None):
        self.port = port
        self.baud = baud
        self.board = board
        self.elf = Path(elf) if elf else None

    def start(self) -> Transport:
        try:
            transport = open_transport(self.port, self.baud)
        except PortGone as gone:
            raise McuforgeError(f"cannot open the console {gone.port}: {gone.cause}", where=self.port,
                                fix=port_problem_fix(gone.cause)) from None
        self.kind = transport.kind
        return transport

    def describe(self) -> str:
        return f"{self.kind} {self.port}"


class QemuService(Service):
    """An emulated board running `elf` under QEMU, its UART on a pseudo-terminal."""

    kind = "qemu"

    def __init__(self, board, elf: str | Path, baud: int = DEFAULT_BAUD):
        from mcuforge.boards import Board, load_board

        self._board = board if isinstance(board, Board) else load_board(board)
        self.board = self._board.name
        self.elf = Path(elf)
        self.baud = baud
        self.emulator = None

    def start(self) -> Transport:
        from .flash import start_emulated_board

        self.emulator = start_emulated_board(self._board, self.elf, paused=True)
        return open_transport(self.emulator.port, self.baud)

    def ready(self) -> None:
        self.emulator.resume()

    def stop(self) -> None:
        if self.emulator is not None:
            self.emulator.stop()

    def describe(self) -> str:
        port = self.emulator.port if self.emulator else "not started"
        return f"QEMU {self.board} ({port}, {self.elf.name})"

    def exit_code(self) -> int | None:
        return self.emulator.exit_code() if self.emulator is not None else None

    def wait(self, timeout: float) -> int | None:
        if self.emulator is None or self.emulator.process is None:
            return None
        with contextlib.suppress(Exception):
            return self.emulator.process.wait(timeout=timeout)
        return None


class VirtualBoardService(Service):
    """A virtual MicroPython board; `files` (a folder, or a list of files) go into its flash
    before it powers up, so a main.py there runs at boot."""

    kind = VIRTUAL_BOARD

    def __init__(self, flash_dir: str | Path | None = None, files: str | Path | list | None = None,
                 sensor_trace: str | Path | None = None):
        self.board = VIRTUAL_BOARD
        self._flash_dir = Path(flash_dir) if flash_dir else None
        self._files = files
        self._sensor_trace = sensor_trace
        self._scratch: str | None = None
        self.virtual_board = None

    @property
    def flash_dir(self) -> Path | None:
        return self.virtual_board.flash_dir if self.virtual_board is not None else self._flash_dir

    def _copy_files(self, flash_dir: Path) -> None:
        if self._files is None:
            return
        sources = self._files if isinstance(self._files, (list, tuple)) else [self._files]
        for source in map(Path, sources):
            if source.is_dir():
                shutil.copytree(source, flash_dir, dirs_exist_ok=True)
            elif source.is_file():
                shutil.copy2(source, flash_dir / source.name)
            else:
                raise McuforgeError(f"not found: {source}", where="firmware (files for the virtual board's flash)",
                                    fix="give a folder (its contents become the flash: main.py, lib/...) or files")

    def start(self) -> Transport:
        from .virtual_board import VirtualBoard

        flash_dir = self._flash_dir
        if flash_dir is None:
            self._scratch = tempfile.mkdtemp(prefix="mcuforge-vboard-")
            flash_dir = Path(self._scratch)
        flash_dir.mkdir(parents=True, exist_ok=True)
        self._copy_files(flash_dir)
        self.virtual_board = VirtualBoard(flash_dir, sensor_trace=self._sensor_trace, register=True).start()
        return open_transport(self.virtual_board.port)

    def stop(self) -> None:
        if self.virtual_board is not None:
            self.virtual_board.stop()
        if self._scratch:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None

    def describe(self) -> str:
        port = self.virtual_board.port if self.virtual_board else "not started"
        return f"virtual MicroPython board ({port})"


class FlashService(Service):
    """`mcuforge flash` a built project, then open the board's console: an emulated board's pty,
    or `port` (the console of a physical board; ESP32 boards are also flashed through it).
    `probe` names the debug probe of a Cortex-M board (its serial number)."""

    kind = "flash"

    def __init__(self, project_dir: str | Path, board, port: str | None = None, probe: str | None = None,
                 baud: int | None = None):
        from mcuforge.boards import Board, load_board

        self._board = board if isinstance(board, Board) else load_board(board)
        self.board = self._board.name
        self.project_dir = Path(project_dir)
        self.port = port
        self.probe = probe
        self.baud = baud or self._board.console.get("baud", DEFAULT_BAUD)
        self.result = None

    def start(self) -> Transport:
        from .flash import find_firmware, flash

        tool = self._board.flash["tool"]
        if tool not in ("qemu", "esptool") and self.port is None:
            raise McuforgeError(f"{self.board} is flashed through a debug probe; its console is another port",
                                where="port", fix="give the board's serial console, e.g. --port /dev/ttyACM0")
        with contextlib.suppress(McuforgeError):
            firmware = find_firmware(self.project_dir, self._board)
            self.elf = firmware if firmware.suffix == ".elf" else None
        self.result = flash(self.project_dir, self._board, self.port if tool == "esptool" else self.probe, paused=True)
        self.kind = self.result.tool
        console = self.result.port or self.port
        try:
            return open_transport(console, self.baud)
        except PortGone as gone:
            self.stop()
            raise McuforgeError(f"flashed, but the console {gone.port} cannot be opened: {gone.cause}",
                                where=gone.port, fix=port_problem_fix(gone.cause)) from None

    def ready(self) -> None:
        if self.result is not None and self.result.emulator is not None:
            self.result.emulator.resume()

    def stop(self) -> None:
        if self.result is not None and self.result.emulator is not None:
            self.result.emulator.stop()

    def describe(self) -> str:
        if self.result is None:
            return f"{self.board} (not flashed)"
        return f"{self.board} flashed with {self.result.tool}, console {self.result.port or self.port}"

    def exit_code(self) -> int | None:
        emulator = self.result.emulator if self.result is not None else None
        return emulator.exit_code() if emulator is not None else None

    def wait(self, timeout: float) -> int | None:
        emulator = self.result.emulator if self.result is not None else None
        if emulator is None or emulator.process is None:
            return None
        with contextlib.suppress(Exception):
            return emulator.process.wait(timeout=timeout)
        return None


def _is_project(path: Path) -> bool:
    return path.is_dir() and (path / PROJECT_MANIFEST).is_file()


def service_for(board: str | None, firmware: str | Path | None = None, port: str | None = None, *,
                probe: str | None = None, baud: int | None = None) -> Service:
    """The service for a board, from its board file:

    - `virtual-board`: a virtual MicroPython board (`firmware`: files for its flash), or the
      one already on `port`;
    - an emulated board: QEMU running `firmware` (an ELF, or a project built by mcuforge);
    - a physical board: `firmware` (a built project) flashed first when given, then the
      console on `port`."""
    if board == VIRTUAL_BOARD:
        if port:
            return SerialService(port, baud or DEFAULT_BAUD, board=VIRTUAL_BOARD)
        return VirtualBoardService(files=firmware)
    if board is None:
        if port is None:
            raise McuforgeError("no board and no port: nothing to connect to", where="board / port",
                                fix="name a board (mcuforge boards lists them) or give the console port")
        return SerialService(port, baud or DEFAULT_BAUD)
    from mcuforge.boards import load_board

    board_data = load_board(board)
    baud = baud or board_data.console.get("baud", DEFAULT_BAUD)
    firmware = Path(firmware) if firmware else None
    if firmware is not None and not firmware.exists():
        raise McuforgeError(f"firmware not found: {firmware}", where="firmware",
                            fix="give the ELF, or the project folder that `mcuforge build --compile` wrote")
    if board_data.flash.get("tool") == "qemu" and not port:
        if firmware is None:
            raise McuforgeError(f"{board_data.name} is emulated: it needs the firmware to run", where="firmware",
                                fix="give the ELF (or the built project folder) to run under QEMU")
        if _is_project(firmware):
            return FlashService(firmware, board_data, baud=baud)
        return QemuService(board_data, firmware, baud)
    if firmware is not None:
        if not _is_project(firmware):
            raise McuforgeError(f"{board_data.name} is flashed from a project built by mcuforge; {firmware} is not one",
                                where="firmware", fix="give the folder `mcuforge build ... --compile -o DIR` wrote, "
                                                      "or leave the firmware out to use what the board runs")
        return FlashService(firmware, board_data, port=port, probe=probe, baud=baud)
    if port is None:
        raise McuforgeError(f"{board_data.name} is a physical board: the DUT needs its console port", where="port",
                            fix="give the board's serial port, e.g. /dev/ttyACM0 (python -m serial.tools.list_ports)")
    return SerialService(port, baud, board=board_data.name)


def open_dut(board: str | None = None, firmware: str | Path | None = None, port: str | None = None, *,
             probe: str | None = None, baud: int | None = None, log: str | Path | None = None,
             timeout: float = DEFAULT_TIMEOUT_S) -> "Dut":
    """A started DUT for `board` (see service_for); close it (or use `with`) to stop what it started."""
    return Dut(service_for(board, firmware, port, probe=probe, baud=baud), log=log, timeout=timeout)


# ---- the DUT ---------------------------------------------------------------------------------

def _compile(pattern) -> re.Pattern[str]:
    if isinstance(pattern, re.Pattern):
        if isinstance(pattern.pattern, bytes):
            return re.compile(pattern.pattern.decode("utf-8", "replace"), pattern.flags & ~re.UNICODE)
        return pattern
    if isinstance(pattern, (bytes, bytearray)):
        pattern = bytes(pattern).decode("utf-8", "replace")
    if not isinstance(pattern, str):
        raise TypeError(f"expect() takes a regex (str, bytes or re.Pattern), not {type(pattern).__name__}")
    return re.compile(pattern, re.MULTILINE)


_RECORD_LINE = re.compile(r"^[ \t]*(\{[^\n]*\})[ \t\r]*\n", re.MULTILINE)


class Dut:
    """A board's console; see the module docstring. Starts `service` at once."""

    def __init__(self, service: Service, *, log: str | Path | None = None, timeout: float = DEFAULT_TIMEOUT_S):
        self.service = service
        self.timeout = timeout
        self._text = ""
        self._cursor = 0
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._changed = threading.Condition()
        self._closed: str | None = None
        self._stopping = threading.Event()
        self.transport = service.start()
        self._log = open(log, "ab") if log else None
        self._reader = threading.Thread(target=self._read_console, name="dut-console", daemon=True)
        self._reader.start()
        try:
            service.ready()
        except BaseException:
            self.close()
            raise

    # -- what the board says --

    def _read_console(self) -> None:
        while not self._stopping.is_set():
            try:
                data = self.transport.read(READ_CHUNK, timeout=0.05)
            except PortGone as gone:
                self._append(b"", closed=gone.cause)
                return
            except Exception as exc:  # the transport was closed under the reader
                self._append(b"", closed=str(exc) or type(exc).__name__)
                return
            if data:
                self._append(data)

    def _append(self, data: bytes, closed: str | None = None) -> None:
        if self._log is not None and data:
            with contextlib.suppress(ValueError, OSError):
                self._log.write(data)
                self._log.flush()
        with self._changed:
            self._text += self._decoder.decode(data, final=closed is not None)
            if closed is not None and self._closed is None:
                self._closed = closed
            if self._cursor > KEEP_CHARS:
                cut = self._cursor - KEEP_CHARS // 4
                self._text = self._text[cut:]
                self._cursor -= cut
            self._changed.notify_all()

    @property
    def port(self) -> str:
        return self.transport.port

    @property
    def closed(self) -> bool:
        return self._closed is not None

    @property
    def console(self) -> str:
        """The console text received so far (the start of a very long session is dropped)."""
        with self._changed:
            return self._text

    @property
    def pending(self) -> str:
        """What the board printed since the last match."""
        with self._changed:
            return self._text[self._cursor:]

    def recent_lines(self, count: int = RECENT_LINES) -> list[str]:
        with self._changed:
            lines = self._text.splitlines()
        return lines[-count:]

    def expect(self, pattern, timeout: float | None = None) -> re.Match:
        """The first match of `pattern` (a regex: str, bytes or compiled; ^ and $ match at line
        ends) in the output since the last match, waiting up to `timeout` seconds for it."""
        regex = _compile(pattern)
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                match = regex.search(self._text, self._cursor)
                if match:
                    self._cursor = match.end()
                    return match
                if self._closed is not None:
                    raise self._failure(ConsoleClosed, f"the console of {self.service.describe()} closed "
                                        f"({self._closed}) before anything matched /{regex.pattern}/",
                                        "the board stopped or went away: see its last lines above")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise self._failure(ExpectTimeout, f"nothing matched /{regex.pattern}/ within {timeout:g} s "
                                        f"on {self.service.describe()}",
                                        "check what the board printed (above); give it more time with timeout=, "
                                        "or fix the pattern")
                self._changed.wait(left)

    def expect_exact(self, text: str, timeout: float | None = None) -> re.Match:
        return self.expect(re.escape(text), timeout)

    def expect_record(self, key: str, timeout: float | None = None, **fields) -> dict:
        """The next JSON line of the console protocol (docs/bench-protocol.md) that has `key`
        (and the given field values), skipping other lines. An {"error":...} record on the way
        fails at once."""
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                line = self.expect(_RECORD_LINE, max(left, 0)).group(1)
            except ExpectTimeout:
                raise self._failure(ExpectTimeout, f"no {{\"{key}\":...}} record within {timeout:g} s on "
                                    f"{self.service.describe()}",
                                    "check that the board runs mcuforge firmware and what it printed (above)") from None
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if not isinstance(record, dict):
                continue
            if "error" in record and key != "error":
                raise self._failure(McuforgeError, f"the board reported an error: {record['error']}",
                                    "see the message; a fault names the PC to look up with arm-none-eabi-addr2line")
            if key in record and all(record.get(k) == v for k, v in fields.items()):
                return record

    def _failure(self, kind, what: str, fix: str) -> McuforgeError:
        lines = self.recent_lines()
        shown = "\n".join(f"    | {line}" for line in lines) if lines else "    (the board printed nothing)"
        decoded = self._decode_faults(lines)
        return kind(f"{what}; its last console lines:\n{shown}{decoded}", where=self.port, fix=fix)

    def _decode_faults(self, lines: list[str]) -> str:
        elf = getattr(self.service, "elf", None)
        if not elf or not Path(elf).is_file():
            return ""
        from .monitor import AddressDecoder, fault_addresses

        addresses = [a for line in lines for a in fault_addresses(line)]
        if not addresses:
            return ""
        with contextlib.suppress(Exception):
            return "\n  fault addresses:\n" + "\n".join(f"    {d}" for d in AddressDecoder(elf).decode(addresses))
        return ""

    # -- what the board is told --

    def write(self, data: bytes | str) -> None:
        if isinstance(data, str):
            data = data.encode()
        try:
            self.transport.write(bytes(data))
        except PortGone as gone:
            raise self._failure(ConsoleClosed, f"cannot write to {gone.port}: {gone.cause}",
                                port_problem_fix(gone.cause)) from None

    def write_line(self, line: str | bytes, end: str = "\n") -> None:
        self.write((line if isinstance(line, bytes) else line.encode()) + end.encode())

    def reset(self) -> None:
        """A hard reset: DTR/RTS on a serial port, QMP's system_reset under QEMU, a power cycle
        of a virtual board. What the board printed before stays behind the cursor."""
        self.transport.reset()

    def wait_exit(self, timeout: float = DEFAULT_TIMEOUT_S) -> int | None:
        """Waits for the firmware to end (under QEMU: semihosting exit); its exit status. Prefer it
        to expecting the firmware's last line: the kernel may drop what QEMU writes to its pty just
        before it exits."""
        return self.service.wait(timeout)

    def close(self) -> None:
        self._stopping.set()
        if self._reader.is_alive() and self._reader is not threading.current_thread():
            self._reader.join(timeout=1)
        with contextlib.suppress(Exception):
            self.transport.close()
        try:
            self.service.stop()
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None

    def __enter__(self) -> "Dut":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Dut {self.service.describe()}>"

