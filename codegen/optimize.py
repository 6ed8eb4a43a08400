"""Optimize: make a float Keras model smaller before it is quantized.

Two plain stages, each from a Keras model and the user's data to a new Keras model and a report:

- prune(): magnitude pruning. The sparsity of every Dense/Conv kernel rises gradually from 0 to
  the target during fine-tuning; after every batch the smallest-magnitude weights are set back
  to exact zeros, so the network learns around them. (tensorflow-model-optimization does this
  for Keras 2 only; this is a small Keras 3 version of the same schedule.)
- distill(): a small untrained student learns from a trained teacher's softened outputs
  (Hinton et al.: KL divergence at a temperature, plus optionally the hard labels).

Both measure quality before and after on held-out data (the model's top-1 accuracy for
classifiers, MSE for regressors), and can also write the int8 .tflite of the result.
"""
from __future__ import annotations

import os
import tempfile
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import McuforgeError
from .quantize import Progress, _check_samples, _labels, _no_progress, _softmax_like, load_array_file

PRUNE_EPOCHS = 8
PRUNE_LEARNING_RATE = 1e-3        # fine-tuning a trained model: gentle
DISTILL_EPOCHS = 30
DISTILL_LEARNING_RATE = 3e-3      # training a student from scratch
DISTILL_TEMPERATURE = 4.0
DISTILL_ALPHA = 0.1
HOLDOUT = 0.2                     # share of the data kept out of training to measure quality

# Fine-tuning after pruning: the sparsity ramps up over this share of the steps, then holds.
_RAMP_SHARE = 0.7
# Masks follow the schedule this many times per epoch (and reapply after every batch).
_MASK_UPDATES_PER_EPOCH = 4
_KERNEL_NAMES = ("kernel", "depthwise_kernel", "pointwise_kernel")
_PROBABILITY_FLOOR = 1e-7


@dataclass
class Quality:
    metric: str                     # "top-1 accuracy" or "MSE"
    evaluated_on: str               # which data
    samples: int


@dataclass
class PruneReport:
    source: str
    target: str
    target_sparsity: float
    sparsity: float                  # exact zeros / weights, over the pruned kernels
    layers: list[dict]               # per kernel: layer, kernel, weights, zeros, sparsity, pruned
    parameters: int
    nonzero_parameters: int
    source_bytes: int
    model_bytes: int                 # the saved .keras file
    quality: dict                    # metric, evaluated_on, samples
    before: float
    after: float
    epochs: int
    seconds: float
    int8: dict | None = None         # path, bytes, deflated bytes of the int8 .tflite
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class DistillReport:
    teacher: str
    student: str
    target: str
    task: str                        # "classifier" or "regressor"
    temperature: float
    alpha: float                     # weight of the hard-label loss; 1 - alpha goes to the teacher's outputs
    teacher_parameters: int
    student_parameters: int
    teacher_bytes: int
    model_bytes: int                 # the saved student .keras file
    quality: dict
    teacher_quality: float
    before: float                    # the student before distillation
    after: float
    epochs: int
    seconds: float
    int8: dict | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------------------------------------
# Inputs

def _load_keras(path: str | Path, role: str):
    import keras

    path = Path(path)
    if not path.is_file():
        raise McuforgeError(f"{role} model not found: {path}", where=str(path), fix="pass a Keras .keras or .h5 file")
    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as exc:
        text = str(exc).strip().splitlines()
        raise McuforgeError(f"could not load the {role} model as Keras ({type(exc).__name__}: {text[0] if text else ''})",
                            where=str(path),
                            fix="save it with model.save('model.keras'); models with custom layers need them importable") from None
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise McuforgeError(f"the {role} model has {len(model.inputs)} inputs and {len(model.outputs)} outputs; "
                            f"single-input, single-output models are supported",
                            where=str(path), fix="wrap the model so that it takes one tensor and returns one")
    if any(d is None for d in model.inputs[0].shape[1:]):
        raise McuforgeError(f"the {role} model input has shape {list(model.inputs[0].shape)}: "
                            f"every dimension but the batch must be fixed",
                            where=str(path), fix="build the model with a fixed input shape, e.g. keras.Input((64, 3))")
    return model


