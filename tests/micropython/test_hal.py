import os
import sys
import unittest

import mf_hal
from mf_hal import HAL, LIPO_CURVE, interpolate
from mf_simhal import SimHAL, PowerCut, Rng
from mf_testkit import scratch


class FakeMachine:
    """Stands in for `machine` so MachineHAL's code runs under MicroPython here."""

    PWRON_RESET, HARD_RESET, WDT_RESET, DEEPSLEEP_RESET, SOFT_RESET = 1, 2, 3, 4, 5

    def __init__(self):
        self.adc_values = {}
        self.slept = []
        self.deep = []
        self.rtc_mem = bytearray()
        self.cause = 4
        machine = self

        class Pin:
            def __init__(self, n):
                self.n = n

        class ADC:
            def __init__(self, pin):
                self.key = pin.n if isinstance(pin, Pin) else ("ch", pin)

            def read_u16(self):
                return machine.adc_values[self.key]

        class RTC:
            def memory(self, data=None):
                if data is None:
                    return bytes(machine.rtc_mem)
                machine.rtc_mem = bytearray(data)

        self.Pin, self.ADC, self.RTC = Pin, ADC, RTC

    def lightsleep(self, ms):
        self.slept.append(ms)

    def deepsleep(self, ms=None):
        self.deep.append(ms)

    def reset_cause(self):
        return self.cause

    def unique_id(self):
        return b"\x01\xab"


class FakeI2C:
    def readfrom_mem(self, addr, reg, n):
        return bytes([0xFF, 0x38])[:n]  # -200 as a big-endian int16


class MachineHALOnAFakeBoard(unittest.TestCase):
    def setUp(self):
        self.machine = FakeMachine()
        sys.modules["machine"] = self.machine

    def tearDown(self):
        del sys.modules["machine"]

    def test_sensors_battery_sleep_rtc_reset(self):
        m = self.machine
        m.adc_values[26] = 65535
        m.adc_values[29] = int(65535 * (3.8 / 2) / 3.3)
        hal = mf_hal.MachineHAL(sensors={"vib": ("adc", 26, 10.0, -1.0), "temp": ("i2c", FakeI2C(), 0x48, 0, 2),
                                         "const": lambda: 7},
                                battery=("adc", 29, 2.0), temperature=lambda: 31.5)
        self.assertAlmostEqual(hal.read_sensor("vib"), 9.0)
        self.assertEqual(hal.read_sensor("temp"), -200)
        self.assertEqual(hal.read_sensor("const"), 7)
        self.assertTrue(abs(hal.battery_pct() - 50) < 1.0)
        self.assertEqual(hal.temperature_c(), 31.5)
        hal.sleep_ms(250)
        hal.sleep_ms(0)
        self.assertEqual(m.slept, [250])
        hal.deepsleep(1000)
        self.assertEqual(m.deep[-1], 1000)
        hal.rtc_memory(b"state")
        self.assertEqual(hal.rtc_memory(), b"state")
        self.assertEqual(hal.reset_cause(), "deepsleep")
        self.assertEqual(hal.unique_id(), "01ab")
        self.assertTrue(hal.ms() >= 0)

    def test_chip_temperature_fallback_and_missing_battery(self):
        self.machine.adc_values[("ch", 4)] = int(65535 * 0.706 / 3.3)
        hal = mf_hal.MachineHAL()
        self.assertTrue(abs(hal.temperature_c() - 27) < 0.5)
        self.assertEqual(hal.battery_pct(), None)
        self.assertRaises(ValueError, hal.add_sensor, "x", ("spi", 1))


class LipoCurve(unittest.TestCase):
    def test_interpolation(self):
        self.assertEqual(interpolate(LIPO_CURVE, 3.0), 0)
        self.assertEqual(interpolate(LIPO_CURVE, 4.5), 100)
        self.assertAlmostEqual(interpolate(LIPO_CURVE, 3.75), 35.0)


class Files(unittest.TestCase):
    def test_base_hal_file_door(self):
        hal = SimHAL()
        d = scratch("hal")
        with hal.open(d + "/a", "wb") as f:
            f.write(b"12345")
        self.assertEqual(hal.size(d + "/a"), 5)
        hal.rename(d + "/a", d + "/b")
        self.assertEqual(hal.listdir(d), ["b"])
        self.assertTrue(hal.exists(d + "/b"))
        hal.remove(d + "/b")
        self.assertFalse(hal.exists(d + "/b"))
        hal.mkdir(d + "/sub")
        hal.mkdir(d + "/sub")
        self.assertTrue(HAL().fs_free(".") is None or HAL().fs_free(".") > 0)


class SimulatedBoard(unittest.TestCase):
    def test_virtual_clock_moves_only_when_told(self):
        hal = SimHAL()
        self.assertEqual(hal.ms(), 0)
        hal.sleep_ms(7 * 24 * 3600 * 1000)
        self.assertEqual(hal.ms(), 604800000)
        self.assertEqual(hal.time(), hal.start_epoch + 604800)
        hal.spend(50)
        self.assertEqual(hal.awake_ms, 50)

    def test_battery_drains_with_current(self):
        hal = SimHAL(capacity_mah=100, active_ma=100, sleep_ma=1)
        hal.spend(1800000)  # half an hour at 100 mA: half of 100 mAh
        self.assertAlmostEqual(hal.battery_pct(), 50.0)
        hal.sleep_ms(3600000)
        self.assertAlmostEqual(hal.battery_pct(), 49.0)
        hal.deepsleep(None)
        self.assertEqual(hal.reset_cause(), "deepsleep")
        hal.set_battery(10)
        self.assertAlmostEqual(hal.battery_pct(), 10.0)

    def test_sensors_and_temperature_scripts(self):
        hal = SimHAL(temperature=lambda ms: 20 + ms / 1000)
        hal.set_sensor("x", lambda ms, rng: ms * 2)
        hal.set_sensor("k", 3)
        hal.sleep_ms(5000)
        self.assertEqual(hal.temperature_c(), 25)
        self.assertEqual(hal.read_sensor("x"), 10000)
        self.assertEqual(hal.read_sensor("k"), 3)

    def test_rtc_memory_and_rng(self):
        hal = SimHAL(seed=3)
        hal.rtc_memory(b"abc")
        self.assertEqual(hal.rtc_memory(), b"abc")
        a = [Rng(5).below(1000) for _ in range(3)]
        self.assertEqual(a[0], a[1])
        r = Rng(9)
        vals = [r.below(10) for _ in range(200)]
        self.assertEqual(min(vals), 0)
        self.assertEqual(max(vals), 9)

    def test_power_cut_keeps_the_prefix(self):
        hal = SimHAL()
        d = scratch("cut")
        f = hal.open(d + "/f", "wb")  # an open for writing costs one byte of the budget
        hal.cut_power_after(4, b"\xff\xff")
        self.assertRaises(PowerCut, f.write, b"abcdefgh")
        self.assertRaises(PowerCut, hal.listdir, d)
        hal.power_on()
        self.assertEqual(open(d + "/f", "rb").read(), b"abcd\xff\xff")
        self.assertEqual(hal.power_cuts, 1)
        self.assertEqual(hal.boots, 2)

    def test_power_cut_before_a_rename(self):
        hal = SimHAL()
        d = scratch("cut2")
        with hal.open(d + "/a", "wb") as f:
            f.write(b"x")
        hal.cut_power_after(0)
        self.assertRaises(PowerCut, hal.rename, d + "/a", d + "/b")
        hal.power_on()
        self.assertEqual(sorted(os.listdir(d)), ["a"])
