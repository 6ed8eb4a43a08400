"""A MicroPython OTA device on a pipe or a pseudo-terminal, for tests, benchmarks and demos.

The device is real MicroPython (the WebAssembly port under Node, host_tools/ota/mp_device.mjs)
running the runtime's own receiver (mf_ota_link.Receiver over mf_ota.Updater) with a host
folder as its flash. Its link is the Node process's stdin/stdout:

- `pty=False`: pipes; `device.transport` is a `PipeTransport` (the Transport interface of
  host_tools/transport.py), and `device.deliver(wire_bytes)` hands bytes over and returns the
  frames the device answered with, in lockstep (a PING after the bytes marks the end of the
  answer): what the simulated radio needs to run the device in virtual time;
- `pty=True`: a pseudo-terminal; `device.port` is its path, for `mcuforge ota push --port`,
  pyserial or anything else that opens a serial port.

Stopping the device (end of input) ends its program; the flash folder then holds what it wrote,
as after a power-off, and a new device on the same folder resumes from it.
"""
from __future__ import annotations

import base64
import json
import os
import select
import subprocess
import tempfile
import time
import tty
from pathlib import Path

from mcuforge.codegen.errors import McuforgeError

from ..micropython_wasm import find_micropython_mjs, runtime_module_files
from ..transport import PortGone, Transport
from . import frames

HELPER = Path(__file__).resolve().parent / "mp_device.mjs"

DEVICE_PROGRAM = r"""
import binascii, json, mf_hal, mf_ota, mf_ota_link
import _mfpipe

class PipeStream:
    def read(self, n):
        h = _mfpipe.read(n)
        if not h:
            raise EOFError
        return binascii.unhexlify(h)

    def write(self, data):
        _mfpipe.write(binascii.hexlify(data).decode())

CONFIG = json.loads(CONFIG_JSON)
hal = mf_hal.HAL()
keys = [binascii.unhexlify(k) for k in CONFIG["keys"]]
updater = mf_ota.Updater(hal, CONFIG["product"], keys, CONFIG["slots"], **CONFIG["options"])
for slot, version in CONFIG["provision"].items():
    if updater.slot_info(slot)["v"] is None:
        updater.provision(slot, version)
print("boot:", updater.boot())
SETUP
rx = mf_ota_link.Receiver(updater, PipeStream(), window=CONFIG["window"], max_chunk=CONFIG["max_chunk"])
try:
    rx.serve()
except EOFError:
    pass
print("OTA-STATUS " + json.dumps(updater.status()))
print("OTA-LINK " + json.dumps({"in": rx.frames_in, "out": rx.frames_out, "bad": rx.deframer.bad,
                                "recovered": rx.recovered}))
"""


class PipeTransport(Transport):
    """A byte link over a child process's stdin and stdout."""

    def __init__(self, proc: subprocess.Popen, port: str = "pipe"):
        self.proc = proc
        self.port = port
        self._in = proc.stdout.fileno()

    @property
    def kind(self) -> str:
        return "pipe"

    def read(self, size: int = 4096, timeout: float | None = 0.1) -> bytes:
        ready, _, _ = select.select([self._in], [], [], timeout)
        if not ready:
            return b""
        data = os.read(self._in, size)
        if not data:
            raise PortGone(self.port, "the device program ended")
        return data

    def write(self, data: bytes) -> None:
        try:
            self.proc.stdin.write(data)
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError, OSError):
            raise PortGone(self.port, "the device program ended") from None

    def reset(self) -> None:
        raise McuforgeError("a pipe cannot reset the device", where=self.port,
                            fix="stop the device and start it again on the same flash folder")

    def close(self) -> None:
        try:
            self.proc.stdin.close()
        except OSError:
            pass


