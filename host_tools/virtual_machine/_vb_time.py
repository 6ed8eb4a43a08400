# `time` on the virtual board (MicroPython code, installed as sys.modules["time"]).
#
# The board's clock is virtual: real time since power-on plus every machine.lightsleep() and
# deepsleep() interval, which advance it at once. So a duty-cycled program that sleeps an hour
# between inferences sees an hour go by, and the host waits for none of it. time.sleep() is a
# real (and interruptible) wait, as on a board. The clock and the RTC survive soft resets and
# deep sleep; a power cycle starts them again.
import time as _port_time
import _vboard

_PERIOD = 1 << 30
_MASK = _PERIOD - 1
_HALF = _PERIOD // 2

# Called around every wait; machine registers the watchdog and timers here.
_hooks = []


def _service():
    for hook in _hooks:
        hook()


def _clock_us():
    return int(_vboard.clock_us())


def ticks_ms():
    return (_clock_us() // 1000) & _MASK


def ticks_us():
    return _clock_us() & _MASK


ticks_cpu = ticks_us


def ticks_add(ticks, delta):
    return (ticks + delta) & _MASK


def ticks_diff(end, start):
    return ((end - start + _HALF) & _MASK) - _HALF


def sleep_ms(ms):
    _service()
    _vboard.sleep_ms(ms)
    _service()


def sleep(seconds):
    sleep_ms(seconds * 1000)


def sleep_us(us):
    sleep_ms(us / 1000)


def time():
    return int(_vboard.rtc_us()) // 1000000


def time_ns():
    return int(_vboard.rtc_us()) * 1000


def gmtime(secs=None):
    return _port_time.gmtime(time() if secs is None else int(secs))


def localtime(secs=None):
    return gmtime(secs)


mktime = _port_time.mktime
