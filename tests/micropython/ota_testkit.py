# Helpers for the OTA tests under MicroPython: fixtures, an in-process host that speaks the
# link protocol to a Receiver, and a simulated board that records every flash write (so a test
# can cut the power at each one).
import hashlib
import struct

import mf_ota
import mf_ota_link
from mf_simhal import SimHAL
from mf_testkit import scratch

FIXTURES = "/tests/ota_fixtures/"
PRODUCT = "acme-vib"


def fixture(name):
    with open(FIXTURES + name, "rb") as f:
        return f.read()


KEY = fixture("key.pub")


def sha(data):
    return "".join("%02x" % b for b in hashlib.sha256(data).digest())


def read(path):
    with open(path, "rb") as f:
        return f.read()


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)


def exists(path):
    import os
    try:
        os.stat(path)
        return True
    except OSError:
        return False


class Device:
    """A scratch flash folder with a model slot (and an app slot) holding version 1."""

    def __init__(self, name="ota", hal=None, provision=True, checkpoint=4096, **options):
        self.dir = scratch(name)
        self.hal = hal or SimHAL()
        self.model = self.dir + "/model.mfm"
        self.app = self.dir + "/app.py"
        write(self.model, fixture("v1.mfm"))
        write(self.app, fixture("app_v1.py"))
        self.options = options
        self.checkpoint = checkpoint
        self.boot()
        if provision:
            self.updater.provision("model", 1)
            self.updater.provision("app", 1)

    def boot(self):
        """A (re)boot: a new updater and receiver on the same flash."""
        self.updater = mf_ota.Updater(self.hal, PRODUCT, [KEY], {"model": self.model, "app": self.app},
                                      root=self.dir + "/ota", checkpoint=self.checkpoint, **self.options)
        self.stream = Pipe()
        self.rx = mf_ota_link.Receiver(self.updater, self.stream, window=8, max_chunk=256)
        self.host = Host(self.rx)
        return self.updater


class Pipe:
    def __init__(self):
        self.out = []

    def read(self, n):
        return None

    def write(self, data):
        self.out.append(bytes(data))


class Host:
    """Sends frames straight into a Receiver and decodes its replies."""

    def __init__(self, rx):
        self.rx = rx
        self.deframer = mf_ota_link.Deframer()

    def send(self, ftype, seq=0, payload=b""):
        out = self.rx.stream.out
        del out[:]
        self.rx.handle(ftype, seq, payload)
        frames = []
        for wire in out:
            frames += self.deframer.feed(wire)
        return frames

    def start(self, package, chunk=64, window=8):
        pid = hashlib.sha256(package).digest()[:4]
        replies = self.send(mf_ota_link.START, 0, struct.pack("<I4sHBH", len(package), pid, chunk, window, 200))
        kind, _, payload = replies[-1]
        if kind == mf_ota_link.RESULT:
            return None, result(replies)
        return struct.unpack("<IBH", payload)[0], None

    def push(self, package, chunk=64, order=None, install=True):
        """START, every chunk (in `order`, default in order), INSTALL. Returns (code, message)
        of the first RESULT, and the offset START resumed from."""
        offset, refused = self.start(package, chunk)
        if refused:
            return refused, None
        n = (len(package) + chunk - 1) // chunk
        indices = order if order is not None else range(offset // chunk, n)
        for i in indices:
            replies = self.send(mf_ota_link.DATA | mf_ota_link.ACK_REQUEST, i, package[i * chunk:(i + 1) * chunk])
            refused = result(replies)
            if refused is not None:
                return refused, offset
        if not install:
            return None, offset
        pid = hashlib.sha256(package).digest()[:4]
        return result(self.send(mf_ota_link.INSTALL, 0, pid)), offset

    def acks(self, replies):
        return [struct.unpack("<II", p) + (seq,) for kind, seq, p in replies if kind == mf_ota_link.ACK]


def result(replies):
    for kind, _, payload in replies:
        if kind == mf_ota_link.RESULT:
            return payload[0], payload[1:].decode()
    return None


class RecordingHAL(SimHAL):
    """A SimHAL that notes the flash budget after every write and file operation, so a test can
    cut the power at each of them. Run once with record=True, then use cut_points()."""

    BIG = 1 << 30

    def __init__(self, **kw):
        SimHAL.__init__(self, **kw)
        self.marks = []

    def record(self):
        self.marks = []
        self.cut_power_after(self.BIG)

    def used(self):
        return self.BIG - self._budget

    def _metadata_op(self):
        before = self._budget
        SimHAL._metadata_op(self)
        if before is not None and before >= self.BIG - (1 << 29):
            self.marks.append(("op", self.BIG - before, 1))

    def open(self, path, mode="rb"):
        f = SimHAL.open(self, path, mode)
        if "w" in mode or "a" in mode or "+" in mode:
            return _Recorder(self, f)
        return f

    def cut_points(self):
        """Budgets that cut the power at each operation: before it, and inside each write."""
        points = []
        for kind, start, n in self.marks:
            points.append(start)
            if kind == "write" and n > 1:
                points.append(start + n // 2)
        return sorted(set(points))


class _Recorder:
    def __init__(self, hal, f):
        self._hal = hal
        self._f = f

    def write(self, data):
        hal = self._hal
        before = hal._budget
        n = self._f.write(data)
        if before is not None and before >= hal.BIG - (1 << 29):
            hal.marks.append(("write", hal.BIG - before, len(data)))
        return n

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()
