# Streaming patch application (mf_ota_patch) under MicroPython: correct output, and hostile
# patches (malformed records, bit flips, truncation, garbage) end in PatchError, never a crash
# or an unbounded loop.
import deflate
import hashlib
import io
import struct
import unittest

import mf_ota_patch
from mf_simhal import Rng
from ota_testkit import fixture

OLD, NEW = fixture("v1.mfm"), fixture("v2.mfm")


def payload_of(package):
    n = package[6] | package[7] << 8
    return package[8 + n + 64:]


PATCH = payload_of(fixture("v1_v2.mfu"))   # raw deflate, window 2**12


def uvarint(v):
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def svarint(v):
    return uvarint(v << 1 if v >= 0 else ((-v << 1) - 1))


def raw_patch(new_size, old_size, records, magic=b"MFD1"):
    out = bytearray(magic + struct.pack("<II", new_size, old_size))
    for seek, add, copy, body in records:
        out += svarint(seek) + uvarint(add) + uvarint(copy) + body
    return bytes(out)


class Sink:
    def __init__(self):
        self.data = bytearray()

    def write(self, b):
        self.data += b
        return len(b)


def apply_raw(patch, old=OLD, new_size=None):
    out = Sink()
    new_size = struct.unpack("<I", patch[4:8])[0] if new_size is None and len(patch) >= 8 else (new_size or 0)
    n = mf_ota_patch.apply(io.BytesIO(old), len(old), io.BytesIO(patch), out, new_size, hashlib.sha256())
    return bytes(out.data), n


def apply_deflated(payload, old=OLD, new_size=len(NEW)):
    out = Sink()
    h = hashlib.sha256()
    stream = deflate.DeflateIO(io.BytesIO(payload), deflate.RAW, 12)
    mf_ota_patch.apply(io.BytesIO(old), len(old), stream, out, new_size, h)
    return bytes(out.data), h.digest()


class Apply(unittest.TestCase):
    def test_fixture_patch_makes_v2(self):
        data, digest = apply_deflated(PATCH)
        self.assertEqual(data, NEW)
        self.assertEqual(digest, hashlib.sha256(NEW).digest())

    def test_small_chunks_give_the_same_result(self):
        out = Sink()
        stream = deflate.DeflateIO(io.BytesIO(PATCH), deflate.RAW, 12)
        mf_ota_patch.apply(io.BytesIO(OLD), len(OLD), stream, out, len(NEW), None, chunk=7)
        self.assertEqual(bytes(out.data), NEW)

    def test_hand_made_records(self):
        old = bytes(range(100))
        # seek 10, add 5 (+1 each), copy b"xyz", then seek -15 back to 0 and add 3 unchanged.
        patch = raw_patch(11, 100, [(10, 5, 3, b"\x01" * 5 + b"xyz"), (-15, 3, 0, b"\x00" * 3)])
        data, n = apply_raw(patch, old)
        self.assertEqual(data, bytes((11, 12, 13, 14, 15)) + b"xyz" + bytes((0, 1, 2)))
        self.assertEqual(n, 11)

    def test_full_image_inflate(self):
        package = fixture("v2_full.mfu")
        out = Sink()
        stream = deflate.DeflateIO(io.BytesIO(payload_of(package)), deflate.RAW, 12)
        mf_ota_patch.inflate(stream, out, len(NEW))
        self.assertEqual(bytes(out.data), NEW)


class Hostile(unittest.TestCase):
    def assertRefused(self, patch, old=OLD, new_size=None, fragment=None):
        try:
            apply_raw(patch, old, new_size)
        except mf_ota_patch.PatchError as exc:
            if fragment:
                self.assertIn(fragment, str(exc))
            return
        self.fail("the patch was applied")

    def test_malformed_records(self):
        old = bytes(64)
        self.assertRefused(raw_patch(4, 64, [(0, 4, 0, bytes(4))], magic=b"XXXX"), old, fragment="not an mfdiff1")
        self.assertRefused(raw_patch(4, 63, [(0, 4, 0, bytes(4))]), old, fragment="another version")
        self.assertRefused(raw_patch(4, 64, [(0, 0, 0, b"")]), old, fragment="produces nothing")
        self.assertRefused(raw_patch(4, 64, [(62, 4, 0, bytes(4))]), old, fragment="outside")
        self.assertRefused(raw_patch(4, 64, [(-1, 4, 0, bytes(4))]), old, fragment="outside")
        self.assertRefused(raw_patch(4, 64, [(0, 2, 3, bytes(5))]), old, fragment="past the new file")
        self.assertRefused(raw_patch(4, 64, [(0, 4, 0, bytes(2))]), old, fragment="ends early")
        self.assertRefused(raw_patch(4, 64, [(0, 4, 0, bytes(4))]) + b"\x00", old, fragment="goes on")
        # A varint that never ends, and lengths of 2**31: refused before anything is allocated.
        self.assertRefused(raw_patch(4, 64, []) + b"\x80" * 9, old, new_size=4, fragment="32 bits")
        self.assertRefused(raw_patch(4, 64, [(0, 1 << 31, 0, b"")]), old, fragment="past the new file")
        self.assertRefused(b"MFD", old, new_size=4, fragment="ends early")
        # The manifest's size and the patch's disagree.
        self.assertRefused(raw_patch(4, 64, [(0, 4, 0, bytes(4))]), old, new_size=5, fragment="manifest")

    def test_fuzzed_compressed_patches(self):
        rng = Rng(7)
        outcomes = {"refused": 0, "applied": 0}
        for trial in range(300):
            data = bytearray(PATCH)
            kind = trial % 3
            if kind == 0:
                for _ in range(1 + rng.below(3)):
                    i = rng.below(len(data))
                    data[i] ^= 1 << rng.below(8)
            elif kind == 1:
                data = data[:rng.below(len(data))]
            else:
                data = bytearray(rng.below(256) for _ in range(1 + rng.below(200)))
            try:
                out, digest = apply_deflated(bytes(data))
                self.assertEqual(len(out), len(NEW))             # never more than announced
                outcomes["applied"] += 1
            except mf_ota_patch.PatchError:
                outcomes["refused"] += 1
        self.assertTrue(outcomes["refused"] > 150, outcomes)

    def test_fuzzed_raw_patches(self):
        base = raw_patch(40, len(OLD), [(5, 20, 5, bytes(20) + b"hello"), (100, 10, 5, bytes(10) + b"world")])
        self.assertEqual(len(apply_raw(base)[0]), 40)
        rng = Rng(11)
        for trial in range(400):
            data = bytearray(base)
            for _ in range(1 + rng.below(4)):
                data[rng.below(len(data))] = rng.below(256)
            try:
                out, n = apply_raw(bytes(data), new_size=40)
                self.assertEqual(n, 40)
            except mf_ota_patch.PatchError:
                pass
