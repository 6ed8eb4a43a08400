import unittest

from mf_power import PowerManager
from mf_sched import FrameDiffTrigger, Scheduler, ThresholdTrigger
from mf_simhal import SimHAL


class Triggers(unittest.TestCase):
    def test_frame_difference(self):
        frames = [bytes([10] * 16), bytes([11] * 16), bytes([10] * 8 + [90] * 8)]
        trig = FrameDiffTrigger(lambda: frames.pop(0), threshold=5)
        self.assertFalse(trig.check())  # no previous frame yet
        self.assertFalse(trig.check())
        self.assertTrue(trig.check())
        self.assertAlmostEqual(trig.last_diff, 40.0)

    def test_frame_difference_with_stride(self):
        frames = [[0] * 10, [0, 100] * 5]
        trig = FrameDiffTrigger(lambda: frames.pop(0), threshold=1, stride=2)
        trig.check()
        self.assertFalse(trig.check())  # only even samples compared, and they did not change

    def test_threshold(self):
        values = [0.1, 0.9, 0.2]
        trig = ThresholdTrigger(lambda: values.pop(0), 0.5)
        self.assertEqual([trig.check() for _ in range(3)], [False, True, False])
        low = ThresholdTrigger(lambda: 3, 5, below=True)
        self.assertTrue(low.check())


class DutyCycle(unittest.TestCase):
    def test_fixed_period(self):
        hal = SimHAL()
        runs = []

        def task(now, reason):
            runs.append((now, reason))
            hal.spend(10)

        s = Scheduler(hal, task, period_ms=1000)
        s.run(until_ms=10000)
        self.assertEqual([t for t, _ in runs], list(range(0, 10000, 1000)))
        self.assertEqual(set(r for _, r in runs), {"period"})
        self.assertAlmostEqual(s.duty_cycle(), 0.01, 3)
        self.assertEqual(s.active_ms + s.asleep_ms, hal.ms())

    def test_battery_life_from_measured_duty_cycle(self):
        hal = SimHAL(capacity_mah=1000, active_ma=50, sleep_ma=0.1)
        s = Scheduler(hal, lambda now, why: hal.spend(20), period_ms=2000,
                      energy={"capacity_mah": 1000, "active_ma": 50, "sleep_ma": 0.1})
        s.run(until_ms=600000)
        duty = s.duty_cycle()
        self.assertAlmostEqual(duty, 0.01, 3)
        expected = 1000 * hal.battery_pct() / 100 / (duty * 50 + (1 - duty) * 0.1)
        self.assertAlmostEqual(s.battery_life_h(), expected, 2)
        # The simulated cell agrees with the estimate: at this rate it drains in ~1667 h.
        self.assertTrue(1500 < s.battery_life_h() < 1700)

    def test_rate_follows_the_power_profile(self):
        hal = SimHAL(battery_pct=80)
        runs = []
        pm = PowerManager(hal)
        s = Scheduler(hal, lambda now, why: runs.append(now), power=pm)
        s.run(until_ms=60000)
        fast = len(runs)
        hal.set_battery(30)
        del runs[:]
        s.run(until_ms=120000)
        self.assertEqual(fast, 60)
        self.assertEqual(len(runs), 12)

    def test_uplink_runs_at_its_own_rate(self):
        hal = SimHAL()
        ups = []
        s = Scheduler(hal, lambda now, why: None, period_ms=1000, uplink=ups.append, uplink_ms=10000)
        s.run(until_ms=60000)
        self.assertEqual(ups, list(range(0, 60000, 10000)))


class MotionTriggered(unittest.TestCase):
    def test_runs_only_on_motion(self):
        hal = SimHAL()
        hal.set_sensor("accel", lambda ms, rng: 2.0 if 30000 <= ms < 31000 else 0.0)
        runs = []
        s = Scheduler(hal, lambda now, why: runs.append((now, why)),
                      trigger=ThresholdTrigger(lambda: hal.read_sensor("accel"), 1.0), period_ms=500, poll_ms=100)
        s.run(until_ms=60000)
        self.assertEqual(len(runs), 2)  # 1 s of motion, at most one run per 500 ms
        self.assertTrue(all(why == "trigger" and 30000 <= t < 31000 for t, why in runs))

    def test_heartbeat_when_quiet(self):
        hal = SimHAL()
        runs = []
        s = Scheduler(hal, lambda now, why: runs.append(why), trigger=ThresholdTrigger(lambda: 0, 1),
                      period_ms=1000, poll_ms=1000, max_quiet_ms=20000)
        s.run(until_ms=60000)
        self.assertEqual(runs, ["heartbeat"] * 3)


class PowerStates(unittest.TestCase):
    def test_flat_battery_hibernates(self):
        hal = SimHAL(battery_pct=3)
        events = []
        s = Scheduler(hal, lambda now, why: self.fail("no inference on a flat battery"), power=PowerManager(hal),
                      on_event=events.append, hibernate_ms=3600000)
        self.assertEqual(s.step(), "hibernated")
        self.assertEqual(hal.deepsleep_count, 1)
        self.assertEqual(hal.ms(), 3600000)
        self.assertEqual(events[0]["kind"], "hibernate")

    def test_overheating_shuts_down_until_cool(self):
        hal = SimHAL(temperature=lambda ms: 90 if ms < 1200000 else 40)
        runs = []
        s = Scheduler(hal, lambda now, why: runs.append(now), power=PowerManager(hal), cooldown_ms=600000)
        self.assertEqual(s.step(), "shut_down")
        self.assertEqual(s.step(), "shut_down")
        self.assertEqual(s.step(), "ran")
        self.assertEqual(runs, [1200000])
        self.assertEqual(s.shutdowns, 2)
