"""A virtual MicroPython board: real MicroPython (the WebAssembly port, under Node) behind a
pseudo-terminal, so that mpremote, pyserial and `mcuforge monitor` talk to it as to a board
on /dev/ttyUSB0.

    board = VirtualBoard(flash_dir, sensor_trace="trace.csv").start()
    print(board.port)        # /dev/pts/N: mpremote connect /dev/pts/N exec "import machine"
    board.power_cycle()      # the flash folder keeps its files
    board.stop()

The board itself (the REPL protocol, the simulated `machine`, the flash) lives in
virtual_board.mjs and virtual_machine/. This side owns the pseudo-terminal, the Node process
and the far end of the board's UART (`machine.UART(1)`), which is one of:

- `UartPty`: a second pseudo-terminal, for a host program (a gateway, an OTA sender);
- `UartWire`: a null-modem cable to a second virtual board;
- `LoraRadio`: a simulated LoRa module in transparent mode: what the board writes goes out in
  packets (after the UART falls idle, at most `max_payload` bytes), each taking its LoRa airtime
  to arrive, and maybe lost; the radios share a `LoraChannel`, in this process or over UDP.
"""
from __future__ import annotations

import hashlib
import heapq
import itertools
import json
import os
import random
import select
import shutil
import socket
import subprocess
import threading
import time
import tty
from pathlib import Path
from typing import Callable

from mcuforge.codegen.errors import McuforgeError

from .micropython_wasm import find_micropython_mjs
from .transport import register_port, runtime_dir, unregister_port

HERE = Path(__file__).resolve().parent
BRIDGE = HERE / "virtual_board.mjs"
SIM_DIR = HERE / "virtual_machine"
DEFAULT_HEAP_BYTES = 1024 * 1024
DEFAULT_FLASH_BYTES = 4 * 1024 * 1024
DEFAULT_PYSTACK_WORDS = 4096
# How long board output may wait for a reader before it is dropped, as a UART drops it.
OUTPUT_STALL_S = 1.0
# A bridge that dies after running this long is restarted; one that dies sooner cannot boot.
CRASH_RESTART_AFTER_S = 5.0


def find_node() -> str:
    node = shutil.which("node")
    if node is None:
        raise McuforgeError("node is not installed; the virtual board runs MicroPython's WebAssembly port under Node",
                            where="PATH", fix="install Node 20 or later (Debian package nodejs)")
    return node


# ---- the far end of the board's UART -------------------------------------------------------

