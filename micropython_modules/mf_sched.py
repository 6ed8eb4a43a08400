# The wake/sleep loop: duty-cycled inference, or inference woken by a cheap motion trigger,
# at the rates the power manager allows; hibernation on a flat battery and shutdown on
# overheating; the measured duty cycle and the battery life it implies.
from mf_power import battery_life_hours


class FrameDiffTrigger:
    """Fires when a frame differs from the previous one by more than `threshold`, as the mean
    absolute difference per sample. `stride` compares every n-th sample only, to stay cheap.
    read_frame() returns bytes, a bytearray or a list of numbers."""

    def __init__(self, read_frame, threshold, stride=1):
        self.read_frame = read_frame
        self.threshold = threshold
        self.stride = stride
        self.previous = None
        self.last_diff = 0.0

    def check(self):
        frame = self.read_frame()
        previous = self.previous
        self.previous = frame
        if previous is None or len(previous) != len(frame):
            return False
        total = 0
        count = 0
        for i in range(0, len(frame), self.stride):
            d = frame[i] - previous[i]
            total += d if d >= 0 else -d
            count += 1
        self.last_diff = total / count if count else 0.0
        return self.last_diff > self.threshold


class ThresholdTrigger:
    """Fires when read() is above `threshold` (below it when below=True)."""

    def __init__(self, read, threshold, below=False):
        self.read = read
        self.threshold = threshold
        self.below = below
        self.last_value = None

    def check(self):
        value = self.read()
        self.last_value = value
        return value < self.threshold if self.below else value > self.threshold


class Scheduler:
    """Runs task(now_ms, reason) at the rate of the current power profile and sleeps between.

    Without a trigger, the task runs every infer_ms ("period"). With one, the trigger is polled
    every poll_ms and the task runs when it fires ("trigger"), at most once per infer_ms, and
    also after max_quiet_ms without any ("heartbeat") if set. uplink(now_ms) runs every
    uplink_ms. Without a power manager, period_ms/poll_ms/uplink_ms are fixed.

    The battery-life estimate uses the awake and asleep time measured here; energy gives the
    board's figures: {"capacity_mah", "active_ma", "sleep_ma"}.
    """

    def __init__(self, hal, task, power=None, period_ms=1000, trigger=None, poll_ms=200, max_quiet_ms=None,
                 uplink=None, uplink_ms=60000, hibernate_ms=3600000, cooldown_ms=600000, energy=None,
                 on_event=None):
        self.hal = hal
        self.task = task
        self.power = power
        self.period_ms = period_ms
        self.trigger = trigger
        self.fixed_poll_ms = poll_ms
        self.max_quiet_ms = max_quiet_ms
        self.uplink = uplink
        self.fixed_uplink_ms = uplink_ms
        self.hibernate_ms = hibernate_ms
        self.cooldown_ms = cooldown_ms
        self.energy = energy or {"capacity_mah": 2000.0, "active_ma": 40.0, "sleep_ma": 0.5}
        self.on_event = on_event
        now = hal.ms()
        self.next_run = now
        self.last_run = None
        self.next_uplink = now
        self.active_ms = 0
        self.asleep_ms = 0
        self.wakes = 0
        self.runs = 0
        self.triggered = 0
        self.hibernations = 0
        self.shutdowns = 0

    def _event(self, kind, **info):
        info["kind"] = kind
        info["t"] = self.hal.ms()
        self.hal.log("sched:", kind)
        if self.on_event is not None:
            self.on_event(info)

    def _rates(self):
        p = self.power
        if p is None:
            return self.period_ms, self.fixed_poll_ms, self.fixed_uplink_ms
        return p.infer_ms(), p.poll_ms(), p.uplink_ms()

    def step(self):
        """One wake: check power, maybe run the task and the uplink, then sleep until the next
        thing is due. Returns what happened: "ran", "idle", "hibernated" or "shut_down"."""
        hal = self.hal
        t0 = hal.ms()
        self.wakes += 1
        if self.power is not None:
            self.power.update()
            if self.power.should_shut_down():
                self.shutdowns += 1
                self._event("shutdown", temperature=self.power.temperature)
                self._account(t0)
                self._deep(self.cooldown_ms)
                return "shut_down"
            if self.power.should_hibernate():
                self.hibernations += 1
                self._event("hibernate", battery=self.power.battery_value)
                self._account(t0)
                self._deep(self.hibernate_ms)
                return "hibernated"
        infer_ms, poll_ms, uplink_ms = self._rates()
        now = t0
        outcome = "idle"
        if infer_ms is not None:
            reason = None
            if self.trigger is None:
                if now >= self.next_run:
                    reason = "period"
            else:
                gap_ok = self.last_run is None or now - self.last_run >= infer_ms
                if self.trigger.check() and gap_ok:
                    reason = "trigger"
                elif (self.max_quiet_ms is not None and gap_ok
                      and (self.last_run is None or now - self.last_run >= self.max_quiet_ms)):
                    reason = "heartbeat"
            if reason is not None:
                self.task(now, reason)
                self.runs += 1
                if reason == "trigger":
                    self.triggered += 1
                self.last_run = now
                self.next_run = now + infer_ms
                outcome = "ran"
        if self.uplink is not None and uplink_ms is not None and hal.ms() >= self.next_uplink:
            self.uplink(hal.ms())
            self.next_uplink = hal.ms() + uplink_ms
        self._account(t0)
        self._sleep_until(infer_ms, poll_ms, uplink_ms)
        return outcome

    def _account(self, t0):
        self.active_ms += self.hal.ms() - t0

    def _deep(self, ms):
        self.hal.deepsleep(ms)
        self.asleep_ms += ms
        now = self.hal.ms()
        self.next_run = now
        self.next_uplink = now

    def _sleep_until(self, infer_ms, poll_ms, uplink_ms):
        now = self.hal.ms()
        due = []
        if infer_ms is not None:
            due.append(now + poll_ms if self.trigger is not None else self.next_run)
        if self.uplink is not None and uplink_ms is not None:
            due.append(self.next_uplink)
        wake = min(due) if due else now + self.hibernate_ms
        ms = wake - now
        if ms > 0:
            self.hal.sleep_ms(ms)
            self.asleep_ms += ms

    def run(self, until_ms=None, steps=None):
        """Steps until the HAL clock reaches until_ms, or for `steps` wakes. On a board, with
        neither, it runs for ever."""
        n = 0
        while True:
            if until_ms is not None and self.hal.ms() >= until_ms:
                return n
            if steps is not None and n >= steps:
                return n
            self.step()
            n += 1

    def duty_cycle(self):
        total = self.active_ms + self.asleep_ms
        return self.active_ms / total if total else 0.0

    def battery_life_h(self, battery_pct=None):
        """Hours left at the measured duty cycle, from the battery reading (or the given one)."""
        if battery_pct is None:
            battery_pct = self.hal.battery_pct()
        if battery_pct is None:
            return None
        e = self.energy
        return battery_life_hours(battery_pct, e["capacity_mah"], self.duty_cycle(), e["active_ma"], e["sleep_ma"])
