"""Quantize: a trained float model becomes a full-int8 .tflite, with an accuracy report.

The TFLite converter does the quantization (post-training, calibrated on representative
data). mcuforge's part is to feed it the right way, refuse bad input with a clear error, and
say how much the int8 model differs from the float one on held-out data, judged with the
TFLM reference interpreter that every engine is later compared against.

The batch dimension is fixed to 1 before converting: a dynamic batch makes the converter
emit SHAPE/STRIDED_SLICE/PACK around every Flatten, which microcontroller engines do not need.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .errors import McuforgeError
from .reference import run_reference
from .tflite_model import TFLITE_FILE_IDENTIFIER, Graph, load_tflite

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
FLOAT_TYPES = ("FLOAT32", "FLOAT16", "FLOAT64")
# Rows of a softmax output sum to 1; allow for float rounding.
_SOFTMAX_SUM_TOLERANCE = 1e-3


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

    def to_dict(self) -> dict:
        return asdict(self)


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


def _check_samples(x: np.ndarray, sample_shape: tuple[int, ...], path: Path, role: str) -> np.ndarray:
    if x.dtype.kind not in "fiu":
        raise McuforgeError(f"{role} data has dtype {x.dtype}; numbers are needed", where=str(path),
                            fix="store float32 model inputs")
    if x.ndim == len(sample_shape) + 1 and tuple(x.shape[1:]) == sample_shape:
        samples = x.astype(np.float32, copy=False)
    else:
        raise McuforgeError(
            f"{role} data has the wrong shape: found {list(x.shape)} (samples of shape {list(x.shape[1:])}), "
            f"expected [N, {', '.join(str(d) for d in sample_shape)}] to match the model input {list(sample_shape)}",
            where=str(path),
            fix=f"store an array of shape (N, {', '.join(str(d) for d in sample_shape)}): one model input per sample")
    if len(samples) == 0:
        raise McuforgeError(f"{role} data holds no samples", where=str(path), fix="store at least one sample")
    if not np.all(np.isfinite(samples)):
        raise McuforgeError(f"{role} data contains NaN or infinite values", where=str(path),
                            fix="clean the data; calibration ranges would be meaningless")
    return samples


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

    def predict(self, x: np.ndarray) -> np.ndarray:
        if self.keras_model is not None:
            return np.asarray(self.keras_model.predict(x, batch_size=256, verbose=0), dtype=np.float32)
        return np.concatenate([np.asarray(self.concrete(x[i:i + 1])) for i in range(len(x))]).astype(np.float32)

    def convert(self, calib: np.ndarray) -> bytes:
        import tensorflow as tf

        def representative_dataset():
            for i in range(len(calib)):
                yield [calib[i:i + 1]]

        converter = tf.lite.TFLiteConverter.from_concrete_functions([self.concrete], self.loaded)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative_dataset
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
        try:
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


def run_int8(model_bytes: bytes, graph: Graph, x: np.ndarray) -> np.ndarray:
    """Float outputs of the int8 model on float samples: quantize, run TFLM's reference, dequantize."""
    inputs = [[quantize_input(sample, graph, graph.inputs[0])] for sample in x]
    outputs = run_reference(model_bytes, inputs)
    return np.stack([dequantize_output(out[0], graph, graph.outputs[0]).reshape(-1) for out in outputs])


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
    result: dict = {"task": task, "samples": n}
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
            task: str = "auto") -> ConvertReport:
    """Convert a Keras (.keras/.h5) or SavedModel model to a full-int8 .tflite at `out_path`.

    `calib`: .npy (or .npz with key x) of representative inputs, shape (N, *input shape).
    `eval_data`: .npz with x (and optionally y) or .npy of held-out inputs, to report how far
    the int8 model is from the float one. `task`: "auto", "classifier" or "regressor".
    An already full-int8 .tflite is copied through unchanged.
    """
    if task not in ("auto", "classifier", "regressor"):
        raise McuforgeError(f"unknown task '{task}'", where="task", fix="use auto, classifier or regressor")
    if num_calib_samples is not None and num_calib_samples < 1:
        raise McuforgeError(f"num_calib_samples must be at least 1, got {num_calib_samples}",
                            where="num_calib_samples", fix="pass a positive number, or nothing to use every sample")
    started = time.perf_counter()
    model_path, out_path = Path(model_path), Path(out_path)
    kind = _source_kind(model_path)
    if kind == "tflite":
        return _pass_through(model_path, out_path, eval_data, task, started)
    if calib is None:
        raise McuforgeError("calibration data is needed to quantize a float model to int8",
                            where=str(model_path),
                            fix="pass --calib with a .npy of a few hundred representative model inputs, shape (N, *input shape)")
    calib_path = Path(calib)
    calib_x = _pick_x(load_array_file(calib_path, "calibration"), calib_path, "calibration")

    with tempfile.TemporaryDirectory(prefix="mcuforge-convert-") as workdir:
        model = _FloatModel(model_path, kind, Path(workdir))
        calib_x = _check_samples(calib_x, model.sample_shape, calib_path, "calibration")
        if num_calib_samples is not None:
            calib_x = calib_x[:num_calib_samples]
        eval_set = _load_eval(eval_data, model.sample_shape) if eval_data is not None else None
        model_bytes = model.convert(calib_x)
        graph = _check_int8(model_bytes, model_path)
        evaluation = None
        if eval_set is not None:
            x, y = eval_set
            evaluation = agreement(model.predict(x).reshape(len(x), -1), run_int8(model_bytes, graph, x), y, task)
            evaluation["file"] = str(eval_data)
    write_bytes_atomically(out_path, model_bytes)
    return ConvertReport(
        source=str(model_path), source_kind=kind, target=str(out_path), passthrough=False,
        seconds=round(time.perf_counter() - started, 3), model_bytes=len(model_bytes), ops=graph.op_counts(),
        input=[tensor_summary(graph, i) for i in graph.inputs],
        output=[tensor_summary(graph, i) for i in graph.outputs],
        calibration={"file": str(calib_path), "samples": int(len(calib_x))},
        evaluation=evaluation)


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


def _pass_through(model_path: Path, out_path: Path, eval_data, task: str, started: float) -> ConvertReport:
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
        evaluation = agreement(None, run_int8(model_bytes, graph, x), y, task)
        evaluation["file"] = str(eval_data)
        notes.append("no float model was given, so only the int8 model was evaluated")
    return ConvertReport(
        source=str(model_path), source_kind="tflite", target=str(out_path), passthrough=True,
        seconds=round(time.perf_counter() - started, 3), model_bytes=len(model_bytes), ops=graph.op_counts(),
        input=[tensor_summary(graph, i) for i in graph.inputs],
        output=[tensor_summary(graph, i) for i in graph.outputs],
        evaluation=evaluation, notes=notes)
