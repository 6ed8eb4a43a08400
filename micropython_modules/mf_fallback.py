# Primary, fallback and minimal models behind one invoke(). The chain steps down on a thermal
# or battery state, or after repeated inference errors, and steps back up when the condition
# clears (errors: after a retry delay that doubles each time the better model fails again).
#
# A model is any object with invoke(input_bytes) -> output_bytes and a `name`; the int8
# interpreter's model objects are such objects, and so is a stub in a test. A tier may also be
# given as a loader, a function returning the model, called only when the tier is first used.

TIERS = ("primary", "fallback", "minimal")
# The worst tier a condition forces: state -> tier index.
THERMAL_TIERS = {"critical": 2, "shutdown": 2}
BATTERY_TIERS = {"power_saver": 1, "critical": 2}


class FallbackChain:
    def __init__(self, models, clock, error_limit=3, retry_ms=60000, retry_max_ms=3600000,
                 thermal_tiers=None, battery_tiers=None, on_switch=None, keep_loaded=True):
        """models: a list [primary, fallback, minimal] (fewer is fine) or a dict by tier name;
        each a model or a loader. clock: a function returning ms."""
        if isinstance(models, dict):
            models = [models.get(t) for t in TIERS]
        models = list(models)
        while models and models[-1] is None:
            models.pop()
        if not models or models[0] is None:
            raise ValueError("a fallback chain needs at least a primary model")
        self._sources = models
        self._loaded = [None] * len(models)
        self.clock = clock
        self.error_limit = error_limit
        self.retry_ms = retry_ms
        self.retry_max_ms = retry_max_ms
        self.thermal_tiers = THERMAL_TIERS if thermal_tiers is None else thermal_tiers
        self.battery_tiers = BATTERY_TIERS if battery_tiers is None else battery_tiers
        self.on_switch = on_switch
        self.keep_loaded = keep_loaded
        self.condition_tier = 0
        self.error_tier = 0
        self.tier = 0
        self.reason = "start"
        self._errors_in_row = [0] * len(models)
        self._retry_at = None
        self._retry_delay = retry_ms
        self.inferences = 0
        self.errors = 0
        self.switches = 0
        self.last_ms = 0
        self.total_ms = 0
        self.max_ms = 0
        self.last_error = None
        self.per_tier = [0] * len(models)

    # --- which tier ---------------------------------------------------------------------------
    def _available(self, tier):
        """The tier to use when `tier` is wanted: it, or the next cheaper model present, or
        failing that the best model present above it."""
        n = len(self._sources)
        for t in range(min(tier, n - 1), n):
            if self._sources[t] is not None:
                return t
        for t in range(min(tier, n - 1), -1, -1):
            if self._sources[t] is not None:
                return t
        return 0

    def set_conditions(self, thermal=None, battery=None):
        """The power manager's states; the worse of the two tiers they force is kept."""
        tier = max(self.thermal_tiers.get(thermal, 0), self.battery_tiers.get(battery, 0))
        if tier != self.condition_tier:
            self.condition_tier = tier
            self._settle("thermal %s, battery %s" % (thermal, battery))

    def _settle(self, reason):
        wanted = self._available(max(self.condition_tier, self.error_tier))
        if wanted != self.tier:
            old = self.tier
            self.tier = wanted
            self.switches += 1
            self.reason = reason
            if not self.keep_loaded:
                for i in range(len(self._loaded)):
                    if i != wanted and self._sources[i] is not self._loaded[i]:
                        self._loaded[i] = None
            if self.on_switch is not None:
                self.on_switch({"t": self.clock(), "from": self.tier_name(old), "to": self.tier_name(wanted),
                                "reason": reason})

    def tier_name(self, tier=None):
        return TIERS[self.tier if tier is None else tier]

    @property
    def model_name(self):
        model = self._loaded[self.tier]
        if model is None:
            source = self._sources[self.tier]
            model = source if hasattr(source, "invoke") else None
        name = getattr(model, "name", None) if model is not None else None
        return name or self.tier_name()

    def _model(self, tier):
        model = self._loaded[tier]
        if model is None:
            source = self._sources[tier]
            model = source if hasattr(source, "invoke") else source()
            self._loaded[tier] = model
        return model

    # --- inference ------------------------------------------------------------------------------
    def invoke(self, data):
        """Runs the current model on `data`. A failing model is counted, and the next tier runs
        the same input, so a caller only sees an error when every tier failed."""
        now = self.clock()
        if self.error_tier > self.condition_tier and self._retry_at is not None and now >= self._retry_at:
            result = self._probe(data, max(self.condition_tier, self.error_tier - 1))
            if result is not None:
                return result
        tier = self.tier
        error = None
        while tier < len(self._sources):
            if self._sources[tier] is not None:
                try:
                    return self._run(tier, data)
                except Exception as exc:
                    error = exc
                    self._failed(tier, exc)
            tier += 1
        raise error

    def _probe(self, data, tier):
        try:
            out = self._run(tier, data)
        except Exception as exc:
            self._failed(tier, exc, probing=True)
            return None
        self.error_tier = tier
        self._retry_delay = self.retry_ms
        self._retry_at = self.clock() + self.retry_ms if self.error_tier > self.condition_tier else None
        self._settle("%s recovered" % self.tier_name(tier))
        return out

    def _run(self, tier, data):
        t0 = self.clock()
        out = self._model(tier).invoke(data)
        ms = self.clock() - t0
        self.inferences += 1
        self.per_tier[tier] += 1
        self.last_ms = ms
        self.total_ms += ms
        if ms > self.max_ms:
            self.max_ms = ms
        self._errors_in_row[tier] = 0
        return out

    def _failed(self, tier, exc, probing=False):
        self.errors += 1
        self.last_error = "%s: %r" % (self.tier_name(tier), exc)
        self._errors_in_row[tier] += 1
        if probing:
            self._retry_delay = min(self.retry_max_ms, self._retry_delay * 2)
            self._retry_at = self.clock() + self._retry_delay
            return
        if self._errors_in_row[tier] >= self.error_limit and tier + 1 < len(self._sources) and tier >= self.error_tier:
            self.error_tier = tier + 1
            self._errors_in_row[tier] = 0
            self._retry_at = self.clock() + self._retry_delay
            self._settle("%d errors in a row on %s" % (self.error_limit, self.tier_name(tier)))

    def stats(self):
        return {"inferences": self.inferences, "errors": self.errors, "last_ms": self.last_ms,
                "avg_ms": self.total_ms / self.inferences if self.inferences else 0,
                "max_ms": self.max_ms, "model": self.model_name, "tier": self.tier_name(),
                "switches": self.switches, "per_tier": list(self.per_tier)}
