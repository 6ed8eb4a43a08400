"""Quantize: a trained float model becomes a full-int8 .tflite, with an accuracy report.

The TFLite converter does the quantization (post-training, calibrated on representative
data). mcuforge's part is to feed it the right way, refuse bad input with a clear error, and
say how much the int8 model differs from the float one on held-out data, judged with the
TFLM reference interpreter that every engine is later compared against.

The batch dimension is fixed to 1 before converting: a dynamic batch makes the converter
emit SHAPE/STRIDED_SLICE/PACK around every Flatten, which microcontroller engines do not need.

With held-out data the int8 model must also stay within a quality budget (top-1 accuracy
points for classifiers, relative MSE for regressors). A model over budget is not written; the
error names the layers where the int8 model departs from the float one, found by comparing
every layer's float output with its dequantized int8 counterpart.
"""
from __future__ import annotations

import contextlib
import os
import re
import tempfile
import time
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, ContextManager

import numpy as np

from .errors import McuforgeError
from .reference import run_reference
from .tflite_model import TFLITE_FILE_IDENTIFIER, Graph, load_tflite

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
FLOAT_TYPES = ("FLOAT32", "FLOAT16", "FLOAT64")
# Rows of a softmax output sum to 1; allow for float rounding.
_SOFTMAX_SUM_TOLERANCE = 1e-3

# Quality budgets, checked on held-out data.
DEFAULT_MAX_DROP = 2.0            # classifiers: top-1 accuracy points that int8 may lose
DEFAULT_MAX_MSE_INCREASE = 10.0   # regressors: percent by which the int8 MSE against y may exceed the float MSE
DEFAULT_MAX_RELATIVE_ERROR = 1.0  # regressors without y: int8-vs-float MSE in percent of the output variance (SQNR 20 dB)
# Locating the error runs the model tensor by tensor; a few hundred samples show it clearly.
_DIAGNOSIS_SAMPLES = 256
_WORST_LAYERS_NAMED = 3
# Name further layers only where they add a fair share of what the worst one adds.
_NAMED_SHARE = 0.25

# progress(label, total) -> a context manager whose value has update(n); the CLI passes
# click.progressbar, library callers nothing.
Progress = Callable[[str, int], ContextManager[Any]]


class _Silent:
    def update(self, n: int) -> None:
        pass


@contextlib.contextmanager
def _no_progress(label: str, total: int):
    yield _Silent()


@dataclass
class ConvertReport:
    source: str
    source_kind: str                 # "keras", "saved_model" or "tflite"
    target: str                      # the .tflite written
    passthrough: bool                # the source was already full int8 and was copied as is
    seconds: float
    model_bytes: int
    ops: dict[str, int]
    input: list[dict]                # per tensor: name, shape, dtype, scale, zero_point
    output: list[dict]
    calibration: dict | None = None  # file and number of samples used
    evaluation: dict | None = None   # float vs int8 agreement on held-out data
    notes: list[str] = field(default_factory=list)
    weights: str | None = None       # "per-channel" or "per-tensor" weight scales (None: passed through)
    budget: dict | None = None       # the quality budget: metric, value, limit, passed
    layers: list[dict] | None = None  # per-layer quantization error, worst first (over budget only)

    def to_dict(self) -> dict:
        return asdict(self)


class BudgetExceeded(McuforgeError):
    """The int8 model lost more quality than the budget allows; nothing was written.

    `report` is the ConvertReport that would have been returned, with `budget` and the
    per-layer errors in `layers`."""

    def __init__(self, what: str, where: str | None, fix: str | None, report: ConvertReport):
        super().__init__(what, where=where, fix=fix)
        self.report = report


# ---------------------------------------------------------------------------------------------
# Reading inputs

def _source_kind(path: Path) -> str:
    if not path.exists():
        raise McuforgeError(f"model not found: {path}", where=str(path), fix="check the path")
    if path.is_dir():
        if (path / "saved_model.pb").exists() or (path / "saved_model.pbtxt").exists():
            return "saved_model"
        raise McuforgeError("the directory is not a TensorFlow SavedModel (it holds no saved_model.pb)",
                            where=str(path),
                            fix="pass a SavedModel directory, a Keras .keras/.h5 file or a .tflite file")
    with path.open("rb") as f:
        head = f.read(8)
    if head[4:8] == TFLITE_FILE_IDENTIFIER or path.suffix.lower() == ".tflite":
        return "tflite"
    if head.startswith(HDF5_SIGNATURE) or zipfile.is_zipfile(path):
        return "keras"
    if path.suffix.lower() in KERAS_SUFFIXES:
        raise McuforgeError(f"the file is named like a Keras model but is not one "
                            f"(a .keras file is a zip archive, a .h5 file is HDF5)",
                            where=f"{path} ({path.stat().st_size} bytes)",
                            fix="save the model again with model.save(); check that the copy is complete")
    raise McuforgeError("not a model: expected a Keras .keras/.h5 file, a SavedModel directory or a .tflite file",
                        where=f"{path} ({path.stat().st_size} bytes)",
                        fix="pass the trained model file")


def load_array_file(path: str | Path, role: str, key: str = "x") -> dict[str, np.ndarray]:
    """Arrays of a .npy file ({key: array}) or a .npz file (all of its arrays)."""
    path = Path(path)
    if not path.is_file():
        raise McuforgeError(f"{role} data file not found: {path}", where=str(path), fix="check the path")
    try:
        loaded = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise McuforgeError(f"{role} data is not a NumPy .npy/.npz file ({type(exc).__name__}: {exc})",
                            where=str(path),
                            fix="save the data with numpy.save (one array) or numpy.savez (x=..., y=...)") from None
    if isinstance(loaded, np.ndarray):
        return {key: loaded}
    with loaded:
        return {name: loaded[name] for name in loaded.files}


