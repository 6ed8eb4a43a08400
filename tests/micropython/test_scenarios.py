# Whole-device scenarios on the simulated board: a week offline, power cuts, a draining battery,
# heat, and a burst of anomalies.
import json
import unittest

from mf_anomaly import Reconstruction
from mf_queue import Queue, ALERT, EVENT, TELEMETRY
from mf_runtime import Runtime
from mf_sched import Scheduler
from mf_power import PowerManager
from mf_fallback import FallbackChain
from mf_simhal import SimHAL, SimLink, PowerCut, Rng
from mf_testkit import StubModel, scratch

MINUTE = 60000
HOUR = 60 * MINUTE
DAY = 24 * HOUR
WEEK = 7 * DAY

# Slow rates, so that a week is ten thousand wakes.
SLOW_PROFILES = {
    "performance": {"infer_ms": MINUTE, "poll_ms": 10000, "uplink_ms": 15 * MINUTE},
    "balanced": {"infer_ms": 3 * MINUTE, "poll_ms": 30000, "uplink_ms": HOUR},
    "power_saver": {"infer_ms": 10 * MINUTE, "poll_ms": 60000, "uplink_ms": 4 * HOUR},
    "critical": {"infer_ms": None, "poll_ms": None, "uplink_ms": None},
}


def sensor(base, noise, anomalies=(), jump=0.0):
    """A noisy signal; during each (start, end) window of `anomalies` it is off by `jump`."""
    def read(ms, rng):
        v = base + noise * rng.gauss()
        for start, end in anomalies:
            if start <= ms < end:
                return v + jump
        return v
    return read


def models(hal):
    return [StubModel("ae-primary", hal, 40), StubModel("ae-fallback", hal, 15), StubModel("ae-minimal", hal, 4)]


class Recorder:
    """Remembers what the runtime put into its queue: (seq, lane, payload)."""

    def __init__(self, queue):
        self.puts = []
        put = queue.put

        def recording_put(payload, lane=TELEMETRY):
            seq = put(payload, lane)
            if seq is not None:
                self.puts.append((seq, lane, payload))
            return seq

        queue.put = recording_put

    def seqs(self, lane):
        return [p[0] for p in self.puts if p[1] == lane]


class OfflineWeek(unittest.TestCase):
    ANOMALIES = [(d * DAY + h * HOUR, d * DAY + h * HOUR + 3 * MINUTE) for d, h in
                 ((0, 9), (1, 14), (2, 3), (3, 22), (4, 11), (5, 6), (6, 17))]

    def week(self, capacity, seed, loss=0.0):
        hal = SimHAL(seed=seed, capacity_mah=3000)
        hal.set_sensor("vib", sensor(1.0, 0.05, self.ANOMALIES, 1.5))
        hal.set_sensor("current", sensor(2.0, 0.1, self.ANOMALIES, 2.0))
        hal.set_sensor("temp", sensor(40.0, 0.3))
        link = SimLink(hal, online=lambda ms: ms >= WEEK, loss=loss, ack_loss=loss)
        rt = Runtime(hal, models=models(hal), signals=("vib", "current", "temp"), link=link,
                     queue_path=scratch("week"), recon=Reconstruction(0.5), telemetry_every=10, health_ms=2 * HOUR,
                     queue={"capacity": capacity, "segment": 2048}, power={"profiles": SLOW_PROFILES},
                     alerts={"dedup_ms": HOUR}, zscore={"alpha": 0.01, "threshold": 5.0, "warmup": 60})
        rec = Recorder(rt.queue)
        rt.run(until_ms=WEEK)
        self.assertEqual(link.batches, 0)  # offline all week
        self.assertTrue(rt.sync.failed_attempts > 0)
        # Back online: sync drains the queue over the next hours.
        rt.run(until_ms=WEEK + 6 * HOUR)
        # And whatever the last few runs queued since the last uplink, through the backoff.
        while rt.queue.pending() and hal.ms() < WEEK + 8 * HOUR:
            rt.sync.poll()
            hal.sleep_ms(1000)
        return hal, rt, link, rec

    def check_delivery(self, rt, link, rec):
        store = link.store
        self.assertEqual(link.after_ack, 0)
        # Whatever was queued and not evicted arrived, byte for byte, exactly once acked.
        for seq, lane, payload in rec.puts:
            if seq in store:
                self.assertEqual(store[seq], (lane, payload))
        self.assertEqual(rt.queue.pending(), 0)

    def test_a_week_offline_loses_nothing_within_capacity(self):
        hal, rt, link, rec = self.week(capacity=400 * 1024, seed=11)
        self.check_delivery(rt, link, rec)
        self.assertEqual(link.resent, 0)  # a clean link: every record crossed exactly once
        self.assertEqual(rt.queue.stats()["evicted"], [0, 0, 0])
        self.assertEqual(sorted(link.store), sorted(p[0] for p in rec.puts))
        alerts = [json.loads(p) for s, lane, p in rec.puts if lane == ALERT]
        # One alert per injected fault, each correlating vibration and current.
        self.assertEqual(len(alerts), len(self.ANOMALIES), alerts)
        for a in alerts:
            self.assertTrue("vib" in a["signals"] and "current" in a["signals"], a)
        telemetry = rec.seqs(TELEMETRY)
        self.assertTrue(len(telemetry) > 1000)

    def test_a_week_offline_beyond_capacity_evicts_old_telemetry_only(self):
        # The link comes back lossy: batches and acks get lost, records are sent again, but
        # never after their ack reached the board, and the server ends up with each one.
        hal, rt, link, rec = self.week(capacity=48 * 1024, seed=12, loss=0.2)
        self.check_delivery(rt, link, rec)
        self.assertTrue(link.resent > 0)
        stats = rt.queue.stats()
        self.assertTrue(stats["evicted"][TELEMETRY] > 0)
        self.assertEqual(stats["evicted"][EVENT], 0)
        self.assertEqual(stats["evicted"][ALERT], 0)
        for lane in (EVENT, ALERT):
            self.assertEqual([s for s in rec.seqs(lane) if s not in link.store], [])
        # Telemetry lost is the oldest: all of it queued before the first one delivered.
        telemetry = rec.seqs(TELEMETRY)
        lost = [s for s in telemetry if s not in link.store]
        self.assertEqual(lost, telemetry[:len(lost)])
        self.assertEqual(len(lost), stats["evicted"][TELEMETRY])
        self.assertEqual(len(rec.seqs(ALERT)), len(self.ANOMALIES))


