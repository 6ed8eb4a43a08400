"""The OTA link, host side: a windowed, selective-repeat sender over any frame channel.

    channel = TransportChannel(open_transport("/dev/ttyUSB0"))            # serial
    channel = TransportChannel(transport, lora=LoraParams(sf=9, duty=0.01))  # a LoRa modem
    client = OtaClient(channel)
    result = client.push(package)       # START (resume offset) -> DATA window -> INSTALL
    client.status(); client.rollback()

A `Channel` moves whole frames: `send(wire_bytes)` (waiting out the duty cycle when there is
one), `recv(timeout)`, `now()`. `TransportChannel` puts frames on a `Transport` (serial port,
pseudo-terminal, pipe) in real time; `simradio.SimChannel` carries them through a simulated
radio in virtual time. The sender is the same code for both.

Sending: the package is cut into chunks of equal size (the last one shorter); chunk i is the
DATA frame with seq i mod 65536. At most `window` chunks are unacknowledged; the last frame of
each burst asks for an ACK. An ACK carries the next chunk the device needs (cumulative) and a
bitmap of the chunks it holds beyond it (selective), so only missing chunks go again. With
`parity_group` k, a PARITY frame (XOR of k chunks) follows each group, and the device rebuilds
one lost chunk per group without a round trip. No answer within the retransmission timeout
(adaptive, from measured round trips) sends the oldest missing chunk again and doubles the
timeout; after `max_timeouts` in a row the link is declared down (LinkDown), and the next
push resumes where the device's journal says it stopped.
"""
from __future__ import annotations

import hashlib
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable

from mcuforge.codegen.errors import McuforgeError

from ..transport import PortGone, Transport, port_problem_fix
from . import frames
from .frames import Frame
from .lora import DutyCycle, LoraParams
from .package import Package

DEFAULT_SERIAL_CHUNK = 256
STATE_LOST = 18     # the device's answer to DATA when it holds no transfer


class LinkDown(McuforgeError):
    """The device stopped answering. Pushing again resumes from the device's last checkpoint."""


class DeviceRefused(McuforgeError):
    """The device answered with an error code (bad signature, downgrade, wrong product...)."""

    def __init__(self, code: int, message: str):
        self.code = code
        self.message = message
        super().__init__(f"the device refused the update: {frames.RESULTS.get(code, code)}: {message}",
                         where="device", fix=_refusal_fix(code))


def _refusal_fix(code: int) -> str:
    return {
        10: "sign the package with a key the device trusts (mcuforge ota make --key); never install an unsigned one",
        11: "make the package for this device's product (--product)",
        12: "give the new version a number above every version the device has seen (mcuforge ota status)",
        13: "make a patch from the version the device runs (mcuforge ota status), or a full package (--mode full)",
        14: "push again; if it repeats, check the link and the package (mcuforge ota verify)",
        15: "free space on the device, or send a smaller (delta) package",
        18: "wait for the health window of the version on trial to end, or roll it back (mcuforge ota rollback)",
        21: "update mf_ota on the device, or make the package with an mcuforge that matches it",
    }.get(code, "see the device's message above")


class Channel(ABC):
    """Whole frames to and from one device."""

    mtu: int | None = None          # most wire bytes per frame (None: no limit)

    @abstractmethod
    def send(self, wire: bytes) -> None:
        ...

    @abstractmethod
    def recv(self, timeout: float) -> Frame | None:
        ...

    @abstractmethod
    def now(self) -> float:
        ...

    def airtime_s(self) -> float:
        return 0.0

    def bad_frames(self) -> int:
        return 0

    def close(self) -> None:
        pass


class TransportChannel(Channel):
    """Frames over a byte Transport, in real time; with `lora`, frames are sized to its MTU and
    paced to its duty cycle (the transport is then a LoRa modem in transparent mode)."""

    def __init__(self, transport: Transport, lora: LoraParams | None = None,
                 sleep: Callable[[float], None] = time.sleep):
        self.transport = transport
        self.lora = lora
        self.mtu = lora.mtu if lora else None
        self.duty = DutyCycle(lora) if lora else None
        self.deframer = frames.Deframer()
        self._sleep = sleep
        self._queue: list[Frame] = []

    def now(self) -> float:
        return time.monotonic()

    def send(self, wire: bytes) -> None:
        if self.duty is not None:
            start = self.duty.earliest(self.now())
            if start > self.now():
                self._sleep(start - self.now())
            self.duty.transmit(self.now(), len(wire))
        try:
            self.transport.write(wire)
        except PortGone as exc:
            raise LinkDown(f"the port went away: {exc.cause}", where=exc.port, fix=port_problem_fix(exc.cause)) from None

    def recv(self, timeout: float) -> Frame | None:
        deadline = self.now() + timeout
        while not self._queue:
            left = deadline - self.now()
            if left <= 0:
                return None
            try:
                data = self.transport.read(4096, min(left, 0.2))
            except PortGone as exc:
                raise LinkDown(f"the port went away: {exc.cause}", where=exc.port,
                               fix=port_problem_fix(exc.cause)) from None
            if data:
                self._queue.extend(self.deframer.feed(data))
        return self._queue.pop(0)

    def airtime_s(self) -> float:
        return self.duty.airtime_s if self.duty else 0.0

    def bad_frames(self) -> int:
        return self.deframer.bad

    def close(self) -> None:
        self.transport.close()


