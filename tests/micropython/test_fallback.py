import unittest

from mf_fallback import FallbackChain
from mf_simhal import SimHAL
from mf_testkit import StubModel


def three(hal):
    return [StubModel("big", hal, 30, output=b"P"), StubModel("mid", hal, 10, output=b"F"),
            StubModel("tiny", hal, 2, output=b"M")]


class Conditions(unittest.TestCase):
    def test_thermal_critical_goes_minimal_and_back(self):
        hal = SimHAL()
        switches = []
        chain = FallbackChain(three(hal), hal.ms, on_switch=switches.append)
        self.assertEqual(chain.invoke(b"x"), b"P")
        chain.set_conditions(thermal="critical", battery="performance")
        self.assertEqual(chain.invoke(b"x"), b"M")
        self.assertEqual(chain.model_name, "tiny")
        chain.set_conditions(thermal="hot", battery="performance")
        self.assertEqual(chain.invoke(b"x"), b"P")
        self.assertEqual([(s["from"], s["to"]) for s in switches], [("primary", "minimal"), ("minimal", "primary")])

    def test_battery_states(self):
        hal = SimHAL()
        chain = FallbackChain(three(hal), hal.ms)
        chain.set_conditions(battery="power_saver")
        self.assertEqual(chain.invoke(b"x"), b"F")
        chain.set_conditions(battery="critical", thermal="optimal")
        self.assertEqual(chain.tier_name(), "minimal")
        chain.set_conditions(battery="balanced", thermal="optimal")
        self.assertEqual(chain.tier_name(), "primary")

    def test_configurable_mapping(self):
        hal = SimHAL()
        chain = FallbackChain(three(hal), hal.ms, thermal_tiers={"hot": 1, "critical": 2})
        chain.set_conditions(thermal="hot")
        self.assertEqual(chain.invoke(b"x"), b"F")

    def test_missing_tiers(self):
        hal = SimHAL()
        chain = FallbackChain({"primary": StubModel("p", output=b"P"), "minimal": StubModel("m", output=b"M")}, hal.ms)
        chain.set_conditions(battery="power_saver")  # wants fallback, there is none: the cheaper one
        self.assertEqual(chain.invoke(b"x"), b"M")
        only = FallbackChain([StubModel("p", output=b"P")], hal.ms)
        only.set_conditions(thermal="critical")
        self.assertEqual(only.invoke(b"x"), b"P")
        self.assertRaises(ValueError, FallbackChain, [], hal.ms)


class Errors(unittest.TestCase):
    def test_repeated_errors_step_down_then_recover(self):
        hal = SimHAL()
        models = three(hal)
        switches = []
        chain = FallbackChain(models, hal.ms, error_limit=3, retry_ms=10000, on_switch=switches.append)
        models[0].failing = True
        # Each failing call still answers, from the next tier.
        for _ in range(3):
            self.assertEqual(chain.invoke(b"x"), b"F")
        self.assertEqual(chain.tier_name(), "fallback")
        self.assertEqual(chain.errors, 3)
        calls = models[0].calls
        hal.sleep_ms(5000)
        self.assertEqual(chain.invoke(b"x"), b"F")
        self.assertEqual(models[0].calls, calls)  # not retried before retry_ms
        hal.sleep_ms(6000)
        self.assertEqual(chain.invoke(b"x"), b"F")  # probe failed: wait doubles to 20 s
        self.assertEqual(models[0].calls, calls + 1)
        models[0].failing = False
        hal.sleep_ms(15000)
        chain.invoke(b"x")
        self.assertEqual(models[0].calls, calls + 1)
        hal.sleep_ms(6000)
        self.assertEqual(chain.invoke(b"x"), b"P")
        self.assertEqual(chain.tier_name(), "primary")
        self.assertEqual([s["to"] for s in switches], ["fallback", "primary"])

    def test_everything_failing_raises(self):
        hal = SimHAL()
        models = three(hal)
        for m in models:
            m.failing = True
        chain = FallbackChain(models, hal.ms)
        self.assertRaises(RuntimeError, chain.invoke, b"x")
        self.assertEqual(chain.errors, 3)

    def test_a_loader_that_fails_counts_as_an_error(self):
        hal = SimHAL()

        def broken():
            raise OSError(2)

        loaded = []

        def tiny():
            loaded.append(1)
            return StubModel("tiny", output=b"M")

        chain = FallbackChain([broken, None, tiny], hal.ms, error_limit=1)
        self.assertEqual(loaded, [])
        self.assertEqual(chain.invoke(b"x"), b"M")
        self.assertEqual(chain.tier_name(), "minimal")
        self.assertEqual(loaded, [1])

    def test_stats(self):
        hal = SimHAL()
        chain = FallbackChain(three(hal), hal.ms)
        for _ in range(4):
            chain.invoke(b"x")
        s = chain.stats()
        self.assertEqual((s["inferences"], s["errors"], s["last_ms"], s["max_ms"], s["model"]), (4, 0, 30, 30, "big"))
