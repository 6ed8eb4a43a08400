"""quantize.convert with a quality budget: calibration sources, per-tensor weights, and the
per-layer diagnosis that names where an int8 model departs from its float original."""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from mcuforge.codegen.errors import McuforgeError
from mcuforge.codegen.quantize import (BudgetExceeded, check_budget, convert, load_calibration, noise_ratio,
                                       spread_indices)
from mcuforge.codegen.tflite_model import load_tflite
from mcuforge.host_tools.cli import cli

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

OUTLIER_GAIN = 1000.0


def _data(rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
    x = rng.normal(size=(count, 8)).astype(np.float32)
    y = ((x[:, 0] + x[:, 1] > 0).astype(np.int64) + (x[:, 2] - x[:, 3] > 0.5)).astype(np.int64)
    return x, y


def _mlp(width: int):
    import keras

    inputs = keras.Input((8,))
    hidden = keras.layers.Dense(width, activation="relu", name="hidden_a")(inputs)
    hidden = keras.layers.Dense(16, activation="relu", name="hidden_b")(hidden)
    return keras.Model(inputs, keras.layers.Dense(3, name="logits")(hidden))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A well-behaved 3-class MLP, and the same function with one outlier unit in 'hidden_a'.

    The outlier unit has 1000x the weights and bias of a normal one and nothing downstream
    reads it, so the float model is unchanged; but 'hidden_a' shares one activation scale, so
    int8 rounds every normal unit of that layer to almost nothing."""
    import keras

    out = tmp_path_factory.mktemp("budget")
    rng = np.random.default_rng(0)
    x, y = _data(rng, 1200)
    x_eval, y_eval = _data(rng, 400)
    keras.utils.set_random_seed(0)
    good = _mlp(16)
    good.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    good.fit(x, y, epochs=20, batch_size=32, verbose=0)

    bad = _mlp(17)
    (wa, ba), (wb, bb), logits = (layer.get_weights() for layer in good.layers[1:])
    bad.get_layer("hidden_a").set_weights([np.concatenate([wa, OUTLIER_GAIN * np.abs(wa[:, :1])], axis=1),
                                           np.concatenate([ba, [OUTLIER_GAIN]]).astype(np.float32)])
    bad.get_layer("hidden_b").set_weights([np.concatenate([wb, np.zeros((1, 16), np.float32)]), bb])
    bad.get_layer("logits").set_weights(logits)
    np.testing.assert_allclose(bad.predict(x_eval, verbose=0), good.predict(x_eval, verbose=0), atol=1e-4)

    good.save(out / "good.keras")
    bad.save(out / "bad.keras")
    bad.export(str(out / "bad_saved_model"), verbose=False)
    np.save(out / "calib.npy", x[:200])
    np.savez(out / "eval.npz", x=x_eval, y=y_eval)
    return out


@pytest.mark.slow
def test_well_behaved_classifier_is_within_budget(models, tmp_path):
    target = tmp_path / "good.tflite"
    report = convert(models / "good.keras", target, calib=models / "calib.npy", eval_data=models / "eval.npz")
    assert target.exists()
    assert report.evaluation["metric"] == "top-1 accuracy"
    assert report.evaluation["float_accuracy"] > 0.9
    budget = report.budget
    assert budget["passed"] and budget["limit"] == 2.0 and budget["unit"] == "points"
    assert budget["metric"] == "top-1 accuracy drop"
    assert budget["value"] == pytest.approx(
        100 * (report.evaluation["float_accuracy"] - report.evaluation["int8_accuracy"]), abs=1e-3)
    assert report.layers is None          # the diagnosis only runs over budget
    assert report.weights == "per-channel"


@pytest.mark.slow
def test_outlier_layer_is_caught_and_named(models, tmp_path):
    target = tmp_path / "bad.tflite"
    target.write_bytes(b"previous model")
    with pytest.raises(BudgetExceeded) as err:
        convert(models / "bad.keras", target, calib=models / "calib.npy", eval_data=models / "eval.npz")
    error = err.value
    assert isinstance(error, McuforgeError)
    assert "over the quality budget" in error.what and "top-1 accuracy drop" in error.what
    assert "'hidden_a'" in error.what
    assert "--max-drop" in error.fix and "not written" in error.fix
    assert "eval.npz" in error.where
    # Nothing new was written; the previous output is intact, and no temporary file is left.
    assert target.read_bytes() == b"previous model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.tflite"]

    report = error.report
    assert not report.budget["passed"] and report.budget["value"] > 20
    layers = report.layers
    assert layers[0]["layer"] == "hidden_a"
    # Its output has lost the signal while its input was fine: the error appears there.
    assert layers[0]["sqnr_db"] < 6 < 25 < layers[0]["input_sqnr_db"]
    assert "hidden_a_" in layers[0]["tensor"]
    by_name = {row["layer"]: row for row in layers}
    assert set(by_name) >= {"hidden_a", "hidden_b", "logits"}
    assert by_name["logits"]["tensor"] == "StatefulPartitionedCall:0"     # the graph output
    assert any(row["is_input"] for row in layers)

    # A budget large enough lets the same model through.
    lifted = convert(models / "bad.keras", target, calib=models / "calib.npy", eval_data=models / "eval.npz",
                     max_drop=100)
    assert lifted.budget["passed"] and target.read_bytes() != b"previous model"


@pytest.mark.slow
def test_saved_model_over_budget_names_the_tensor(models, tmp_path):
    with pytest.raises(BudgetExceeded) as err:
        convert(models / "bad_saved_model", tmp_path / "bad.tflite", calib=models / "calib.npy",
                eval_data=models / "eval.npz")
    # Without Keras layers, tensors of a float .tflite of the same model are compared by name.
    assert "hidden_a" in err.value.report.layers[0]["layer"]
    assert "hidden_a" in err.value.what


@pytest.mark.slow
def test_per_tensor_flag_changes_weight_scales(models, tmp_path):
    def weight_scales(path):
        graph = load_tflite(path)
        return [len(graph.tensors[op.inputs[1]].scale) for op in graph.operators if op.opcode == "FULLY_CONNECTED"]

    per_channel = tmp_path / "per_channel.tflite"
    per_tensor = tmp_path / "per_tensor.tflite"
    convert(models / "good.keras", per_channel, calib=models / "calib.npy")
    report = convert(models / "good.keras", per_tensor, calib=models / "calib.npy", per_channel=False)
    assert weight_scales(per_channel) == [16, 16, 3]        # one scale per output unit
    assert weight_scales(per_tensor) == [1, 1, 1]
    assert report.weights == "per-tensor"
    # The bias scale follows: input scale times the (single) weight scale.
    graph = load_tflite(per_tensor)
    first = graph.operators[0]
    bias = graph.tensors[first.inputs[2]]
    expected = graph.tensors[first.inputs[0]].scale[0] * graph.tensors[first.inputs[1]].scale[0]
    assert len(bias.scale) == 1 and bias.scale[0] == pytest.approx(expected, rel=1e-5)


@pytest.mark.slow
def test_calibration_from_a_folder_matches_one_file(models, tmp_path):
    calib = np.load(models / "calib.npy")[:60]
    folder = tmp_path / "calib"
    folder.mkdir()
    # Single samples and batches mixed; files are read in name order.
    for i in range(10):
        np.save(folder / f"a{i:02d}.npy", calib[i])
    np.save(folder / "b_batch.npy", calib[10:40])
    np.save(folder / "c_batch.npy", calib[40:60])
    (folder / "README.txt").write_text("not a sample")
    np.save(tmp_path / "joined.npy", calib)

    from_folder = convert(models / "good.keras", tmp_path / "folder.tflite", calib=folder)
    convert(models / "good.keras", tmp_path / "joined.tflite", calib=tmp_path / "joined.npy")
    assert from_folder.calibration["samples"] == 60 and from_folder.calibration["files"] == 12
    assert (tmp_path / "folder.tflite").read_bytes() == (tmp_path / "joined.tflite").read_bytes()


@pytest.mark.slow
def test_samples_limits_calibration(models, tmp_path):
    calib = np.load(models / "calib.npy")
    report = convert(models / "good.keras", tmp_path / "limited.tflite", calib=models / "calib.npy",
                     num_calib_samples=25)
    assert report.calibration["samples"] == 25 and report.calibration["available"] == 200
    # Exactly the 25 spread-out samples were used: same model as calibrating on them alone.
    np.save(tmp_path / "subset.npy", calib[spread_indices(200, 25)])
    convert(models / "good.keras", tmp_path / "subset.tflite", calib=tmp_path / "subset.npy")
    assert (tmp_path / "limited.tflite").read_bytes() == (tmp_path / "subset.tflite").read_bytes()
    full = convert(models / "good.keras", tmp_path / "full.tflite", calib=models / "calib.npy")
    assert full.calibration["samples"] == 200
    assert (tmp_path / "full.tflite").read_bytes() != (tmp_path / "limited.tflite").read_bytes()


@pytest.mark.slow
def test_cli_over_budget_fails_cleanly_and_budget_can_be_raised(models, tmp_path):
    runner = CliRunner()
    target = tmp_path / "bad.tflite"
    args = ["convert", str(models / "bad.keras"), "--calib", str(models / "calib.npy"),
            "--eval", str(models / "eval.npz"), "-o", str(target)]
    result = runner.invoke(cli, args)
    assert result.exit_code == 1
    assert "over the quality budget" in result.output and "'hidden_a'" in result.output
    assert "Traceback" not in result.output
    assert not target.exists()

    result = runner.invoke(cli, args + ["--max-drop", "100", "--per-tensor", "--samples", "50"])
    assert result.exit_code == 0, result.output
    assert target.exists()
    assert "per-tensor" in result.output and "budget:" in result.output and "limit 100 points" in result.output


@pytest.mark.slow
def test_cli_budget_without_eval_is_refused(models, tmp_path):
    result = CliRunner().invoke(cli, ["convert", str(models / "good.keras"), "--calib", str(models / "calib.npy"),
                                      "--max-drop", "1", "-o", str(tmp_path / "x.tflite")])
    assert result.exit_code == 1
    assert "held-out data" in result.output and "--eval" in result.output


@pytest.mark.slow
def test_regressor_budget_on_mse(models, tmp_path):
    """A regressor is judged on MSE: within the default budget, and over a zero budget."""
    import keras

    rng = np.random.default_rng(3)
    x = rng.uniform(-1, 1, size=(500, 4)).astype(np.float32)
    y = (np.sin(2 * x[:, :1]) + x[:, 1:2] * x[:, 2:3]).astype(np.float32)
    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(16, activation="tanh"), keras.layers.Dense(1)])
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    model.fit(x[:400], y[:400], epochs=15, batch_size=32, verbose=0)
    model.save(tmp_path / "reg.keras")
    np.save(tmp_path / "calib.npy", x[:100])
    np.savez(tmp_path / "eval.npz", x=x[400:], y=y[400:])
    report = convert(tmp_path / "reg.keras", tmp_path / "reg.tflite", calib=tmp_path / "calib.npy",
                     eval_data=tmp_path / "eval.npz")
    assert report.evaluation["metric"] == "MSE against y"
    assert report.budget["metric"] == "MSE increase against y" and report.budget["unit"] == "%"
    assert report.budget["passed"] and report.budget["limit"] == 10.0
    # Without targets, the int8-vs-float error against the output variance; a zero budget fails.
    np.save(tmp_path / "eval_x.npy", x[400:])
    with pytest.raises(BudgetExceeded) as err:
        convert(tmp_path / "reg.keras", tmp_path / "strict.tflite", calib=tmp_path / "calib.npy",
                eval_data=tmp_path / "eval_x.npy", max_mse_increase=0.0)
    assert "relative to the output variance" in err.value.what and "--max-mse-increase" in err.value.fix
    assert not (tmp_path / "strict.tflite").exists()
    assert err.value.report.layers          # located, even for a regressor


# -------------------------------------------------------------------------------------------
# Fast checks of the pieces

def test_check_budget_classifier_and_regressor():
    evaluation = {"task": "classifier", "float_accuracy": 0.95, "int8_accuracy": 0.92, "top1_agreement": 0.96}
    budget = check_budget(evaluation)
    assert budget["value"] == pytest.approx(3.0) and not budget["passed"] and budget["limit"] == 2.0
    assert check_budget(evaluation, max_drop=3.5)["passed"]
    no_labels = {"task": "classifier", "top1_agreement": 0.99}
    assert check_budget(no_labels)["value"] == pytest.approx(1.0)
    assert "disagreement" in check_budget(no_labels)["metric"]
    regressor = {"task": "regressor", "float_mse_vs_y": 0.010, "int8_mse_vs_y": 0.0125, "relative_mse": 0.001}
    assert check_budget(regressor)["value"] == pytest.approx(25.0)
    assert check_budget(regressor, max_mse_increase=30)["passed"]
    no_targets = {"task": "regressor", "relative_mse": 0.004, "mse_float_vs_int8": 0.4, "float_output_variance": 100}
    assert check_budget(no_targets)["value"] == pytest.approx(0.4) and check_budget(no_targets)["limit"] == 1.0
    # An int8 model better than the float one is within any budget.
    assert check_budget({"task": "classifier", "float_accuracy": 0.8, "int8_accuracy": 0.81}, max_drop=0)["passed"]


def test_noise_ratio_is_per_channel():
    rng = np.random.default_rng(0)
    wide = rng.normal(scale=1000.0, size=(500, 1))
    narrow = rng.normal(scale=1.0, size=(500, 3))
    reference = np.concatenate([narrow, wide], axis=1)
    flattened = reference.copy()
    flattened[:, :3] = 0.0               # what a coarse shared scale does to the narrow channels
    # Over the whole tensor this looks harmless; per channel, three of four channels are gone.
    assert np.mean((reference - flattened) ** 2) / np.var(reference) < 0.01
    assert noise_ratio(reference, flattened) == pytest.approx(0.75, abs=0.01)
    assert noise_ratio(reference, reference) == 0.0


def test_negative_budget_is_refused(tmp_path):
    with pytest.raises(McuforgeError) as err:
        convert(tmp_path / "m.keras", tmp_path / "o.tflite", eval_data=tmp_path / "e.npz", max_drop=-1)
    assert err.value.where == "max_drop"


def test_calibration_folder_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(McuforgeError) as err:
        load_calibration(empty, (8,))
    assert "no .npy files" in err.value.what
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    np.save(mixed / "a.npy", np.zeros((4, 8), np.float32))
    np.save(mixed / "b.npy", np.zeros((4, 9), np.float32))
    with pytest.raises(McuforgeError) as err:
        load_calibration(mixed, (8,))
    assert err.value.where.endswith("b.npy") and "[4, 9]" in err.value.what
    (mixed / "b.npy").unlink()
    np.save(mixed / "c.npy", np.full((8,), np.nan, np.float32))
    with pytest.raises(McuforgeError) as err:
        load_calibration(mixed, (8,))
    assert "NaN" in err.value.what


def test_spread_indices():
    assert list(spread_indices(10, 5)) == [0, 2, 4, 6, 8]
    assert list(spread_indices(3, 10)) == [0, 1, 2]
    assert len(set(spread_indices(1001, 1000))) == 1000