class MicroPythonDevice:
    """See the module docstring. `keys`: raw Ed25519 public keys; `slots`: {slot: path on the
    device's flash}; `provision`: {slot: version} recorded on first boot for files the flash
    already holds; `options`: more mf_ota.Updater keyword arguments; `setup`: MicroPython code
    run after boot, before the receiver starts (the `updater` is in scope)."""

    def __init__(self, flash_dir: Path, *, product: str, keys: list[bytes], slots: dict[str, str],
                 provision: dict[str, int] | None = None, options: dict | None = None, setup: str = "",
                 window: int = 8, max_chunk: int = 512, pty: bool = False, heapsize: int = 2 * 1024 * 1024):
        self.flash_dir = Path(flash_dir)
        self.flash_dir.mkdir(parents=True, exist_ok=True)
        config = {"product": product, "keys": [k.hex() for k in keys], "slots": slots,
                  "provision": provision or {}, "options": options or {}, "window": window, "max_chunk": max_chunk}
        code = DEVICE_PROGRAM.replace("CONFIG_JSON", repr(json.dumps(config))).replace("SETUP", setup)
        files = {f"/lib/{p.name}": base64.b64encode(p.read_bytes()).decode() for p in runtime_module_files()}
        self._job = tempfile.NamedTemporaryFile("w", suffix=".json", prefix="mcuforge-otadev-", delete=False)
        self._stop_file = self._job.name + ".stop"
        job = {"micropython": str(find_micropython_mjs()), "heapsize": heapsize, "pystack": 8192,
               "files": files, "flash": str(self.flash_dir.resolve()), "code": code, "stop": self._stop_file}
        json.dump(job, self._job)
        self._job.close()
        self._log = tempfile.TemporaryFile()
        self.port: str | None = None
        self._master = None
        if pty:
            master, slave = os.openpty()
            tty.setraw(slave)
            os.set_blocking(master, False)
            self.port = os.ttyname(slave)
            self._slave = slave
            self._master = master
            self.proc = subprocess.Popen(["node", str(HELPER), self._job.name], stdin=master, stdout=master,
                                         stderr=self._log)
            self.transport = None
        else:
            self.proc = subprocess.Popen(["node", str(HELPER), self._job.name], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=self._log, bufsize=0)
            self.transport = PipeTransport(self.proc)
        self._deframer = frames.Deframer()
        self._ping = 0

    def deliver(self, data: bytes, timeout: float = 120.0) -> list[bytes]:
        """Hands `data` to the device and returns what it sent back in response (wire bytes of
        each frame), waiting for it to finish handling everything it was given."""
        self._ping = (self._ping + 1) & 0xFFFF
        marker = self._ping
        self.transport.write(bytes(data) + frames.wire(frames.PING, marker))
        replies: list[bytes] = []
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise McuforgeError("the MicroPython device did not answer", where="mp_device",
                                    fix="read its log:\n" + self.log()[-2000:])
            try:
                chunk = self.transport.read(65536, min(left, 1.0))
            except PortGone:
                raise McuforgeError("the MicroPython device stopped", where="mp_device",
                                    fix="read its log:\n" + self.log()[-3000:]) from None
            for frame in self._deframer.feed(chunk):
                if frame.kind == frames.PONG and frame.seq == marker:
                    return replies
                replies.append(frames.wire(frame.type, frame.seq, frame.payload))

    def log(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def stop(self, timeout: float = 60.0) -> str:
        """Ends the device program (end of input) and returns its log."""
        if self._master is not None:
            Path(self._stop_file).touch()   # a pseudo-terminal has no end of input
        elif self.transport is not None:
            self.transport.close()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._master, getattr(self, "_slave", None)):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        Path(self._job.name).unlink(missing_ok=True)
        Path(self._stop_file).unlink(missing_ok=True)
        return self.log()

    def status(self) -> dict | None:
        for line in self.log().splitlines():
            if line.startswith("OTA-STATUS "):
                return json.loads(line[len("OTA-STATUS "):])
        return None

    def link_counts(self) -> dict | None:
        for line in self.log().splitlines():
            if line.startswith("OTA-LINK "):
                return json.loads(line[len("OTA-LINK "):])
        return None

    def __enter__(self) -> "MicroPythonDevice":
        return self

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            self.stop()