def _sample_shape(model) -> tuple[int, ...]:
    return tuple(int(d) for d in model.inputs[0].shape[1:])


def _output_shape(model) -> tuple[int, ...]:
    return tuple(int(d) if d is not None else -1 for d in model.outputs[0].shape[1:])


def _load_xy(path: str | Path, role: str, sample_shape: tuple[int, ...], need_y: bool) -> tuple[np.ndarray, np.ndarray | None]:
    path = Path(path)
    arrays = load_array_file(path, role)
    missing = [key for key in (("x", "y") if need_y else ("x",)) if key not in arrays]
    if missing:
        raise McuforgeError(f"{role} data has no {' and no '.join(repr(k) for k in missing)} "
                            f"(it holds: {', '.join(sorted(arrays)) or 'nothing'})",
                            where=str(path), fix="save it with numpy.savez(path, x=inputs, y=targets)")
    x = _check_samples(arrays["x"], sample_shape, path, role)
    y = arrays.get("y")
    if y is not None and len(y) != len(x):
        raise McuforgeError(f"{role} data holds {len(x)} inputs (x) but {len(y)} targets (y)",
                            where=str(path), fix="store one target per input")
    return x, y


@dataclass
class _Split:
    x_train: np.ndarray
    y_train: np.ndarray | None
    x_eval: np.ndarray
    y_eval: np.ndarray | None
    described: str


def _split(data: Path, x: np.ndarray, y: np.ndarray | None, eval_data: str | Path | None, holdout: float,
           sample_shape: tuple[int, ...], need_y: bool, seed: int) -> _Split:
    if eval_data is not None:
        x_eval, y_eval = _load_xy(eval_data, "evaluation", sample_shape, need_y)
        return _Split(x, y, x_eval, y_eval, str(eval_data))
    if not 0.0 < holdout < 1.0:
        raise McuforgeError(f"holdout must be between 0 and 1, got {holdout}", where="holdout",
                            fix="hold out a share such as 0.2, or pass separate evaluation data")
    order = np.random.default_rng(seed).permutation(len(x))
    n_eval = max(1, int(round(holdout * len(x))))
    if len(x) - n_eval < 1:
        raise McuforgeError(f"the data holds only {len(x)} samples: too few to hold some out for evaluation",
                            where=str(data), fix="pass more samples, or separate evaluation data")
    eval_idx, train_idx = order[:n_eval], order[n_eval:]
    pick = (lambda a, i: None if a is None else a[i])
    return _Split(x[train_idx], pick(y, train_idx), x[eval_idx], pick(y, eval_idx),
                  f"{n_eval} samples ({holdout:.0%}) held out of {data}")


def _task(model, y: np.ndarray | None, outputs: np.ndarray, where: str) -> str:
    """"classifier" (y holds class labels, or without y the model ends in a softmax) or "regressor"."""
    n, k = len(outputs), int(np.prod(outputs.shape[1:]))
    if y is None:
        return "classifier" if k > 1 and (_ends_in_softmax(model) or _softmax_like(outputs.reshape(n, k))) else "regressor"
    if _labels(np.asarray(y[:n]), n, k) is not None:
        return "classifier"
    if y[:n].size == outputs.size:
        return "regressor"
    raise McuforgeError(f"the targets y (shape {list(y.shape)}) fit neither the model output {list(outputs.shape[1:])} "
                        f"nor class labels 0..{k - 1}", where=where,
                        fix="store class indices (N,) or one-hot rows for a classifier, or targets shaped like the output")


def _targets(task: str, y: np.ndarray, output_shape: tuple[int, ...], where: str) -> np.ndarray:
    """Class indices for a classifier, float targets shaped like the outputs for a regressor."""
    if task == "regressor":
        return np.asarray(y, dtype=np.float32).reshape(len(y), *output_shape)
    labels = _labels(np.asarray(y), len(y), int(np.prod(output_shape)))
    if labels is None:
        raise McuforgeError(f"the labels y are not class indices 0..{int(np.prod(output_shape)) - 1} or one-hot rows",
                            where=where, fix="store the class index of each sample")
    return labels