def _pick_x(arrays: dict[str, np.ndarray], path: Path, role: str) -> np.ndarray:
    if "x" in arrays:
        return arrays["x"]
    if len(arrays) == 1:
        return next(iter(arrays.values()))
    raise McuforgeError(f"{role} file holds several arrays ({', '.join(sorted(arrays)) or 'none'}) and none is named 'x'",
                        where=str(path), fix="store the model inputs under the key 'x': numpy.savez(path, x=..., y=...)")


def _check_shape(x: np.ndarray, sample_shape: tuple[int, ...], path: Path, role: str,
                 single_sample_ok: bool = False) -> np.ndarray:
    """x as a batch (N, *sample_shape); a lone sample is a batch of one where allowed."""
    if x.dtype.kind not in "fiu":
        raise McuforgeError(f"{role} data has dtype {x.dtype}; numbers are needed", where=str(path),
                            fix="store float32 model inputs")
    if single_sample_ok and tuple(x.shape) == sample_shape:
        return x[np.newaxis]
    if x.ndim == len(sample_shape) + 1 and tuple(x.shape[1:]) == sample_shape:
        return x
    raise McuforgeError(
        f"{role} data has the wrong shape: found {list(x.shape)} (samples of shape {list(x.shape[1:])}), "
        f"expected [N, {', '.join(str(d) for d in sample_shape)}] to match the model input {list(sample_shape)}",
        where=str(path),
        fix=f"store an array of shape (N, {', '.join(str(d) for d in sample_shape)}): one model input per sample")


def _check_values(samples: np.ndarray, path: Path, role: str) -> np.ndarray:
    if len(samples) == 0:
        raise McuforgeError(f"{role} data holds no samples", where=str(path), fix="store at least one sample")
    samples = np.asarray(samples, dtype=np.float32)
    if not np.all(np.isfinite(samples)):
        raise McuforgeError(f"{role} data contains NaN or infinite values", where=str(path),
                            fix="clean the data; calibration ranges would be meaningless")
    return samples


def _check_samples(x: np.ndarray, sample_shape: tuple[int, ...], path: Path, role: str) -> np.ndarray:
    return _check_values(_check_shape(x, sample_shape, path, role), path, role)


def spread_indices(total: int, limit: int | None) -> np.ndarray:
    """`limit` indices spread evenly over range(total) (all of them when limit is None or larger).

    Evenly spread rather than the first N: calibration sets are often sorted by class or time."""
    if limit is None or limit >= total:
        return np.arange(total)
    return (np.arange(limit, dtype=np.int64) * total) // limit


@dataclass
class CalibrationSet:
    samples: np.ndarray
    source: str
    available: int           # samples in the source, before --samples picked some
    files: int = 1


