# Health telemetry: one snapshot of how the board is doing, for the queue and the REPL.
import gc
import json


class Health:
    """hal: the HAL. chain, power, queue, sync: the runtime's objects, each optional; without a
    chain, note_inference() keeps the inference figures here."""

    def __init__(self, hal, chain=None, power=None, queue=None, sync=None, fs_path="."):
        self.hal = hal
        self.chain = chain
        self.power = power
        self.queue = queue
        self.sync = sync
        self.fs_path = fs_path
        self.boot_ms = hal.ms()
        self.inferences = 0
        self.errors = 0
        self.total_ms = 0
        self.max_ms = 0
        self.last_ms = 0

    def note_inference(self, ms, ok=True):
        self.inferences += 1
        if not ok:
            self.errors += 1
        self.last_ms = ms
        self.total_ms += ms
        if ms > self.max_ms:
            self.max_ms = ms

    def snapshot(self):
        hal = self.hal
        gc.collect()
        snap = {
            "t": hal.time(),
            "uptime_s": (hal.ms() - self.boot_ms) // 1000,
            "reset": hal.reset_cause(),
            "mem_free": gc.mem_free(),
            "mem_alloc": gc.mem_alloc(),
            "fs_free": hal.fs_free(self.fs_path),
            "temp_c": _round(hal.temperature_c()),
            "battery_pct": _round(hal.battery_pct()),
        }
        if self.chain is not None:
            s = self.chain.stats()
            snap["inferences"] = s["inferences"]
            snap["errors"] = s["errors"]
            snap["latency_ms"] = _round(s["avg_ms"])
            snap["latency_max_ms"] = s["max_ms"]
            snap["model"] = s["model"]
            snap["tier"] = s["tier"]
        else:
            snap["inferences"] = self.inferences
            snap["errors"] = self.errors
            snap["latency_ms"] = _round(self.total_ms / self.inferences) if self.inferences else 0
            snap["latency_max_ms"] = self.max_ms
        if self.power is not None:
            snap["profile"] = self.power.profile
            snap["thermal"] = self.power.thermal_state
        if self.queue is not None:
            q = self.queue.stats()
            snap["queued"] = sum(q["pending"])
            snap["evicted"] = sum(q["evicted"])
        if self.sync is not None:
            snap["uplink_failures"] = self.sync.failures
        return snap

    def record(self):
        """The snapshot as compact JSON bytes, ready for the queue."""
        return json.dumps(self.snapshot()).encode()


def _round(value, digits=1):
    return None if value is None else round(value, digits)
