# The OTA updater under MicroPython: install, hostile packages, health window and rollback,
# resume, and a power cut at every flash write of a whole update.
import unittest

import mf_model
import mf_ota
from mf_simhal import PowerCut
from mf_testkit import StubModel
from ota_testkit import Device, RecordingHAL, fixture, read, sha, exists

V1, V2 = fixture("v1.mfm"), fixture("v2.mfm")


def whole_copy_kept(dev):
    """Right after a cut (before the updater's recovery), the old version is still whole on
    flash: in the slot, or in prev.model during the two renames of a switch."""
    for path in (dev.model, dev.dir + "/ota/prev.model", dev.dir + "/ota/new"):
        if exists(path) and read(path) in (V1, V2):
            return True
    return False


def committed(dev):
    up = dev.updater
    while up.on_trial():
        up.report(True)


class Install(unittest.TestCase):
    def test_delta_installs_switches_and_commits(self):
        dev = Device()
        code, message = dev.host.push(fixture("v1_v2.mfu"))[0]
        self.assertEqual(code, mf_ota.INSTALLED, message)
        self.assertEqual(read(dev.model), V2)
        self.assertEqual(read(dev.dir + "/ota/prev.model"), V1)
        st = dev.updater.status()
        self.assertEqual((st["phase"], st["version"], st["previous"], st["floor"]), ("trial", 2, 1, 2))
        self.assertFalse(exists(dev.dir + "/ota/pkg"))
        model = dev.updater.load_model("model")
        for _ in range(20):
            model.invoke(b"\x10")
        self.assertEqual(dev.updater.status()["phase"], "idle")
        self.assertEqual(dev.updater.state["last"][0], mf_ota.COMMITTED)
        self.assertTrue(exists(dev.dir + "/ota/prev.model"))   # kept for a rollback on request

    def test_full_image_installs(self):
        dev = Device()
        code, message = dev.host.push(fixture("v2_full.mfu"), chunk=200)[0]
        self.assertEqual(code, mf_ota.INSTALLED, message)
        self.assertEqual(read(dev.model), V2)
        mf_model.load(dev.model)

    def test_app_code_delta(self):
        dev = Device()
        code, message = dev.host.push(fixture("app_v1_v2.mfu"))[0]
        self.assertEqual(code, mf_ota.INSTALLED, message)
        self.assertEqual(read(dev.app), fixture("app_v2.py"))
        self.assertEqual(dev.updater.status("app")["version"], 2)

    def test_state_survives_a_reboot(self):
        dev = Device()
        dev.host.push(fixture("v1_v2.mfu"))
        dev.boot()
        st = dev.updater.status()
        self.assertEqual((st["phase"], st["version"], st["previous"]), ("trial", 2, 1))

    def test_a_second_install_waits_for_the_health_window(self):
        dev = Device()
        dev.host.push(fixture("v1_v2.mfu"))
        code, message = dev.host.push(fixture("v2_v3_wrong.mfu"))[0]
        self.assertEqual(code, mf_ota.E_STATE, message)
        self.assertEqual(read(dev.model), V2)
        committed(dev)
        code, message = dev.host.push(fixture("v2_v3_wrong.mfu"))[0]
        self.assertEqual(code, mf_ota.INSTALLED, message)


class Hostile(unittest.TestCase):
    def _refused(self, name, expected_code, provision=True, setup=None):
        dev = Device(provision=provision)
        if setup is not None:
            setup(dev)
        before = read(dev.model)
        code, message = dev.host.push(fixture(name))[0]
        self.assertEqual(code, expected_code, message)
        self.assertEqual(read(dev.model), before)           # untouched
        mf_model.load(dev.model)                            # and whole
        self.assertFalse(exists(dev.dir + "/ota/new"))
        self.assertNotEqual(dev.updater.status()["phase"], "trial")
        return dev, message

    def test_wrong_key(self):
        _, message = self._refused("v1_v2_other_key.mfu", mf_ota.E_SIGNATURE)
        self.assertIn("does not trust", message)

    def test_unsigned(self):
        self._refused("v1_v2_unsigned.mfu", mf_ota.E_SIGNATURE)

    def test_manifest_edited_after_signing(self):
        self._refused("v1_v2_edited_manifest.mfu", mf_ota.E_SIGNATURE)

    def test_tampered_payload(self):
        dev, message = self._refused("v1_v2_tampered_payload.mfu", mf_ota.E_CORRUPT)
        self.assertIn("sha256", message)
        self.assertFalse(exists(dev.dir + "/ota/pkg"))

    def test_another_product(self):
        self._refused("v1_v2_other_product.mfu", mf_ota.E_PRODUCT)

    def test_downgrade(self):
        def at_v2(dev):
            self.assertEqual(dev.host.push(fixture("v1_v2.mfu"))[0][0], mf_ota.INSTALLED)
            committed(dev)
        self._refused("v1_full_downgrade.mfu", mf_ota.E_VERSION, setup=at_v2)

    def test_replay(self):
        def at_v2(dev):
            dev.host.push(fixture("v1_v2.mfu"))
            committed(dev)
        self._refused("v1_v2.mfu", mf_ota.E_VERSION, setup=at_v2)
        self._refused("v2_full.mfu", mf_ota.E_VERSION, setup=at_v2)

    def test_patch_for_another_base(self):
        def holds_v2_as_v1(dev):
            with open(dev.model, "wb") as f:
                f.write(V2)
        dev, message = self._refused("v1_v2.mfu", mf_ota.E_BASE, setup=holds_v2_as_v1)
        self.assertIn("full image", message)

    def test_replay_after_rollback(self):
        dev = Device()
        dev.host.push(fixture("v1_v2.mfu"))
        dev.updater.rollback("test")
        self.assertEqual(read(dev.model), V1)
        code, _ = dev.host.push(fixture("v1_v2.mfu"))[0]
        self.assertEqual(code, mf_ota.E_VERSION)            # version 2 was seen: use a new number

    def test_garbage_instead_of_a_package(self):
        dev = Device()
        junk = bytes((i * 37 + 11) & 0xFF for i in range(300))
        code, _ = dev.host.push(junk)[0]
        self.assertEqual(code, mf_ota.E_FORMAT)
        self.assertEqual(read(dev.model), V1)


