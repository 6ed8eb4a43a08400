import json
import unittest

from mf_fallback import FallbackChain
from mf_health import Health
from mf_power import PowerManager
from mf_queue import Queue
from mf_simhal import SimHAL
from mf_testkit import StubModel, scratch


class Snapshot(unittest.TestCase):
    def test_all_fields(self):
        hal = SimHAL(battery_pct=64, temperature=41.25, fs_free=123456)
        chain = FallbackChain([StubModel("net", hal, 12)], hal.ms)
        pm = PowerManager(hal)
        pm.update()
        q = Queue(scratch("h"), fs=hal, capacity=8192, segment=512)
        q.put(b"x")
        h = Health(hal, chain=chain, power=pm, queue=q)
        chain.invoke(b"a")
        chain.invoke(b"b")
        hal.sleep_ms(90500)
        snap = h.snapshot()
        for key in ("mem_free", "mem_alloc", "fs_free", "temp_c", "battery_pct", "inferences", "errors",
                    "latency_ms", "latency_max_ms", "profile", "thermal", "model", "uptime_s", "reset", "queued"):
            self.assertTrue(key in snap, key)
        self.assertEqual(snap["fs_free"], 123456)
        self.assertEqual(snap["temp_c"], 41.2)
        self.assertEqual(snap["inferences"], 2)
        self.assertEqual(snap["latency_ms"], 12)
        self.assertEqual(snap["model"], "net")
        self.assertEqual(snap["profile"], "performance")
        self.assertEqual(snap["uptime_s"], 90)
        self.assertEqual(snap["reset"], "power_on")
        self.assertEqual(snap["queued"], 1)
        self.assertTrue(snap["mem_free"] > 0)
        self.assertEqual(json.loads(h.record())["model"], "net")

    def test_without_a_chain(self):
        hal = SimHAL()
        h = Health(hal)
        h.note_inference(10)
        h.note_inference(30, ok=False)
        snap = h.snapshot()
        self.assertEqual((snap["inferences"], snap["errors"], snap["latency_ms"], snap["latency_max_ms"]),
                         (2, 1, 20, 30))