def _ends_in_softmax(model) -> bool:
    last = model.layers[-1]
    name = getattr(getattr(last, "activation", None), "__name__", "")
    return name == "softmax" or type(last).__name__ == "Softmax"


def _quality(model, task: str, x: np.ndarray, target: np.ndarray | None) -> float:
    outputs = np.asarray(model.predict(x, batch_size=256, verbose=0))
    if task == "classifier":
        return float(np.mean(outputs.reshape(len(x), -1).argmax(axis=1) == target))
    return float(np.mean((outputs - target) ** 2))


def _metric(task: str) -> str:
    return "top-1 accuracy" if task == "classifier" else "MSE"


def _check_epochs(epochs: int, batch_size: int) -> None:
    if epochs < 1:
        raise McuforgeError(f"epochs must be at least 1, got {epochs}", where="epochs", fix="pass a positive number")
    if batch_size < 1:
        raise McuforgeError(f"batch_size must be at least 1, got {batch_size}", where="batch_size",
                            fix="pass a positive number")


def _check_out_path(out_path: Path) -> None:
    if out_path.suffix.lower() != ".keras":
        raise McuforgeError(f"the output must be a .keras file, got '{out_path.name}'", where=str(out_path),
                            fix=f"name it {out_path.with_suffix('.keras').name}")