class HealthWindow(unittest.TestCase):
    def _at_v2(self, **options):
        dev = Device(**options)
        dev.host.push(fixture("v1_v2.mfu"))
        committed(dev)
        return dev

    def test_model_that_fails_to_load_rolls_back(self):
        dev = self._at_v2()
        code, message = dev.host.push(fixture("v2_v3_broken.mfu"))[0]
        self.assertEqual(code, mf_ota.INSTALLED, message)
        model = dev.updater.load_model("model")              # the broken one fails; v2 comes back
        self.assertEqual(read(dev.model), V2)
        self.assertEqual(dev.updater.state["last"][0], mf_ota.ROLLED_BACK)
        self.assertIn("does not load", dev.updater.state["last"][1])
        st = dev.updater.status()
        self.assertEqual((st["phase"], st["version"], st["floor"]), ("idle", 2, 3))
        self.assertEqual(len(model.invoke(b"\x00")), 1)

    def test_model_that_fails_its_canary_rolls_back(self):
        # Canary samples: v2's outputs on a few inputs, within 6 quanta.
        v2 = mf_model.load("/tests/ota_fixtures/v2.mfm")
        inputs = [bytes((x,)) for x in (0, 20, 40, 60, 80, 100, 120, 200, 230)]
        import struct
        body = b"".join(x + v2.invoke(x) for x in inputs)
        path = "canary.bin"
        with open(path, "wb") as f:
            f.write(b"MFCN" + struct.pack("<BBHHHBH", 1, 1, len(inputs), 1, 1, 6, len(inputs)) + body)
        from mf_hal import HAL
        dev = self._at_v2(canary=mf_ota.CanaryFile(HAL(), path))
        ok, detail = dev.updater.canary(v2)
        self.assertTrue(ok, detail)
        code, message = dev.host.push(fixture("v2_v3_wrong.mfu"))[0]
        self.assertEqual(code, mf_ota.INSTALLED, message)
        dev.updater.load_model("model")
        self.assertEqual(read(dev.model), V2)
        self.assertIn("canary", dev.updater.state["last"][1])

    def test_inference_that_raises_rolls_back_and_answers_with_the_old_model(self):
        dev = Device()
        dev.host.push(fixture("v1_v2.mfu"))
        loads = []

        def loader(path):
            loads.append(read(path))
            stub = StubModel("m%d" % len(loads), output=b"\x07")
            if read(path) == V2:
                stub.fail_when = lambda n: n == 3
            return stub
        model = dev.updater.load_model("model", loader)
        self.assertEqual(model.invoke(b"a"), b"\x07")
        self.assertEqual(model.invoke(b"b"), b"\x07")
        self.assertEqual(model.invoke(b"c"), b"\x07")     # v2 raised; v1 answered
        self.assertEqual(read(dev.model), V1)
        self.assertEqual(dev.updater.state["last"][0], mf_ota.ROLLED_BACK)
        self.assertEqual(loads[-1], V1)

    def test_crash_loop_rolls_back(self):
        dev = Device(trial_boots=3)
        dev.host.push(fixture("v1_v2.mfu"))
        for boot in range(3):
            dev.boot()
            self.assertEqual(dev.updater.boot(), "trial")
        dev.boot()
        self.assertEqual(dev.updater.boot(), "idle")         # the fourth boot without passing
        self.assertEqual(read(dev.model), V1)
        self.assertIn("boots", dev.updater.state["last"][1])

    def test_rollback_requested_by_the_host(self):
        import mf_ota_link
        dev = self._at_v2()
        replies = dev.host.send(mf_ota_link.ROLLBACK, 0, b"model")
        self.assertEqual(replies[-1][2][0], mf_ota.ROLLED_BACK)
        self.assertEqual(read(dev.model), V1)
        replies = dev.host.send(mf_ota_link.ROLLBACK, 0, b"model")
        self.assertEqual(replies[-1][2][0], mf_ota.E_STATE)   # nothing older is kept
        self.assertEqual(read(dev.model), V1)


