"""One byte link to a board's console, whatever is behind it.

A `Transport` reads and writes bytes and can reset the board. Three kinds implement it:

- `SerialTransport`: a serial port (USB-UART bridge, USB-CDC) through pyserial; reset by the
  DTR/RTS lines, as esptool and idf.py monitor do;
- `QemuTransport`: the pseudo-terminal of an emulated board's UART under QEMU; reset and
  resume through QEMU's QMP socket;
- `VirtualBoardTransport`: the pseudo-terminal of a virtual MicroPython board; reset is a
  power cycle of the board.

The monitor, `run` and the bench use `open_transport(port)`, which picks the kind from the
registry of emulated ports: `mcuforge flash` (QEMU) and `mcuforge virtual-board` record their
pseudo-terminals there, with how to reset them. A port missing from the registry is a serial
port. When a port goes away (a USB-CDC board resetting, QEMU exiting) reads raise `PortGone`,
which the monitor turns into a reconnect.

Deploy speaks MicroPython's raw REPL, and uses mpremote's own transport for it.
"""
from __future__ import annotations

import errno
import json
import os
import socket
import tempfile
import termios
import time
from abc import ABC, abstractmethod
from pathlib import Path

import serial

from mcuforge.codegen.errors import McuforgeError

DEFAULT_BAUD = 115200
# Holding EN low this long resets an ESP32 through the RTS line of its USB-UART bridge.
RESET_PULSE_S = 0.1


class PortGone(Exception):
    """The port disappeared (unplugged, re-enumerated after a reset, emulator exited)."""

    def __init__(self, port: str, cause: str):
        super().__init__(f"{port}: {cause}")
        self.port = port
        self.cause = cause


class Transport(ABC):
    """A byte link to a board's console."""

    port: str

    @abstractmethod
    def read(self, size: int = 4096, timeout: float | None = 0.1) -> bytes:
        """Up to `size` bytes: what is there, or b"" when nothing came within `timeout` seconds.
        Raises PortGone when the port went away."""

    @abstractmethod
    def write(self, data: bytes) -> None:
        """Raises PortGone when the port went away."""

    @abstractmethod
    def reset(self) -> None:
        """A hard reset of the board (McuforgeError when this link cannot reset it)."""

    @abstractmethod
    def close(self) -> None:
        ...

    @property
    def kind(self) -> str:
        return "serial"

    def __enter__(self) -> "Transport":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class SerialTransport(Transport):
    """A serial port through pyserial."""

    def __init__(self, port: str, baud: int = DEFAULT_BAUD, exclusive: bool = True):
        self.port = port
        self.baud = baud
        try:
            # DTR/RTS are left released on open, so that opening the port does not hold an
            # ESP32 in reset or in its download mode.
            self._serial = serial.Serial(None, baud, timeout=0.1, exclusive=exclusive)
            self._serial.port = port
            self._serial.dtr = False
            self._serial.rts = False
            self._serial.open()
        except (serial.SerialException, OSError, termios.error) as exc:
            raise PortGone(port, _cause(exc)) from None

    def read(self, size: int = 4096, timeout: float | None = 0.1) -> bytes:
        try:
            self._serial.timeout = timeout
            first = self._serial.read(1)
            if not first:
                return b""
            waiting = self._serial.in_waiting
            return first + (self._serial.read(min(waiting, size - 1)) if waiting and size > 1 else b"")
        except (serial.SerialException, OSError, TypeError, termios.error) as exc:
            # pyserial raises TypeError when the port was closed under it by another thread.
            raise PortGone(self.port, _cause(exc)) from None

    def write(self, data: bytes) -> None:
        try:
            self._serial.write(data)
            self._serial.flush()
        except (serial.SerialException, OSError, termios.error) as exc:
            raise PortGone(self.port, _cause(exc)) from None

    def reset(self) -> None:
        """EN low through RTS, with DTR released so that GPIO0 stays high (normal boot)."""
        try:
            self._serial.dtr = False
            self._serial.rts = True
            time.sleep(RESET_PULSE_S)
            self._serial.rts = False
        except OSError as exc:
            if exc.errno in (errno.ENOTTY, errno.EINVAL):
                raise McuforgeError(f"{self.port} has no DTR/RTS lines to reset the board with",
                                    where=self.port,
                                    fix="press the board's reset button; a pseudo-terminal (socat, an "
                                        "emulator not started by mcuforge) has no modem lines") from None
            raise PortGone(self.port, _cause(exc)) from None

    def close(self) -> None:
        try:
            self._serial.close()
        except (serial.SerialException, OSError):
            pass


class QemuTransport(SerialTransport):
    """The UART of an emulated board: its pseudo-terminal, with QEMU's QMP socket beside it."""

    def __init__(self, port: str, qmp_socket: str, baud: int = DEFAULT_BAUD):
        super().__init__(port, baud)
        self.qmp_socket = qmp_socket

    @property
    def kind(self) -> str:
        return "qemu"

    def resume(self) -> None:
        """Starts the emulated CPU if `mcuforge flash` left it waiting for a monitor."""
        with QmpClient(self.qmp_socket) as qmp:
            if not qmp.execute("query-status").get("running", True):
                qmp.execute("cont")

    def reset(self) -> None:
        with QmpClient(self.qmp_socket) as qmp:
            qmp.execute("system_reset")


