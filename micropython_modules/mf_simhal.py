# A simulated board for tests: a virtual clock (a week runs in seconds), a battery that drains
# with the time spent awake and asleep, scripted temperature and sensors, RTC memory, and a
# filesystem that can lose power at a chosen byte of a write. Also a simulated uplink with a
# server that checks deliveries.
from mf_hal import HAL


class PowerCut(Exception):
    """The simulated board lost power. Everything written before the cut stays on flash."""


class Rng:
    """xorshift32: deterministic per seed on every port (the random module may lack seed())."""

    def __init__(self, seed=1):
        self.state = (seed * 2654435761 + 1) & 0xFFFFFFFF or 1

    def next(self):
        x = self.state
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        self.state = x
        return x

    def below(self, n):
        return 0 if n <= 1 else self.next() % n

    def uniform(self):
        return self.next() / 4294967296.0

    def gauss(self):
        # Sum of uniforms: close enough to a normal deviate for sensor noise.
        return (self.uniform() + self.uniform() + self.uniform() + self.uniform() - 2.0) * 1.7320508


class _CutFile:
    def __init__(self, hal, f):
        self._hal = hal
        self._f = f

    def write(self, data):
        hal = self._hal
        hal._alive()
        budget = hal._budget
        n = len(data)
        if budget is not None:
            if n > budget:
                if budget:
                    self._f.write(data[:budget])
                if hal._tail:
                    self._f.write(hal._tail)
                hal._fail()
            hal._budget = budget - n
        hal.bytes_written += n
        return self._f.write(data)

    def read(self, *args):
        self._hal._alive()
        return self._f.read(*args)

    def readinto(self, buf):
        self._hal._alive()
        return self._f.readinto(buf)

    def seek(self, *args):
        self._hal._alive()
        return self._f.seek(*args)

    def tell(self):
        return self._f.tell()

    def flush(self):
        self._hal._alive()
        self._f.flush()

    def close(self):
        if self in self._hal._open_files:
            self._hal._open_files.remove(self)
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class SimHAL(HAL):
    """A board in a test.

    Time moves only when the runtime sleeps (sleep_ms, deepsleep) or declares work (spend).
    The battery drains by active_ma while awake, sleep_ma in light sleep and deepsleep_ma in
    deep sleep. temperature and sensors are constants or functions of the virtual time in ms.
    """

    def __init__(self, seed=1, start_epoch=1767225600, battery_pct=100.0, capacity_mah=2000.0,
                 active_ma=40.0, sleep_ma=0.5, deepsleep_ma=0.01, temperature=25.0, fs_free=None,
                 battery_noise=0.0, logger=None, quiet=True):
        HAL.__init__(self, logger)
        self.rng = Rng(seed)
        self.start_epoch = start_epoch
        self.now_ms = 0
        self.capacity_mah = capacity_mah
        self.charge_mah = capacity_mah * battery_pct / 100.0
        self.active_ma = active_ma
        self.sleep_ma = sleep_ma
        self.deepsleep_ma = deepsleep_ma
        self.battery_noise = battery_noise
        self.temperature = temperature
        self.sensors = {}
        self.rtc = bytearray()
        self.cause = "power_on"
        self.awake_ms = 0
        self.asleep_ms = 0
        self.deepsleep_count = 0
        self.boots = 1
        self.quiet = quiet
        self.lines = []
        self._fs_free = fs_free
        self._budget = None
        self._tail = b""
        self._dead = False
        self._open_files = []
        self.bytes_written = 0
        self.power_cuts = 0

    # --- time and energy ------------------------------------------------------------------
    def ms(self):
        return self.now_ms

    def time(self):
        return self.start_epoch + self.now_ms // 1000

    def _drain(self, ms, ma):
        self.charge_mah -= ma * ms / 3600000.0
        if self.charge_mah < 0:
            self.charge_mah = 0.0

    def spend(self, ms):
        """Work that takes `ms` of awake time (an inference, a radio burst)."""
        self._alive()
        ms = int(ms)
        self.now_ms += ms
        self.awake_ms += ms
        self._drain(ms, self.active_ma)

    def sleep_ms(self, ms):
        self._alive()
        ms = int(ms)
        if ms <= 0:
            return
        self.now_ms += ms
        self.asleep_ms += ms
        self._drain(ms, self.sleep_ma)

    def deepsleep(self, ms=None):
        # A board resets on waking from deep sleep; here the caller's objects live on, as if
        # their state had been kept in RTC memory. The reset cause says what happened.
        self._alive()
        ms = 3600000 if ms is None else int(ms)
        self.now_ms += ms
        self.asleep_ms += ms
        self._drain(ms, self.deepsleep_ma)
        self.deepsleep_count += 1
        self.cause = "deepsleep"

    def set_battery(self, pct):
        self.charge_mah = self.capacity_mah * pct / 100.0

    def charge(self, ma, ms):
        self.charge_mah = min(self.capacity_mah, self.charge_mah + ma * ms / 3600000.0)

    # --- sensors --------------------------------------------------------------------------
    def battery_pct(self):
        pct = 100.0 * self.charge_mah / self.capacity_mah
        if self.battery_noise:
            pct += self.battery_noise * self.rng.gauss()
        return max(0.0, min(100.0, pct))

    def temperature_c(self):
        t = self.temperature
        return t(self.now_ms) if callable(t) else t

    def set_sensor(self, name, source):
        """source: a constant, or fn(ms, rng) -> value."""
        self.sensors[name] = source

    def read_sensor(self, name):
        source = self.sensors[name]
        return source(self.now_ms, self.rng) if callable(source) else source

    # --- board state ------------------------------------------------------------------------
    def rtc_memory(self, data=None):
        if data is not None:
            self.rtc = bytearray(data)
        return bytes(self.rtc)

    def reset_cause(self):
        return self.cause

    def rand(self, n):
        return self.rng.below(n)

    def log(self, *parts):
        line = "[%d] %s" % (self.now_ms, " ".join(str(p) for p in parts))
        self.lines.append(line)
        if len(self.lines) > 200:
            self.lines.pop(0)
        if self._logger is not None:
            self._logger(line)
        elif not self.quiet:
            print(line)

    # --- files that can lose power ---------------------------------------------------------
    def cut_power_after(self, nbytes, tail=b""):
        """Lose power once `nbytes` more bytes have reached flash. A write that crosses the
        point keeps only its first bytes, then `tail` (say b"\\xff" * 8 for erased flash, or
        junk); a remove, rename or mkdir counts as one byte and is not done if it would cross.
        """
        self._budget = int(nbytes)
        self._tail = bytes(tail)

    def power_on(self):
        """Boot again after a cut: files stay as the cut left them, handles are gone."""
        self._dead = False
        self._budget = None
        self.cause = "power_on"
        self.boots += 1

    def _alive(self):
        if self._dead:
            raise PowerCut("the board is off")

    def _fail(self):
        self._dead = True
        self.power_cuts += 1
        for f in list(self._open_files):
            try:
                f._f.close()
            except OSError:
                pass
        self._open_files = []
        raise PowerCut("power cut")

    def _metadata_op(self):
        self._alive()
        if self._budget is not None:
            if self._budget < 1:
                self._fail()
            self._budget -= 1

    def open(self, path, mode="rb"):
        self._alive()
        if "w" in mode or "a" in mode:
            self._metadata_op()
        f = _CutFile(self, open(path, mode))
        self._open_files.append(f)
        return f

    def remove(self, path):
        self._metadata_op()
        HAL.remove(self, path)

    def rename(self, old, new):
        self._metadata_op()
        HAL.rename(self, old, new)

    def mkdir(self, path):
        if not self.exists(path):
            self._metadata_op()
        HAL.mkdir(self, path)

    def listdir(self, path="."):
        self._alive()
        return HAL.listdir(self, path)

    def fs_free(self, path="."):
        if self._fs_free is not None:
            return self._fs_free
        return HAL.fs_free(self, path)


