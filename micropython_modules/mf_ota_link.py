# The OTA link, device side: frames over a byte stream (UART, USB-CDC stdin, a LoRa radio),
# windowed acknowledgements, resume, and the requests of `mcuforge ota push|status|rollback`.
#
#     import mf_ota, mf_ota_link
#     rx = mf_ota_link.Receiver(updater, mf_ota_link.UartStream(machine.UART(1, 115200)))
#     while True:
#         rx.poll()          # from the main loop; or rx.serve() to do nothing else
#
# A frame: type u8 (bit 6: the sender asks for an ACK), seq u16, length u16, payload, CRC-32
# (u32) of everything before it; all little-endian. On the wire each frame is COBS-encoded and
# ends with a zero byte, so a receiver finds the next frame after any garbage, and the overhead
# is fixed (2 bytes per frame up to 254 bytes), which is what a LoRa MTU needs.
# docs/ota.md lists the frame types and their payloads; host_tools/ota/frames.py is the host's
# side of the same definitions.
import struct

try:
    from binascii import crc32
except ImportError:
    from mf_queue import crc32

import mf_ota

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

HEADER = "<BHH"
HEADER_BYTES = 5
CRC_BYTES = 4
MAX_FRAME = 1100
MAX_WINDOW = 32
PHASE_CODES = {"idle": 0, "receiving": 1, "received": 2, "switching": 3, "trial": 4, "rolling_back": 5}


def encode(ftype, seq, payload=b""):
    head = struct.pack(HEADER, ftype, seq & 0xFFFF, len(payload))
    body = head + bytes(payload)
    return body + struct.pack("<I", crc32(body) & 0xFFFFFFFF)


def decode(frame):
    """(type, seq, payload) of a frame, or None when its length or CRC does not check."""
    n = len(frame)
    if n < HEADER_BYTES + CRC_BYTES:
        return None
    ftype, seq, length = struct.unpack_from(HEADER, frame, 0)
    if length != n - HEADER_BYTES - CRC_BYTES:
        return None
    if crc32(memoryview(frame)[:n - CRC_BYTES]) & 0xFFFFFFFF != struct.unpack_from("<I", frame, n - CRC_BYTES)[0]:
        return None
    return ftype, seq, bytes(memoryview(frame)[HEADER_BYTES:n - CRC_BYTES])


def cobs_encode(data):
    out = bytearray()
    for part in _split_zero(bytes(data)):
        # Blocks of up to 254 non-zero bytes; a zero (or the end) closes each.
        while len(part) >= 254:
            out.append(255)
            out += part[:254]
            part = part[254:]
        out.append(len(part) + 1)
        out += part
    out.append(0)
    return bytes(out)


def _split_zero(data):
    parts = []
    start = 0
    while True:
        i = data.find(b"\x00", start)
        if i < 0:
            parts.append(data[start:])
            return parts
        parts.append(data[start:i])
        start = i + 1


def cobs_decode(data):
    """The bytes COBS-encoded in `data` (without its zero delimiter), or None if malformed."""
    out = bytearray()
    i = 0
    n = len(data)
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


class Deframer:
    """Bytes in, frames out: splits at zero bytes, decodes COBS, checks length and CRC. Frames
    longer than `limit` and everything malformed are counted and dropped."""

    def __init__(self, limit=MAX_FRAME + 16):
        self.buf = bytearray()
        self.limit = limit
        self.bad = 0
        self.overflow = False

    def feed(self, data):
        frames = []
        start = 0
        while True:
            i = data.find(b"\x00", start)
            if i < 0:
                break
            chunk = data[start:i]
            start = i + 1
            if self.overflow:
                self.overflow = False
                self.bad += 1
                self.buf = bytearray()
                continue
            if self.buf:
                self.buf += chunk
                chunk = bytes(self.buf)
                self.buf = bytearray()
            if not chunk:
                continue
            raw = cobs_decode(chunk)
            frame = decode(raw) if raw is not None else None
            if frame is None:
                self.bad += 1
            else:
                frames.append(frame)
        rest = data[start:]
        if rest and not self.overflow:
            if len(self.buf) + len(rest) > self.limit:
                self.overflow = True   # drop until the next delimiter
                self.buf = bytearray()
            else:
                self.buf += rest
        return frames