@dataclass
class PushResult:
    code: int
    message: str
    package_bytes: int
    resumed_from: int
    chunk: int
    window: int
    frames_sent: int = 0
    data_frames: int = 0
    retransmissions: int = 0
    parity_frames: int = 0
    acks: int = 0
    timeouts: int = 0
    sessions: int = 1
    wire_bytes: int = 0
    elapsed_s: float = 0.0
    airtime_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.code in (1, 3)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class _Stats:
    frames_sent: int = 0
    data_frames: int = 0
    retransmissions: int = 0
    parity_frames: int = 0
    acks: int = 0
    timeouts: int = 0
    wire_bytes: int = 0


@dataclass
class _Rtt:
    """Round-trip estimate and retransmission timeout (Jacobson/Karels)."""
    rto: float
    rto_min: float
    rto_max: float
    srtt: float | None = None
    rttvar: float = 0.0

    def sample(self, rtt: float) -> None:
        if self.srtt is None:
            self.srtt, self.rttvar = rtt, rtt / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt)
            self.srtt = 0.875 * self.srtt + 0.125 * rtt
        self.rto = min(self.rto_max, max(self.rto_min, self.srtt + 4 * self.rttvar))

    def backoff(self) -> None:
        self.rto = min(self.rto_max, self.rto * 2)


