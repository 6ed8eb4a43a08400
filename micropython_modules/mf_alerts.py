# Contextual alerts: fewer, better ones. Anomaly findings from any signal are gathered into one
# incident while they keep coming; an incident raises one alert, whose severity goes up when
# several signals agree, and goes up again when the condition persists. Repeats of a recently
# closed incident are deduplicated, and each alert kind has a rate limit.
#
# Life of an incident: the first finding opens it; findings arriving within quiet_ms of the last
# one join it. After window_ms (critical_window_ms once a finding is critical) it raises its
# alert, with every signal seen so far. A signal joining later raises an "update" only if it
# makes the alert more severe. It closes after quiet_ms without findings.
#
# Repeats and escalation: an incident of the same kind that opens within dedup_ms of the last
# one closing is a repeat of it, and raises nothing. A condition that persists, continuously or
# by repeating, escalates: level k is raised once it has lasted escalate_ms * (2**k - 1), so
# reminders come at 1, 3, 7, 15 ... times escalate_ms, never as a storm.

INFO, WARNING, MAJOR, CRITICAL = 0, 1, 2, 3
SEVERITIES = ("info", "warning", "major", "critical")


def severity_for(z, bounds=(4.0, 6.0, 10.0)):
    """Severity of a finding from the size of its score (say a z-score)."""
    z = z if z >= 0 else -z
    if z >= bounds[2]:
        return CRITICAL
    if z >= bounds[1]:
        return MAJOR
    if z >= bounds[0]:
        return WARNING
    return INFO


class _Incident:
    def __init__(self, now):
        self.first = now
        self.last = now
        self.signals = {}
        self.kinds = {}
        self.severity = INFO
        self.score = 0.0
        self.findings = 0
        self.raised = False
        self.raised_severity = -1
        self.level = 0
        self.since = now      # start of the condition, across repeats
        self.repeats = 0

    def kind(self):
        return "+".join(sorted(self.kinds))


class Alerts:
    """clock: a function returning ms. sink(alert_dict) receives each alert (say, a queue put).
    rate: (n, per_ms): at most n alerts of one kind per per_ms, as a token bucket."""

    def __init__(self, clock, sink=None, window_ms=10000, critical_window_ms=1000, quiet_ms=60000,
                 dedup_ms=3600000, rate=(4, 21600000), escalate_ms=900000, wall=None):
        self.clock = clock
        self.sink = sink
        self.window_ms = window_ms
        self.critical_window_ms = critical_window_ms
        self.quiet_ms = quiet_ms
        self.dedup_ms = dedup_ms
        self.rate = rate
        self.escalate_ms = escalate_ms
        self.wall = wall
        self.incident = None
        self._history = {}    # kind -> [closed at, condition since, repeats not yet reported, level]
        self._buckets = {}    # kind -> [tokens, last refill ms]
        self._held_back = {}  # kind -> alerts rate-limited since the last one let through
        self._next_id = 1
        self.findings = 0
        self.raised = 0
        self.deduplicated = 0
        self.rate_limited = 0
        self.escalations = 0

    def observe(self, signal, score, severity=WARNING, kind=None):
        """An anomaly on `signal` (its score, say |z|). kind groups signals for rate limits and
        dedup (default: the signal name). Returns the alerts raised now."""
        now = self.clock()
        raised = self.tick(now)
        inc = self.incident
        if inc is None:
            inc = self.incident = _Incident(now)
        inc.last = now
        inc.findings += 1
        self.findings += 1
        inc.signals[signal] = inc.signals.get(signal, 0) + 1
        inc.kinds[kind or signal] = True
        if severity > inc.severity:
            inc.severity = severity
        a = score if score >= 0 else -score
        if a > inc.score:
            inc.score = a
        if inc.raised and self.severity_of(inc) > inc.raised_severity:
            self._raise(inc, now, "update", raised)
        return raised

    def tick(self, now=None):
        """Raises what is due without a new finding: window ends, escalations; closes quiet
        incidents. Call it from the loop now and then; observe() calls it too."""
        if now is None:
            now = self.clock()
        raised = []
        inc = self.incident
        if inc is None:
            return raised
        wait = self.critical_window_ms if inc.severity >= CRITICAL else self.window_ms
        if not inc.raised and now - inc.first >= wait:
            self._raise(inc, now, "new", raised)
        quiet = now - inc.last >= self.quiet_ms
        if inc.raised and not quiet and inc.last - inc.since >= self.escalate_after(inc.level + 1):
            inc.level += 1
            self.escalations += 1
            self._raise(inc, now, "escalated", raised)
        if quiet:
            if not inc.raised:
                self._raise(inc, now, "new", raised)
            self._history[inc.kind()] = [inc.last, inc.since, inc.repeats, inc.level]
            self.incident = None
        return raised

    def escalate_after(self, level):
        return self.escalate_ms * ((1 << level) - 1)

    def severity_of(self, inc):
        sev = inc.severity
        if len(inc.signals) > 1:
            sev += 1  # agreeing signals make a finding more credible
        sev += inc.level
        return CRITICAL if sev > CRITICAL else sev

    def _allow(self, kind, now):
        n, per_ms = self.rate
        bucket = self._buckets.get(kind)
        if bucket is None:
            bucket = self._buckets[kind] = [float(n), now]
        tokens = bucket[0] + (now - bucket[1]) * n / per_ms
        bucket[0] = tokens if tokens < n else float(n)
        bucket[1] = now
        if bucket[0] >= 1.0:
            bucket[0] -= 1.0
            return True
        return False

    def _raise(self, inc, now, reason, out):
        kind = inc.kind()
        first_raise = not inc.raised
        inc.raised = True
        for k in list(self._history):
            if now - self._history[k][0] >= self.dedup_ms and k != kind:
                del self._history[k]
        if first_raise:
            past = self._history.get(kind)
            if past is not None and inc.first - past[0] < self.dedup_ms:
                inc.since = past[1]
                inc.level = past[3]
                inc.repeats = past[2] + 1
                if inc.first - inc.since < self.escalate_after(inc.level + 1):
                    inc.raised_severity = self.severity_of(inc)
                    self.deduplicated += 1
                    return
                inc.level += 1
                self.escalations += 1
                reason = "recurring"
        inc.raised_severity = self.severity_of(inc)
        if not self._allow(kind, now):
            self.rate_limited += 1
            self._held_back[kind] = self._held_back.get(kind, 0) + 1
            return
        alert = {
            "id": self._next_id,
            "t": self.wall() if self.wall is not None else now,
            "kind": kind,
            "sev": SEVERITIES[self.severity_of(inc)],
            "signals": sorted(inc.signals),
            "n": inc.findings,
            "score": round(inc.score, 2),
            "level": inc.level,
            "reason": reason,
            "since": inc.since,
        }
        if inc.repeats:
            alert["repeats"] = inc.repeats
            inc.repeats = 0
        held = self._held_back.pop(kind, 0)
        if held:
            alert["held_back"] = held
        self._next_id += 1
        self.raised += 1
        out.append(alert)
        if self.sink is not None:
            self.sink(alert)

    def stats(self):
        return {"findings": self.findings, "raised": self.raised, "deduplicated": self.deduplicated,
                "rate_limited": self.rate_limited, "escalations": self.escalations,
                "open": self.incident is not None}
