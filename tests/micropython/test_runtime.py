import json
import unittest

from mf_anomaly import Reconstruction
from mf_queue import ALERT, EVENT, TELEMETRY
from mf_runtime import Runtime, default_input
from mf_simhal import SimHAL, SimLink
from mf_testkit import StubModel, scratch


def lane(rt, n):
    return [json.loads(r[2]) for r in rt.queue.peek(10000, n)]


class Wiring(unittest.TestCase):
    def test_default_input_clamps_to_int8(self):
        self.assertEqual(default_input({"a": 3.6, "b": -300, "c": 500}, ("a", "b", "c")), b"\x04\x80\x7f")

    def test_telemetry_summaries_and_health(self):
        hal = SimHAL()
        hal.set_sensor("vib", lambda ms, rng: ms / 1000)
        rt = Runtime(hal, models=[StubModel("net", hal, 5)], signals=("vib",), queue_path=scratch("rt"),
                     telemetry_every=5, health_ms=10000)
        rt.run(until_ms=20000)
        self.assertEqual(rt.runs, 20)
        tele = [r for r in lane(rt, TELEMETRY) if r["type"] == "telemetry"]
        health = [r for r in lane(rt, TELEMETRY) if r["type"] == "health"]
        self.assertEqual(len(tele), 4)
        self.assertEqual(tele[0]["vib"], [2.0, 0.0, 4.0])  # mean, min, max of 0..4 s
        self.assertEqual(tele[0]["model"], "primary")
        self.assertEqual(len(health), 2)
        self.assertTrue(health[-1]["inferences"] >= 10)

    def test_inference_failures_are_reported_not_fatal(self):
        hal = SimHAL()
        hal.set_sensor("x", 1)
        broken = StubModel("broken")
        broken.failing = True
        rt = Runtime(hal, models=[broken], signals=("x",), queue_path=scratch("rt"))
        rt.run(until_ms=3000)
        self.assertEqual(rt.inference_errors, 3)
        events = lane(rt, EVENT)
        self.assertEqual([e["kind"] for e in events], ["inference_failed"] * 3)

    def test_reconstruction_anomalies_raise_an_alert(self):
        hal = SimHAL()
        hal.set_sensor("x", lambda ms, rng: 10)
        bad = StubModel("ae", output=b"\x50")  # reconstructs 10 as 80
        rt = Runtime(hal, models=[bad], signals=("x",), queue_path=scratch("rt"), recon=Reconstruction(100.0))
        rt.run(until_ms=15000)
        alerts = lane(rt, ALERT)
        self.assertEqual(len(alerts), 1)
        self.assertEqual(alerts[0]["signals"], ["reconstruction"])

    def test_uplink_through_sync(self):
        hal = SimHAL()
        hal.set_sensor("x", 1)
        link = SimLink(hal)
        rt = Runtime(hal, signals=("x",), link=link, queue_path=scratch("rt"), telemetry_every=1)
        rt.run(until_ms=120000)
        self.assertTrue(len(link.store) >= 60)
        self.assertTrue(rt.queue.pending() <= 60)
        self.assertEqual(link.after_ack, 0)
