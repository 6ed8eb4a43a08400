# The hardware door of the runtime. Every module reaches the board through a HAL object and
# never imports `machine` itself, so the same code runs on a board (MachineHAL) and in tests
# (mf_simhal.SimHAL, with a virtual clock).
#
# The HAL interface (duck-typed; HAL below gives the parts that only need `os`):
#   time:    ms() monotonic ms since boot, never wraps; time() epoch seconds;
#            sleep_ms(ms) light sleep; deepsleep(ms=None) (on a board: resets, never returns)
#   sensors: read_sensor(name); temperature_c(); battery_pct()  (None when not fitted)
#   state:   rtc_memory(data=None) -> bytes; reset_cause() -> str
#   files:   open(path, mode); remove; rename; listdir; mkdir; size; exists; fs_free(path)
#   misc:    mem_free(); rand(n) -> int in [0, n); log(*parts)
import gc
import os
import time

try:
    import random as _random
except ImportError:
    _random = None

RESET_CAUSES = ("power_on", "hard", "watchdog", "deepsleep", "soft", "unknown")

# A LiPo cell at rest: (volts, percent), by rising voltage. Interpolated in between.
LIPO_CURVE = ((3.30, 0), (3.60, 5), (3.70, 20), (3.80, 50), (3.95, 75), (4.10, 95), (4.20, 100))


def interpolate(curve, x):
    if x <= curve[0][0]:
        return float(curve[0][1])
    for i in range(1, len(curve)):
        x1, y1 = curve[i]
        if x <= x1:
            x0, y0 = curve[i - 1]
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return float(curve[-1][1])


class HAL:
    """The parts of the HAL that plain MicroPython provides: files, memory, randomness, log."""

    def __init__(self, logger=None):
        self._logger = logger

    # --- files ---------------------------------------------------------------------------
    def open(self, path, mode="rb"):
        return open(path, mode)

    def remove(self, path):
        os.remove(path)

    def rename(self, old, new):
        os.rename(old, new)

    def listdir(self, path="."):
        return os.listdir(path)

    def mkdir(self, path):
        try:
            os.mkdir(path)
        except OSError:
            if not self.exists(path):
                raise

    def exists(self, path):
        try:
            os.stat(path)
            return True
        except OSError:
            return False

    def size(self, path):
        return os.stat(path)[6]

    def fs_free(self, path="."):
        try:
            st = os.statvfs(path)
        except (AttributeError, OSError):
            return None
        return st[0] * st[4]

    # --- memory and misc -----------------------------------------------------------------
    def mem_free(self):
        return gc.mem_free()

    def rand(self, n):
        if n <= 1:
            return 0
        if _random is not None:
            return _random.getrandbits(30) % n
        return time.ticks_us() % n

    def log(self, *parts):
        line = "[%d] %s" % (self.ms(), " ".join(str(p) for p in parts))
        if self._logger is not None:
            self._logger(line)
        else:
            print(line)

    def ms(self):
        raise NotImplementedError


class MachineHAL(HAL):
    """The HAL of a real board, over `machine`.

    sensors: {name: reader}. A reader is a callable, or a tuple:
      ("adc", pin, scale, offset)        -> read_u16() * scale / 65535 + offset
      ("i2c", i2c, addr, reg, n, decode) -> decode(i2c.readfrom_mem(addr, reg, n))
    battery: None, a callable returning percent, or ("adc", pin, divider) for a LiPo cell
      behind a voltage divider (LIPO_CURVE maps volts to percent).
    temperature: None (use the chip's own sensor where the port has one) or a callable in °C.
    """

    def __init__(self, sensors=None, battery=None, temperature=None, light_sleep=True, logger=None):
        import machine  # only a board has it
        HAL.__init__(self, logger)
        self.machine = machine
        self._sensors = {}
        self._battery = None
        self._temperature = temperature
        self._light_sleep = light_sleep
        self._last_ticks = time.ticks_ms()
        self._ms = 0
        for name in sensors or {}:
            self.add_sensor(name, sensors[name])
        if battery is not None:
            self._battery = self._reader(battery, battery_pct=True)

    def _reader(self, spec, battery_pct=False):
        if callable(spec):
            return spec
        kind = spec[0]
        if kind == "adc":
            adc = self.machine.ADC(self.machine.Pin(spec[1]))
            if battery_pct:
                divider = spec[2] if len(spec) > 2 else 2.0
                return lambda: interpolate(LIPO_CURVE, adc.read_u16() * 3.3 / 65535 * divider)
            scale = spec[2] if len(spec) > 2 else 1.0
            offset = spec[3] if len(spec) > 3 else 0.0
            return lambda: adc.read_u16() * scale / 65535 + offset
        if kind == "i2c":
            i2c, addr, reg, n = spec[1], spec[2], spec[3], spec[4]
            decode = spec[5] if len(spec) > 5 else _be_signed
            return lambda: decode(i2c.readfrom_mem(addr, reg, n))
        raise ValueError("unknown sensor kind %r (use 'adc', 'i2c' or a callable)" % (kind,))

    def add_sensor(self, name, spec):
        self._sensors[name] = self._reader(spec)

    def read_sensor(self, name):
        return self._sensors[name]()

    def ms(self):
        # Accumulates ticks so the count never wraps; valid while ms() is called at least once
        # every few days (the ticks period is 2**30 ms on most ports).
        now = time.ticks_ms()
        self._ms += time.ticks_diff(now, self._last_ticks)
        self._last_ticks = now
        return self._ms

    def time(self):
        return int(time.time())

    def sleep_ms(self, ms):
        if ms <= 0:
            return
        if self._light_sleep and hasattr(self.machine, "lightsleep"):
            self.machine.lightsleep(int(ms))
        else:
            time.sleep_ms(int(ms))

    def deepsleep(self, ms=None):
        if ms is None:
            self.machine.deepsleep()
        else:
            self.machine.deepsleep(int(ms))

    def temperature_c(self):
        if self._temperature is not None:
            return self._temperature()
        try:
            import esp32
            return esp32.mcu_temperature()
        except (ImportError, AttributeError):
            pass
        try:  # RP2040/RP2350: the on-chip sensor on ADC channel 4
            volts = self.machine.ADC(4).read_u16() * 3.3 / 65535
            return 27 - (volts - 0.706) / 0.001721
        except Exception:
            return None

    def battery_pct(self):
        return None if self._battery is None else self._battery()

    def rtc_memory(self, data=None):
        rtc = self.machine.RTC()
        if not hasattr(rtc, "memory"):
            return b""
        if data is None:
            return bytes(rtc.memory())
        rtc.memory(data)
        return bytes(data)

    def reset_cause(self):
        m = self.machine
        names = {}
        for attr, name in (("PWRON_RESET", "power_on"), ("HARD_RESET", "hard"), ("WDT_RESET", "watchdog"),
                           ("DEEPSLEEP_RESET", "deepsleep"), ("SOFT_RESET", "soft")):
            if hasattr(m, attr):
                names[getattr(m, attr)] = name
        return names.get(m.reset_cause(), "unknown")

    def unique_id(self):
        return "".join("%02x" % b for b in self.machine.unique_id())


def _be_signed(data):
    value = 0
    for b in data:
        value = (value << 8) | b
    bits = 8 * len(data)
    if value >= 1 << (bits - 1):
        value -= 1 << bits
    return value