class OtaClient:
    """Talks to one device's mf_ota_link.Receiver over a Channel (see the module docstring)."""

    def __init__(self, channel: Channel, *, window: int = 8, chunk: int | None = None, parity_group: int = 0,
                 rto: float = 1.0, rto_min: float = 0.2, rto_max: float = 60.0, max_timeouts: int = 8,
                 install_timeout: float = 120.0, progress: Callable[[int, int], None] | None = None,
                 log: Callable[[str], None] | None = None):
        self.channel = channel
        self.window = max(1, min(window, 32))
        self.parity_group = parity_group
        if channel.mtu is not None:
            fit = frames.max_payload_for(channel.mtu) - (1 if parity_group else 0)
            if chunk is not None and chunk > fit:
                raise McuforgeError(f"chunks of {chunk} bytes do not fit the {channel.mtu}-byte MTU "
                                    f"(at most {fit} bytes of payload per frame)", where="--chunk",
                                    fix=f"use --chunk {fit} or less, or leave it out")
            chunk = chunk or fit
        self.chunk = chunk or DEFAULT_SERIAL_CHUNK
        if not 8 <= self.chunk <= 1024:
            raise McuforgeError(f"chunks of {self.chunk} bytes are outside 8..1024", where="--chunk",
                                fix="use 8 to 1024 (the device's limit is set by its Receiver(max_chunk=))")
        self.rtt = _Rtt(rto, rto_min, rto_max)
        self.max_timeouts = max_timeouts
        self.install_timeout = install_timeout
        self.progress = progress
        self.log = log or (lambda message: None)
        self.stats = _Stats()

    # -- plumbing --
    def _send(self, ftype: int, seq: int = 0, payload: bytes = b"") -> float:
        wire = frames.wire(ftype, seq, payload)
        if self.channel.mtu is not None and len(wire) > self.channel.mtu:
            raise AssertionError(f"internal error: a {len(wire)}-byte frame over the {self.channel.mtu}-byte MTU")
        self.channel.send(wire)
        self.stats.frames_sent += 1
        self.stats.wire_bytes += len(wire)
        return self.channel.now()

    def request(self, ftype: int, payload: bytes, expect: tuple[int, ...], timeout: float | None = None,
                retries: int | None = None) -> Frame:
        """Sends a control frame until one of the `expect`ed kinds answers (a RESULT always
        counts as an answer)."""
        retries = self.max_timeouts if retries is None else retries
        for attempt in range(retries + 1):
            sent = self._send(ftype, 0, payload)
            wait = timeout if timeout is not None else self.rtt.rto
            deadline = sent + wait
            while True:
                left = deadline - self.channel.now()
                if left <= 0:
                    break
                frame = self.channel.recv(left)
                if frame is None:
                    break
                if frame.kind in expect or (frame.kind == frames.RESULT and frame.seq in (ftype, 0)):
                    if attempt == 0:
                        self.rtt.sample(self.channel.now() - sent)
                    return frame
            self.stats.timeouts += 1
            if timeout is None:
                self.rtt.backoff()
            self.log(f"no answer to {frames.NAMES.get(ftype, ftype)} (attempt {attempt + 1}), "
                     f"timeout now {self.rtt.rto:.2f} s")
        raise LinkDown(f"the device does not answer {frames.NAMES.get(ftype, ftype)} after {retries + 1} tries",
                       where="OTA link",
                       fix="check the port, the baud rate and that the device runs the OTA receiver "
                           "(mf_ota_link.Receiver); push again to resume")

    # -- requests --
    def status(self, slot: str | None = None) -> frames.Status:
        frame = self.request(frames.HELLO, (slot or "").encode(), (frames.STATUS,))
        if frame.kind == frames.RESULT:
            raise DeviceRefused(frame.payload[0] if frame.payload else 16, frame.payload[1:].decode(errors="replace"))
        return frames.Status.parse(frame.payload)

    def rollback(self, slot: str | None = None) -> tuple[int, str]:
        frame = self.request(frames.ROLLBACK, (slot or "").encode(), (), timeout=self.install_timeout, retries=3)
        code, message = _result(frame)
        if code not in frames.SUCCESS_CODES:
            raise DeviceRefused(code, message)
        return code, message

    def abort(self) -> tuple[int, str]:
        return _result(self.request(frames.ABORT, b"", ()))

    def push(self, package: Package | bytes, resume_attempts: int = 0) -> PushResult:
        """Sends the package and installs it. After LinkDown, tries again `resume_attempts`
        times (each resumes from the device's checkpoint) before giving up."""
        data = package.to_bytes() if isinstance(package, Package) else bytes(package)
        started = self.channel.now()
        sessions = 0
        resumed_from = None
        while True:
            sessions += 1
            try:
                offset = self._start(data)
                if resumed_from is None:
                    resumed_from = offset
                self._send_data(data, offset)
                code, message = self._install(data)
                break
            except LinkDown:
                if sessions > resume_attempts:
                    raise
                self.log(f"link down; resuming (session {sessions + 1})")
        result = PushResult(code=code, message=message, package_bytes=len(data), resumed_from=resumed_from or 0,
                            chunk=self.chunk, window=self.window, sessions=sessions,
                            elapsed_s=self.channel.now() - started, airtime_s=self.channel.airtime_s(),
                            **self.stats.__dict__)
        if code not in frames.SUCCESS_CODES:
            raise DeviceRefused(code, message)
        return result

    # -- the transfer --
    def _start(self, data: bytes) -> int:
        pid = hashlib.sha256(data).digest()[:4]
        reply_limit = frames.max_payload_for(self.channel.mtu) if self.channel.mtu else 200
        payload = frames.START_PAYLOAD.pack(len(data), pid, self.chunk, self.window, reply_limit)
        frame = self.request(frames.START, payload, (frames.ACCEPT,))
        if frame.kind == frames.RESULT:
            code, message = _result(frame)
            raise DeviceRefused(code, message)
        offset, window, device_max = frames.ACCEPT_PAYLOAD.unpack_from(frame.payload)
        self.window = max(1, window)
        self.log(f"device accepts {len(data)} bytes, resuming at byte {offset}, window {self.window} "
                 f"(its chunk limit {device_max})")
        return offset

    def _send_data(self, data: bytes, offset: int) -> None:
        chunk = self.chunk
        n = (len(data) + chunk - 1) // chunk
        base = offset // chunk
        first = base
        next_new = base
        held: set[int] = set()
        sent_at: dict[int, float] = {}
        sends: dict[int, int] = {}
        parity_sent: set[int] = set()
        timeouts_in_row = 0

        def chunk_bytes(i: int) -> bytes:
            return data[i * chunk:(i + 1) * chunk]

        def send_chunk(i: int, ask: bool) -> None:
            t = self._send(frames.DATA | (frames.ACK_REQUEST if ask else 0), i, chunk_bytes(i))
            sent_at[i] = t
            sends[i] = sends.get(i, 0) + 1
            self.stats.data_frames += 1
            if sends[i] > 1:
                self.stats.retransmissions += 1

        def send_parity(group_first: int, count: int, ask: bool) -> None:
            acc = bytearray(chunk)
            for i in range(group_first, group_first + count):
                for j, b in enumerate(chunk_bytes(i)):
                    acc[j] ^= b
            self._send(frames.PARITY | (frames.ACK_REQUEST if ask else 0), group_first, bytes([count]) + bytes(acc))
            self.stats.parity_frames += 1

        while base < n:
            # The burst: chunks the last ACK says are missing, then new ones, within the window.
            now = self.channel.now()
            srtt = self.rtt.srtt if self.rtt.srtt is not None else self.rtt.rto
            burst = [i for i in range(base, min(next_new, base + self.window))
                     if i not in held and now - sent_at.get(i, -1e9) > srtt * 1.5]
            while next_new < min(base + self.window, n):
                burst.append(next_new)
                next_new += 1
            groups = []
            k = self.parity_group
            if k:
                for i in burst:
                    g = (i - first) // k * k + first
                    last_in_group = min(g + k, n) - 1
                    if i == last_in_group and g not in parity_sent and g >= base:
                        groups.append((i, g, last_in_group - g + 1))
            for pos, i in enumerate(burst):
                parity_after = [grp for grp in groups if grp[0] == i]
                ask = pos == len(burst) - 1 and not parity_after
                send_chunk(i, ask)
                for _, g, count in parity_after:
                    parity_sent.add(g)
                    send_parity(g, count, ask=pos == len(burst) - 1)
            asked_at = self.channel.now()
            # Wait for an ACK (or a RESULT: the device refused the package).
            acked = False
            while True:
                left = asked_at + self.rtt.rto - self.channel.now()
                if left <= 0:
                    break
                frame = self.channel.recv(left)
                if frame is None:
                    break
                if frame.kind == frames.RESULT:
                    if frame.seq not in (frames.DATA, frames.PARITY):
                        continue          # a late answer to an earlier request
                    code, message = _result(frame)
                    if code == STATE_LOST:
                        raise LinkDown("the device lost the transfer (it restarted)", where="device",
                                       fix="push again: the device resumes from its last checkpoint")
                    raise DeviceRefused(code, message)
                if frame.kind != frames.ACK or len(frame.payload) < frames.ACK_PAYLOAD.size:
                    continue
                self.stats.acks += 1
                bitmap, persisted = frames.ACK_PAYLOAD.unpack_from(frame.payload)
                delta = (frame.seq - base) & 0xFFFF
                if delta >= 0x8000:
                    delta -= 0x10000
                device_next = base + delta
                if device_next < base or device_next > n:
                    continue   # stale
                if device_next > base and all(sends.get(i, 0) == 1 for i in range(base, device_next)):
                    newest = max(sent_at.get(i, 0.0) for i in range(base, device_next))
                    if newest and self.channel.now() - newest > 0:
                        self.rtt.sample(self.channel.now() - newest)
                base = max(base, device_next)
                held = {i for i in held if i >= base}
                for b in range(32):
                    if bitmap >> b & 1:
                        held.add(base + 1 + b)
                if self.progress:
                    self.progress(min(len(data), base * chunk), len(data))
                acked = True
                timeouts_in_row = 0
                if base >= next_new or base >= n or bitmap:
                    break
            if not acked:
                timeouts_in_row += 1
                self.stats.timeouts += 1
                self.rtt.backoff()
                if timeouts_in_row > self.max_timeouts:
                    raise LinkDown(f"no acknowledgement after {timeouts_in_row} timeouts (at chunk {base} of {n})",
                                   where="OTA link", fix="check the link; push again to resume from the device's "
                                                         "last checkpoint")
                # Probe: the oldest missing chunk again, asking for an ACK.
                if base < n:
                    send_chunk(base, True)

    def _install(self, data: bytes) -> tuple[int, str]:
        pid = hashlib.sha256(data).digest()[:4]
        frame = self.request(frames.INSTALL, pid, (), timeout=self.install_timeout, retries=3)
        return _result(frame)


def _result(frame: Frame) -> tuple[int, str]:
    if frame.kind != frames.RESULT or not frame.payload:
        return 16, f"unexpected {frame!r}"
    return frame.payload[0], frame.payload[1:].decode(errors="replace")


def package_id(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()[:4]


def describe_status(status: frames.Status) -> list[str]:
    def v(x):
        return "-" if x is None else str(x)
    lines = [f"slot {status.slot}: version {v(status.version)} (previous {v(status.previous)}, "
             f"highest seen {status.floor}), {status.phase}"]
    if status.phase == "trial":
        lines.append(f"health window: {status.trial_ok}/{status.trial_need} good inferences")
    if status.package_id:
        lines.append(f"transfer {status.package_id}: {status.offset}/{status.total} bytes held")
    lines.append(f"last result: {frames.RESULTS.get(status.last_code, status.last_code)}")
    return lines
