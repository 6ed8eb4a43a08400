"""optimize.prune and optimize.distill, and the `mcuforge optimize` commands."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from mcuforge.codegen.errors import McuforgeError
from mcuforge.codegen.optimize import distill, magnitude_mask, prunable_kernels, prune, sparsity_schedule
from mcuforge.host_tools.cli import cli

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

CLASSES = 3


def _data(rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
    x = rng.normal(size=(count, 8)).astype(np.float32)
    y = ((x[:, 0] + x[:, 1] > 0).astype(np.int64) + (x[:, 2] - x[:, 3] > 0.5)).astype(np.int64)
    return x, y


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A trained 3-class MLP teacher, training and held-out data, and two untrained students."""
    import keras

    out = tmp_path_factory.mktemp("optimize")
    rng = np.random.default_rng(0)
    x, y = _data(rng, 1500)
    x_eval, y_eval = _data(rng, 400)
    np.savez(out / "train.npz", x=x, y=y)
    np.savez(out / "eval.npz", x=x_eval, y=y_eval)
    keras.utils.set_random_seed(0)
    teacher = keras.Sequential([keras.Input((8,)), keras.layers.Dense(64, activation="relu", name="wide_a"),
                                keras.layers.Dense(64, activation="relu", name="wide_b"),
                                keras.layers.Dense(CLASSES, activation="softmax", name="probabilities")])
    teacher.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    teacher.fit(x, y, epochs=20, batch_size=32, verbose=0)
    teacher.save(out / "teacher.keras")
    student = keras.Sequential([keras.Input((8,)), keras.layers.Dense(8, activation="relu"),
                                keras.layers.Dense(CLASSES, activation="softmax")])
    student.save(out / "student.keras")
    wrong = keras.Sequential([keras.Input((8,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(5)])
    wrong.save(out / "wrong_student.keras")
    return out


def _accuracy(path, data) -> float:
    import keras

    arrays = np.load(data)
    model = keras.models.load_model(path)
    return float(np.mean(model.predict(arrays["x"], verbose=0).argmax(axis=1) == arrays["y"]))


@pytest.mark.slow
def test_prune_reaches_target_sparsity_and_keeps_accuracy(setup, tmp_path):
    import keras

    out = tmp_path / "pruned.keras"
    report = prune(setup / "teacher.keras", setup / "train.npz", out, target_sparsity=0.5,
                   eval_data=setup / "eval.npz")
    assert abs(report.sparsity - 0.5) <= 0.02
    assert report.quality["metric"] == "top-1 accuracy" and report.quality["samples"] == 400
    assert report.before > 0.9
    assert report.after >= report.before - 0.04
    assert report.before == pytest.approx(_accuracy(setup / "teacher.keras", setup / "eval.npz"), abs=1e-6)
    assert report.after == pytest.approx(_accuracy(out, setup / "eval.npz"), abs=1e-6)

    # Count the zeros again in the saved model: every kernel holds half exact zeros.
    model = keras.models.load_model(out)
    kernels = prunable_kernels(model)
    assert [name for name, _ in kernels] == ["wide_a", "wide_b", "probabilities"]
    for _, kernel in kernels:
        assert abs(np.mean(np.asarray(kernel.numpy()) == 0) - 0.5) <= 0.02
    zeros = sum(int(np.sum(np.asarray(k.numpy()) == 0)) for _, k in kernels)
    total = sum(int(np.asarray(k.numpy()).size) for _, k in kernels)
    assert report.sparsity == pytest.approx(zeros / total, abs=1e-4)
    assert report.nonzero_parameters == model.count_params() - sum(int(np.sum(w == 0)) for w in model.get_weights())
    assert report.parameters == model.count_params() == 4931
    # The saved model carries no optimizer state: smaller than the compiled teacher file.
    assert report.model_bytes == out.stat().st_size < report.source_bytes


@pytest.mark.slow
def test_prune_high_sparsity_with_an_excluded_layer_and_int8(setup, tmp_path):
    report = prune(setup / "teacher.keras", setup / "train.npz", tmp_path / "pruned.keras", target_sparsity=0.8,
                   exclude=["probabilities"], epochs=6, tflite_path=tmp_path / "pruned.tflite")
    by_layer = {row["layer"]: row for row in report.layers}
    assert by_layer["probabilities"]["pruned"] is False and by_layer["probabilities"]["zeros"] == 0
    assert abs(by_layer["wide_b"]["sparsity"] - 0.8) <= 0.01
    assert abs(report.sparsity - 0.8) <= 0.02
    assert "held out" in report.quality["evaluated_on"] and report.quality["samples"] == 300
    assert report.after > 0.85
    int8 = report.int8
    assert int8["bytes"] == (tmp_path / "pruned.tflite").stat().st_size
    assert int8["deflated_bytes"] < 0.75 * int8["bytes"]      # the zeros compress


@pytest.mark.slow
def test_prune_regressor_reports_mse(tmp_path):
    import keras

    rng = np.random.default_rng(2)
    x = rng.uniform(-1, 1, size=(600, 4)).astype(np.float32)
    y = (np.sin(2 * x[:, :1]) + x[:, 1:2] * x[:, 2:3]).astype(np.float32)
    keras.utils.set_random_seed(2)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(32, activation="tanh"), keras.layers.Dense(1)])
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    model.fit(x, y, epochs=15, batch_size=32, verbose=0)
    model.save(tmp_path / "reg.keras")
    np.savez(tmp_path / "data.npz", x=x, y=y)
    report = prune(tmp_path / "reg.keras", tmp_path / "data.npz", tmp_path / "pruned.keras", target_sparsity=0.4,
                   epochs=4)
    assert report.quality["metric"] == "MSE"
    assert abs(report.sparsity - 0.4) <= 0.02
    assert report.after < 0.5 * float(np.var(y))


