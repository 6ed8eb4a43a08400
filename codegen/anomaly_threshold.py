"""Calibrate an autoencoder's anomaly threshold on normal data, for export with the model.

The int8 model runs on the host (TFLM's reference interpreter, bit-exact with what the device
runs) over samples of normal operation. Each sample's reconstruction error is computed exactly
as the device computes it (micropython_modules/mf_anomaly.py, `reconstruction_error`): input and
output dequantized with their own scale and zero point, the per-value differences squared
("mse") or taken absolute ("mae"), summed in order and divided by the number of values. The
threshold is a percentile of those errors: on the device a sample is anomalous when its error is
above it (`Reconstruction.score`).

`mcuforge compile MODEL --engine micropython --threshold-data normal.npy` stores the result in
the model file's metadata (key `anomaly_threshold`, see docs/micropython-model-format.md), where
`mf_anomaly.Reconstruction.from_model(mf_model.load(path))` finds it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import McuforgeError

THRESHOLD_KEY = "anomaly_threshold"     # mf_anomaly.THRESHOLD_KEY
METRICS = ("mse", "mae")                # mf_anomaly.reconstruction_error's metrics
DEFAULT_PERCENTILE = 99.5
_UNITS = {"mse": "mean squared error of the dequantized values (model units squared)",
          "mae": "mean absolute error of the dequantized values (model units)"}


def reconstruction_errors(inputs: np.ndarray, outputs: np.ndarray, in_q: tuple[float, int],
                          out_q: tuple[float, int], metric: str = "mse") -> np.ndarray:
    """One error per sample (rows of int8 `inputs` and `outputs`), the device's arithmetic:
    d = (a - za) * sa - (b - zb) * sb in double precision, summed left to right (a cumulative
    sum, not numpy's pairwise sum), divided by the number of values."""
    if metric not in METRICS:
        raise McuforgeError(f"unknown reconstruction metric {metric!r}", where="metric",
                            fix=f"use one of {', '.join(METRICS)}")
    a = np.asarray(inputs).reshape(len(inputs), -1).astype(np.int64)
    b = np.asarray(outputs).reshape(len(outputs), -1).astype(np.int64)
    if a.shape != b.shape:
        raise McuforgeError(f"inputs have {a.shape[1]} values per sample and outputs {b.shape[1]}",
                            where="reconstruction error", fix="pair each autoencoder input with its own output")
    (sa, za), (sb, zb) = (float(in_q[0]), int(in_q[1])), (float(out_q[0]), int(out_q[1]))
    d = (a - za) * sa - (b - zb) * sb
    terms = d * d if metric == "mse" else np.abs(d)
    if terms.shape[1] == 0:
        return np.zeros(len(terms))
    return np.cumsum(terms, axis=1)[:, -1] / terms.shape[1]


def _check_autoencoder(graph, where: str):
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise McuforgeError(f"the model has {len(graph.inputs)} inputs and {len(graph.outputs)} outputs; a "
                            f"reconstruction threshold needs an autoencoder with one input and one output",
                            where=where, fix="calibrate an autoencoder model (output = reconstruction of the input)")
    tensors = graph.tensors[graph.inputs[0]], graph.tensors[graph.outputs[0]]
    for which, tensor in zip(("input", "output"), tensors):
        if tensor.dtype != "INT8" or tensor.scale is None or len(tensor.scale) != 1:
            raise McuforgeError(f"model {which} {tensor.name!r} is {tensor.dtype}; the device scores int8 tensors "
                                f"with one scale and zero point", where=f"{where}: tensor {tensor.index}",
                                fix="convert with int8 input and output (`mcuforge convert` does)")
    inp, out = tensors
    if int(np.prod(inp.shape)) != int(np.prod(out.shape)):
        raise McuforgeError(f"the model's output shape {list(out.shape)} differs from its input shape "
                            f"{list(inp.shape)}: it is not an autoencoder, so it has no reconstruction error",
                            where=f"{where}: output {out.name!r}",
                            fix="calibrate a model whose output reconstructs its input (same number of values)")
    return inp, out


def _load_samples(normal_data, where: str) -> np.ndarray:
    if isinstance(normal_data, np.ndarray):
        return normal_data
    from .quantize import load_array_file

    arrays = load_array_file(normal_data, "normal", key="x")
    if "x" in arrays:
        return arrays["x"]
    if len(arrays) == 1:
        return next(iter(arrays.values()))
    raise McuforgeError(f"the normal-data file holds several arrays ({', '.join(sorted(arrays)) or 'none'}) and "
                        f"none is named 'x'", where=where,
                        fix="store the normal samples under the key 'x': numpy.savez(path, x=...)")


def _as_batch(x: np.ndarray, shape: tuple[int, ...], where: str) -> np.ndarray:
    """x as (N, *shape): samples of the input's shape, or of its shape without a leading batch of 1."""
    if x.ndim == len(shape) + 1 and tuple(x.shape[1:]) == shape:
        return x
    if len(shape) > 1 and shape[0] == 1 and x.ndim == len(shape) and tuple(x.shape[1:]) == shape[1:]:
        return x.reshape((len(x),) + shape)
    per_sample = ", ".join(str(d) for d in (shape[1:] if len(shape) > 1 and shape[0] == 1 else shape))
    raise McuforgeError(f"normal data has the wrong shape: found {list(x.shape)}, expected [N, {per_sample}] "
                        f"(one model input {list(shape)} per sample)", where=where,
                        fix=f"store an array of shape (N, {per_sample}): one sample of normal operation per row")


def _quantized(x: np.ndarray, scale: float, zero_point: int, where: str) -> tuple[np.ndarray, int]:
    """int8 samples: int8 data as is, float data quantized with the input's scale and zero point
    (round half to even, then clamp, as `mcuforge` quantizes inputs everywhere)."""
    if x.dtype == np.int8:
        return x, 0
    if x.dtype.kind != "f":
        raise McuforgeError(f"normal data has dtype {x.dtype}; it must be float (model units, quantized here with "
                            f"the input's scale and zero point) or int8 (already quantized)", where=where,
                            fix="store float32 samples, or int8 ones: x.astype(numpy.int8)")
    if not np.all(np.isfinite(x)):
        raise McuforgeError("normal data contains NaN or infinite values", where=where,
                            fix="clean the data: a threshold from it would be meaningless")
    q = np.round(x.astype(np.float64) / scale) + zero_point
    clipped = int(np.count_nonzero((q < -128) | (q > 127)))
    return np.clip(q, -128, 127).astype(np.int8), clipped


def calibrate_reconstruction_threshold(model_path: str | Path, normal_data, percentile: float = DEFAULT_PERCENTILE,
                                       metric: str = "mse") -> dict:
    """Run the int8 autoencoder on normal data and return the reconstruction-error threshold at
    `percentile` with the errors' statistics.

    `normal_data`: a .npy file, a .npz file (key x), or an array; N samples of the model's input
    shape (a leading batch dimension of 1 may be left out). Float data is quantized with the input's
    scale and zero point; int8 data is used as is.

    The result's "metadata" is what goes into the model file (`emit_micropython(..., metadata=)`).
    """
    from .reference import run_reference
    from .tflite_model import parse_tflite

    model_path = Path(model_path)
    if not model_path.is_file():
        raise McuforgeError(f"model file not found: {model_path}", where=str(model_path), fix="check the path")
    if metric not in METRICS:
        raise McuforgeError(f"unknown reconstruction metric {metric!r}", where="metric",
                            fix=f"use one of {', '.join(METRICS)}")
    try:
        percentile = float(percentile)
    except (TypeError, ValueError):
        percentile = float("nan")
    if not 0.0 <= percentile <= 100.0:
        raise McuforgeError(f"threshold percentile {percentile} is outside 0..100", where="--threshold-percentile",
                            fix="use e.g. 99.5: the share of normal samples that score at or below the threshold")
    model_bytes = model_path.read_bytes()
    graph = parse_tflite(model_bytes, str(model_path))
    inp, out = _check_autoencoder(graph, str(model_path))
    data_where = str(normal_data) if not isinstance(normal_data, np.ndarray) else "normal data (array)"

    x = _as_batch(np.asarray(_load_samples(normal_data, data_where)), tuple(int(d) for d in inp.shape), data_where)
    if len(x) == 0:
        raise McuforgeError("normal data holds no samples", where=data_where, fix="store at least one sample")
    in_q = (float(inp.scale[0]), int(inp.zero_point[0]))       # float32 values, as the model file stores them
    out_q = (float(out.scale[0]), int(out.zero_point[0]))
    q, clipped = _quantized(x, in_q[0], in_q[1], data_where)

    outputs = run_reference(model_bytes, [[sample] for sample in q])
    y = np.stack([o[0].reshape(-1) for o in outputs])
    errors = reconstruction_errors(q, y, in_q, out_q, metric)
    threshold = float(np.percentile(errors, percentile))
    result = {
        "key": THRESHOLD_KEY,
        "threshold": threshold,
        "percentile": percentile,
        "metric": metric,
        "units": _UNITS[metric],
        "samples": int(len(errors)),
        "mean": float(errors.mean()),
        "std": float(errors.std()),
        "min": float(errors.min()),
        "max": float(errors.max()),
        "above_threshold": int(np.count_nonzero(errors > threshold)),
        "data": data_where,
        "data_dtype": str(x.dtype),
        "clipped_values": clipped,
        "input_quantization": {"scale": in_q[0], "zero_point": in_q[1]},
        "output_quantization": {"scale": out_q[0], "zero_point": out_q[1]},
    }
    result["metadata"] = threshold_metadata(result)
    return result


def threshold_metadata(calibration: dict) -> dict:
    """The model-file metadata entries of a calibration: what the device reads back."""
    return {THRESHOLD_KEY: float(calibration["threshold"]),
            "anomaly_metric": calibration["metric"],
            "anomaly_percentile": float(calibration["percentile"]),
            "anomaly_samples": int(calibration["samples"])}