class Resume(unittest.TestCase):
    def test_an_interrupted_download_resumes_from_the_checkpoint(self):
        dev = Device(checkpoint=128)
        pkg = fixture("v1_v2.mfu")
        _, offset = dev.host.push(pkg, chunk=64, order=range(0, 7), install=False)
        self.assertEqual(offset, 0)
        dev.boot()                                          # the link dropped, then the device rebooted
        (code, message), offset = dev.host.push(pkg, chunk=64)
        self.assertEqual(code, mf_ota.INSTALLED, message)
        self.assertEqual(offset, 384)                       # 7 chunks of 64 held; checkpoints every 128 bytes
        self.assertEqual(read(dev.model), V2)

    def test_out_of_order_and_duplicate_chunks(self):
        dev = Device()
        pkg = fixture("v1_v2.mfu")
        n = (len(pkg) + 63) // 64
        order = [1, 0, 0, 3, 2, 2, 5, 4] + list(range(4, n)) + [n - 1]
        (code, message), _ = dev.host.push(pkg, chunk=64, order=order)
        self.assertEqual(code, mf_ota.INSTALLED, message)
        self.assertEqual(read(dev.model), V2)


class PowerCuts(unittest.TestCase):
    """A power cut before and inside every flash write of a whole update (download, apply,
    switch, journal): the slot always holds one whole version, and the update completes once
    the host pushes again, resuming past what was journaled."""

    def _run(self, hal, budget, pkg):
        dev = Device(hal=hal, checkpoint=128)
        if budget is not None:
            hal.cut_power_after(budget, b"\xff\x00junk")
        try:
            return dev, dev.host.push(pkg, chunk=64)
        except PowerCut:
            return dev, None

    def test_power_cut_at_every_write_of_an_update(self):
        pkg = fixture("v1_v2.mfu")
        hal = RecordingHAL()
        dev = Device(hal=hal, checkpoint=128)
        hal.record()
        (code, message), _ = dev.host.push(pkg, chunk=64)
        self.assertEqual(code, mf_ota.INSTALLED, message)
        points = hal.cut_points()
        self.assertTrue(len(points) > 40, len(points))
        resumed_past_zero = 0
        for budget in points:
            hal = RecordingHAL()
            dev = Device(hal=hal, checkpoint=128)
            hal.cut_power_after(budget, b"\xff\x00junk")
            try:
                dev.host.push(pkg, chunk=64)
                self.fail("no cut at budget %d" % budget)
            except PowerCut:
                pass
            hal.power_on()
            self.assertTrue(whole_copy_kept(dev), "budget %d" % budget)
            dev.boot()                      # the updater finishes an interrupted switch first
            dev.updater.boot()
            self.assertIn(read(dev.model), (V1, V2), "budget %d" % budget)
            mf_model.load(dev.model)
            finished = dev.updater.status()["version"] == 2
            result, offset = dev.host.push(pkg, chunk=64)
            if finished:
                # The update had completed before the cut: pushing it again is a replay.
                self.assertEqual(result[0], mf_ota.E_VERSION, "budget %d: %r" % (budget, result))
            else:
                self.assertEqual(result[0], mf_ota.INSTALLED, "budget %d: %r" % (budget, result))
            if offset:
                resumed_past_zero += 1
            self.assertEqual(read(dev.model), V2, "budget %d" % budget)
            self.assertEqual(dev.updater.status()["version"], 2)
        self.assertTrue(resumed_past_zero > 5, resumed_past_zero)

    def test_power_cut_at_every_write_of_a_rollback(self):
        pkg = fixture("v1_v2.mfu")
        hal = RecordingHAL()
        dev = Device(hal=hal)
        dev.host.push(pkg)
        hal.record()
        dev.updater.rollback("test")
        points = hal.cut_points()
        self.assertTrue(len(points) > 3, len(points))
        for budget in points:
            hal = RecordingHAL()
            dev = Device(hal=hal)
            dev.host.push(pkg)
            hal.cut_power_after(budget, b"\xff")
            try:
                dev.updater.rollback("test")
                self.fail("no cut at budget %d" % budget)
            except PowerCut:
                pass
            hal.power_on()
            self.assertTrue(whole_copy_kept(dev), "budget %d" % budget)
            dev.boot()                                        # recovery finishes what was started
            model = read(dev.model)
            self.assertIn(model, (V1, V2))
            st = dev.updater.status()
            self.assertEqual(sha(model), dev.updater.slot_info("model")["sha"])
            self.assertIn(st["phase"], ("idle", "trial"))
