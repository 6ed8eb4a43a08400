"""OTA link frames, host side: the same bytes as micropython_modules/mf_ota_link.py.

A frame is `type u8 | seq u16 | length u16 | payload | CRC-32 u32` (little-endian, CRC over
everything before it). Bit 6 of the type asks the receiver for an acknowledgement. On the wire
a frame is COBS-encoded and followed by a zero byte: garbage between frames costs at most the
frame it hits, and the overhead is a fixed 2 bytes up to 254 encoded bytes, so a frame's size
on a LoRa link is known before it is sent.
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

HELLO = 0x01
START = 0x02
DATA = 0x03
PARITY = 0x04
INSTALL = 0x05
ROLLBACK = 0x06
ABORT = 0x07
PING = 0x0F
STATUS = 0x81
ACCEPT = 0x82
ACK = 0x83
RESULT = 0x84
PONG = 0x8F
ACK_REQUEST = 0x40

NAMES = {HELLO: "HELLO", START: "START", DATA: "DATA", PARITY: "PARITY", INSTALL: "INSTALL", ROLLBACK: "ROLLBACK",
         ABORT: "ABORT", PING: "PING", STATUS: "STATUS", ACCEPT: "ACCEPT", ACK: "ACK", RESULT: "RESULT", PONG: "PONG"}

HEADER = struct.Struct("<BHH")
CRC = struct.Struct("<I")
OVERHEAD = HEADER.size + CRC.size            # 9 bytes per frame
WIRE_OVERHEAD = OVERHEAD + 2                 # + COBS code byte and delimiter (frames up to 254 bytes)
START_PAYLOAD = struct.Struct("<I4sHBH")     # total, package id, chunk, window, reply limit
ACCEPT_PAYLOAD = struct.Struct("<IBH")       # resume offset, window, device's max chunk
ACK_PAYLOAD = struct.Struct("<II")           # bitmap of chunks held beyond seq, bytes persisted
STATUS_PAYLOAD = struct.Struct("<B4sIIIIIHHB")
NO_VERSION = 0xFFFFFFFF
PHASES = ("idle", "receiving", "received", "switching", "trial", "rolling_back")

# Result codes (mf_ota.py).
RESULTS = {0: "ok", 1: "installed", 2: "rolled back", 3: "committed", 4: "aborted", 10: "bad signature",
           11: "wrong product", 12: "downgrade or replay", 13: "wrong base version", 14: "corrupted",
           15: "no space", 16: "bad request", 17: "apply failed", 18: "wrong state", 19: "health check failed",
           20: "malformed package", 21: "unsupported"}
SUCCESS_CODES = (0, 1, 2, 3, 4)


@dataclass(frozen=True)
class Frame:
    type: int
    seq: int
    payload: bytes

    @property
    def kind(self) -> int:
        return self.type & ~ACK_REQUEST

    @property
    def ack_requested(self) -> bool:
        return bool(self.type & ACK_REQUEST)

    def __repr__(self) -> str:
        flag = "+ack" if self.ack_requested else ""
        return f"<{NAMES.get(self.kind, hex(self.kind))}{flag} seq={self.seq} {len(self.payload)}B>"


def encode(ftype: int, seq: int = 0, payload: bytes = b"") -> bytes:
    body = HEADER.pack(ftype, seq & 0xFFFF, len(payload)) + bytes(payload)
    return body + CRC.pack(zlib.crc32(body))


def decode(raw: bytes) -> Frame | None:
    """The frame in `raw`, or None when its length or CRC does not check."""
    if len(raw) < OVERHEAD:
        return None
    ftype, seq, length = HEADER.unpack_from(raw)
    if length != len(raw) - OVERHEAD:
        return None
    if zlib.crc32(raw[:-CRC.size]) != CRC.unpack_from(raw, len(raw) - CRC.size)[0]:
        return None
    return Frame(ftype, seq, bytes(raw[HEADER.size:-CRC.size]))


def cobs_encode(data: bytes) -> bytes:
    out = bytearray()
    for part in bytes(data).split(b"\x00"):
        while len(part) >= 254:
            out.append(255)
            out += part[:254]
            part = part[254:]
        out.append(len(part) + 1)
        out += part
    out.append(0)
    return bytes(out)


def cobs_decode(data: bytes) -> bytes | None:
    out = bytearray()
    i, n = 0, len(data)
    while i < n:
        code = data[i]
        end = i + code
        if code == 0 or end > n:
            return None
        out += data[i + 1:end]
        i = end
        if code < 255 and i < n:
            out.append(0)
    return bytes(out)


def wire(ftype: int, seq: int = 0, payload: bytes = b"") -> bytes:
    """A frame as it goes on the wire."""
    return cobs_encode(encode(ftype, seq, payload))


def wire_size(payload_bytes: int) -> int:
    """The most bytes a frame with this payload takes on the wire: COBS adds one code byte per
    254 bytes and one more, then the zero delimiter."""
    n = OVERHEAD + payload_bytes
    return n + n // 254 + 2


def max_payload_for(mtu: int) -> int:
    """The largest payload whose frame fits `mtu` bytes on the wire."""
    best = 0
    for payload in range(0, mtu):
        if wire_size(payload) <= mtu:
            best = payload
    return best


class Deframer:
    """Bytes in, frames out; malformed frames are counted in `bad` and dropped."""

    def __init__(self, limit: int = 4096):
        self.buf = bytearray()
        self.limit = limit
        self.bad = 0
        self.overflow = False

    def feed(self, data: bytes) -> list[Frame]:
        frames = []
        parts = bytes(data).split(b"\x00")
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if last:
                if self.overflow:
                    break
                if len(self.buf) + len(part) > self.limit:
                    self.overflow = True
                    self.buf.clear()
                else:
                    self.buf += part
                break
            if self.overflow:
                self.overflow = False
                self.bad += 1
                self.buf.clear()
                continue
            chunk = bytes(self.buf) + part
            self.buf.clear()
            if not chunk:
                continue
            raw = cobs_decode(chunk)
            frame = decode(raw) if raw is not None else None
            if frame is None:
                self.bad += 1
            else:
                frames.append(frame)
        return frames


@dataclass
class Status:
    phase: str
    package_id: str | None
    offset: int
    total: int
    version: int | None
    previous: int | None
    floor: int
    trial_ok: int
    trial_need: int
    last_code: int
    slot: str

    @classmethod
    def parse(cls, payload: bytes) -> "Status":
        if len(payload) < STATUS_PAYLOAD.size:
            raise ValueError(f"a STATUS of {len(payload)} bytes")
        (phase, pid, offset, total, version, previous, floor, ok, need, last) = STATUS_PAYLOAD.unpack_from(payload)
        return cls(phase=PHASES[phase] if phase < len(PHASES) else f"unknown({phase})",
                   package_id=pid.hex() if any(pid) else None, offset=offset, total=total,
                   version=None if version == NO_VERSION else version,
                   previous=None if previous == NO_VERSION else previous, floor=floor, trial_ok=ok,
                   trial_need=need, last_code=last, slot=payload[STATUS_PAYLOAD.size:].decode(errors="replace"))