class UartLink:
    """What machine.UART(1) of a virtual board is connected to."""

    def attach(self, receive: Callable[[bytes], None]) -> None:
        """`receive(data)` delivers bytes to the board's UART."""
        self._receive = receive

    def deliver(self, data: bytes) -> None:
        receive = getattr(self, "_receive", None)
        if receive is not None and data:
            receive(data)

    def send(self, data: bytes) -> None:
        """Bytes the board wrote to its UART."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class UartPty(UartLink):
    """The board's UART on a pseudo-terminal of its own (`port`), for host programs."""

    def __init__(self):
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        self.port = os.ttyname(self._slave)
        self._closed = threading.Event()
        threading.Thread(target=self._pump, name="uart-pty", daemon=True).start()

    def _pump(self) -> None:
        while not self._closed.is_set():
            ready, _, _ = select.select([self._master], [], [], 0.2)
            if ready:
                try:
                    self.deliver(os.read(self._master, 4096))
                except OSError:
                    time.sleep(0.05)

    def send(self, data: bytes) -> None:
        try:
            os.write(self._master, data)
        except OSError:
            pass

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        time.sleep(0.25)  # the pump thread leaves its select first: the fds must not be reused under it
        for fd in (self._master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass


class _WireEnd(UartLink):
    peer: "_WireEnd"

    def send(self, data: bytes) -> None:
        self.peer.deliver(data)


class UartWire:
    """A null-modem cable: `a` and `b` are the UART links of two boards."""

    def __init__(self):
        self.a, self.b = _WireEnd(), _WireEnd()
        self.a.peer, self.b.peer = self.b, self.a


class _Scheduler:
    """Runs callbacks at given monotonic times, on one thread."""

    def __init__(self):
        self._queue: list = []
        self._count = itertools.count()
        self._wake = threading.Condition()
        threading.Thread(target=self._run, name="lora-air", daemon=True).start()

    def at(self, when: float, callback: Callable[[], None]) -> None:
        with self._wake:
            heapq.heappush(self._queue, (when, next(self._count), callback))
            self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._queue or self._queue[0][0] > time.monotonic():
                    self._wake.wait(None if not self._queue else self._queue[0][0] - time.monotonic())
                _, _, callback = heapq.heappop(self._queue)
            try:
                callback()
            except Exception:  # a radio that went away must not stop the air
                pass


_AIR = None


def _air() -> _Scheduler:
    global _AIR
    if _AIR is None:
        _AIR = _Scheduler()
    return _AIR


def lora_airtime_s(payload_bytes: int, spreading_factor: int = 7, bandwidth_hz: int = 125_000,
                   coding_rate: int = 5, preamble_symbols: int = 8, explicit_header: bool = True,
                   crc: bool = True) -> float:
    """Time on air of one LoRa packet; coding_rate is the n of 4/n. The formula lives with the
    OTA link's LoRa pacing, so the radio simulation and the updater agree."""
    from .ota.lora import time_on_air

    return time_on_air(payload_bytes, sf=spreading_factor, bw_hz=bandwidth_hz, cr=coding_rate - 4,
                       preamble=preamble_symbols, explicit_header=explicit_header, crc=crc)


class LoraChannel:
    """The air shared by LoRa radios in this process. `loss` is the chance a packet is lost."""

    def __init__(self, loss: float = 0.0, seed: int | None = None):
        self.loss = loss
        self._random = random.Random(seed)
        self._radios: list[LoraRadio] = []

    def join(self, radio: "LoraRadio") -> None:
        self._radios.append(radio)

    def leave(self, radio: "LoraRadio") -> None:
        if radio in self._radios:
            self._radios.remove(radio)

    def transmit(self, sender: "LoraRadio", packet: bytes, arrival: float) -> None:
        for radio in list(self._radios):
            if radio is not sender and self._random.random() >= self.loss:
                _air().at(arrival, lambda r=radio: r.deliver(packet))


class UdpLoraChannel(LoraChannel):
    """The air between processes: packets go to `peers` as UDP datagrams and come in on `listen`."""

    def __init__(self, listen: tuple[str, int], peers: list[tuple[str, int]], loss: float = 0.0,
                 seed: int | None = None):
        super().__init__(loss, seed)
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self._sock.bind(listen)
        except OSError as exc:
            raise McuforgeError(f"cannot listen for LoRa packets on {listen[0]}:{listen[1]}: {exc}",
                                where="--lora-listen", fix="pick a free UDP port") from None
        self.address = self._sock.getsockname()
        self.peers = peers
        threading.Thread(target=self._receive, name="lora-udp", daemon=True).start()

    def transmit(self, sender: "LoraRadio", packet: bytes, arrival: float) -> None:
        super().transmit(sender, packet, arrival)
        if self._random.random() >= self.loss:
            _air().at(arrival, lambda: [self._sock.sendto(packet, peer) for peer in self.peers])

    def _receive(self) -> None:
        while True:
            try:
                packet, _ = self._sock.recvfrom(65535)
            except OSError:
                return
            for radio in list(self._radios):
                radio.deliver(packet)

    def close(self) -> None:
        self._sock.close()


class LoraRadio(UartLink):
    """A LoRa module in transparent mode on the board's UART.

    Bytes the board writes are sent as one packet once the UART has been idle for `idle_ms`, or
    as soon as `max_payload` bytes are waiting. A radio sends one packet at a time, each taking
    its airtime; the far side's board reads the packet's bytes from its UART."""

    def __init__(self, channel: LoraChannel, spreading_factor: int = 7, bandwidth_hz: int = 125_000,
                 coding_rate: int = 5, max_payload: int = 240, idle_ms: float = 20.0):
        self.channel = channel
        self.spreading_factor = spreading_factor
        self.bandwidth_hz = bandwidth_hz
        self.coding_rate = coding_rate
        self.max_payload = max_payload
        self.idle_s = idle_ms / 1000
        self._pending = bytearray()
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._busy_until = 0.0
        self.packets_sent = 0
        self.airtime_s = 0.0
        channel.join(self)

    def airtime(self, payload_bytes: int) -> float:
        return lora_airtime_s(payload_bytes, self.spreading_factor, self.bandwidth_hz, self.coding_rate)

    def send(self, data: bytes) -> None:
        with self._lock:
            self._pending += data
            while len(self._pending) >= self.max_payload:
                self._transmit(bytes(self._pending[:self.max_payload]))
                del self._pending[:self.max_payload]
            if self._timer is not None:
                self._timer.cancel()
            if self._pending:
                self._timer = threading.Timer(self.idle_s, self._flush)
                self._timer.daemon = True
                self._timer.start()

    def _flush(self) -> None:
        with self._lock:
            if self._pending:
                self._transmit(bytes(self._pending))
                self._pending.clear()

    def _transmit(self, packet: bytes) -> None:
        airtime = self.airtime(len(packet))
        start = max(time.monotonic(), self._busy_until)
        self._busy_until = start + airtime
        self.packets_sent += 1
        self.airtime_s += airtime
        self.channel.transmit(self, packet, self._busy_until)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.channel.leave(self)


# ---- the board ---------------------------------------------------------------------------

class VirtualBoard:
    """A virtual MicroPython board on a pseudo-terminal; see the module docstring."""

    def __init__(self, flash_dir: str | Path, *, sensor_trace: str | Path | None = None,
                 uart: UartLink | None = None, heap_bytes: int = DEFAULT_HEAP_BYTES,
                 flash_bytes: int = DEFAULT_FLASH_BYTES, register: bool = False):
        self.flash_dir = Path(flash_dir).resolve()
        self.sensor_trace = Path(sensor_trace).resolve() if sensor_trace else None
        self.uart = uart
        self.heap_bytes = heap_bytes
        self.flash_bytes = flash_bytes
        self.register = register
        self.port: str | None = None
        self.stopped_reason: str | None = None
        self._proc: subprocess.Popen | None = None
        self._uart_sock: socket.socket | None = None
        self._proc_lock = threading.Lock()
        self._stopping = threading.Event()
        self._stderr_tail: list[str] = []
        self._control: socket.socket | None = None
        self._control_path: str | None = None
        self._check_inputs()

    def _check_inputs(self) -> None:
        if self.flash_dir.exists() and not self.flash_dir.is_dir():
            raise McuforgeError(f"the flash folder is a file: {self.flash_dir}", where="--flash-dir",
                                fix="give a folder (it is created when missing)")
        if self.sensor_trace is not None:
            _check_sensor_trace(self.sensor_trace)
        if self.heap_bytes < 16 * 1024:
            raise McuforgeError(f"a heap of {self.heap_bytes} bytes is too small for MicroPython", where="heap",
                                fix="give at least 16 KiB")

    # -- life cycle --

    def start(self) -> "VirtualBoard":
        self.flash_dir.mkdir(parents=True, exist_ok=True)
        self._node = find_node()
        self._micropython = find_micropython_mjs()
        self._master, self._slave = os.openpty()
        # No echo, no line editing, no CR/LF translation: the board sees the bytes a UART carries.
        tty.setraw(self._slave)
        os.set_blocking(self._master, False)
        self.port = os.ttyname(self._slave)
        if self.uart is not None:
            self.uart.attach(self._to_board_uart)
        self._start_node()
        self._in_thread = threading.Thread(target=self._pump_console_in, name="vboard-console-in", daemon=True)
        self._in_thread.start()
        if self.register:
            self._start_control()
        return self

    def _config(self, uart_fd: int) -> dict:
        digest = hashlib.sha256(str(self.flash_dir).encode()).hexdigest()
        return {
            "micropython": str(self._micropython),
            "simDir": str(SIM_DIR),
            "flashDir": str(self.flash_dir),
            "sensorTrace": str(self.sensor_trace) if self.sensor_trace else None,
            "heapBytes": self.heap_bytes,
            "pystackWords": DEFAULT_PYSTACK_WORDS,
            "uartFd": uart_fd,
            "uniqueId": digest[:12],
            "flashBytes": self.flash_bytes,
        }

    def _start_node(self) -> None:
        board_end, host_end = socket.socketpair()
        with board_end:
            proc = subprocess.Popen([self._node, str(BRIDGE), json.dumps(self._config(board_end.fileno()))],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    pass_fds=(board_end.fileno(),), bufsize=0)
        with self._proc_lock:
            self._proc = proc
            self._uart_sock = host_end
            self._started_at = time.monotonic()
        threading.Thread(target=self._pump_console_out, args=(proc,), name="vboard-console-out", daemon=True).start()
        threading.Thread(target=self._pump_uart, args=(host_end,), name="vboard-uart", daemon=True).start()
        threading.Thread(target=self._collect_stderr, args=(proc,), name="vboard-stderr", daemon=True).start()

    def _stop_node(self) -> None:
        with self._proc_lock:
            proc, sock = self._proc, self._uart_sock
            self._proc, self._uart_sock = None, None
        if proc is not None:
            try:
                proc.stdin.close()  # the bridge exits when its console closes
            except OSError:
                pass
            try:
                proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if sock is not None:
            sock.close()

    def power_cycle(self) -> None:
        """Off and on again: a fresh VM, a fresh clock and RTC; the flash folder keeps its files."""
        self._stop_node()
        self._start_node()

    def stop(self) -> None:
        self._stopping.set()
        self._stop_node()
        if self._control is not None:
            self._control.close()
            unregister_port(self.port, os.getpid())
            if self._control_path:
                Path(self._control_path).unlink(missing_ok=True)
        self._close_pty()
        if self.uart is not None:
            self.uart.close()

    def __enter__(self) -> "VirtualBoard":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        proc = self._proc
        return proc is not None and proc.poll() is None

    # -- byte pumps --

    def _pump_console_in(self) -> None:
        while not self._stopping.is_set():
            try:
                master = self._master
                ready, _, _ = select.select([master], [], [], 0.2)
                if not ready:
                    continue
                data = os.read(master, 4096)
            except (OSError, ValueError, TypeError):
                if self._stopping.is_set():
                    return
                time.sleep(0.05)
                continue
            with self._proc_lock:
                proc = self._proc
            if proc is not None and data:
                try:
                    proc.stdin.write(data)
                except (OSError, ValueError):
                    pass

    def _write_console(self, data: bytes) -> None:
        deadline = time.monotonic() + OUTPUT_STALL_S
        while data and not self._stopping.is_set():
            master = self._master
            if master is None:
                return
            try:
                data = data[os.write(master, data):]
            except BlockingIOError:
                left = deadline - time.monotonic()
                if left <= 0:
                    return  # nobody reads the port: drop, as a UART would
                select.select([], [master], [], min(left, 0.1))
            except OSError:
                return

    def _pump_console_out(self, proc: subprocess.Popen) -> None:
        while True:
            try:
                data = os.read(proc.stdout.fileno(), 65536)
            except OSError:
                data = b""
            if not data:
                break
            self._write_console(data)
        proc.wait()
        if proc is self._proc and not self._stopping.is_set():
            self._crashed(proc)

    def _crashed(self, proc: subprocess.Popen) -> None:
        """The bridge died. A board that ran a while is powered up again; one that cannot boot is
        switched off, and its port hung up so that no client waits on it forever."""
        reason = "\n".join(self._stderr_tail[-5:]) or f"node exited with status {proc.returncode}"
        self._write_console(f"\r\n[virtual board stopped: {reason}]\r\n".encode())
        if time.monotonic() - self._started_at > CRASH_RESTART_AFTER_S:
            self._write_console(b"[virtual board: powering up again]\r\n")
            self._start_node()
            return
        self.stopped_reason = reason
        self._stopping.set()
        self._close_pty()

    def _close_pty(self) -> None:
        # The reader leaves its select first, so that it never reads an fd number reused since.
        reader = getattr(self, "_in_thread", None)
        if reader is not None and reader is not threading.current_thread():
            reader.join(timeout=1)
        with self._proc_lock:
            fds = [fd for fd in (getattr(self, "_master", None), getattr(self, "_slave", None)) if fd is not None]
            self._master = self._slave = None
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass

    def _collect_stderr(self, proc: subprocess.Popen) -> None:
        for line in proc.stderr:
            self._stderr_tail.append(line.decode(errors="replace").rstrip())
            del self._stderr_tail[:-50]

    def _pump_uart(self, sock: socket.socket) -> None:
        while True:
            try:
                data = sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            if self.uart is not None:
                self.uart.send(data)

    def _to_board_uart(self, data: bytes) -> None:
        with self._proc_lock:
            sock = self._uart_sock
        if sock is not None:
            try:
                sock.sendall(data)
            except OSError:
                pass

    # -- control socket (reset from `mcuforge monitor`) --

    def _start_control(self) -> None:
        self._control_path = str(runtime_dir() / f"vboard-{os.getpid()}-{id(self):x}.sock")
        Path(self._control_path).unlink(missing_ok=True)
        self._control = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._control.bind(self._control_path)
        self._control.listen(4)
        threading.Thread(target=self._serve_control, name="vboard-control", daemon=True).start()
        register_port(self.port, {"kind": "virtual-board", "pid": os.getpid(), "control": self._control_path,
                                  "flash_dir": str(self.flash_dir)})

    def _serve_control(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._control.accept()
            except OSError:
                return
            with conn:
                try:
                    command = conn.makefile("rb").readline().decode().strip()
                    if command == "power-cycle":
                        self.power_cycle()
                        conn.sendall(b"ok\n")
                    elif command == "status":
                        conn.sendall(f"ok {'running' if self.running else 'stopped'}\n".encode())
                    else:
                        conn.sendall(f"error: unknown command {command!r}\n".encode())
                except OSError:
                    pass


def _check_sensor_trace(path: Path) -> None:
    """A sensor trace is a CSV file: header `t,<column>,...`, columns adc<N> or pin<N>, numbers."""
    if not path.is_file():
        raise McuforgeError(f"sensor trace not found: {path}", where="--sensor-trace",
                            fix="give a CSV file with a header such as t,adc0,pin4")
    lines = [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    if len(lines) < 2:
        raise McuforgeError("the sensor trace has no data rows", where=str(path),
                            fix="add a header (t,adc0,...) and at least one row of numbers")
    header = [h.strip().lower() for h in lines[0].split(",")]
    if header[0] != "t":
        raise McuforgeError(f"the sensor trace's first column is {header[0]!r}, not t", where=f"{path}: line 1",
                            fix="start the header with t (seconds of virtual time since power-on)")
    for name in header[1:]:
        if not (name.startswith(("adc", "pin")) and name[3:].strip()):
            raise McuforgeError(f"the sensor trace has a column {name!r}", where=f"{path}: line 1",
                                fix="name columns adc<channel> (read by machine.ADC) or pin<id> (read by machine.Pin)")
    previous = None
    for number, line in enumerate(lines[1:], start=2):
        cells = line.split(",")
        if len(cells) != len(header):
            raise McuforgeError(f"the row has {len(cells)} values, the header {len(header)}",
                                where=f"{path}: data row {number - 1}: {line}", fix="give one value per column")
        try:
            values = [float(c) for c in cells]
        except ValueError:
            raise McuforgeError("the row has a value that is not a number", where=f"{path}: data row {number - 1}: {line}",
                                fix="use plain numbers (ADC counts 0-65535, pin levels 0/1)") from None
        if previous is not None and values[0] <= previous:
            raise McuforgeError("the times of the sensor trace do not increase", where=f"{path}: data row {number - 1}: {line}",
                                fix="sort the rows by t, without repeats")
        previous = values[0]