def load_calibration(path: str | Path, sample_shape: tuple[int, ...], limit: int | None = None) -> CalibrationSet:
    """Calibration inputs from a .npy file, a .npz file (key x) or a folder of .npy files.

    Each .npy file of a folder holds one sample (shape = the model input) or a batch of them.
    With `limit`, that many samples spread evenly over the whole set are used; the others are
    never read into memory (folder files are memory-mapped)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() == ".npy" and not p.name.startswith("."))
        if not files:
            raise McuforgeError("the calibration folder holds no .npy files", where=str(path),
                                fix="put one .npy file per sample (or per batch of samples) in the folder")
        batches = [_check_shape(_open_npy(f), sample_shape, f, "calibration", single_sample_ok=True) for f in files]
        starts = np.cumsum([0] + [len(b) for b in batches])
        total = int(starts[-1])
        if total == 0:
            raise McuforgeError("the calibration folder holds no samples", where=str(path), fix="store at least one sample")
        picked = spread_indices(total, limit)
        owner = np.searchsorted(starts, picked, side="right") - 1
        samples = np.stack([np.asarray(batches[b][i - starts[b]]) for b, i in zip(owner, picked)])
        return CalibrationSet(_check_values(samples, path, "calibration"), str(path), total, files=len(files))
    if not path.exists():
        raise McuforgeError(f"calibration data not found: {path}", where=str(path),
                            fix="pass a .npy or .npz file, or a folder of .npy files")
    x = _check_shape(_pick_x(load_array_file(path, "calibration"), path, "calibration"), sample_shape, path,
                     "calibration", single_sample_ok=True)
    samples = x[spread_indices(len(x), limit)]
    return CalibrationSet(_check_values(samples, path, "calibration"), str(path), len(x))


def _open_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as exc:
        raise McuforgeError(f"calibration file is not a NumPy .npy file ({type(exc).__name__}: {exc})",
                            where=str(path), fix="save each file with numpy.save") from None


# ---------------------------------------------------------------------------------------------
# The float model, with the batch fixed to 1

class _FloatModel:
    """A loaded float model: its per-sample input shape, a float runner, a converter."""

    def __init__(self, path: Path, kind: str, workdir: Path):
        import tensorflow as tf

        self.path = path
        self.keras_model = None
        if kind == "keras":
            saved_model_dir = self._export_keras(path, workdir)
        else:
            saved_model_dir = path
        try:
            self.loaded = tf.saved_model.load(str(saved_model_dir))
        except Exception as exc:
            raise McuforgeError(f"could not load the SavedModel ({type(exc).__name__}: {_first_line(exc)})",
                                where=str(path), fix="export the model again with model.export() or tf.saved_model.save()") from None
        signatures = dict(self.loaded.signatures)
        if not signatures:
            raise McuforgeError("the SavedModel has no serving signature", where=str(path),
                                fix="save it with a signature, e.g. Keras model.export(path)")
        signature = signatures.get("serving_default") or next(iter(signatures.values()))
        specs = signature.structured_input_signature[1]
        if len(specs) != 1:
            raise McuforgeError(f"the model has {len(specs)} inputs ({', '.join(specs)}); mcuforge converts single-input models",
                                where=str(path), fix="wrap the model so that it takes one input tensor")
        input_name, spec = next(iter(specs.items()))
        if spec.dtype != tf.float32:
            raise McuforgeError(f"the model input '{input_name}' is {spec.dtype.name}; a float32 input is expected",
                                where=str(path), fix="convert a model that takes float32 input")
        dims = spec.shape.as_list() if spec.shape.rank is not None else None
        if not dims or any(d is None for d in dims[1:]):
            raise McuforgeError(f"the model input '{input_name}' has shape {dims}: every dimension but the batch must be fixed",
                                where=str(path), fix="build the model with a fixed input shape, e.g. keras.Input((64, 3))")
        self.sample_shape = tuple(int(d) for d in dims[1:])
        output_names = sorted(signature.structured_outputs)
        if len(output_names) != 1:
            raise McuforgeError(f"the model has {len(output_names)} outputs; mcuforge converts single-output models",
                                where=str(path), fix="wrap the model so that it returns one tensor")
        output_name = output_names[0]

        @tf.function
        def single(x):
            return signature(**{input_name: x})[output_name]

        self.concrete = single.get_concrete_function(tf.TensorSpec((1, *self.sample_shape), tf.float32))

    def _export_keras(self, path: Path, workdir: Path) -> Path:
        import tensorflow as tf
        import keras

        try:
            model = keras.models.load_model(path, compile=False)
        except Exception as exc:
            raise McuforgeError(f"could not load the Keras model ({type(exc).__name__}: {_first_line(exc)})",
                                where=str(path),
                                fix="save it with model.save('model.keras'); models with custom layers need them importable") from None
        if len(model.inputs) != 1 or len(model.outputs) != 1:
            raise McuforgeError(f"the model has {len(model.inputs)} inputs and {len(model.outputs)} outputs; "
                                f"mcuforge converts single-input, single-output models",
                                where=str(path), fix="wrap the model so that it takes one tensor and returns one")
        dtype = str(getattr(model.inputs[0], "dtype", "float32"))
        if "float32" not in dtype:
            raise McuforgeError(f"the model input is {dtype}; a float32 input is expected",
                                where=str(path), fix="convert a model that takes float32 input")
        dims = list(model.inputs[0].shape)
        if any(d is None for d in dims[1:]):
            raise McuforgeError(f"the model input has shape {dims}: every dimension but the batch must be fixed",
                                where=str(path), fix="build the model with a fixed input shape, e.g. keras.Input((64, 3))")
        self.keras_model = model
        exported = workdir / "saved_model"
        try:
            model.export(str(exported), input_signature=[tf.TensorSpec([1, *dims[1:]], tf.float32)], verbose=False)
        except Exception as exc:
            raise McuforgeError(f"could not trace the Keras model for conversion ({type(exc).__name__}: {_first_line(exc)})",
                                where=str(path), fix="check that the model runs on a batch of one: model(x[:1])") from None
        return exported

    def float_tflite(self) -> bytes:
        """The same model as a float .tflite, to look at its tensors one by one."""
        import tensorflow as tf

        converter = tf.lite.TFLiteConverter.from_concrete_functions([self.concrete], self.loaded)
        try:
            return converter.convert()
        except Exception as exc:
            raise McuforgeError(f"the TFLite converter could not make a float model to compare with: {_last_lines(exc)}",
                                where=str(self.path), fix="convert with a Keras model to get per-layer errors") from None

    def predict(self, x: np.ndarray) -> np.ndarray:
        if self.keras_model is not None:
            return np.asarray(self.keras_model.predict(x, batch_size=256, verbose=0), dtype=np.float32)
        return np.concatenate([np.asarray(self.concrete(x[i:i + 1])) for i in range(len(x))]).astype(np.float32)

    def convert(self, calib: np.ndarray, per_channel: bool = True, progress: Progress = _no_progress) -> bytes:
        import tensorflow as tf

        converter = tf.lite.TFLiteConverter.from_concrete_functions([self.concrete], self.loaded)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
        # Private but long-standing switch of the converter (TF 2.x): one scale per weight
        # tensor instead of one per output channel, for engines and NPUs that want that.
        converter._experimental_disable_per_channel = not per_channel
        try:
            with progress("calibrating", len(calib)) as bar:
                def representative_dataset():
                    for i in range(len(calib)):
                        yield [calib[i:i + 1]]
                        bar.update(1)

                converter.representative_dataset = representative_dataset
                return converter.convert()
        except Exception as exc:
            raise McuforgeError(f"the TFLite converter could not make a full-int8 model: {_last_lines(exc)}",
                                where=str(self.path),
                                fix="use layers with int8 TFLite kernels (Dense, Conv2D, DepthwiseConv2D, pooling, "
                                    "ReLU, Reshape, Softmax ...); the message above names the operator") from None


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _last_lines(exc: Exception, count: int = 3) -> str:
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return " | ".join(lines[-count:]) if lines else type(exc).__name__


# ---------------------------------------------------------------------------------------------
# int8 models

def tensor_summary(graph: Graph, index: int) -> dict:
    tensor = graph.tensors[index]
    return {"name": tensor.name, "shape": list(tensor.shape), "dtype": tensor.dtype.lower(), **tensor.quant_summary()}


def full_int8_problem(graph: Graph) -> str | None:
    """Why the model is not full int8 (int8 inputs and outputs, no float tensors), or None."""
    if not any(t.dtype == "INT8" for t in graph.tensors):
        return "it is a float model (no int8 tensors)"
    io = [graph.tensors[i] for i in graph.inputs + graph.outputs]
    non_int8_io = [t for t in io if t.dtype != "INT8"]
    if non_int8_io:
        listed = ", ".join(f"'{t.name}' is {t.dtype}" for t in non_int8_io)
        return f"its inputs/outputs are not int8 ({listed})"
    float_tensors = [t for t in graph.tensors if t.dtype in FLOAT_TYPES]
    if float_tensors:
        return f"{len(float_tensors)} of its tensors are float (e.g. '{float_tensors[0].name}')"
    return None


def quantize_input(x: np.ndarray, graph: Graph, index: int) -> np.ndarray:
    tensor = graph.tensors[index]
    scale, zero_point = float(tensor.scale[0]), int(tensor.zero_point[0])
    q = np.round(x / scale) + zero_point
    return np.clip(q, -128, 127).astype(np.int8).reshape(tensor.shape)


def dequantize_output(q: np.ndarray, graph: Graph, index: int) -> np.ndarray:
    tensor = graph.tensors[index]
    return (q.astype(np.float32) - float(tensor.zero_point[0])) * float(tensor.scale[0])


def run_int8(model_bytes: bytes, graph: Graph, x: np.ndarray, progress: Progress = _no_progress) -> np.ndarray:
    """Float outputs of the int8 model on float samples: quantize, run TFLM's reference, dequantize."""
    inputs = [[quantize_input(sample, graph, graph.inputs[0])] for sample in x]
    outputs = []
    with progress("evaluating", len(inputs)) as bar:
        for start in range(0, len(inputs), _EVAL_CHUNK):
            chunk = inputs[start:start + _EVAL_CHUNK]
            outputs += run_reference(model_bytes, chunk)
            bar.update(len(chunk))
    return np.stack([dequantize_output(out[0], graph, graph.outputs[0]).reshape(-1) for out in outputs])