def _save_atomically(model, out_path: Path) -> None:
    """Save to a temporary file beside the target, then rename: a failure keeps the old file."""
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out_path.stem}.", suffix=".keras", dir=out_path.parent)
    os.close(fd)
    try:
        model.save(tmp)
        os.replace(tmp, out_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _int8(out_path: Path, tflite_path: str | Path | None, calib: np.ndarray, notes: list[str]) -> dict | None:
    """Convert the result to int8 (calibrated on training inputs) when asked to."""
    if tflite_path is None:
        return None
    from .quantize import convert

    with tempfile.TemporaryDirectory(prefix="mcuforge-optimize-") as workdir:
        calib_path = Path(workdir) / "calib.npy"
        np.save(calib_path, calib)
        report = convert(out_path, tflite_path, calib=calib_path, num_calib_samples=500)
    raw = Path(tflite_path).read_bytes()
    notes.append("the int8 .tflite stores zeros like any weight; its deflated size shows what sparsity saves "
                 "where the firmware image or an update is compressed")
    return {"path": str(tflite_path), "bytes": report.model_bytes, "deflated_bytes": len(zlib.compress(raw, 9))}


def _epoch_progress(bar):
    """A Keras callback that advances a progress bar once per epoch."""
    import keras

    class EpochProgress(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            bar.update(1)

    return EpochProgress()


# ---------------------------------------------------------------------------------------------
# Pruning

def prunable_kernels(model) -> list[tuple[str, object]]:
    """(layer name, kernel variable) of every Dense/Conv/DepthwiseConv/SeparableConv kernel, nested models included."""
    import keras

    kinds = (keras.layers.Dense, keras.layers.EinsumDense, keras.layers.Conv1D, keras.layers.Conv2D,
             keras.layers.Conv3D, keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose,
             keras.layers.Conv3DTranspose, keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D,
             keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)
    kernels = []
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, kinds):
            kernels += [(layer.name, v) for v in layer.trainable_weights if v.name in _KERNEL_NAMES]
    return kernels


def magnitude_mask(weights: np.ndarray, sparsity: float) -> np.ndarray:
    """1.0 where a weight is kept, 0.0 for the round(sparsity * size) smallest magnitudes."""
    flat = np.abs(weights).reshape(-1)
    pruned = int(round(sparsity * flat.size))
    mask = np.ones(flat.size, dtype=np.float32)
    if pruned:
        # A stable sort: among equal magnitudes (the zeros already pruned) the choice is repeatable.
        mask[np.argsort(flat, kind="stable")[:pruned]] = 0.0
    return mask.reshape(weights.shape)


def sparsity_schedule(step: int, ramp_steps: int, target: float) -> float:
    """Cubic ramp from 0 to `target` over `ramp_steps` (fast at first, gentle near the end), then flat."""
    if step >= ramp_steps:
        return target
    return target * (1.0 - (1.0 - step / ramp_steps) ** 3)


def _pruning_callback(kernels: list, ramp_steps: int, update_every: int, target: float):
    import keras

    class MagnitudePruning(keras.callbacks.Callback):
        """Keeps the kernels' smallest weights at exact zeros while the rest are trained."""

        def __init__(self):
            super().__init__()
            self.step = 0
            self.masks = [None] * len(kernels)

        def update_masks(self, sparsity: float) -> None:
            self.masks = [keras.ops.convert_to_tensor(magnitude_mask(np.asarray(v.numpy()), sparsity))
                          for _, v in kernels]

        def apply(self) -> None:
            for (_, variable), mask in zip(kernels, self.masks):
                if mask is not None:
                    variable.assign(variable * mask)

        def on_train_batch_end(self, batch, logs=None):
            self.step += 1
            if self.step % update_every == 0 or self.step == ramp_steps:
                self.update_masks(sparsity_schedule(self.step, ramp_steps, target))
            self.apply()

        def on_train_end(self, logs=None):
            # Whatever the step count, the result holds exactly the target share of zeros.
            self.update_masks(target)
            self.apply()

    return MagnitudePruning()


def _loss_for(task: str, model, x_sample: np.ndarray):
    import keras

    if task == "regressor":
        return keras.losses.MeanSquaredError()
    outputs = np.asarray(model.predict(x_sample, verbose=0))
    probabilities = _ends_in_softmax(model) or _softmax_like(outputs.reshape(len(outputs), -1))
    return keras.losses.SparseCategoricalCrossentropy(from_logits=not probabilities)


def prune(model_path: str | Path, data: str | Path, out_path: str | Path, target_sparsity: float = 0.5,
          epochs: int = PRUNE_EPOCHS, batch_size: int = 32, learning_rate: float = PRUNE_LEARNING_RATE,
          eval_data: str | Path | None = None, holdout: float = HOLDOUT, exclude: Sequence[str] = (), seed: int = 0,
          tflite_path: str | Path | None = None, progress: Progress | None = None) -> PruneReport:
    """Prune the Dense/Conv kernels of a Keras model to `target_sparsity` while fine-tuning on `data`.

    `data`: .npz with x (model inputs) and y (class indices, one-hot rows, or regression targets).
    Quality is measured before and after on `eval_data` (.npz with x, y) or else on a `holdout`
    share of `data` that fine-tuning never sees. `exclude`: names of layers to leave dense
    (often the small output layer). `tflite_path`: also write the int8 .tflite of the result.
    Writes `out_path` (.keras) only when everything succeeded.
    """
    import keras

    started = time.perf_counter()
    if not 0.0 <= target_sparsity < 1.0:
        raise McuforgeError(f"the target sparsity must be in [0, 1), got {target_sparsity}", where="sparsity",
                            fix="give the share of weights to zero, e.g. 0.5 for half of them")
    _check_epochs(epochs, batch_size)
    model_path, data, out_path = Path(model_path), Path(data), Path(out_path)
    _check_out_path(out_path)
    model = _load_keras(model_path, "pruning")
    x, y = _load_xy(data, "training", _sample_shape(model), need_y=True)
    split = _split(data, x, y, eval_data, holdout, _sample_shape(model), True, seed)
    outputs = np.asarray(model.predict(split.x_train[:256], verbose=0))
    task = _task(model, split.y_train, outputs, str(data))
    train_target = _targets(task, split.y_train, outputs.shape[1:], str(data))
    eval_target = _targets(task, split.y_eval, outputs.shape[1:], str(eval_data or data))

    kernels = prunable_kernels(model)
    if not kernels:
        raise McuforgeError("the model has no Dense or convolution kernels to prune", where=str(model_path),
                            fix="prune a model built from Dense/Conv layers")
    unknown = sorted(set(exclude) - {name for name, _ in kernels})
    if unknown:
        raise McuforgeError(f"no prunable layer is named {', '.join(repr(n) for n in unknown)}", where="exclude",
                            fix=f"pick among: {', '.join(dict.fromkeys(name for name, _ in kernels))}")
    pruned = [(name, v) for name, v in kernels if name not in set(exclude)]
    if not pruned:
        raise McuforgeError("every prunable layer is excluded", where="exclude", fix="leave at least one layer to prune")

    before = _quality(model, task, split.x_eval, eval_target)
    keras.utils.set_random_seed(seed)
    steps_per_epoch = -(-len(split.x_train) // batch_size)
    total_steps = epochs * steps_per_epoch
    ramp_steps = max(1, int(round(_RAMP_SHARE * total_steps)))
    update_every = max(1, steps_per_epoch // _MASK_UPDATES_PER_EPOCH)
    pruning = _pruning_callback(pruned, ramp_steps, update_every, target_sparsity)
    # A separate training model over the same layers, so that the saved model carries no optimizer state.
    trainer = keras.Model(model.inputs, model.outputs)
    trainer.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=_loss_for(task, model, split.x_train[:64]))
    with (progress or _no_progress)("fine-tuning", epochs) as bar:
        trainer.fit(split.x_train, train_target, epochs=epochs, batch_size=batch_size, shuffle=True, verbose=0,
                    callbacks=[pruning, _epoch_progress(bar)])
    after = _quality(model, task, split.x_eval, eval_target)

    layers = []
    pruned_ids = {id(v) for _, v in pruned}
    for name, variable in kernels:
        values = np.asarray(variable.numpy())
        zeros = int(np.count_nonzero(values == 0))
        layers.append({"layer": name, "kernel": variable.name, "weights": int(values.size), "zeros": zeros,
                       "sparsity": round(zeros / values.size, 4), "pruned": id(variable) in pruned_ids})
    total = sum(row["weights"] for row in layers if row["pruned"])
    zeros = sum(row["zeros"] for row in layers if row["pruned"])
    all_zeros = sum(int(np.count_nonzero(np.asarray(w) == 0)) for w in model.get_weights())

    _save_atomically(model, out_path)
    notes: list[str] = []
    int8 = _int8(out_path, tflite_path, split.x_train, notes)
    return PruneReport(
        source=str(model_path), target=str(out_path), target_sparsity=target_sparsity,
        sparsity=round(zeros / total, 4), layers=layers, parameters=int(model.count_params()),
        nonzero_parameters=int(model.count_params()) - all_zeros, source_bytes=model_path.stat().st_size,
        model_bytes=out_path.stat().st_size,
        quality=asdict(Quality(_metric(task), split.described, len(split.x_eval))),
        before=round(before, 6), after=round(after, 6), epochs=epochs,
        seconds=round(time.perf_counter() - started, 3), int8=int8, notes=notes)


# ---------------------------------------------------------------------------------------------
# Distillation

class _LogitView:
    """A model's pre-softmax outputs while training, its own outputs again afterwards.

    A softmax folded into the last layer is switched off for the duration (that layer's call
    reads its `activation` attribute); a separate Softmax layer is skipped by taking its input.
    Probabilities from anything else are turned into logits by their logarithm."""

    def __init__(self, model):
        import keras

        self.model = model
        last = model.layers[-1]
        self.layer, self.activation = None, None
        self.as_is = False          # the outputs are used unchanged
        if getattr(getattr(last, "activation", None), "__name__", "") == "softmax":
            self.layer, self.activation = last, last.activation
            last.activation = keras.activations.linear
            self.logits_model = keras.Model(model.inputs, model.outputs)
        elif type(last).__name__ == "Softmax" or (type(last).__name__ == "Activation"
                                                   and getattr(last.activation, "__name__", "") == "softmax"):
            self.logits_model = keras.Model(model.inputs, last.input)
        else:
            self.logits_model = keras.Model(model.inputs, model.outputs)
            self.as_is = True

    def restore(self) -> None:
        if self.layer is not None:
            self.layer.activation = self.activation
            self.layer = None


def _distillation_loss(classes: int, task: str, temperature: float, alpha: float, log_of_output: bool):
    """A Keras loss over packed targets: [teacher (logits / T) or outputs | one-hot labels or y]."""
    import keras
    from keras import ops

    def classifier_loss(packed, student):
        if log_of_output:
            student = ops.log(ops.maximum(student, _PROBABILITY_FLOOR))
        soft_targets = ops.softmax(packed[:, :classes], axis=-1)
        log_student = ops.log_softmax(student / temperature, axis=-1)
        kl = ops.sum(soft_targets * (ops.log(ops.maximum(soft_targets, _PROBABILITY_FLOOR)) - log_student), axis=-1)
        # T^2 keeps the soft gradients on the scale of the hard ones whatever the temperature.
        loss = (1.0 - alpha) * temperature ** 2 * kl
        if alpha > 0:
            loss = loss + alpha * keras.losses.categorical_crossentropy(packed[:, classes:], student, from_logits=True)
        return loss

    def regressor_loss(packed, student):
        student = ops.reshape(student, (ops.shape(student)[0], -1))
        soft = ops.mean((student - packed[:, :classes]) ** 2, axis=-1)
        hard = ops.mean((student - packed[:, classes:]) ** 2, axis=-1)
        return (1.0 - alpha) * soft + alpha * hard

    return classifier_loss if task == "classifier" else regressor_loss


def _teacher_logits(teacher, x: np.ndarray) -> np.ndarray:
    view = _LogitView(teacher)
    try:
        outputs = np.asarray(view.logits_model.predict(x, batch_size=256, verbose=0), dtype=np.float32)
    finally:
        view.restore()
    outputs = outputs.reshape(len(x), -1)
    if view.as_is and _softmax_like(outputs):
        return np.log(np.maximum(outputs, _PROBABILITY_FLOOR))
    return outputs


def distill(teacher_path: str | Path, student_path: str | Path, data: str | Path, out_path: str | Path,
            temperature: float = DISTILL_TEMPERATURE, alpha: float = DISTILL_ALPHA, epochs: int = DISTILL_EPOCHS,
            batch_size: int = 32, learning_rate: float = DISTILL_LEARNING_RATE, eval_data: str | Path | None = None,
            holdout: float = HOLDOUT, seed: int = 0,
            tflite_path: str | Path | None = None, progress: Progress | None = None) -> DistillReport:
    """Train the (untrained) student Keras model on the teacher's outputs over `data`.

    Classifiers: loss = (1 - alpha) * T^2 * KL(softmax(teacher/T) || softmax(student/T))
    + alpha * cross-entropy(labels, student), with logits taken before any final softmax.
    Regressors: loss = (1 - alpha) * MSE(student, teacher) + alpha * MSE(student, y).
    `data`: .npz with x and, for the hard part and for measuring quality, y (without y, alpha
    is set to 0 and quality is agreement with the teacher). Writes `out_path` (.keras).
    """
    import keras

    started = time.perf_counter()
    if not temperature > 0:
        raise McuforgeError(f"the temperature must be positive, got {temperature}", where="temperature",
                            fix="use 1 for the plain outputs, 2 to 8 to soften them")
    if not 0.0 <= alpha <= 1.0:
        raise McuforgeError(f"alpha must be in [0, 1], got {alpha}", where="alpha",
                            fix="give the weight of the hard-label loss; 0 learns from the teacher only")
    _check_epochs(epochs, batch_size)
    teacher_path, student_path, data, out_path = Path(teacher_path), Path(student_path), Path(data), Path(out_path)
    _check_out_path(out_path)
    teacher = _load_keras(teacher_path, "teacher")
    student = _load_keras(student_path, "student")
    if _sample_shape(student) != _sample_shape(teacher):
        raise McuforgeError(f"the student takes inputs of shape {list(_sample_shape(student))} but the teacher "
                            f"{list(_sample_shape(teacher))}", where=str(student_path),
                            fix="build the student with the teacher's input shape")
    if _output_shape(student) != _output_shape(teacher):
        raise McuforgeError(f"the student outputs shape {list(_output_shape(student))} but the teacher "
                            f"{list(_output_shape(teacher))}", where=str(student_path),
                            fix="give the student the teacher's output layer size (one unit per class)")
    notes: list[str] = []
    x, y = _load_xy(data, "training", _sample_shape(teacher), need_y=False)
    split = _split(data, x, y, eval_data, holdout, _sample_shape(teacher), False, seed)
    teacher_train = np.asarray(teacher.predict(split.x_train, batch_size=256, verbose=0), dtype=np.float32)
    teacher_eval = np.asarray(teacher.predict(split.x_eval, batch_size=256, verbose=0), dtype=np.float32)
    task = _task(teacher, split.y_train, teacher_train, str(data))
    classes = int(np.prod(teacher_train.shape[1:]))
    if y is None:
        if alpha > 0:
            notes.append("the data has no y: learned from the teacher alone (alpha 0)")
        alpha = 0.0
        # Without labels, quality is agreement with the teacher (its top class, or its outputs).
        eval_target = teacher_eval.reshape(len(teacher_eval), -1).argmax(axis=1) if task == "classifier" else teacher_eval
        train_target = (teacher_train.reshape(len(teacher_train), -1).argmax(axis=1) if task == "classifier"
                        else teacher_train)
    else:
        train_target = _targets(task, split.y_train, teacher_train.shape[1:], str(data))
        eval_target = _targets(task, split.y_eval, teacher_train.shape[1:], str(eval_data or data))

    teacher_quality = _quality(teacher, task, split.x_eval, eval_target)
    before = _quality(student, task, split.x_eval, eval_target)
    if task == "classifier":
        soft = _teacher_logits(teacher, split.x_train) / temperature
        hard = np.eye(classes, dtype=np.float32)[train_target]
    else:
        soft = teacher_train.reshape(len(teacher_train), -1)
        hard = np.asarray(train_target, dtype=np.float32).reshape(len(soft), -1)
    packed = np.concatenate([soft, hard], axis=1).astype(np.float32)

    keras.utils.set_random_seed(seed)
    view = _LogitView(student) if task == "classifier" else None
    trainer = view.logits_model if view else keras.Model(student.inputs, student.outputs)
    # A student whose probabilities come from no recognisable softmax is trained on their logarithm.
    log_of_output = bool(view is not None and view.as_is and _softmax_like(
        np.asarray(student.predict(split.x_train[:64], verbose=0)).reshape(-1, classes)))
    trainer.compile(optimizer=keras.optimizers.Adam(learning_rate),
                    loss=_distillation_loss(classes, task, temperature, alpha, log_of_output))
    try:
        with (progress or _no_progress)("distilling", epochs) as bar:
            trainer.fit(split.x_train, packed, epochs=epochs, batch_size=batch_size, shuffle=True, verbose=0,
                        callbacks=[_epoch_progress(bar)])
    finally:
        if view is not None:
            view.restore()
    # The student's own predict function may have been traced before training; trace it anew.
    student.predict_function = None
    after = _quality(student, task, split.x_eval, eval_target)

    _save_atomically(student, out_path)
    int8 = _int8(out_path, tflite_path, split.x_train, notes)
    quality = asdict(Quality(_metric(task) if y is not None else
                             ("top-1 agreement with the teacher" if task == "classifier" else "MSE against the teacher"),
                             split.described, len(split.x_eval)))
    return DistillReport(
        teacher=str(teacher_path), student=str(student_path), target=str(out_path), task=task,
        temperature=temperature, alpha=alpha, teacher_parameters=int(teacher.count_params()),
        student_parameters=int(student.count_params()), teacher_bytes=teacher_path.stat().st_size,
        model_bytes=out_path.stat().st_size, quality=quality, teacher_quality=round(teacher_quality, 6),
        before=round(before, 6), after=round(after, 6), epochs=epochs,
        seconds=round(time.perf_counter() - started, 3), int8=int8, notes=notes)
