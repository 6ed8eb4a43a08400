# Anomaly scores. Raw signals: a streaming mean and variance (EWMA) and the z-score of each new
# sample against them. Autoencoders: the reconstruction error of the model's output against
# its input, compared with the threshold that codegen calibrated on normal data and exported
# with the model (metadata key "anomaly_threshold").
import array

THRESHOLD_KEY = "anomaly_threshold"


class EWMA:
    """Exponentially weighted mean and variance; alpha is the weight of a new sample."""

    def __init__(self, alpha=0.05):
        self.alpha = alpha
        self.mean = 0.0
        self.var = 0.0
        self.n = 0

    def update(self, x, alpha=None):
        a = self.alpha if alpha is None else alpha
        if self.n == 0:
            self.mean = float(x)
        else:
            d = x - self.mean
            inc = a * d
            self.mean += inc
            self.var = (1.0 - a) * (self.var + d * inc)
        self.n += 1

    @property
    def std(self):
        return self.var ** 0.5 if self.var > 0 else 0.0


class ZScore:
    """z-score of each sample against the EWMA of the samples before it.

    Scores are 0 during the first `warmup` samples. An anomalous sample (|z| >= threshold)
    moves only the mean, by anomaly_alpha, so a fault does not teach the detector that it is
    normal, while a lasting change of level is still learnt, slowly. min_std keeps a flat
    signal from turning its first wiggle into an infinite score.
    """

    def __init__(self, alpha=0.05, threshold=4.0, warmup=30, min_std=1e-3, anomaly_alpha=None):
        self.stats = EWMA(alpha)
        self.threshold = threshold
        self.warmup = warmup
        self.min_std = min_std
        self.anomaly_alpha = alpha / 20 if anomaly_alpha is None else anomaly_alpha
        self.last_z = 0.0

    def update(self, x):
        """Returns (z, anomalous) for sample x, then learns from it."""
        s = self.stats
        if s.n < self.warmup:
            s.update(x)
            self.last_z = 0.0
            return 0.0, False
        std = s.std
        if std < self.min_std:
            std = self.min_std
        z = (x - s.mean) / std
        anomalous = z >= self.threshold or z <= -self.threshold
        if anomalous:
            # Only the mean creeps towards an outlier; letting it into the variance would
            # widen the band until the fault looked normal.
            s.mean += self.anomaly_alpha * (x - s.mean)
        else:
            s.update(x)
        self.last_z = z
        return z, anomalous


class Signals:
    """One ZScore per named signal, created on first sight with the same settings."""

    def __init__(self, **settings):
        self.settings = settings
        self.detectors = {}

    def update(self, name, x):
        det = self.detectors.get(name)
        if det is None:
            det = self.detectors[name] = ZScore(**self.settings)
        return det.update(x)


def int8_values(data):
    """int8 tensor bytes as signed numbers (an array('b') view-copy, no per-byte Python)."""
    if isinstance(data, array.array):
        return data
    return array.array("b", bytes(data))


def reconstruction_error(inp, out, in_q=None, out_q=None, metric="mse"):
    """Error between an autoencoder's int8 input and output, in real units when the (scale,
    zero_point) of each is given, else in quantized steps. metric: "mse" or "mae"."""
    a = int8_values(inp)
    b = int8_values(out)
    if len(a) != len(b):
        raise ValueError("input has %d values, output %d: not an autoencoder pair" % (len(a), len(b)))
    sa, za = in_q if in_q else (1.0, 0)
    sb, zb = out_q if out_q else (1.0, 0)
    total = 0.0
    squared = metric == "mse"
    if not squared and metric != "mae":
        raise ValueError("metric must be 'mse' or 'mae', not %r" % (metric,))
    for i in range(len(a)):
        d = (a[i] - za) * sa - (b[i] - zb) * sb
        total += d * d if squared else (d if d >= 0 else -d)
    return total / len(a) if len(a) else 0.0


def _metadata(model):
    meta = getattr(model, "metadata", None)
    if meta is None:
        meta = getattr(model, "meta", None)
    return meta or {}


class Reconstruction:
    """Scores an autoencoder's output against its input; anomalous above `threshold`."""

    def __init__(self, threshold, in_q=None, out_q=None, metric="mse"):
        if threshold is None:
            raise ValueError("no reconstruction threshold: export the model with a calibrated '%s'" % THRESHOLD_KEY)
        self.threshold = float(threshold)
        self.in_q = in_q
        self.out_q = out_q
        self.metric = metric
        self.last_error = 0.0

    @classmethod
    def from_metadata(cls, meta, key=THRESHOLD_KEY, **kw):
        """From a model's metadata dict: the threshold under `key`, and the quantization from
        input_scale/input_zero_point and output_scale/output_zero_point when present."""
        in_q = out_q = None
        if "input_scale" in meta:
            in_q = (meta["input_scale"], meta.get("input_zero_point", 0))
        if "output_scale" in meta:
            out_q = (meta["output_scale"], meta.get("output_zero_point", 0))
        kw.setdefault("in_q", in_q)
        kw.setdefault("out_q", out_q)
        if "anomaly_metric" in meta:  # the metric the threshold was calibrated with
            kw.setdefault("metric", meta["anomaly_metric"])
        return cls(meta.get(key), **kw)

    @classmethod
    def from_model(cls, model, key=THRESHOLD_KEY, **kw):
        """From a model object: its `metadata` (or `meta`) dict, completed by the attributes
        input_scale, input_zero_point, output_scale, output_zero_point and the threshold key
        where the object has them (mf_model.Model has the quantization attributes)."""
        meta = dict(_metadata(model))
        for attr in ("input_scale", "input_zero_point", "output_scale", "output_zero_point", key):
            if attr not in meta and getattr(model, attr, None) is not None:
                meta[attr] = getattr(model, attr)
        return cls.from_metadata(meta, key, **kw)

    def score(self, inp, out):
        """Returns (error, anomalous)."""
        err = reconstruction_error(inp, out, self.in_q, self.out_q, self.metric)
        self.last_error = err
        return err, err > self.threshold
