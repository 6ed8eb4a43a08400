import unittest

from mf_alerts import CRITICAL, MAJOR, WARNING, Alerts, severity_for


class Clock:
    def __init__(self):
        self.t = 0

    def __call__(self):
        return self.t


def alerts(**kw):
    clock = Clock()
    out = []
    kw.setdefault("window_ms", 5000)
    kw.setdefault("quiet_ms", 30000)
    return clock, out, Alerts(clock, sink=out.append, **kw)


class Severity(unittest.TestCase):
    def test_from_score(self):
        self.assertEqual([severity_for(z) for z in (1, -4.5, 7, 11)], [0, WARNING, MAJOR, CRITICAL])


class Correlation(unittest.TestCase):
    def test_signals_within_the_window_make_one_alert(self):
        clock, out, a = alerts()
        a.observe("vib", 5)
        clock.t = 1000
        a.observe("current", 6, MAJOR)
        clock.t = 3000
        a.observe("temp", 4.2)
        self.assertEqual(out, [])  # still gathering
        clock.t = 5000
        a.tick()
        self.assertEqual(len(out), 1)
        alert = out[0]
        self.assertEqual(alert["signals"], ["current", "temp", "vib"])
        self.assertEqual(alert["kind"], "current+temp+vib")
        self.assertEqual(alert["sev"], "critical")  # major, and three signals agree
        self.assertEqual(alert["n"], 3)

    def test_a_single_signal_keeps_its_severity(self):
        clock, out, a = alerts()
        a.observe("vib", 5)
        clock.t = 6000
        a.tick()
        self.assertEqual(out[0]["sev"], "warning")

    def test_critical_goes_out_after_a_short_window(self):
        clock, out, a = alerts(critical_window_ms=1000)
        a.observe("temp", 12, CRITICAL)
        a.observe("vib", 12, CRITICAL)  # the same instant: the same alert
        self.assertEqual(out, [])
        clock.t = 1000
        raised = a.observe("current", 12, CRITICAL)
        self.assertEqual(len(raised), 1)
        self.assertEqual(out[0]["sev"], "critical")
        self.assertEqual(out[0]["signals"], ["temp", "vib"])
        clock.t = 2000
        a.observe("current", 12, CRITICAL)
        self.assertEqual(len(out), 1)  # already critical: joining adds nothing worth an alert

    def test_a_signal_joining_later_sends_an_update(self):
        clock, out, a = alerts()
        a.observe("vib", 5)
        clock.t = 6000
        a.tick()
        clock.t = 8000
        a.observe("vib", 5)
        self.assertEqual(len(out), 1)
        a.observe("temp", 5)
        self.assertEqual([x["reason"] for x in out], ["new", "update"])
        self.assertEqual(out[1]["signals"], ["temp", "vib"])
        self.assertEqual([x["sev"] for x in out], ["warning", "major"])
        a.observe("current", 5)
        self.assertEqual(len(out), 2)  # a third signal, the same severity: nothing new to say


class Repeats(unittest.TestCase):
    def test_a_persistent_condition_is_one_alert_plus_escalations(self):
        clock, out, a = alerts(escalate_ms=600000)
        for t in range(0, 3600000, 2000):  # an hour of findings every 2 s
            clock.t = t
            a.observe("vib", 6, MAJOR)
        # Escalations after 10 and 30 minutes; the next would come at 70.
        self.assertEqual([x["reason"] for x in out], ["new", "escalated", "escalated"])
        self.assertEqual([x["level"] for x in out], [0, 1, 2])
        self.assertEqual([x["sev"] for x in out], ["major", "critical", "critical"])
        self.assertEqual(a.findings, 1800)

    def test_flapping_is_deduplicated(self):
        clock, out, a = alerts(dedup_ms=600000)
        for cycle in range(10):  # on for 10 s, off for 50 s, ten times
            base = cycle * 60000
            for t in range(0, 10000, 1000):
                clock.t = base + t
                a.observe("vib", 5)
        clock.t = 10 * 60000 + 40000
        a.tick()
        self.assertEqual(len(out), 1)
        self.assertEqual(a.deduplicated, 9)

    def test_after_the_dedup_window_it_alerts_again(self):
        clock, out, a = alerts(dedup_ms=60000)
        a.observe("vib", 5)
        clock.t = 100000
        a.tick()
        clock.t = 200000
        a.observe("vib", 5)
        clock.t = 210000
        a.tick()
        self.assertEqual(len(out), 2)

    def test_rate_limit_per_kind(self):
        clock, out, a = alerts(dedup_ms=0, rate=(2, 3600000))
        for i in range(6):
            clock.t = i * 100000
            a.observe("vib", 5)
            clock.t += 40000
            a.tick()
        self.assertEqual(len(out), 2)  # the bucket holds two
        self.assertEqual(a.rate_limited, 4)
        clock.t = 100000 + 1800000 + 40000  # one token back per 30 minutes
        a.observe("vib", 5)
        clock.t += 40000
        a.tick()
        self.assertEqual(len(out), 3)
        self.assertEqual(out[-1]["held_back"], 4)
        clock.t += 1000
        a.observe("temp", 5)
        clock.t += 40000
        a.tick()
        self.assertEqual(out[-1]["kind"], "temp")  # another kind has its own budget

    def test_recurring_condition_escalates_on_a_growing_interval(self):
        clock, out, a = alerts(escalate_ms=600000)
        for burst in range(30):  # ten seconds of findings every ten minutes, for five hours
            for t in range(0, 10000, 1000):
                clock.t = burst * 600000 + t
                a.observe("vib", 5)
        clock.t += 60000
        a.tick()
        # Reminders after 10, 30, 70 and 150 minutes; the next would be at 310.
        self.assertEqual([x["reason"] for x in out], ["new"] + ["recurring"] * 4)
        self.assertEqual([x["since"] for x in out], [0] * 5)
        self.assertEqual([x["level"] for x in out], [0, 1, 2, 3, 4])
        self.assertEqual(sum(x.get("repeats", 0) for x in out), 15)
        self.assertEqual(a.deduplicated, 25)

    def test_no_storm(self):
        clock, out, a = alerts()
        # A day of a noisy sensor: bursts of findings on three signals, every 20 minutes.
        for burst in range(72):
            base = burst * 1200000
            for t in range(0, 60000, 500):
                clock.t = base + t
                a.observe(("vib", "temp", "current")[t // 500 % 3], 5)
        clock.t = 72 * 1200000
        a.tick()
        self.assertTrue(1 <= len(out) <= 7, len(out))
        self.assertEqual(out[0]["reason"], "new")
        self.assertEqual(len(set(x["kind"] for x in out)), 1)
        self.assertEqual(a.stats()["findings"], 72 * 120)
