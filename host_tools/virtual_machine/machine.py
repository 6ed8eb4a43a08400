# A simulated `machine` module for the virtual board (MicroPython code).
#
# It follows the ESP32 port's API where ports differ (reset causes, RTC.memory, ADC.read_uv),
# so code written for a board runs here unchanged:
#   Pin         outputs are recorded; inputs read the sensor trace column "pin<id>"
#   ADC         read_u16() from the sensor trace column "adc<channel>" at the virtual time
#   RTC         datetime() and memory(), kept across soft resets and deep sleep
#   lightsleep  advances the virtual clock at once; deepsleep advances it, then resets
#   UART(1..n)  linked to the virtual board's UART link (a simulated LoRa radio, a second
#               board or a host port); UART(0) is the console
#   WDT, Timer  run on the virtual clock, checked whenever the program waits
import sys
import binascii
import time
import _vboard

PWRON_RESET = 1
HARD_RESET = 2
WDT_RESET = 3
DEEPSLEEP_RESET = 4
SOFT_RESET = 5

PIN_WAKE = 2
TIMER_WAKE = 4

_ADC_FULL_SCALE_UV = 3300000
_CPU_HZ = 240000000


def _reset(kind, ms=0):
    _vboard.request_reset(kind, int(ms))
    raise SystemExit


def reset():
    _reset("hard")


def soft_reset():
    _reset("soft")


def reset_cause():
    return _vboard.reset_cause()


def wake_reason():
    return _vboard.wake_reason()


def unique_id():
    return binascii.unhexlify(_vboard.unique_id())


def freq(hz=None):
    if hz is None:
        return _CPU_HZ


def idle():
    time._service()
    _vboard.poll()


def disable_irq():
    return 0


def enable_irq(state=0):
    pass


def lightsleep(ms=None):
    time._service()
    if ms is None:
        # No timer: sleep until something arrives on the UART link or the console.
        _vboard.wait_event(-1)
    else:
        _advance(ms)
    time._service()
    _vboard.poll()  # a loop of light sleeps takes no real time; Ctrl-C must still reach it


def deepsleep(ms=0):
    _reset("deepsleep", ms or 0)


def _advance(ms):
    """Move the virtual clock forward by `ms`, firing timers and the watchdog on the way."""
    target = int(_vboard.clock_us()) + int(ms * 1000)
    while True:
        due = _next_deadline_us()
        if due is None or due > target:
            break
        now = int(_vboard.clock_us())
        if due > now:
            _vboard.advance_us(str(due - now))
        time._service()
    now = int(_vboard.clock_us())
    if target > now:
        _vboard.advance_us(str(target - now))


class Pin:
    IN = 1
    OUT = 3
    OPEN_DRAIN = 7
    PULL_UP = 2
    PULL_DOWN = 1
    IRQ_RISING = 1
    IRQ_FALLING = 2

    def __init__(self, id, mode=-1, pull=-1, value=None, **kwargs):
        self._id = id
        self._mode = self.IN
        self._pull = None
        self._out = 0
        self.init(mode, pull, value)

    def init(self, mode=-1, pull=-1, value=None, **kwargs):
        if mode != -1 and mode is not None:
            self._mode = mode
        if pull != -1:
            self._pull = pull
        if value is not None:
            self.value(value)

    def id(self):
        return self._id

    def value(self, value=None):
        if value is None:
            if self._mode in (self.OUT, self.OPEN_DRAIN):
                return self._out
            level = _vboard.pin_read(str(self._id))
            if level < 0:
                return 1 if self._pull == self.PULL_UP else 0
            return level
        self._out = 1 if value else 0
        _vboard.pin_write(str(self._id), self._out)

    def __call__(self, value=None):
        return self.value(value)

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)

    def toggle(self):
        self.value(0 if self._out else 1)

    def irq(self, handler=None, trigger=3, **kwargs):
        self._irq = handler
        return self

    def __repr__(self):
        return "Pin(%s)" % (self._id,)


class ADC:
    ATTN_0DB = 0
    ATTN_2_5DB = 1
    ATTN_6DB = 2
    ATTN_11DB = 3
    WIDTH_9BIT = 9
    WIDTH_10BIT = 10
    WIDTH_11BIT = 11
    WIDTH_12BIT = 12

    def __init__(self, source, **kwargs):
        self._channel = source.id() if isinstance(source, Pin) else source

    def init(self, **kwargs):
        pass

    def atten(self, value):
        pass

    def width(self, value):
        pass

    def read_u16(self):
        return _vboard.adc_read(str(self._channel))

    def read(self):
        return self.read_u16() >> 4

    def read_uv(self):
        return self.read_u16() * _ADC_FULL_SCALE_UV // 65535