_EVAL_CHUNK = 64  # samples per reference run: progress granularity, one interpreter each


# ---------------------------------------------------------------------------------------------
# Agreement on held-out data

def _labels(y: np.ndarray | None, n_samples: int, n_outputs: int) -> np.ndarray | None:
    """Class indices from y, if y looks like class labels for this model; else None."""
    if y is None or len(y) != n_samples or n_outputs < 2:
        return None
    if y.ndim == 1 or (y.ndim == 2 and y.shape[1] == 1):
        flat = y.reshape(-1)
        if np.all(np.mod(flat, 1) == 0) and flat.min() >= 0 and flat.max() < n_outputs:
            return flat.astype(np.int64)
        return None
    if y.ndim == 2 and y.shape[1] == n_outputs and np.all((y == 0) | (y == 1)) and np.all(y.sum(axis=1) == 1):
        return y.argmax(axis=1)
    return None


def _softmax_like(outputs: np.ndarray) -> bool:
    return (outputs.shape[1] > 1 and bool(np.all(outputs >= 0))
            and bool(np.all(np.abs(outputs.sum(axis=1) - 1.0) < _SOFTMAX_SUM_TOLERANCE)))


def agreement(float_out: np.ndarray | None, int8_out: np.ndarray, y: np.ndarray | None, task: str = "auto") -> dict:
    """Metrics of int8 against float outputs (and each against y when given). Outputs are (N, K)."""
    reference = float_out if float_out is not None else int8_out
    n, k = int8_out.shape
    labels = _labels(y, n, k)
    if task == "auto":
        task = "classifier" if labels is not None or _softmax_like(reference) else "regressor"
    # The quality measure used: what the budget is judged on.
    if task == "classifier":
        metric = "top-1 accuracy" if labels is not None else "top-1 agreement with the float model"
    else:
        metric = "MSE against y" if y is not None else "MSE between float and int8 outputs"
    result: dict = {"task": task, "metric": metric, "samples": n}
    if float_out is not None:
        diff = float_out - int8_out
        variance = float(np.var(float_out))
        mse = float(np.mean(diff ** 2))
        result.update({
            "mse_float_vs_int8": mse,
            "max_abs_error": float(np.max(np.abs(diff))),
            "float_output_variance": variance,
            # Error relative to the spread of the outputs: comparable across models and scales.
            "relative_mse": mse / variance if variance > 0 else None,
        })
    if task == "classifier":
        int8_top1 = int8_out.argmax(axis=1)
        if float_out is not None:
            result["top1_agreement"] = float(np.mean(float_out.argmax(axis=1) == int8_top1))
        if labels is not None:
            if float_out is not None:
                result["float_accuracy"] = float(np.mean(float_out.argmax(axis=1) == labels))
            result["int8_accuracy"] = float(np.mean(int8_top1 == labels))
    elif y is not None:
        target = np.asarray(y, dtype=np.float32).reshape(n, -1)
        if target.shape[1] == k:
            if float_out is not None:
                result["float_mse_vs_y"] = float(np.mean((float_out - target) ** 2))
            result["int8_mse_vs_y"] = float(np.mean((int8_out - target) ** 2))
    return result


# ---------------------------------------------------------------------------------------------
# The quality budget

def check_budget(evaluation: dict, max_drop: float | None = None, max_mse_increase: float | None = None) -> dict | None:
    """Judge float-vs-int8 `evaluation` (from agreement()) against the budget; None if it cannot be judged.

    Classifiers: float top-1 accuracy minus int8 top-1 accuracy, in percentage points, at most
    `max_drop` (default 2). Without labels, the share of samples where int8 and float disagree
    on the top class stands in for the drop (it bounds it).
    Regressors and autoencoders: the int8 MSE against y may exceed the float MSE against y by
    at most `max_mse_increase` percent (default 10). Without y there is no float MSE to
    compare with: the MSE between int8 and float outputs, as a percentage of the float outputs'
    variance, is held to `max_mse_increase` instead (default 1, i.e. an SQNR of 20 dB).
    """
    if evaluation.get("task") == "classifier":
        limit = DEFAULT_MAX_DROP if max_drop is None else float(max_drop)
        if "float_accuracy" in evaluation:
            value = 100.0 * (evaluation["float_accuracy"] - evaluation["int8_accuracy"])
            metric = "top-1 accuracy drop"
            detail = (f"top-1 accuracy {100 * evaluation['float_accuracy']:.1f}% float, "
                      f"{100 * evaluation['int8_accuracy']:.1f}% int8")
        elif "top1_agreement" in evaluation:
            value = 100.0 * (1.0 - evaluation["top1_agreement"])
            metric = "top-1 disagreement with the float model"
            detail = f"int8 and float pick different classes on {value:.1f}% of the samples (no labels given)"
        else:
            return None
        unit, option = "points", "max_drop"
    else:
        if "float_mse_vs_y" in evaluation:
            limit = DEFAULT_MAX_MSE_INCREASE if max_mse_increase is None else float(max_mse_increase)
            float_mse, int8_mse = evaluation["float_mse_vs_y"], evaluation["int8_mse_vs_y"]
            value = 100.0 * (int8_mse - float_mse) / max(float_mse, np.finfo(np.float32).tiny)
            metric = "MSE increase against y"
            detail = f"MSE against y {float_mse:.4g} float, {int8_mse:.4g} int8"
        elif evaluation.get("relative_mse") is not None:
            limit = DEFAULT_MAX_RELATIVE_ERROR if max_mse_increase is None else float(max_mse_increase)
            value = 100.0 * evaluation["relative_mse"]
            metric = "int8-vs-float MSE relative to the output variance"
            detail = (f"MSE between int8 and float outputs {evaluation['mse_float_vs_int8']:.4g}, "
                      f"output variance {evaluation['float_output_variance']:.4g} (no targets given)")
        else:
            return None
        unit, option = "%", "max_mse_increase"
    return {"metric": metric, "value": round(value, 4), "limit": limit, "unit": unit, "option": option,
            "detail": detail, "passed": bool(value <= limit)}