class PowerCuts(unittest.TestCase):
    TAILS = (b"", b"\xff" * 16, b"\x00" * 5, None)

    def run_seed(self, seed, capacity=256 * 1024):
        rng = Rng(seed)
        hal = SimHAL(seed=seed)
        path = scratch("cut")
        q = Queue(path, fs=hal, capacity=capacity, segment=512)
        committed = {}    # seq -> (lane, payload): put() returned
        acked = set()     # ack() returned
        maybe = {}        # seq -> (lane, payload): put() cut short, may or may not exist
        maybe_acked = set()
        for cycle in range(4):
            tail = self.TAILS[rng.below(len(self.TAILS))]
            if tail is None:
                tail = bytes(rng.below(256) for _ in range(rng.below(12)))
            hal.cut_power_after(rng.below(3000), tail)
            try:
                for _ in range(400):
                    op = rng.below(10)
                    if op < 7:
                        lane = rng.below(3)
                        body = bytes(rng.below(256) for _ in range(1 + rng.below(60)))
                        maybe = {q.next_seq: (lane, body)}
                        seq = q.put(body, lane)
                        maybe = {}
                        if seq is not None:
                            committed[seq] = (lane, body)
                    else:
                        batch = q.peek(1 + rng.below(8))
                        maybe_acked = set(r[0] for r in batch)
                        q.ack(batch)
                        acked.update(maybe_acked)
                        maybe_acked = set()
            except PowerCut:
                pass
            hal.power_on()
            if rng.below(3) == 0:  # and a cut while recovering
                hal.cut_power_after(rng.below(40))
                try:
                    Queue(path, fs=hal, capacity=capacity, segment=512)
                except PowerCut:
                    pass
                hal.power_on()
            q = Queue(path, fs=hal, capacity=capacity, segment=512)
            # Everything on flash is whole, belongs to what was written, and was not acked.
            seen = set()
            for lane in range(3):
                last = 0
                for seq, rec_lane, payload in q.peek(100000, lane):
                    self.assertTrue(seq > last)
                    last = seq
                    self.assertFalse(seq in acked, "seed %d: acked record %d came back" % (seed, seq))
                    expected = committed.get(seq) or maybe.get(seq)
                    self.assertEqual((rec_lane, payload), expected, "seed %d seq %d" % (seed, seq))
                    seen.add(seq)
            # Nothing committed and not acked is missing (the capacity is never reached here).
            for seq in committed:
                if seq not in acked and seq not in maybe_acked:
                    self.assertTrue(seq in seen, "seed %d: record %d lost" % (seed, seq))
            for seq in maybe_acked:
                if seq not in seen:
                    acked.add(seq)
            maybe = {}
            maybe_acked = set()
            self.assertTrue(q.next_seq > max(list(committed) + [0]))
        return hal.power_cuts

    def test_random_cuts_over_many_seeds_always_recover(self):
        cuts = 0
        for seed in range(1, 101):
            cuts += self.run_seed(seed)
        self.assertTrue(cuts >= 300, cuts)

    def test_random_cuts_while_evicting(self):
        for seed in range(100, 110):
            hal = SimHAL(seed=seed)
            rng = Rng(seed)
            path = scratch("cutev")
            alerts = {}
            for cycle in range(3):
                q = Queue(path, fs=hal, capacity=16 * 512, segment=512)
                hal.cut_power_after(2000 + rng.below(4000), b"\xff\xff")
                try:
                    for i in range(1000):
                        lane = ALERT if rng.below(20) == 0 else TELEMETRY
                        seq = q.put(b"%d-%d" % (cycle, i), lane)
                        if lane == ALERT:
                            alerts[seq] = b"%d-%d" % (cycle, i)
                except PowerCut:
                    pass
                hal.power_on()
            q = Queue(path, fs=hal, capacity=16 * 512, segment=512)
            kept = dict((s, p) for s, lane, p in q.peek(1000, ALERT))
            # Alerts never give way to telemetry: every committed alert is still there.
            for seq in alerts:
                self.assertEqual(kept.get(seq), alerts[seq])
            self.assertTrue(q.total <= q.capacity)


