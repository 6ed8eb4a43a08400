import array
import unittest

from mf_anomaly import EWMA, THRESHOLD_KEY, Reconstruction, Signals, ZScore, int8_values, reconstruction_error
from mf_simhal import Rng


class Streaming(unittest.TestCase):
    def test_ewma_tracks_mean_and_spread(self):
        rng = Rng(4)
        s = EWMA(0.02)
        for _ in range(3000):
            s.update(10 + 2 * rng.gauss())
        self.assertTrue(abs(s.mean - 10) < 0.5)
        self.assertTrue(1.4 < s.std < 2.6)

    def test_zscore_flags_a_spike_not_the_noise(self):
        rng = Rng(7)
        det = ZScore(alpha=0.05, threshold=5, warmup=50)
        flagged = 0
        for _ in range(2000):
            flagged += det.update(rng.gauss())[1]
        self.assertEqual(flagged, 0)
        z, anomalous = det.update(12.0)
        self.assertTrue(anomalous and z > 5)
        z, anomalous = det.update(-12.0)
        self.assertTrue(anomalous and z < -5)

    def test_warmup_scores_zero(self):
        det = ZScore(warmup=5)
        self.assertEqual([det.update(x) for x in (1, 100, -50, 3, 2)], [(0.0, False)] * 5)

    def test_a_fault_does_not_become_normal_quickly(self):
        det = ZScore(alpha=0.1, threshold=4, warmup=20)
        rng = Rng(2)
        for _ in range(200):
            det.update(rng.gauss())
        hits = sum(det.update(20 + rng.gauss())[1] for _ in range(30))
        self.assertEqual(hits, 30)

    def test_flat_signal(self):
        det = ZScore(warmup=3, min_std=0.5, threshold=4)
        for _ in range(10):
            det.update(5.0)
        self.assertEqual(det.update(6.0), (2.0, False))

    def test_named_signals(self):
        sig = Signals(warmup=2, threshold=3)
        for v in (1.0, 1.1, 0.9, 1.0):
            sig.update("a", v)
            sig.update("b", v * 100)
        self.assertEqual(sorted(sig.detectors), ["a", "b"])


class Reconstructions(unittest.TestCase):
    def test_int8_bytes(self):
        self.assertEqual(list(int8_values(b"\x00\x7f\x80\xff")), [0, 127, -128, -1])
        arr = array.array("b", [1, -2])
        self.assertTrue(int8_values(arr) is arr)

    def test_error_in_real_units(self):
        x = bytes([10, 20, 30, 40])
        y = bytes([12, 20, 26, 40])
        self.assertEqual(reconstruction_error(x, y), (4 + 0 + 16 + 0) / 4)
        self.assertEqual(reconstruction_error(x, y, metric="mae"), 1.5)
        # Output in steps of 0.5 with zero point 4: 12 -> 4.0, 20 -> 8.0 ...
        err = reconstruction_error(x, y, (1.0, 0), (0.5, 4))
        expected = ((10 - 4) ** 2 + (20 - 8) ** 2 + (30 - 11) ** 2 + (40 - 18) ** 2) / 4
        self.assertAlmostEqual(err, expected)
        self.assertRaises(ValueError, reconstruction_error, b"\x01", b"\x01\x02")
        self.assertRaises(ValueError, reconstruction_error, b"\x01", b"\x01", None, None, "max")

    def test_threshold_from_model_metadata(self):
        class Model:
            name = "ae"
            metadata = {THRESHOLD_KEY: 2.5}
            input_scale, input_zero_point = 0.1, 0
            output_scale, output_zero_point = 0.1, 0

        rec = Reconstruction.from_model(Model())
        self.assertEqual(rec.threshold, 2.5)
        self.assertEqual(rec.in_q, (0.1, 0))
        self.assertFalse(rec.score(bytes([10] * 8), bytes([12] * 8))[1])
        err, anomalous = rec.score(bytes([10] * 8), bytes([40] * 8))
        self.assertTrue(anomalous)
        self.assertAlmostEqual(err, 9.0)

    def test_threshold_as_a_parameter_or_missing(self):
        self.assertEqual(Reconstruction(1.0).threshold, 1.0)
        self.assertEqual(Reconstruction.from_metadata({THRESHOLD_KEY: 3}).threshold, 3.0)
        self.assertRaises(ValueError, Reconstruction.from_metadata, {})