def _check_budget_arguments(max_drop: float | None, max_mse_increase: float | None) -> None:
    for name, value in (("max_drop", max_drop), ("max_mse_increase", max_mse_increase)):
        if value is not None and not (value >= 0):
            raise McuforgeError(f"{name} must be zero or more, got {value}", where=name,
                                fix="give the largest acceptable loss as a positive number")


# ---------------------------------------------------------------------------------------------
# Where the quantization error comes from

def noise_ratio(reference: np.ndarray, actual: np.ndarray) -> float:
    """Error power relative to signal power, per channel (last axis), averaged over channels.

    Per channel because the typical int8 failure is one channel with a huge range that makes
    the shared activation scale so coarse that every other channel rounds to nothing; over the
    whole tensor the wide channel's variance would hide that. Each channel's ratio is capped at
    1 (the signal is gone) so that near-constant channels cannot dominate."""
    channels = reference.shape[-1] if reference.ndim > 1 else 1
    ref = reference.reshape(-1, channels).astype(np.float64)
    act = actual.reshape(-1, channels).astype(np.float64)
    variance = ref.var(axis=0)
    mse = ((ref - act) ** 2).mean(axis=0)
    live = variance > 0
    if not live.any():
        return 0.0 if not np.any(mse) else 1.0
    return float(np.mean(np.minimum(mse[live] / variance[live], 1.0)))


def sqnr_db(ratio: float) -> float | None:
    """Signal-to-quantization-noise ratio in dB for a noise ratio (None when there is no noise)."""
    return None if ratio <= 0 else round(-10.0 * float(np.log10(ratio)), 2) + 0.0


def _tensor_values(model_bytes: bytes, feeds: list[np.ndarray], indices: set[int], progress: Progress,
                   label: str) -> dict[int, np.ndarray]:
    """Every listed tensor's value for each sample, from TFLite's interpreter with all tensors kept.

    TFLM stays the bit-exact reference; this interpreter is only used to look inside the model."""
    import warnings

    import tensorflow as tf

    with warnings.catch_warnings():
        # It warns that it is deprecated (for LiteRT) and that keeping all tensors costs memory.
        warnings.simplefilter("ignore", UserWarning)
        # Reference kernels: the closest to TFLM's, and no XNNPACK delegate to rewrite the graph.
        interpreter = tf.lite.Interpreter(model_content=bytes(model_bytes), experimental_preserve_all_tensors=True,
                                          experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_REF)
    interpreter.allocate_tensors()
    input_index = interpreter.get_input_details()[0]["index"]
    values: dict[int, list[np.ndarray]] = {i: [] for i in indices}
    with progress(label, len(feeds)) as bar:
        for feed in feeds:
            interpreter.set_tensor(input_index, feed)
            interpreter.invoke()
            for i in indices:
                values[i].append(np.array(interpreter.get_tensor(i), copy=True))
            bar.update(1)
    return {i: np.stack(v) for i, v in values.items()}


def _is_activation(graph: Graph, index: int) -> bool:
    tensor = graph.tensors[index]
    return (not tensor.is_constant and tensor.scale is not None and not tensor.per_channel
            and tensor.dtype in ("INT8", "INT16"))


@dataclass
class _Unit:
    """One place to compare: a Keras layer (or a float-TFLite tensor) and its int8 tensor."""
    name: str
    int8_tensor: int
    parents: list[str]
    is_input: bool = False