class BatteryDrain(unittest.TestCase):
    def test_walks_the_profiles_in_order_then_hibernates(self):
        hal = SimHAL(capacity_mah=10, active_ma=100, sleep_ma=0.2, battery_noise=0.4, seed=3)
        events = []
        runs = []
        pm = PowerManager(hal, profiles={
            "performance": {"infer_ms": 10000, "poll_ms": 1000, "uplink_ms": None},
            "balanced": {"infer_ms": 30000, "poll_ms": 1000, "uplink_ms": None},
            "power_saver": {"infer_ms": 120000, "poll_ms": 1000, "uplink_ms": None},
            "critical": {"infer_ms": None, "poll_ms": None, "uplink_ms": None},
        }, on_transition=events.append)
        chain = FallbackChain(models(hal), hal.ms)

        def task(now, why):
            chain.set_conditions(pm.thermal_state, pm.profile)
            chain.invoke(b"\x01\x02")
            hal.spend(1000)
            runs.append((now, pm.profile, chain.tier_name()))

        s = Scheduler(hal, task, power=pm, hibernate_ms=HOUR, energy={"capacity_mah": 10, "active_ma": 100,
                                                                      "sleep_ma": 0.2})
        estimates = []
        while s.hibernations < 3 and hal.ms() < 30 * DAY:
            s.step()
            if s.runs and s.runs % 20 == 0:
                estimates.append(s.battery_life_h())
        battery = [(e["from"], e["to"]) for e in events if e["kind"] == "battery"]
        self.assertEqual(battery, [("performance", "balanced"), ("balanced", "power_saver"),
                                   ("power_saver", "critical")])
        # Slower in each profile, and on a cheaper model where the chain says so.
        gaps = {}
        for (t0, p0, _), (t1, p1, _) in zip(runs, runs[1:]):
            if p0 == p1:
                gaps.setdefault(p0, []).append(t1 - t0)
        self.assertTrue(min(gaps["balanced"]) > max(gaps["performance"]))
        self.assertTrue(min(gaps["power_saver"]) > max(gaps["balanced"]))
        self.assertEqual(set(tier for _, p, tier in runs if p == "power_saver"), {"fallback"})
        # Hibernating: no inference after the battery went critical.
        critical_at = [e["t"] for e in events if e["to"] == "critical"][0]
        self.assertTrue(all(t < critical_at for t, _, _ in runs))
        self.assertEqual(hal.deepsleep_count, 3)
        self.assertTrue(estimates[0] > estimates[-1] > 0)


