# The OTA link, device side (mf_ota_link) under MicroPython: COBS and frames, a fuzzed frame
# parser, the receive window, parity recovery, and hostile frame sequences.
import hashlib
import struct
import unittest

import mf_ota
import mf_ota_link as L
from mf_simhal import Rng
from ota_testkit import Device, fixture, read, result

V1, V2 = fixture("v1.mfm"), fixture("v2.mfm")


class Framing(unittest.TestCase):
    def test_cobs_round_trip(self):
        rng = Rng(3)
        cases = [b"", b"\x00", b"\x00\x00", b"a", b"a\x00b", bytes(253), b"\x01" * 253, b"\x01" * 254,
                 b"\x01" * 255, b"\x01" * 508, bytes(rng.below(256) for _ in range(700))]
        for data in cases:
            wire = L.cobs_encode(data)
            self.assertEqual(wire[-1], 0)
            self.assertTrue(0 not in wire[:-1])
            self.assertEqual(L.cobs_decode(wire[:-1]), data)

    def test_overhead_is_two_bytes_up_to_254(self):
        for n in (0, 10, 100, 245):
            self.assertEqual(len(L.cobs_encode(L.encode(L.DATA, 1, b"\x00\xff" * (n // 2)))),
                             n // 2 * 2 + 9 + 2)

    def test_frames_round_trip_and_checks(self):
        frame = L.encode(L.DATA | L.ACK_REQUEST, 70000, b"payload")
        self.assertEqual(L.decode(frame), (L.DATA | L.ACK_REQUEST, 70000 & 0xFFFF, b"payload"))
        bad = bytearray(frame)
        bad[6] ^= 1
        self.assertIsNone(L.decode(bytes(bad)))
        self.assertIsNone(L.decode(frame[:-1]))
        self.assertIsNone(L.decode(b"\x03\x00"))
        self.assertIsNone(L.decode(frame + b"x"))

    def test_deframer_finds_frames_among_garbage(self):
        d = L.Deframer(limit=300)
        good = [L.cobs_encode(L.encode(L.DATA, i, bytes((i,)) * 20)) for i in range(5)]
        stream = b"garbage\x00" + good[0] + b"\x05\x01\x02" + good[1] + good[2][:7]
        frames = d.feed(stream)
        frames += d.feed(good[2][7:] + b"\xff" * 1000 + b"\x00" + good[3] + good[4])
        # Garbage costs at most the frame it runs into (1 here); the parser resynchronises.
        self.assertEqual([f[1] for f in frames], [0, 2, 3, 4])
        self.assertTrue(d.bad >= 3)

    def test_fuzzed_frame_parser(self):
        rng = Rng(5)
        d = L.Deframer(limit=200)
        valid = L.cobs_encode(L.encode(L.ACK, 9, b"12345678"))
        seen = 0
        for trial in range(600):
            n = rng.below(120)
            junk = bytes(rng.below(256) if rng.below(4) else 0 for _ in range(n))
            if trial % 5 == 0:
                junk = bytearray(valid)
                junk[rng.below(len(junk))] ^= 1 << rng.below(8)
                junk = bytes(junk)
            for frame in d.feed(junk):
                seen += 1
                self.assertEqual(len(frame), 3)
        frames = d.feed(b"\x00" + valid)
        self.assertEqual(frames[-1], (L.ACK, 9, b"12345678"))


def start(dev, package, chunk=64, window=8):
    pid = hashlib.sha256(package).digest()[:4]
    return dev.host.send(L.START, 0, struct.pack("<I4sHBH", len(package), pid, chunk, window, 200))


class Window(unittest.TestCase):
    def test_ack_says_what_is_missing(self):
        dev = Device()
        pkg = fixture("v1_v2.mfu")
        start(dev, pkg)
        for i in (0, 2, 3):
            replies = dev.host.send(L.DATA, i, pkg[i * 64:(i + 1) * 64])
        acks = dev.host.acks(replies) or dev.host.acks(dev.host.send(L.DATA | L.ACK_REQUEST, 3, pkg[192:256]))
        bitmap, held, next_seq = acks[-1]
        self.assertEqual(next_seq, 1)
        self.assertEqual(bitmap & 0b11, 0b11)         # chunks 2 and 3 are held, waiting for 1

    def test_frames_beyond_the_window_are_dropped(self):
        dev = Device()
        pkg = fixture("v1_v2.mfu")
        start(dev, pkg, window=2)
        dev.host.send(L.DATA, 5, pkg[5 * 64:6 * 64])
        self.assertEqual(dev.rx.pending, {})

    def test_wrong_sized_chunks_are_ignored(self):
        dev = Device()
        pkg = fixture("v1_v2.mfu")
        start(dev, pkg)
        dev.host.send(L.DATA, 0, pkg[:63])
        self.assertEqual(dev.rx.next, 0)

    def test_parity_rebuilds_a_lost_chunk(self):
        dev = Device()
        pkg = fixture("v1_v2.mfu")
        chunk = 64
        n = (len(pkg) + chunk - 1) // chunk
        start(dev, pkg, chunk)
        for first in range(0, n, 4):
            count = min(4, n - first)
            xor = bytearray(chunk)
            for i in range(first, first + count):
                part = pkg[i * chunk:(i + 1) * chunk]
                for j in range(len(part)):
                    xor[j] ^= part[j]
                if i != first + 1:                  # one chunk of every group is lost
                    dev.host.send(L.DATA, i, part)
            dev.host.send(L.PARITY, first, bytes((count,)) + bytes(xor))
        self.assertEqual(dev.rx.recovered, len([f for f in range(0, n, 4) if f + 1 < n]))
        self.assertEqual(dev.rx.next, n)
        code, message = result(dev.host.send(L.INSTALL, 0, hashlib.sha256(pkg).digest()[:4]))
        self.assertEqual(code, mf_ota.INSTALLED, message)
        self.assertEqual(read(dev.model), V2)


class HostileFrames(unittest.TestCase):
    def test_random_frames_never_crash_the_receiver(self):
        dev = Device()
        rng = Rng(9)
        kinds = (L.HELLO, L.START, L.DATA, L.PARITY, L.INSTALL, L.ROLLBACK, L.ABORT, L.PING, 0x33, 0xC3)
        for trial in range(400):
            kind = kinds[rng.below(len(kinds))] | (L.ACK_REQUEST if rng.below(2) else 0)
            payload = bytes(rng.below(256) for _ in range(rng.below(80)))
            if kind & ~L.ACK_REQUEST == L.START and rng.below(2):
                payload = struct.pack("<I4sHBH", rng.below(5000), payload[:4] + bytes(4 - len(payload[:4])),
                                      rng.below(300), rng.below(40), rng.below(300))
            replies = dev.host.send(kind, rng.below(65536), payload)
            for r in replies:
                self.assertIn(r[0], (L.STATUS, L.ACCEPT, L.ACK, L.RESULT, L.PONG))
        self.assertEqual(read(dev.model), V1)
        # And the device still takes a real update afterwards.
        code, message = dev.host.push(fixture("v1_v2.mfu"))[0]
        self.assertEqual(code, mf_ota.INSTALLED, message)

    def test_status_fits_a_lora_frame(self):
        dev = Device()
        replies = dev.host.send(L.HELLO, 0, b"model")
        kind, _, payload = replies[-1]
        self.assertEqual(kind, L.STATUS)
        self.assertTrue(len(payload) <= 40)
        self.assertEqual(payload[-5:], b"model")