def _keras_units(keras_model, graph: Graph) -> tuple[list[_Unit], list]:
    """The Keras layers between input and output, each matched to the int8 tensor it became.

    Matching is by name first: the converter names tensors after the TensorFlow scopes, which
    are the layer names with a "_N" suffix (e.g. "functional/hidden_1/MatMul;.../Relu" for
    layer "hidden"). Among tensors of the right shape, a suffixed match beats a bare one (layer
    "dense_1" is scope "dense_1_2"; bare "dense_1" is layer "dense"), and the last operator wins
    (a layer's output is its last op). The model output is the graph output (a softmax folded
    into a Dense layer is a separate SOFTMAX op named after the signature). Layers left over are
    matched by shape and order when exactly one tensor fits between their neighbours."""
    found: dict[str, tuple] = {}
    stack = list(keras_model.outputs)
    while stack:
        symbolic = stack.pop()
        history = getattr(symbolic, "_keras_history", None)
        if history is None:
            continue
        layer, node_index = history[0], history[1]
        if layer.name in found:
            continue
        node = layer._inbound_nodes[node_index]
        inputs = list(node.input_tensors)
        parents = [t._keras_history[0].name for t in inputs if getattr(t, "_keras_history", None) is not None]
        found[layer.name] = (symbolic, parents, not inputs)
        stack.extend(inputs)
    position = {layer.name: i for i, layer in enumerate(keras_model.layers)}
    names = sorted(found, key=lambda n: (not found[n][2], position.get(n, -1)))
    output_name = keras_model.outputs[0]._keras_history[0].name

    produced = [(pos, t) for pos, op in enumerate(graph.operators) for t in op.outputs
                if t >= 0 and _is_activation(graph, t)]
    op_position = {t: pos for pos, t in produced}
    match: dict[str, int] = {}
    for name in names:
        symbolic, _, is_input = found[name]
        if is_input:
            match[name] = graph.inputs[0]
        elif name == output_name:
            match[name] = graph.outputs[0]
        else:
            shape = (1, *tuple(symbolic.shape[1:]))
            best = None
            for pos, t in produced:
                rank = _name_rank(name, graph.tensors[t].name)
                if rank and tuple(graph.tensors[t].shape) == shape and (best is None or (rank, pos) >= best[:2]):
                    best = (rank, pos, t)
            if best is not None:
                match[name] = best[2]
    for i, name in enumerate(names):
        symbolic, parents, _ = found[name]
        if name in match:
            continue
        shape = (1, *tuple(symbolic.shape[1:]))
        low = max((op_position.get(match[p], -1) for p in parents if p in match), default=-1)
        high = min((op_position.get(match[n], len(graph.operators)) for n in names[i + 1:] if n in match),
                   default=len(graph.operators))
        claimed = set(match.values())
        fits = [t for pos, t in produced
                if low < pos < high and t not in claimed and tuple(graph.tensors[t].shape) == shape]
        if len(fits) == 1:
            match[name] = fits[0]
    units = [_Unit(n, match[n], found[n][1], is_input=found[n][2]) for n in names if n in match]
    return units, [found[u.name][0] for u in units]


def _name_rank(layer_name: str, tensor_name: str) -> int:
    """2: the tensor's name holds the layer's scope ("name_N"); 1: the bare layer name; 0: neither."""
    tokens = re.split(r"[/;:]", tensor_name)
    if any(re.fullmatch(re.escape(layer_name) + r"_\d+", token) for token in tokens):
        return 2
    return 1 if layer_name in tokens else 0


def _keras_layer_errors(float_model: "_FloatModel", model_bytes: bytes, graph: Graph, x: np.ndarray,
                        progress: Progress) -> list[dict]:
    import keras

    keras_model = float_model.keras_model
    units, symbolic = _keras_units(keras_model, graph)
    inner = [(u, s) for u, s in zip(units, symbolic) if not u.is_input]
    probe = keras.Model(keras_model.inputs, [s for _, s in inner])
    float_values = probe.predict(x, batch_size=256, verbose=0)
    if not isinstance(float_values, (list, tuple)):
        float_values = [float_values]
    reference = {u.name: np.asarray(v, dtype=np.float32) for (u, _), v in zip(inner, float_values)}
    reference.update({u.name: x for u in units if u.is_input})
    feeds = [quantize_input(sample, graph, graph.inputs[0]) for sample in x]
    int8 = _tensor_values(model_bytes, feeds, {u.int8_tensor for u in units}, progress, "locating the error")
    actual = {u.name: dequantize_output(int8[u.int8_tensor], graph, u.int8_tensor).reshape(reference[u.name].shape)
              for u in units}
    return _rank(units, reference, actual, graph)


def _tflite_tensor_errors(float_model: "_FloatModel", model_bytes: bytes, graph: Graph, x: np.ndarray,
                          progress: Progress) -> list[dict]:
    """Without a Keras model: compare with a float .tflite of the same model, tensor by tensor name."""
    from .tflite_model import parse_tflite

    float_bytes = float_model.float_tflite()
    float_graph = parse_tflite(float_bytes, "float model")
    float_index = {t.name: t.index for t in float_graph.tensors if not t.is_constant and t.dtype == "FLOAT32"}
    producer = {t: op for op in graph.operators for t in op.outputs}
    units = []
    for index in [graph.inputs[0]] + [t for op in graph.operators for t in op.outputs if t >= 0]:
        at_the_edge = index in (graph.inputs[0], graph.outputs[0])
        if not at_the_edge and not (_is_activation(graph, index) and graph.tensors[index].name in float_index):
            continue
        op = producer.get(index)
        parents = [graph.tensors[t].name for t in (op.inputs if op else []) if t >= 0 and _is_activation(graph, t)]
        units.append(_Unit(graph.tensors[index].name, index, parents, is_input=index == graph.inputs[0]))
    # Fused ops are named "a/MatMul;a/Relu;a/BiasAdd"; the first part is enough to find the layer.
    short = {u.name: u.name.split(";")[0] for u in units}
    float_of = {u.name: float_graph.outputs[0] if u.int8_tensor == graph.outputs[0]
                else float_graph.inputs[0] if u.is_input else float_index[u.name] for u in units}
    floats = _tensor_values(float_bytes, [sample[np.newaxis] for sample in x], set(float_of.values()), progress,
                            "running the float model")
    feeds = [quantize_input(sample, graph, graph.inputs[0]) for sample in x]
    int8 = _tensor_values(model_bytes, feeds, {u.int8_tensor for u in units}, progress, "locating the error")
    reference = {u.name: floats[float_of[u.name]] for u in units}
    actual = {u.name: dequantize_output(int8[u.int8_tensor], graph, u.int8_tensor) for u in units}
    rows = _rank(units, reference, actual, graph)
    for row in rows:
        row["layer"] = short[row["layer"]]
    return rows


