# Power profiles by battery level and thermal states by temperature, with hysteresis so that a
# reading hovering at a bound does not make the state flap; and battery-life estimates from a
# measured duty cycle.

BATTERY_STATES = ("performance", "balanced", "power_saver", "critical")
# A state holds while the battery is above its bound: > 50 %, > 20 %, > 5 %, then critical.
BATTERY_BOUNDS = (50.0, 20.0, 5.0)
THERMAL_STATES = ("optimal", "warm", "hot", "critical", "shutdown")
# A state holds while the temperature is below its bound: < 55, < 65, < 75, < 85 °C, then shutdown.
THERMAL_BOUNDS = (55.0, 65.0, 75.0, 85.0)

# What each battery profile allows. infer_ms: the inference period (or the shortest gap between
# triggered inferences); poll_ms: how often a motion trigger is checked; uplink_ms: how often
# the queue is synced. None: stopped.
PROFILES = {
    "performance": {"infer_ms": 1000, "poll_ms": 200, "uplink_ms": 60000},
    "balanced": {"infer_ms": 5000, "poll_ms": 1000, "uplink_ms": 600000},
    "power_saver": {"infer_ms": 60000, "poll_ms": 5000, "uplink_ms": 3600000},
    "critical": {"infer_ms": None, "poll_ms": None, "uplink_ms": None},
}
# Thermal states that slow everything down, by this factor.
THERMAL_THROTTLE = {"hot": 4, "critical": 8}


class Levels:
    """Ordered states, best first, chosen by a reading against bounds.

    higher_is_worse: temperatures (state i while value < bounds[i]); otherwise battery levels
    (state i while value > bounds[i]). A worse state is taken as soon as a bound is crossed; a
    better one only once the reading is `hysteresis` past the bound.
    """

    def __init__(self, states, bounds, hysteresis=0.0, higher_is_worse=True):
        if len(states) != len(bounds) + 1:
            raise ValueError("need one more state than bounds: %d states, %d bounds" % (len(states), len(bounds)))
        for i in range(1, len(bounds)):
            if (bounds[i] <= bounds[i - 1]) if higher_is_worse else (bounds[i] >= bounds[i - 1]):
                raise ValueError("bounds must be %s: %r" % ("rising" if higher_is_worse else "falling", bounds))
        self.states = states
        self.bounds = bounds
        self.hysteresis = hysteresis
        self.higher_is_worse = higher_is_worse
        self.index = None

    def _raw(self, value):
        i = 0
        for bound in self.bounds:
            if (value >= bound) if self.higher_is_worse else (value <= bound):
                i += 1
        return i

    def update(self, value):
        raw = self._raw(value)
        if self.index is None or raw > self.index:
            self.index = raw
        elif raw < self.index:
            shifted = value + self.hysteresis if self.higher_is_worse else value - self.hysteresis
            self.index = max(raw, min(self.index, self._raw(shifted)))
        return self.states[self.index]

    @property
    def state(self):
        return None if self.index is None else self.states[self.index]


def battery_life_hours(battery_pct, capacity_mah, duty, active_ma, sleep_ma):
    """Hours left at this duty cycle (the fraction of time awake)."""
    avg_ma = duty * active_ma + (1.0 - duty) * sleep_ma
    if avg_ma <= 0:
        return None
    return capacity_mah * battery_pct / 100.0 / avg_ma


class PowerManager:
    """Reads battery and temperature through the HAL and keeps the current profile and thermal
    state. Each transition is logged through the HAL and passed to on_transition(dict) so the
    runtime can report it. A sensor that is not fitted (None) leaves its state where it was
    (performance / optimal at start)."""

    def __init__(self, hal, profiles=None, battery_bounds=BATTERY_BOUNDS, thermal_bounds=THERMAL_BOUNDS,
                 battery_hysteresis=3.0, thermal_hysteresis=3.0, throttle=None, on_transition=None,
                 log_size=32):
        self.hal = hal
        self.profiles = profiles or PROFILES
        self.battery = Levels(BATTERY_STATES, battery_bounds, battery_hysteresis, higher_is_worse=False)
        self.thermal = Levels(THERMAL_STATES, thermal_bounds, thermal_hysteresis, higher_is_worse=True)
        self.battery.index = 0
        self.thermal.index = 0
        self.throttle_by_state = THERMAL_THROTTLE if throttle is None else throttle
        self.on_transition = on_transition
        self.log_size = log_size
        self.transitions = []
        self.battery_value = None
        self.temperature = None

    @property
    def profile(self):
        return self.battery.state

    @property
    def thermal_state(self):
        return self.thermal.state

    def update(self):
        """Reads the sensors; returns the transitions this reading caused (usually none)."""
        made = []
        pct = self.hal.battery_pct()
        if pct is not None:
            self.battery_value = pct
            self._move("battery", self.battery, pct, made)
        temp = self.hal.temperature_c()
        if temp is not None:
            self.temperature = temp
            self._move("thermal", self.thermal, temp, made)
        return made

    def _move(self, kind, levels, value, made):
        old = levels.state
        new = levels.update(value)
        if new != old:
            event = {"t": self.hal.ms(), "kind": kind, "from": old, "to": new, "value": round(value, 1)}
            self.transitions.append(event)
            if len(self.transitions) > self.log_size:
                self.transitions.pop(0)
            made.append(event)
            self.hal.log("power:", kind, old, "->", new, "at", round(value, 1))
            if self.on_transition is not None:
                self.on_transition(event)

    def throttle(self):
        return self.throttle_by_state.get(self.thermal.state, 1)

    def _period(self, key):
        base = self.profiles[self.battery.state][key]
        return None if base is None else base * self.throttle()

    def infer_ms(self):
        return self._period("infer_ms")

    def poll_ms(self):
        return self._period("poll_ms")

    def uplink_ms(self):
        return self._period("uplink_ms")

    def should_hibernate(self):
        return self.battery.state == BATTERY_STATES[-1]

    def should_shut_down(self):
        return self.thermal.state == THERMAL_STATES[-1]
