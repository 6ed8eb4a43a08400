import unittest

from mf_queue import Queue, ALERT, TELEMETRY
from mf_simhal import SimHAL, SimLink
from mf_sync import Sync
from mf_testkit import scratch


def setup(online=True, **link_kw):
    hal = SimHAL(seed=5)
    q = Queue(scratch("sync"), fs=hal, capacity=32768, segment=1024)
    link = SimLink(hal, online=online, **link_kw)
    return hal, q, link


class Backoff(unittest.TestCase):
    def test_delays_double_up_to_the_cap_with_jitter(self):
        hal, q, link = setup()
        s = Sync(q, link, hal.ms, hal.rand, base_ms=1000, max_ms=60000)
        for failures, full in ((1, 1000), (2, 2000), (3, 4000), (6, 32000), (7, 60000), (30, 60000)):
            delays = [s.delay_ms(failures) for _ in range(50)]
            self.assertTrue(min(delays) >= full // 2, (failures, min(delays)))
            self.assertTrue(max(delays) <= full)
            self.assertTrue(len(set(delays)) > 10)  # jittered

    def test_waits_while_backing_off(self):
        hal, q, link = setup(online=False)
        q.put(b"x", ALERT)
        events = []
        s = Sync(q, link, hal.ms, hal.rand, base_ms=1000, max_ms=8000, on_event=events.append)
        attempts = []
        while hal.ms() < 120000:
            before = link.failures
            s.poll()
            if link.failures != before:
                attempts.append(hal.ms())
            hal.sleep_ms(100)
        gaps = [b - a for a, b in zip(attempts, attempts[1:])]
        self.assertTrue(gaps[0] >= 500 and gaps[1] >= 1000 and gaps[2] >= 2000)
        self.assertTrue(all(g <= 8100 for g in gaps))
        self.assertTrue(len(attempts) < 25)
        self.assertEqual([e["kind"] for e in events], ["uplink_down"])
        link.online = True
        hal.sleep_ms(9000)
        self.assertEqual(s.poll(), 1)
        self.assertEqual(events[-1]["kind"], "uplink_up")
        self.assertEqual(s.failures, 0)


class Delivery(unittest.TestCase):
    def test_everything_once_in_batches(self):
        hal, q, link = setup()
        for i in range(100):
            q.put(b"t%d" % i, TELEMETRY if i % 5 else ALERT)
        s = Sync(q, link, hal.ms, hal.rand, batch=8)
        self.assertEqual(s.poll(), 100)
        self.assertEqual(sorted(link.store), list(range(1, 101)))
        self.assertEqual(link.resent, 0)
        self.assertEqual(q.pending(), 0)
        self.assertEqual(link.batches, 13 + 0)

    def test_lost_acks_resend_but_never_after_an_ack(self):
        hal, q, link = setup(loss=0.2, ack_loss=0.3)
        for i in range(200):
            q.put(b"r%d" % i)
        s = Sync(q, link, hal.ms, hal.rand, batch=10, base_ms=100, max_ms=1000)
        while q.pending() and hal.ms() < 3600000:
            s.poll()
            hal.sleep_ms(500)
        self.assertEqual(q.pending(), 0)
        self.assertEqual(sorted(link.store), list(range(1, 201)))
        self.assertTrue(link.resent > 0)  # some acks were lost: at-least-once
        self.assertEqual(link.after_ack, 0)

    def test_link_errors_are_failures(self):
        hal, q, link = setup()

        class Broken:
            def send(self, records):
                raise OSError(113)

        q.put(b"x")
        s = Sync(q, Broken(), hal.ms, hal.rand)
        self.assertEqual(s.poll(), 0)
        self.assertEqual(s.failures, 1)
        self.assertEqual(q.pending(), 1)
        self.assertTrue("113" in s.last_error)