def _rank(units: list[_Unit], reference: dict, actual: dict, graph: Graph) -> list[dict]:
    """Per unit: its noise, and the noise it adds over its inputs; the largest additions first."""
    ratio = {u.name: noise_ratio(reference[u.name], actual[u.name]) for u in units}
    parents = {u.name: u.parents for u in units}

    def inherited(name: str, seen: frozenset = frozenset()) -> float:
        worst = 0.0
        for parent in parents.get(name, ()):
            if parent in seen:
                continue
            worst = max(worst, ratio[parent] if parent in ratio else inherited(parent, seen | {name}))
        return worst

    rows = []
    for u in units:
        incoming = 0.0 if u.is_input else inherited(u.name)
        rows.append({"layer": u.name, "tensor": graph.tensors[u.int8_tensor].name, "is_input": u.is_input,
                     "noise_ratio": round(ratio[u.name], 6), "sqnr_db": sqnr_db(ratio[u.name]),
                     "input_sqnr_db": sqnr_db(incoming),
                     "added_noise_ratio": round(max(ratio[u.name] - incoming, 0.0), 6)})
    rows.sort(key=lambda row: (-row["added_noise_ratio"], -row["noise_ratio"]))
    return rows


def layer_errors(model_path: str | Path, model_bytes: bytes, x: np.ndarray,
                 progress: Progress = _no_progress) -> list[dict]:
    """Per-layer quantization error of `model_bytes` (the int8 conversion of `model_path`) on inputs x.

    Each layer's float output is compared with its dequantized int8 tensor; rows come sorted by
    the noise a layer adds over its inputs, so the layer where the int8 model departs from the
    float one comes first. A Keras model gives layer names; a SavedModel gives tensor names."""
    model_path = Path(model_path)
    kind = _source_kind(model_path)
    if kind == "tflite":
        raise McuforgeError("per-layer errors need the float model", where=str(model_path),
                            fix="pass the Keras or SavedModel model the .tflite was converted from")
    graph = _check_int8(model_bytes, model_path)
    with tempfile.TemporaryDirectory(prefix="mcuforge-layers-") as workdir:
        model = _FloatModel(model_path, kind, Path(workdir))
        x = _check_samples(x, model.sample_shape, model_path, "input")
        return _layer_errors(model, model_bytes, graph, x, progress)


def _layer_errors(model: "_FloatModel", model_bytes: bytes, graph: Graph, x: np.ndarray, progress: Progress) -> list[dict]:
    x = x[spread_indices(len(x), _DIAGNOSIS_SAMPLES)]
    if model.keras_model is not None:
        return _keras_layer_errors(model, model_bytes, graph, x, progress)
    return _tflite_tensor_errors(model, model_bytes, graph, x, progress)


def _describe_layers(rows: list[dict]) -> str:
    """The layers where most of the int8 error appears, with their SQNR against their input's."""
    top = rows[0]["added_noise_ratio"] if rows else 0.0
    named = []
    for row in rows[:_WORST_LAYERS_NAMED]:
        if named and row["added_noise_ratio"] < _NAMED_SHARE * top:
            break
        if row["is_input"]:
            named.append(f"the model input '{row['layer']}' (SQNR {_db(row['sqnr_db'])} after quantizing it)")
        else:
            named.append(f"'{row['layer']}' (SQNR {_db(row['sqnr_db'])}, down from {_db(row['input_sqnr_db'])} at its input)")
    return ", ".join(named)


def _db(value: float | None) -> str:
    return "no error" if value is None else f"{value:.1f} dB"


# ---------------------------------------------------------------------------------------------
# Writing

