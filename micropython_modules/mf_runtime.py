# One device, wired: sensors -> model -> anomaly scores -> alerts -> queue -> uplink, run by
# the scheduler at the rates the power manager allows. A main.py builds one and calls run().
#
#   hal = mf_hal.MachineHAL(sensors={"vib": ("adc", 26)}, battery=("adc", 29, 3.0))
#   rt = Runtime(hal, models=[primary, fallback, minimal], signals=("vib",), link=my_link)
#   rt.run()
import json

from mf_alerts import Alerts, severity_for, WARNING
from mf_anomaly import Signals
from mf_fallback import FallbackChain
from mf_health import Health
from mf_power import PowerManager
from mf_queue import Queue, TELEMETRY, EVENT, ALERT
from mf_sched import Scheduler
from mf_sync import Sync


def default_input(values, names):
    """Signal values, rounded and clamped to int8, as the model's input bytes."""
    out = bytearray(len(names))
    for i in range(len(names)):
        v = int(round(values[names[i]]))
        if v > 127:
            v = 127
        elif v < -128:
            v = -128
        out[i] = v & 0xFF
    return bytes(out)


class Runtime:
    """hal: the HAL. models: [primary, fallback, minimal] for FallbackChain (or None: no model).
    signals: sensor names read on each run. link: the uplink (see mf_sync), or None.
    make_input(values, names) -> bytes: the model input. recon: an mf_anomaly.Reconstruction
    to score an autoencoder's output. telemetry_every: runs per telemetry summary record.
    The other settings dicts go to the module of the same name."""

    def __init__(self, hal, models=None, signals=(), link=None, queue_path="queue", make_input=None,
                 recon=None, telemetry_every=10, health_ms=3600000, trigger=None, queue=None,
                 zscore=None, alerts=None, power=None, sched=None, chain=None, sync=None):
        self.hal = hal
        self.names = tuple(signals)
        self.make_input = make_input or default_input
        self.recon = recon
        self.telemetry_every = telemetry_every
        self.health_ms = health_ms
        self.queue = Queue(queue_path, fs=hal, **(queue or {}))
        self.power = PowerManager(hal, on_transition=self._event, **(power or {}))
        self.chain = None
        if models:
            self.chain = FallbackChain(models, hal.ms, on_switch=self._model_switch, **(chain or {}))
        self.signals = Signals(**(zscore or {}))
        self.alerts = Alerts(hal.ms, sink=self._alert, wall=hal.time, **(alerts or {}))
        self.sync = None
        if link is not None:
            self.sync = Sync(self.queue, link, hal.ms, hal.rand, on_event=self._event, **(sync or {}))
        self.health = Health(hal, chain=self.chain, power=self.power, queue=self.queue, sync=self.sync,
                             fs_path=queue_path)
        self.sched = Scheduler(hal, self._task, power=self.power, trigger=trigger,
                               uplink=self._uplink if self.sync is not None else None,
                               on_event=self._event, **(sched or {}))
        self.runs = 0
        self.inference_errors = 0
        self.next_health = hal.ms()
        self._window = {}
        self._window_n = 0

    # --- reports into the queue ---------------------------------------------------------------------
    def _put(self, lane, obj):
        return self.queue.put(json.dumps(obj).encode(), lane)

    def _event(self, event):
        e = dict(event)
        e["type"] = "event"
        self._put(EVENT, e)

    def _model_switch(self, switch):
        self.hal.log("model:", switch["from"], "->", switch["to"], "(" + switch["reason"] + ")")
        e = dict(switch)
        e["kind"] = "model"
        self._event(e)

    def _alert(self, alert):
        a = dict(alert)
        a["type"] = "alert"
        self.hal.log("alert:", a["sev"], a["kind"], a["reason"])
        self._put(ALERT, a)

    def _uplink(self, now):
        self.sync.poll(now)

    # --- one run --------------------------------------------------------------------------------------
    def _task(self, now, reason):
        hal = self.hal
        values = {}
        for name in self.names:
            values[name] = hal.read_sensor(name)
        for name in self.names:
            z, anomalous = self.signals.update(name, values[name])
            if anomalous:
                self.alerts.observe(name, z, severity_for(z))
        if self.chain is not None:
            self.chain.set_conditions(self.power.thermal_state, self.power.profile)
            x = self.make_input(values, self.names)
            try:
                y = self.chain.invoke(x)
            except Exception as exc:
                self.inference_errors += 1
                self._event({"kind": "inference_failed", "t": now, "error": repr(exc)})
                y = None
            if y is not None and self.recon is not None:
                err, anomalous = self.recon.score(x, y)
                if anomalous:
                    self.alerts.observe("reconstruction", err / self.recon.threshold, WARNING)
        self.alerts.tick()
        self._summarize(values, now, reason)
        if hal.ms() >= self.next_health:
            snap = self.health.snapshot()
            snap["type"] = "health"
            self._put(TELEMETRY, snap)
            self.next_health = hal.ms() + self.health_ms
        self.runs += 1

    def _summarize(self, values, now, reason):
        w = self._window
        for name in self.names:
            v = values[name]
            s = w.get(name)
            if s is None:
                w[name] = [v, v, v]
            else:
                s[0] += v
                if v < s[1]:
                    s[1] = v
                if v > s[2]:
                    s[2] = v
        self._window_n += 1
        if self._window_n >= self.telemetry_every:
            n = self._window_n
            rec = {"type": "telemetry", "t": self.hal.time(), "n": n, "why": reason}
            for name in self.names:
                s = w[name]
                rec[name] = [round(s[0] / n, 3), round(s[1], 3), round(s[2], 3)]
            if self.chain is not None:
                rec["model"] = self.chain.tier_name()
            self._put(TELEMETRY, rec)
            self._window = {}
            self._window_n = 0

    def step(self):
        return self.sched.step()

    def run(self, until_ms=None, steps=None):
        return self.sched.run(until_ms, steps)