@pytest.mark.slow
def test_distill_student_gets_near_the_teacher(setup, tmp_path):
    import keras

    out = tmp_path / "student.keras"
    report = distill(setup / "teacher.keras", setup / "student.keras", setup / "train.npz", out,
                     eval_data=setup / "eval.npz")
    assert report.task == "classifier" and report.quality["metric"] == "top-1 accuracy"
    assert report.teacher_quality > 0.9
    assert report.before < 0.7                                  # untrained: near chance (1/3)
    assert report.after > 0.85 and report.after >= report.teacher_quality - 0.08
    assert report.student_parameters < report.teacher_parameters / 20
    assert report.after == pytest.approx(_accuracy(out, setup / "eval.npz"), abs=1e-6)
    # Trained on logits, saved with its softmax back in place.
    student = keras.models.load_model(out)
    probabilities = student.predict(np.load(setup / "eval.npz")["x"][:20], verbose=0)
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5) and np.all(probabilities >= 0)
    assert student.layers[-1].activation.__name__ == "softmax"


@pytest.mark.slow
def test_distill_without_labels_learns_from_the_teacher_alone(setup, tmp_path):
    arrays = np.load(setup / "train.npz")
    np.savez(tmp_path / "unlabelled.npz", x=arrays["x"])
    report = distill(setup / "teacher.keras", setup / "student.keras", tmp_path / "unlabelled.npz",
                     tmp_path / "student.keras", epochs=20)
    assert report.alpha == 0.0 and any("no y" in note for note in report.notes)
    assert report.quality["metric"] == "top-1 agreement with the teacher"
    assert report.teacher_quality == 1.0 and report.after > 0.8


@pytest.mark.slow
@pytest.mark.parametrize("case", ["prune_no_y", "prune_no_x", "distill_no_x", "sparsity_one", "sparsity_negative",
                                  "wrong_student", "not_keras_output", "unknown_exclude", "labels_out_of_range"])