def write_bytes_atomically(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that a failure leaves any previous file there intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------------------------------------
# The stage

def convert(model_path: str | Path, out_path: str | Path, calib: str | Path | None = None,
            eval_data: str | Path | None = None, num_calib_samples: int | None = None,
            task: str = "auto", per_channel: bool = True, max_drop: float | None = None,
            max_mse_increase: float | None = None, progress: Progress | None = None) -> ConvertReport:
    """Convert a Keras (.keras/.h5) or SavedModel model to a full-int8 .tflite at `out_path`.

    `calib`: representative inputs: a .npy, a .npz with key x, or a folder of .npy files (one
    sample or a batch each); `num_calib_samples` of them, spread evenly over the set, are used.
    `per_channel`: one weight scale per output channel (default) or one per weight tensor.
    `eval_data`: .npz with x (and optionally y) or .npy of held-out inputs, to report how far
    the int8 model is from the float one and hold it to a budget (see check_budget):
    `max_drop` accuracy points for classifiers (default 2), `max_mse_increase` percent for
    regressors (default 10). Over budget, BudgetExceeded is raised, naming the layers with the
    largest quantization error, and nothing is written. `task`: "auto", "classifier" or
    "regressor". `progress(label, total)`: a progress bar factory for the long steps.
    An already full-int8 .tflite is copied through unchanged.
    """
    if task not in ("auto", "classifier", "regressor"):
        raise McuforgeError(f"unknown task '{task}'", where="task", fix="use auto, classifier or regressor")
    if num_calib_samples is not None and num_calib_samples < 1:
        raise McuforgeError(f"num_calib_samples must be at least 1, got {num_calib_samples}",
                            where="num_calib_samples", fix="pass a positive number, or nothing to use every sample")
    _check_budget_arguments(max_drop, max_mse_increase)
    budget_given = max_drop is not None or max_mse_increase is not None
    if budget_given and eval_data is None:
        raise McuforgeError("a quality budget is checked on held-out data, and none was given",
                            where="max_drop" if max_drop is not None else "max_mse_increase",
                            fix="pass --eval DATA.npz (x, and y for accuracy or MSE against targets)")
    progress = progress or _no_progress
    started = time.perf_counter()
    model_path, out_path = Path(model_path), Path(out_path)
    kind = _source_kind(model_path)
    if kind == "tflite":
        if not per_channel:
            raise McuforgeError("an int8 .tflite cannot be re-quantized with per-tensor weights", where=str(model_path),
                                fix="convert from the float Keras model or SavedModel with --per-tensor")
        if budget_given:
            raise McuforgeError("the quality budget compares the float model with the int8 one; a .tflite has no float model",
                                where=str(model_path),
                                fix="convert from the float Keras model or SavedModel to check the budget")
        return _pass_through(model_path, out_path, eval_data, task, started, progress)
    if calib is None:
        raise McuforgeError("calibration data is needed to quantize a float model to int8",
                            where=str(model_path),
                            fix="pass --calib with a .npy of a few hundred representative model inputs, shape (N, *input shape), "
                                "or a folder of .npy files")

    with tempfile.TemporaryDirectory(prefix="mcuforge-convert-") as workdir:
        model = _FloatModel(model_path, kind, Path(workdir))
        calibration = load_calibration(calib, model.sample_shape, num_calib_samples)
        eval_set = _load_eval(eval_data, model.sample_shape) if eval_data is not None else None
        model_bytes = model.convert(calibration.samples, per_channel=per_channel, progress=progress)
        graph = _check_int8(model_bytes, model_path)
        evaluation = budget = layers = None
        notes = []
        if eval_set is not None:
            x, y = eval_set
            evaluation = agreement(model.predict(x).reshape(len(x), -1), run_int8(model_bytes, graph, x, progress),
                                   y, task)
            evaluation["file"] = str(eval_data)
            budget = check_budget(evaluation, max_drop, max_mse_increase)
            if budget is None:
                notes.append("the quality budget could not be judged on this evaluation data")
            elif not budget["passed"]:
                try:
                    layers = _layer_errors(model, model_bytes, graph, x, progress)
                except Exception as exc:  # the diagnosis is a help; the budget failure must still be reported
                    reason = exc.what if isinstance(exc, McuforgeError) else f"{type(exc).__name__}: {_first_line(exc)}"
                    notes.append(f"the layers at fault could not be located: {reason}")
        report = ConvertReport(
            source=str(model_path), source_kind=kind, target=str(out_path), passthrough=False,
            seconds=round(time.perf_counter() - started, 3), model_bytes=len(model_bytes), ops=graph.op_counts(),
            input=[tensor_summary(graph, i) for i in graph.inputs],
            output=[tensor_summary(graph, i) for i in graph.outputs],
            calibration={"file": calibration.source, "samples": int(len(calibration.samples)),
                         "available": calibration.available, "files": calibration.files},
            evaluation=evaluation, notes=notes, weights="per-channel" if per_channel else "per-tensor",
            budget=budget, layers=layers)
    if budget is not None and not budget["passed"]:
        raise _over_budget(report, model_path)
    write_bytes_atomically(out_path, model_bytes)
    return report


def _over_budget(report: ConvertReport, model_path: Path) -> BudgetExceeded:
    budget = report.budget
    unit = " points" if budget["unit"] == "points" else "%"
    what = (f"the int8 model is over the quality budget: {budget['metric']} {budget['value']:.2f}{unit}, "
            f"budget {budget['limit']:g}{unit} ({budget['detail']})")
    if report.layers:
        what += f". The int8 error appears at {_describe_layers(report.layers)}"
    elif report.notes:
        what += f" ({report.notes[-1]})"
    option = "--max-drop" if budget["option"] == "max_drop" else "--max-mse-increase"
    fix = ("look at the named layers for outlier weights or activation ranges (clip activations, e.g. ReLU6; "
           "add BatchNormalization or weight regularization and retrain); calibrate with more representative data"
           + ("; keep per-channel weights" if report.weights == "per-tensor" else "")
           + f"; or accept the loss with a larger {option}. {report.target} was not written")
    return BudgetExceeded(what, where=f"{model_path} evaluated on {report.evaluation['file']}", fix=fix, report=report)


def _load_eval(eval_data: str | Path, sample_shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray | None]:
    path = Path(eval_data)
    arrays = load_array_file(path, "evaluation")
    x = _check_samples(_pick_x(arrays, path, "evaluation"), sample_shape, path, "evaluation")
    y = arrays.get("y")
    if y is not None and len(y) != len(x):
        raise McuforgeError(f"evaluation data holds {len(x)} inputs (x) but {len(y)} targets (y)",
                            where=str(path), fix="store one target per input")
    return x, y


def _check_int8(model_bytes: bytes, source: Path) -> Graph:
    from .tflite_model import parse_tflite
    graph = parse_tflite(model_bytes, f"int8 model converted from {source}")
    problem = full_int8_problem(graph)
    if problem:
        raise McuforgeError(f"the converter did not produce a full-int8 model: {problem}", where=str(source),
                            fix="use layers that have int8 TFLite kernels")
    return graph


def _pass_through(model_path: Path, out_path: Path, eval_data, task: str, started: float,
                  progress: Progress) -> ConvertReport:
    graph = load_tflite(model_path)
    problem = full_int8_problem(graph)
    if problem:
        raise McuforgeError(f"this .tflite is not full int8: {problem}", where=str(model_path),
                            fix="convert from the trained Keras model (.keras/.h5) or SavedModel with calibration data "
                                "(mcuforge convert MODEL.keras --calib calib.npy); a .tflite cannot be re-quantized")
    model_bytes = model_path.read_bytes()
    if not (out_path.exists() and out_path.resolve() == model_path.resolve()):
        write_bytes_atomically(out_path, model_bytes)
    evaluation = None
    notes = ["the model was already full int8 and was copied unchanged"]
    if eval_data is not None:
        if len(graph.inputs) != 1 or len(graph.outputs) != 1:
            raise McuforgeError(f"the model has {len(graph.inputs)} inputs and {len(graph.outputs)} outputs; "
                                f"evaluation supports single-input, single-output models",
                                where=str(model_path), fix="convert without evaluation data")
        sample_shape = tuple(graph.tensors[graph.inputs[0]].shape[1:])
        x, y = _load_eval(eval_data, sample_shape)
        evaluation = agreement(None, run_int8(model_bytes, graph, x, progress), y, task)
        evaluation["file"] = str(eval_data)
        notes.append("no float model was given, so only the int8 model was evaluated")
    return ConvertReport(
        source=str(model_path), source_kind="tflite", target=str(out_path), passthrough=True,
        seconds=round(time.perf_counter() - started, 3), model_bytes=len(model_bytes), ops=graph.op_counts(),
        input=[tensor_summary(graph, i) for i in graph.inputs],
        output=[tensor_summary(graph, i) for i in graph.outputs],
        evaluation=evaluation, notes=notes)