class VirtualBoardTransport(SerialTransport):
    """The console of a virtual MicroPython board; its control socket power-cycles it."""

    def __init__(self, port: str, control_socket: str, baud: int = DEFAULT_BAUD):
        super().__init__(port, baud)
        self.control_socket = control_socket

    @property
    def kind(self) -> str:
        return "virtual-board"

    def reset(self) -> None:
        control_request(self.control_socket, "power-cycle")


def open_transport(port: str, baud: int = DEFAULT_BAUD) -> Transport:
    """The transport for `port`: an emulated board's when the registry knows the port, else serial.
    Raises PortGone when the port cannot be opened (absent, busy, no permission)."""
    entry = lookup_port(port)
    if entry and entry.get("kind") == "qemu":
        return QemuTransport(port, entry["qmp"], baud)
    if entry and entry.get("kind") == "virtual-board":
        return VirtualBoardTransport(port, entry["control"], baud)
    return SerialTransport(port, baud)


def _cause(exc: BaseException) -> str:
    code = getattr(exc, "errno", None)
    if code is None and exc.args and isinstance(exc.args[0], int):
        code = exc.args[0]  # termios.error carries (errno, text)
    if code in (errno.ENOENT, errno.ENODEV, errno.ENXIO):
        return "the device is not there (unplugged, or it re-enumerated after a reset)"
    if code == errno.EIO:
        return "input/output error: the device went away"
    if code in (errno.EBUSY, errno.EAGAIN) or "lock" in str(exc).lower():
        return "the port is busy: another program (a monitor, mpremote) has it open"
    if code == errno.EACCES:
        return "permission denied"
    text = str(exc)
    if "returned no data" in text or "disconnected" in text:
        return "the device disconnected"
    return text or type(exc).__name__


def port_problem_fix(cause: str) -> str:
    """What to do about a port that could not be opened or that vanished, by its cause."""
    if "busy" in cause:
        return "close the other program that holds the port (monitor, mpremote, screen), then retry"
    if "permission" in cause:
        return "add yourself to the group that owns the port (dialout on Debian), log in again, then retry"
    return "check the cable and that the board is powered; list the ports (python -m serial.tools.list_ports), then retry"


# ---- registry of emulated ports ------------------------------------------------------------

def runtime_dir() -> Path:
    """A private folder for sockets and session files (XDG_RUNTIME_DIR, else the temp folder)."""
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    path = Path(base) / f"mcuforge-{os.getuid()}"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def _registry_file(port: str) -> Path:
    folder = runtime_dir() / "ports"
    folder.mkdir(exist_ok=True)
    return folder / (os.path.realpath(port).strip("/").replace("/", "_") + ".json")


def register_port(port: str, entry: dict) -> None:
    path = _registry_file(port)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({**entry, "port": port}))
    os.replace(tmp, path)


def unregister_port(port: str, pid: int | None = None) -> None:
    path = _registry_file(port)
    try:
        if pid is None or json.loads(path.read_text()).get("pid") == pid:
            path.unlink()
    except (OSError, ValueError):
        pass


def _alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
        return True
    except (OSError, ValueError, TypeError):
        return False


def lookup_port(port: str) -> dict | None:
    """The registry entry of an emulated port, or None (a stale entry is removed)."""
    path = _registry_file(port)
    try:
        entry = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not _alive(entry.get("pid")):
        path.unlink(missing_ok=True)
        return None
    return entry


def control_request(socket_path: str, command: str, timeout: float = 10.0) -> str:
    """Sends one line to a virtual board's control socket; its one-line answer."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(socket_path)
            sock.sendall(command.encode() + b"\n")
            answer = sock.makefile("rb").readline().decode().strip()
    except OSError as exc:
        raise McuforgeError(f"the virtual board's control socket does not answer: {exc}", where=socket_path,
                            fix="check that `mcuforge virtual-board` is still running") from None
    if answer.startswith("error"):
        raise McuforgeError(f"the virtual board refused {command!r}: {answer}", where=socket_path,
                            fix="see the virtual board's own output")
    return answer


class QmpClient:
    """A minimal client of QEMU's machine protocol (QMP) on a unix socket."""

    def __init__(self, socket_path: str, timeout: float = 5.0):
        self.socket_path = socket_path
        try:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self._sock.settimeout(timeout)
            self._sock.connect(socket_path)
            self._reader = self._sock.makefile("rb")
            self._receive()  # the greeting
            self.execute("qmp_capabilities")
        except OSError as exc:
            raise McuforgeError(f"QEMU's control socket does not answer: {exc}", where=socket_path,
                                fix="the emulated board has stopped; flash it again (mcuforge flash)") from None

    def _receive(self) -> dict:
        while True:
            line = self._reader.readline()
            if not line:
                raise OSError("QEMU closed the QMP connection")
            message = json.loads(line)
            if "event" not in message:
                return message

    def execute(self, command: str, **arguments) -> dict:
        request = {"execute": command, **({"arguments": arguments} if arguments else {})}
        self._sock.sendall(json.dumps(request).encode() + b"\r\n")
        reply = self._receive()
        if "error" in reply:
            raise McuforgeError(f"QEMU refused {command}: {reply['error'].get('desc')}", where=self.socket_path,
                                fix="flash the emulated board again")
        return reply.get("return", {})

    def close(self) -> None:
        try:
            self._reader.close()
            self._sock.close()
        except OSError:
            pass

    def __enter__(self) -> "QmpClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