class Heat(unittest.TestCase):
    @staticmethod
    def temperature(ms):
        # Heats from 40 to 80 °C over an hour, holds an hour, cools back over an hour.
        if ms < HOUR:
            return 40 + 40 * ms / HOUR
        if ms < 2 * HOUR:
            return 80
        if ms < 3 * HOUR:
            return 80 - 40 * (ms - 2 * HOUR) / HOUR
        return 40

    def test_switches_to_the_minimal_model_and_back(self):
        hal = SimHAL(temperature=self.temperature)
        hal.set_sensor("vib", sensor(1.0, 0.05))
        rt = Runtime(hal, models=models(hal), signals=("vib",), queue_path=scratch("heat"),
                     power={"profiles": {
                         "performance": {"infer_ms": 10000, "poll_ms": 1000, "uplink_ms": None},
                         "balanced": {"infer_ms": 10000, "poll_ms": 1000, "uplink_ms": None},
                         "power_saver": {"infer_ms": 10000, "poll_ms": 1000, "uplink_ms": None},
                         "critical": {"infer_ms": None, "poll_ms": None, "uplink_ms": None}}})
        rec = Recorder(rt.queue)
        tiers = []
        orig = rt.chain.invoke

        def invoke(data):
            tiers.append((hal.ms(), rt.chain.tier_name(), rt.power.thermal_state))
            return orig(data)

        rt.chain.invoke = invoke
        rt.run(until_ms=4 * HOUR)
        thermal = [(e["from"], e["to"]) for e in rt.power.transitions if e["kind"] == "thermal"]
        self.assertEqual(thermal, [("optimal", "warm"), ("warm", "hot"), ("hot", "critical"),
                                   ("critical", "hot"), ("hot", "warm"), ("warm", "optimal")])
        order = []
        for _, tier, _ in tiers:
            if not order or order[-1] != tier:
                order.append(tier)
        self.assertEqual(order, ["primary", "minimal", "primary"])
        self.assertTrue(all(tier == "minimal" for _, tier, state in tiers if state == "critical"))
        self.assertTrue(all(tier == "primary" for _, tier, state in tiers if state != "critical"))
        # Throttled while hot: 4x the period.
        hot = [t for t, _, state in tiers if state == "hot"]
        self.assertEqual(min(b - a for a, b in zip(hot, hot[1:])), 40000)
        # Each transition and model switch was reported into the queue.
        events = [json.loads(p) for s, lane, p in rec.puts if lane == EVENT]
        self.assertEqual(len([e for e in events if e["kind"] == "thermal"]), 6)
        self.assertEqual([(e["from"], e["to"]) for e in events if e["kind"] == "model"],
                         [("primary", "minimal"), ("minimal", "primary")])

    def test_overheating_shuts_down_and_comes_back(self):
        hal = SimHAL(temperature=lambda ms: 90 if HOUR <= ms < 2 * HOUR else 40)
        hal.set_sensor("vib", sensor(1.0, 0.05))
        rt = Runtime(hal, models=models(hal), signals=("vib",), queue_path=scratch("hot"),
                     sched={"cooldown_ms": 10 * MINUTE})
        rt.run(until_ms=3 * HOUR)
        self.assertEqual(rt.sched.shutdowns, 6)
        self.assertEqual(rt.power.thermal_state, "optimal")
        self.assertTrue(rt.runs > 0)


class AlertBurst(unittest.TestCase):
    def test_a_burst_of_correlated_anomalies_is_one_alert(self):
        hal = SimHAL(seed=8)
        burst = [(30 * MINUTE, 30 * MINUTE + 45000)]
        hal.set_sensor("vib", sensor(1.0, 0.05, burst, 2.0))
        hal.set_sensor("current", sensor(2.0, 0.1, burst, 3.0))
        hal.set_sensor("temp", sensor(40.0, 0.2, burst, 5.0))
        rt = Runtime(hal, models=models(hal), signals=("vib", "current", "temp"), queue_path=scratch("burst"))
        rec = Recorder(rt.queue)
        rt.run(until_ms=2 * HOUR)
        alerts = [json.loads(p) for s, lane, p in rec.puts if lane == ALERT]
        self.assertEqual(len(alerts), 1, alerts)
        self.assertEqual(alerts[0]["signals"], ["current", "temp", "vib"])
        self.assertEqual(alerts[0]["sev"], "critical")
        self.assertTrue(rt.alerts.findings >= 3 * 40)  # 45 s of findings on three signals
        self.assertEqual(rt.alerts.stats()["raised"], 1)
