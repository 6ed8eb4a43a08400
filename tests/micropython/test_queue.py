import os
import unittest

import mf_queue
from mf_queue import Queue, TELEMETRY, EVENT, ALERT, decode_records, encode_record
from mf_simhal import SimHAL, PowerCut
from mf_testkit import scratch


def payload(i, size=20):
    body = ("r%06d-" % i).encode()
    return (body * (size // len(body) + 1))[:size]


def drain(q, batch=7):
    got = []
    while True:
        recs = q.peek(batch)
        if not recs:
            return got
        got.extend(recs)
        q.ack(recs)


class RecordFormat(unittest.TestCase):
    def test_round_trip(self):
        data = encode_record(2, 77, b"hello") + encode_record(2, 78, b"")
        records, end = decode_records(data, 2)
        self.assertEqual(records, [(77, b"hello"), (78, b"")])
        self.assertEqual(end, len(data))

    def test_every_truncation_yields_only_whole_records(self):
        data = encode_record(0, 1, b"first") + encode_record(0, 2, b"second record")
        for cut in range(len(data) + 1):
            records, end = decode_records(data[:cut], 0)
            whole = 0 if cut < 17 else (1 if cut < len(data) else 2)
            self.assertEqual(len(records), whole)
            self.assertTrue(end <= cut)

    def test_a_flipped_bit_stops_the_scan(self):
        data = bytearray(encode_record(0, 1, b"abc") + encode_record(0, 2, b"def"))
        data[len(data) - 6] ^= 0x10
        records, _ = decode_records(bytes(data), 0)
        self.assertEqual(records, [(1, b"abc")])

    def test_wrong_lane_or_falling_seq_rejected(self):
        self.assertEqual(decode_records(encode_record(1, 5, b"x"), 0)[0], [])
        data = encode_record(0, 5, b"x") + encode_record(0, 4, b"y")
        self.assertEqual(decode_records(data, 0)[0], [(5, b"x")])


class Basics(unittest.TestCase):
    def setUp(self):
        self.hal = SimHAL()
        self.dir = scratch("q")

    def open(self, **kw):
        kw.setdefault("capacity", 16384)
        kw.setdefault("segment", 512)
        return Queue(self.dir, fs=self.hal, **kw)

    def test_put_peek_ack(self):
        q = self.open()
        seqs = [q.put(payload(i)) for i in range(5)]
        self.assertEqual(seqs, [1, 2, 3, 4, 5])
        recs = q.peek(3)
        self.assertEqual([r[0] for r in recs], [1, 2, 3])
        self.assertEqual(recs[0][2], payload(0))
        q.ack(recs)
        self.assertEqual([r[0] for r in q.peek(10)], [4, 5])
        self.assertEqual(q.pending(), 2)

    def test_alerts_are_delivered_first(self):
        q = self.open()
        q.put(b"t1", TELEMETRY)
        q.put(b"a1", ALERT)
        q.put(b"e1", EVENT)
        q.put(b"a2", ALERT)
        got = drain(q, batch=10)
        self.assertEqual([r[2] for r in got], [b"a1", b"a2", b"e1", b"t1"])

    def test_str_payload_and_limits(self):
        q = self.open()
        q.put("text")
        self.assertEqual(q.peek(1)[0][2], b"text")
        self.assertRaises(ValueError, q.put, b"x" * 600)
        self.assertRaises(ValueError, q.put, b"x", 3)

    def test_capacity_must_hold_two_segments_per_lane(self):
        self.assertRaises(ValueError, Queue, self.dir, self.hal, 1000, 512)

    def test_survives_reopen(self):
        q = self.open()
        for i in range(30):
            q.put(payload(i), i % 3)
        first = q.peek(4)
        q.ack(first)
        q.close()
        q2 = self.open()
        self.assertEqual(q2.pending(), 26)
        self.assertEqual(q2.next_seq, 31)
        rest = drain(q2)
        self.assertEqual(len(rest), 26)
        self.assertEqual(set(r[0] for r in rest) & set(r[0] for r in first), set())
        self.assertEqual(q2.stats()["segments"], 0)
        q2.put(b"after")
        self.assertEqual(q2.peek(1)[0][0], 31)

    def test_acked_records_never_come_back_after_reboot(self):
        q = self.open()
        for i in range(50):
            q.put(payload(i))
        delivered = set()
        for _ in range(3):
            recs = q.peek(10)
            q.ack(recs)
            delivered.update(r[0] for r in recs)
            q.close()
            q = self.open()
        for r in drain(q):
            self.assertFalse(r[0] in delivered)
            delivered.add(r[0])
        self.assertEqual(delivered, set(range(1, 51)))

    def test_segments_roll_and_are_removed_when_acked(self):
        q = self.open()
        for i in range(60):
            q.put(payload(i, 40))
        self.assertTrue(q.stats()["segments"] > 3)
        drain(q)
        self.assertEqual([n for n in os.listdir(self.dir) if n.endswith(".seg")], [])

    def test_state_log_compacts(self):
        q = self.open()
        for i in range(200):
            q.put(payload(i, 4))
            q.ack(q.peek(1))
        states = [n for n in os.listdir(self.dir) if n.startswith("state.")]
        self.assertEqual(len(states), 1)
        self.assertTrue(os.stat(self.dir + "/" + states[0])[6] <= mf_queue.STATE_COMPACT_BYTES + 16)
        q.close()
        self.assertEqual(self.open().next_seq, 201)

    def test_seq_never_reused_after_everything_is_acked(self):
        q = self.open()
        for i in range(5):
            q.put(payload(i))
        drain(q)
        q.close()
        self.assertEqual(self.open().put(b"x"), 6)

    def test_plain_os_files_without_a_hal(self):
        q = Queue(scratch("os"), capacity=8192, segment=512)
        q.put(b"abc", ALERT)
        self.assertEqual(q.peek(), [(1, ALERT, b"abc")])


class Eviction(unittest.TestCase):
    def setUp(self):
        self.hal = SimHAL()
        self.dir = scratch("ev")

    def open(self):
        return Queue(self.dir, fs=self.hal, capacity=6 * 512, segment=512)

    def test_oldest_telemetry_goes_first(self):
        q = self.open()
        alerts = [q.put(payload(i), ALERT) for i in range(10)]
        tele = [q.put(payload(i)) for i in range(200)]
        st = q.stats()
        self.assertTrue(st["bytes"] <= q.capacity)
        self.assertTrue(st["evicted"][TELEMETRY] > 0)
        self.assertEqual(st["evicted"][ALERT], 0)
        got = drain(q, batch=50)
        seqs = [r[0] for r in got if r[1] == TELEMETRY]
        self.assertEqual([r[0] for r in got if r[1] == ALERT], alerts)
        # What is left of the telemetry is its newest, contiguous run.
        self.assertEqual(seqs, tele[len(tele) - len(seqs):])
        self.assertEqual(len(seqs) + st["evicted"][TELEMETRY], len(tele))

    def test_alerts_evict_telemetry_then_events_never_the_reverse(self):
        q = self.open()
        for i in range(40):
            q.put(payload(i), EVENT)
        for i in range(40):
            q.put(payload(i), TELEMETRY)
        for i in range(80):
            q.put(payload(i), ALERT)
        st = q.stats()
        self.assertEqual(st["evicted"][ALERT], 0)
        self.assertEqual(st["pending"][TELEMETRY], 0)
        self.assertTrue(st["evicted"][EVENT] > 0)

    def test_a_full_queue_of_alerts_refuses_telemetry(self):
        q = self.open()
        n = 0
        while q.total + 20 + mf_queue.OVERHEAD <= q.capacity:
            q.put(payload(n), ALERT)
            n += 1
        self.assertEqual(q.put(payload(0), TELEMETRY), None)
        self.assertEqual(q.stats()["dropped"][TELEMETRY], 1)
        self.assertEqual(q.stats()["evicted"][ALERT], 0)
        # Telemetry already queued is evicted by telemetry, oldest first, never refused.
        # A new alert still goes in, evicting the oldest alerts.
        self.assertTrue(q.put(b"new alert", ALERT) is not None)
        self.assertTrue(q.stats()["evicted"][ALERT] > 0)
        self.assertEqual(q.peek(1000)[-1][2], b"new alert")

    def test_eviction_counts_survive_reboot(self):
        q = self.open()
        for i in range(300):
            q.put(payload(i))
        evicted = q.stats()["evicted"][TELEMETRY]
        q.close()
        q2 = self.open()
        self.assertEqual(q2.stats()["evicted"][TELEMETRY], evicted)
        self.assertEqual(q2.pending() + evicted, 300)

    def test_reserve_of_free_space(self):
        hal = SimHAL(fs_free=1000)
        q = Queue(scratch("rs"), fs=hal, capacity=8192, segment=512, reserve=2000)
        self.assertEqual(q.put(b"x", ALERT), None)


class TornWrites(unittest.TestCase):
    def setUp(self):
        self.hal = SimHAL()
        self.dir = scratch("tw")

    def open(self):
        return Queue(self.dir, fs=self.hal, capacity=16384, segment=512)

    def cut_during_put(self, q, at, tail=b""):
        self.hal.cut_power_after(at, tail)
        try:
            q.put(payload(999, 30), EVENT)
        except PowerCut:
            self.hal.power_on()
            return True
        self.hal.power_on()
        return False

    def test_cut_at_every_byte_of_a_record(self):
        for tail in (b"", b"\xff" * 8, b"\x00\xa5\x01"):
            for at in range(0, 44):
                self.setUp()
                q = self.open()
                for i in range(3):
                    q.put(payload(i), EVENT)
                cut = self.cut_during_put(q, at, tail)
                q2 = self.open()
                got = drain(q2)
                self.assertEqual([r[2] for r in got[:3]], [payload(i) for i in range(3)])
                if cut:
                    self.assertTrue(len(got) in (3, 4))
                for r in got[3:]:
                    self.assertEqual(r[2], payload(999, 30))
                # And the queue keeps working after the cut.
                s = q2.put(b"next", EVENT)
                self.assertEqual(q2.peek(5), [(s, EVENT, b"next")])

    def test_records_after_a_torn_tail_go_to_a_new_segment(self):
        q = self.open()
        q.put(payload(1), TELEMETRY)
        self.assertTrue(self.cut_during_put(q, 5, b"junk"))
        q2 = self.open()
        self.assertEqual(q2.torn, 1)
        # The event segment held no whole record: it is gone.
        self.assertEqual([n for n in os.listdir(self.dir) if n.startswith("1_")], [])
        self.hal.cut_power_after(40, b"\x13\x37")
        try:
            q2.put(payload(2, 60), TELEMETRY)
        except PowerCut:
            pass
        self.hal.power_on()
        q3 = self.open()
        self.assertEqual(q3.torn, 1)
        q3.put(b"fresh", TELEMETRY)
        self.assertEqual(len([n for n in os.listdir(self.dir) if n.startswith("0_")]), 2)
        got = drain(q3)
        self.assertEqual([r[2] for r in got], [payload(1), b"fresh"])
        q3.close()
        self.assertEqual(self.open().pending(), 0)