class RTC:
    def __init__(self, id=0):
        pass

    def datetime(self, datetimetuple=None):
        if datetimetuple is None:
            us = int(_vboard.rtc_us())
            t = time.gmtime(us // 1000000)
            return (t[0], t[1], t[2], t[6], t[3], t[4], t[5], us % 1000000)
        y, mo, d, _weekday, h, mi, s = datetimetuple[:7]
        sub = datetimetuple[7] if len(datetimetuple) > 7 else 0
        _vboard.rtc_set_us(str(time.mktime((y, mo, d, h, mi, s, 0, 0)) * 1000000 + sub))

    def init(self, datetimetuple):
        self.datetime(datetimetuple)

    def memory(self, data=None):
        if data is None:
            return binascii.unhexlify(_vboard.rtc_memory())
        if len(data) > 2048:
            raise ValueError("RTC memory holds 2048 bytes")
        _vboard.rtc_memory_set(binascii.hexlify(bytes(data)).decode())


class UART:
    def __init__(self, id, baudrate=115200, bits=8, parity=None, stop=1, **kwargs):
        self._id = id
        self._timeout = 0
        self.init(baudrate, bits, parity, stop, **kwargs)

    def init(self, baudrate=115200, bits=8, parity=None, stop=1, timeout=0, **kwargs):
        self._baudrate = baudrate
        self._timeout = timeout

    def deinit(self):
        pass

    def any(self):
        return 0 if self._id == 0 else _vboard.uart_any()

    def write(self, buf):
        if isinstance(buf, str):
            buf = buf.encode()
        if self._id == 0:
            sys.stdout.write(bytes(buf).decode("utf-8", "replace"))
            return len(buf)
        return _vboard.uart_write(binascii.hexlify(bytes(buf)).decode())

    def read(self, nbytes=-1):
        if self._id == 0:
            return None
        data = binascii.unhexlify(_vboard.uart_read(-1 if nbytes is None else nbytes, self._timeout))
        return data or None

    def readinto(self, buf, nbytes=None):
        data = self.read(len(buf) if nbytes is None else nbytes)
        if not data:
            return None
        buf[:len(data)] = data
        return len(data)

    def readline(self):
        line = bytearray()
        while True:
            byte = self.read(1)
            if not byte:
                break
            line += byte
            if byte == b"\n":
                break
        return bytes(line) or None

    def flush(self):
        pass

    def txdone(self):
        return True

    def sendbreak(self):
        pass


class WDT:
    def __init__(self, id=0, timeout=5000):
        global _watchdog
        self._timeout_us = timeout * 1000
        _watchdog = self
        self.feed()

    def feed(self):
        self._deadline_us = int(_vboard.clock_us()) + self._timeout_us


class Timer:
    ONE_SHOT = 0
    PERIODIC = 1

    def __init__(self, id=-1, **kwargs):
        self._callback = None
        self._due_us = None
        if kwargs:
            self.init(**kwargs)

    def init(self, mode=1, period=-1, callback=None, freq=None, **kwargs):
        if freq is not None:
            period = 1000 // freq
        self._mode = mode
        self._period_us = int(period * 1000)
        self._callback = callback
        self._due_us = int(_vboard.clock_us()) + self._period_us
        if self not in _timers:
            _timers.append(self)

    def deinit(self):
        self._due_us = None
        if self in _timers:
            _timers.remove(self)


class I2C:
    def __init__(self, *args, **kwargs):
        pass

    def scan(self):
        return []

    def _absent(self, *args, **kwargs):
        raise OSError(19)  # ENODEV: nothing is wired to the virtual board's I2C bus

    readfrom = writeto = readfrom_mem = writeto_mem = readfrom_into = readfrom_mem_into = _absent


SoftI2C = I2C


class PWM:
    def __init__(self, pin, freq=1000, duty_u16=0, **kwargs):
        self._pin, self._freq, self._duty = pin, freq, duty_u16

    def freq(self, value=None):
        if value is None:
            return self._freq
        self._freq = value

    def duty_u16(self, value=None):
        if value is None:
            return self._duty
        self._duty = value

    def deinit(self):
        pass


_watchdog = None
_timers = []


def _next_deadline_us():
    deadlines = [t._due_us for t in _timers if t._due_us is not None]
    if _watchdog is not None:
        deadlines.append(_watchdog._deadline_us + 1)
    return min(deadlines) if deadlines else None


def _service():
    now = int(_vboard.clock_us())
    if _watchdog is not None and now > _watchdog._deadline_us:
        _reset("watchdog")
    for timer in list(_timers):
        if timer._due_us is not None and now >= timer._due_us:
            if timer._mode == Timer.PERIODIC and timer._period_us > 0:
                timer._due_us += timer._period_us
            else:
                timer.deinit()
            if timer._callback is not None:
                timer._callback(timer)


time._hooks.append(_service)