class SimLink:
    """A simulated uplink and the server behind it.

    online: bool or fn(ms) -> bool. loss: chance a batch never arrives. ack_loss: chance the
    server stores a batch but its acknowledgement is lost on the way back.
    The server keeps every record by sequence number and counts what should never happen:
    a record sent again after its ack reached the device.
    """

    def __init__(self, hal, online=True, loss=0.0, ack_loss=0.0, cost_ms=0):
        self.hal = hal
        self.online = online
        self.loss = loss
        self.ack_loss = ack_loss
        self.cost_ms = cost_ms
        self.store = {}
        self.acked = set()
        self.batches = 0
        self.failures = 0
        self.resent = 0
        self.after_ack = 0

    def is_online(self):
        online = self.online
        return online(self.hal.ms()) if callable(online) else online

    def send(self, records):
        if self.cost_ms:
            self.hal.spend(self.cost_ms)
        if not self.is_online():
            self.failures += 1
            raise OSError(110)  # ETIMEDOUT, as a socket would
        rng = self.hal.rng
        if self.loss and rng.uniform() < self.loss:
            self.failures += 1
            return False
        self.batches += 1
        for rec in records:
            seq = rec[0]
            if seq in self.acked:
                self.after_ack += 1
            if seq in self.store:
                self.resent += 1
            self.store[seq] = (rec[1], bytes(rec[2]))
        if self.ack_loss and rng.uniform() < self.ack_loss:
            return False
        for rec in records:
            self.acked.add(rec[0])
        return True