def test_bad_inputs(setup, tmp_path, case):
    teacher, train = setup / "teacher.keras", setup / "train.npz"
    out = tmp_path / "out.keras"
    arrays = np.load(train)
    if case in ("prune_no_y", "prune_no_x", "distill_no_x"):
        keys = {"x": arrays["x"]} if case == "prune_no_y" else {"inputs": arrays["x"], "y": arrays["y"]}
        np.savez(tmp_path / "data.npz", **keys)
        call = ((lambda: prune(teacher, tmp_path / "data.npz", out)) if case != "distill_no_x" else
                (lambda: distill(teacher, setup / "student.keras", tmp_path / "data.npz", out)))
        expected = "'y'" if case == "prune_no_y" else "'x'"
    elif case.startswith("sparsity"):
        call = lambda: prune(teacher, train, out, target_sparsity=1.0 if case == "sparsity_one" else -0.1)
        expected = "[0, 1)"
    elif case == "wrong_student":
        call = lambda: distill(teacher, setup / "wrong_student.keras", train, out)
        expected = "student outputs shape [5]"
    elif case == "not_keras_output":
        out = tmp_path / "out.h5"
        call = lambda: prune(teacher, train, out)
        expected = ".keras"
    elif case == "unknown_exclude":
        call = lambda: prune(teacher, train, out, exclude=["nope"])
        expected = "'nope'"
    else:
        np.savez(tmp_path / "data.npz", x=arrays["x"], y=arrays["y"] + 5)
        call = lambda: prune(teacher, tmp_path / "data.npz", out)
        expected = "class labels"
    with pytest.raises(McuforgeError) as err:
        call()
    assert expected in err.value.what, err.value.what
    assert err.value.fix
    assert not out.exists()


@pytest.mark.slow
def test_cli_prune_and_distill_end_to_end(setup, tmp_path):
    runner = CliRunner()
    pruned = tmp_path / "pruned.keras"
    result = runner.invoke(cli, ["optimize", "prune", str(setup / "teacher.keras"), "--data", str(setup / "train.npz"),
                                 "-o", str(pruned), "--sparsity", "0.6", "--epochs", "3"])
    assert result.exit_code == 0, result.output
    assert pruned.exists()
    assert "sparsity: 60.0%" in result.output and "top-1 accuracy:" in result.output

    distilled = tmp_path / "distilled.keras"
    result = runner.invoke(cli, ["optimize", "distill", "--teacher", str(pruned), "--student",
                                 str(setup / "student.keras"), "--data", str(setup / "train.npz"),
                                 "--eval", str(setup / "eval.npz"), "-o", str(distilled), "--epochs", "5",
                                 "--temperature", "2", "--alpha", "0.5", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["temperature"] == 2.0 and report["alpha"] == 0.5 and report["epochs"] == 5
    assert report["target"] == str(distilled) and distilled.exists()

    result = runner.invoke(cli, ["optimize", "distill", "--teacher", str(setup / "teacher.keras"), "--student",
                                 str(setup / "wrong_student.keras"), "--data", str(setup / "train.npz"),
                                 "-o", str(tmp_path / "never.keras")])
    assert result.exit_code == 1
    assert "error:" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "never.keras").exists()


# -------------------------------------------------------------------------------------------
# Fast checks of the pieces

def test_magnitude_mask_zeroes_the_smallest():
    weights = np.array([[0.5, -0.1], [0.05, -2.0], [0.3, 0.0]], dtype=np.float32)
    mask = magnitude_mask(weights, 0.5)
    assert mask.shape == weights.shape
    assert mask.tolist() == [[1, 0], [0, 1], [1, 0]]
    assert magnitude_mask(weights, 0.0).all()


def test_sparsity_schedule_ramps_to_the_target():
    values = [sparsity_schedule(step, 100, 0.6) for step in range(0, 130, 10)]
    assert values[0] == 0.0 and values[-1] == 0.6 and values[10] == 0.6
    assert all(a <= b for a, b in zip(values, values[1:]))
    assert values[3] > 0.6 * 0.3         # cubic: most of the pruning happens early
