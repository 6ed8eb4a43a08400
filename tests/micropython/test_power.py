import unittest

from mf_power import (BATTERY_BOUNDS, BATTERY_STATES, THERMAL_BOUNDS, THERMAL_STATES, Levels, PowerManager,
                      battery_life_hours)
from mf_simhal import SimHAL


class ThermalLevels(unittest.TestCase):
    def test_bounds_as_specified(self):
        for temp, state in ((20, "optimal"), (54.9, "optimal"), (55, "warm"), (64.9, "warm"), (65, "hot"),
                            (74.9, "hot"), (75, "critical"), (84.9, "critical"), (85, "shutdown"), (120, "shutdown")):
            levels = Levels(THERMAL_STATES, THERMAL_BOUNDS, 0, higher_is_worse=True)
            self.assertEqual(levels.update(temp), state)

    def test_hysteresis_stops_flapping(self):
        levels = Levels(THERMAL_STATES, THERMAL_BOUNDS, 3, higher_is_worse=True)
        seen = [levels.update(t) for t in (50, 55.2, 54.8, 55.1, 54.9, 53.0, 51.9)]
        self.assertEqual(seen, ["optimal", "warm", "warm", "warm", "warm", "warm", "optimal"])

    def test_a_fast_drop_lands_in_the_right_state(self):
        levels = Levels(THERMAL_STATES, THERMAL_BOUNDS, 3, higher_is_worse=True)
        levels.update(90)
        self.assertEqual(levels.update(60), "warm")

    def test_bad_bounds(self):
        self.assertRaises(ValueError, Levels, THERMAL_STATES, (55, 65, 75), 0)
        self.assertRaises(ValueError, Levels, THERMAL_STATES, (55, 50, 75, 85), 0)


class BatteryLevels(unittest.TestCase):
    def test_bounds_as_specified(self):
        for pct, state in ((100, "performance"), (50.1, "performance"), (50, "balanced"), (20.1, "balanced"),
                           (20, "power_saver"), (5.1, "power_saver"), (5, "critical"), (0, "critical")):
            levels = Levels(BATTERY_STATES, BATTERY_BOUNDS, 0, higher_is_worse=False)
            self.assertEqual(levels.update(pct), state)

    def test_charging_needs_the_margin(self):
        levels = Levels(BATTERY_STATES, BATTERY_BOUNDS, 3, higher_is_worse=False)
        seen = [levels.update(p) for p in (30, 19, 21, 22.9, 23.1)]
        self.assertEqual(seen, ["balanced", "power_saver", "power_saver", "power_saver", "balanced"])


class Manager(unittest.TestCase):
    def test_transitions_are_logged_and_reported(self):
        hal = SimHAL(battery_pct=60, temperature=40)
        reported = []
        pm = PowerManager(hal, on_transition=reported.append)
        self.assertEqual(pm.update(), [])
        hal.set_battery(45)
        hal.temperature = 70
        made = pm.update()
        self.assertEqual([(e["kind"], e["from"], e["to"]) for e in made],
                         [("battery", "performance", "balanced"), ("thermal", "optimal", "hot")])
        self.assertEqual(reported, made)
        self.assertEqual(len(pm.transitions), 2)
        self.assertTrue(any("battery performance -> balanced" in line for line in hal.lines))

    def test_rates_follow_profile_and_throttle(self):
        hal = SimHAL(battery_pct=90, temperature=30)
        pm = PowerManager(hal)
        pm.update()
        fast = pm.infer_ms()
        hal.set_battery(30)
        pm.update()
        self.assertTrue(pm.infer_ms() > fast)
        hal.temperature = 70
        pm.update()
        self.assertEqual(pm.throttle(), 4)
        self.assertEqual(pm.infer_ms(), 4 * pm.profiles["balanced"]["infer_ms"])
        hal.set_battery(2)
        pm.update()
        self.assertTrue(pm.should_hibernate())
        self.assertEqual(pm.infer_ms(), None)
        hal.temperature = 90
        pm.update()
        self.assertTrue(pm.should_shut_down())

    def test_configurable_thresholds(self):
        hal = SimHAL(battery_pct=70, temperature=48)
        pm = PowerManager(hal, battery_bounds=(80, 40, 10), thermal_bounds=(45, 60, 70, 80))
        pm.update()
        self.assertEqual((pm.profile, pm.thermal_state), ("balanced", "warm"))

    def test_missing_sensors_keep_the_state(self):
        class NoSensors(SimHAL):
            def battery_pct(self):
                return None

            def temperature_c(self):
                return None

        pm = PowerManager(NoSensors())
        self.assertEqual(pm.update(), [])
        self.assertEqual((pm.profile, pm.thermal_state), ("performance", "optimal"))


class BatteryLife(unittest.TestCase):
    def test_estimate(self):
        # 2000 mAh full, awake 1 % of the time at 40 mA, 0.5 mA asleep: 0.895 mA average.
        hours = battery_life_hours(100, 2000, 0.01, 40, 0.5)
        self.assertAlmostEqual(hours, 2000 / 0.895, 3)
        self.assertAlmostEqual(battery_life_hours(50, 2000, 1.0, 40, 0.5), 25.0)