class Receiver:
    """Serves one host at a time over `stream` (read(n) -> bytes or None, write(bytes)).

    DATA frames carry chunk `index mod 65536` of the package in `seq`; frames ahead of the next
    expected one (within `window`) wait in RAM, duplicates are acknowledged again, and PARITY
    frames (XOR of a group of chunks) rebuild one lost chunk per group. Chunks are written in
    order, so the updater's journaled offset is a resume point."""

    def __init__(self, updater, stream, window=8, max_chunk=512, log=None):
        self.updater = updater
        self.stream = stream
        self.window = min(window, MAX_WINDOW)
        self.max_chunk = max_chunk
        self.deframer = Deframer(max_chunk + 64)
        self.reply_limit = 40     # payload bytes of a reply, until START tells the link's size
        self.log = log
        self.frames_in = 0
        self.frames_out = 0
        self.recovered = 0
        self._reset_session()

    def _reset_session(self):
        self.chunk = 0
        self.total = 0
        self.next = 0             # index of the next chunk to write
        self.pending = {}         # index -> bytes, received ahead of `next`
        self.parities = {}        # first index -> (count, xor bytes)
        self.package = None
        self.last_nack = -1

    # -- I/O --
    def send(self, ftype, seq=0, payload=b""):
        self.stream.write(cobs_encode(encode(ftype, seq, payload)))
        self.frames_out += 1

    def poll(self):
        """Handles whatever the stream has; True if a frame came."""
        data = self.stream.read(512)
        if not data:
            return False
        got = False
        for ftype, seq, payload in self.deframer.feed(bytes(data)):
            got = True
            self.frames_in += 1
            self.handle(ftype, seq, payload)
        return got

    def serve(self, idle=None, until=None):
        """Polls for ever (or until `until()` is true); `idle()` runs when nothing came."""
        while until is None or not until():
            if not self.poll() and idle is not None:
                idle()

    # -- frames --
    def handle(self, ftype, seq, payload):
        kind = ftype & ~ACK_REQUEST
        try:
            if kind == DATA:
                self._data(seq, payload, ftype & ACK_REQUEST)
            elif kind == PARITY:
                self._parity(seq, payload, ftype & ACK_REQUEST)
            elif kind == HELLO:
                self._status(payload)
            elif kind == START:
                self._start(payload)
            elif kind == INSTALL:
                self._install(payload)
            elif kind == ROLLBACK:
                code, message = self.updater.rollback("requested by the host", payload.decode() or None)
                self._result(code, message, kind)
            elif kind == ABORT:
                self.updater.abort()
                self._reset_session()
                self._result(mf_ota.ABORTED, "transfer aborted", kind)
            elif kind == PING:
                self.send(PONG, seq, payload)
            else:
                self._result(mf_ota.E_REQUEST, "unknown frame type 0x%02x" % ftype, kind)
        except mf_ota.OtaError as exc:
            if kind in (DATA, PARITY):
                self._reset_session()
            self._result(exc.code, exc.message, kind)
        except UnicodeError:
            self._result(mf_ota.E_REQUEST, "a name that is not UTF-8", kind)

    def _result(self, code, message, answer_to=0):
        # seq names the kind of frame answered, so that a late answer is not taken for another.
        text = message.encode()[:max(0, self.reply_limit - 1)]
        self.send(RESULT, answer_to, bytes((code,)) + text)

    def _status(self, payload):
        slot = payload.decode() if payload else None
        st = self.updater.status(slot if slot in self.updater.slots else None)
        none = mf_ota.NO_VERSION
        xid = st["xfer_id"]
        body = struct.pack("<B4sIIIIIHHB", PHASE_CODES.get(st["phase"], 255),
                           _unhex(xid) if xid else bytes(4), st["offset"] or 0, st["total"] or 0,
                           none if st["version"] is None else st["version"],
                           none if st["previous"] is None else st["previous"],
                           st["floor"], st["trial_ok"], st["trial_need"], st["last_code"])
        self.send(STATUS, 0, body + st["slot"].encode()[:max(0, self.reply_limit - len(body))])

    def _start(self, payload):
        if len(payload) < 13:
            raise mf_ota.OtaError(mf_ota.E_REQUEST, "a START frame of %d bytes (13 expected)" % len(payload))
        total, pid, chunk, window, reply = struct.unpack("<I4sHBH", payload[:13])
        if not 8 <= chunk <= self.max_chunk:
            raise mf_ota.OtaError(mf_ota.E_REQUEST, "chunks of %d bytes (8..%d here)" % (chunk, self.max_chunk))
        pid = _hexs(pid)
        offset = self.updater.begin(pid, total)
        self._reset_session()
        self.chunk = chunk
        self.total = total
        self.package = pid
        self.window = max(1, min(window, self.window_limit()))
        if reply:
            self.reply_limit = max(16, reply)
        self.next = offset // chunk
        if offset % chunk:
            self.updater.state["xfer"]["off"] = self.next * chunk
        self.send(ACCEPT, 0, struct.pack("<IBH", self.next * chunk, self.window, self.max_chunk))

    def window_limit(self):
        return min(MAX_WINDOW, max(1, 4096 // max(1, self.chunk or self.max_chunk)))

    def _chunk_len(self, index):
        start = index * self.chunk
        return min(self.chunk, self.total - start) if start < self.total else 0

    def _index(self, seq):
        """The chunk index a 16-bit seq stands for, near the next expected one."""
        delta = (seq - self.next) & 0xFFFF
        if delta >= 0x8000:
            delta -= 0x10000
        return self.next + delta

    def _data(self, seq, payload, ack_requested):
        if self.package is None:
            raise mf_ota.OtaError(mf_ota.E_STATE, "DATA without a transfer: send START")
        index = self._index(seq)
        if index < self.next:
            self._ack()          # a duplicate: our ACK was probably lost
            return
        if index >= self.next + self.window or len(payload) != self._chunk_len(index):
            if ack_requested:
                self._ack()
            return
        if index == self.next:
            self._store(payload)
            self._drain()
        else:
            self.pending[index] = payload
            self._try_parity()
        done = self.next * self.chunk >= self.total
        if ack_requested or done or (self.pending and self.last_nack != self.next):
            if self.pending:
                self.last_nack = self.next
            self._ack()

    def _store(self, payload):
        self.updater.write(self.next * self.chunk, payload)
        self.next += 1

    def _drain(self):
        while True:
            while self.next in self.pending:
                self._store(self.pending.pop(self.next))
            if not self._try_parity():
                break
        for first in list(self.parities):
            if first + self.parities[first][0] <= self.next:
                del self.parities[first]

    def _parity(self, seq, payload, ack_requested):
        if self.package is None or not payload:
            return
        first = self._index(seq)
        count = payload[0]
        if 1 <= count <= self.window and first + count > self.next and len(payload) - 1 == self.chunk:
            if len(self.parities) < 4:
                self.parities[first] = (count, payload[1:])
            self._drain()
        if ack_requested:
            self._ack()

    def _try_parity(self):
        """Rebuilds one missing chunk of a parity group from the others; True if it did."""
        for first in list(self.parities):
            count, xor = self.parities[first]
            missing = [i for i in range(first, first + count) if i >= self.next and i not in self.pending]
            if len(missing) != 1:
                continue
            lost = missing[0]
            if lost >= self.next + self.window or not self._chunk_len(lost):
                continue
            acc = bytearray(xor)
            for i in range(first, first + count):
                if i == lost:
                    continue
                part = self.pending.get(i) if i >= self.next else self._read_back(i)
                if part is None:
                    break
                for j in range(len(part)):
                    acc[j] ^= part[j]
            else:
                del self.parities[first]
                self.pending[lost] = bytes(acc[:self._chunk_len(lost)])
                self.recovered += 1
                if lost == self.next:
                    while self.next in self.pending:
                        self._store(self.pending.pop(self.next))
                return True
        return False

    def _read_back(self, index):
        up = self.updater
        f = up._open_pkg()
        f.seek(index * self.chunk)
        data = f.read(self._chunk_len(index))
        return data if len(data) == self._chunk_len(index) else None

    def _ack(self):
        bitmap = 0
        for i in self.pending:
            k = i - self.next - 1
            if 0 <= k < 32:
                bitmap |= 1 << k
        held = self.updater.state["xfer"]["off"] if self.updater.state.get("xfer") else self.total
        self.send(ACK, self.next & 0xFFFF, struct.pack("<II", bitmap, held))

    def _install(self, payload):
        pid = _hexs(payload[:4]) if len(payload) >= 4 else None
        code, message = self.updater.install(pid)
        self._reset_session()
        self._result(code, message, INSTALL)


def _hexs(data):
    return "".join("%02x" % b for b in data)


def _unhex(text):
    return bytes(int(text[i:i + 2], 16) for i in range(0, len(text), 2))


# ---- streams ------------------------------------------------------------------------------------

class UartStream:
    """A machine.UART (or anything with any()/read()/write())."""

    def __init__(self, uart):
        self.uart = uart

    def read(self, n):
        if not self.uart.any():
            return None
        return self.uart.read(n)

    def write(self, data):
        self.uart.write(data)


class StdioStream:
    """The REPL's own port (USB-CDC or UART0): sys.stdin/stdout in binary. Only while nothing
    else uses the console; stop with Ctrl-C."""

    def __init__(self, timeout_ms=50):
        import select
        import sys
        self.sys = sys
        self.poller = select.poll()
        self.poller.register(sys.stdin, select.POLLIN)
        self.timeout_ms = timeout_ms
        self.inp = getattr(sys.stdin, "buffer", sys.stdin)
        self.out = getattr(sys.stdout, "buffer", sys.stdout)

    def read(self, n):
        if not self.poller.poll(self.timeout_ms):
            return None
        return self.inp.read(1)

    def write(self, data):
        self.out.write(data)
