"""quantize.convert: float Keras/SavedModel -> full-int8 .tflite, with float-vs-int8 agreement."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mcuforge.codegen.errors import McuforgeError
from mcuforge.codegen.quantize import convert, run_int8
from mcuforge.codegen.tflite_model import load_tflite

# Keras's own numpy bridge warns about the copy keyword under NumPy 2; nothing of ours.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "vibration_anomaly" / "train.py"


def _load_example():
    spec = importlib.util.spec_from_file_location("vibration_anomaly_train", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    """The bundled example, trained once, and its int8 conversion."""
    out = tmp_path_factory.mktemp("vibration")
    paths = _load_example().train_example(out, seed=0)
    int8_path = out / "model_int8.tflite"
    report = convert(paths["model"], int8_path, calib=paths["calib"], eval_data=paths["eval"])
    return paths, int8_path, report


@pytest.fixture(scope="module")
def regressor(tmp_path_factory):
    """A tiny float regressor y = f(x) saved as .h5 and as a SavedModel, with data."""
    import keras

    out = tmp_path_factory.mktemp("regressor")
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, size=(600, 8)).astype(np.float32)
    y = (np.sin(2 * x[:, :1]) + 0.5 * x[:, 1:2] * x[:, 2:3]).astype(np.float32)
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    model.fit(x[:400], y[:400], epochs=30, batch_size=32, verbose=0)
    model.save(out / "model.h5")
    model.export(str(out / "saved_model"), verbose=False)
    np.save(out / "calib.npy", x[:200])
    np.savez(out / "eval.npz", x=x[400:], y=y[400:])
    return out, model


def _tensor(graph, index):
    return graph.tensors[index]


@pytest.mark.slow
def test_keras_model_becomes_full_int8(example):
    _, int8_path, report = example
    graph = load_tflite(int8_path)
    assert [_tensor(graph, i).dtype for i in graph.inputs] == ["INT8"]
    assert [_tensor(graph, i).dtype for i in graph.outputs] == ["INT8"]
    assert not [t for t in graph.tensors if t.dtype.startswith("FLOAT")]
    # The batch is fixed to 1, so Flatten is a plain RESHAPE without SHAPE/STRIDED_SLICE/PACK.
    assert set(graph.op_counts()) == {"FULLY_CONNECTED", "RESHAPE"}
    assert _tensor(graph, graph.inputs[0]).shape == (1, 64, 3)
    assert report.source_kind == "keras" and not report.passthrough
    assert report.model_bytes == int8_path.stat().st_size
    assert report.calibration["samples"] == len(np.load(example[0]["calib"]))
    assert report.input[0]["dtype"] == "int8" and report.input[0]["shape"] == [1, 64, 3]
    assert report.to_dict()["output"][0]["zero_point"] == int(_tensor(graph, graph.outputs[0]).zero_point[0])


@pytest.mark.slow
def test_example_agreement_is_reported_and_plausible(example):
    paths, int8_path, report = example
    evaluation = report.evaluation
    data = np.load(paths["eval"])
    assert evaluation["task"] == "classifier" and evaluation["metric"] == "top-1 accuracy"
    assert evaluation["samples"] == len(data["x"])
    # Within the default budget of 2 accuracy points, so the model was written.
    assert report.budget["passed"] and report.budget["limit"] == 2.0 and report.weights == "per-channel"
    assert evaluation["float_accuracy"] > 0.8           # the example learns something
    assert evaluation["top1_agreement"] >= 0.95
    assert abs(evaluation["int8_accuracy"] - evaluation["float_accuracy"]) <= 0.05
    assert evaluation["relative_mse"] < 0.05

    # Recompute part of it independently: Keras outputs against the dequantized int8 outputs.
    import keras
    model = keras.models.load_model(paths["model"])
    x = data["x"][:40]
    float_out = model.predict(x, verbose=0)
    graph = load_tflite(int8_path)
    int8_out = run_int8(int8_path.read_bytes(), graph, x)
    output_scale = float(_tensor(graph, graph.outputs[0]).scale[0])
    assert np.mean(np.abs(float_out - int8_out)) < 4 * output_scale
    assert np.mean(float_out.argmax(1) == int8_out.argmax(1)) >= 0.9


@pytest.mark.slow
def test_example_is_repeatable_and_runs_as_a_script(example, tmp_path):
    import keras

    paths, _, _ = example
    result = subprocess.run([sys.executable, str(EXAMPLE), str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    for name in ("calib.npy", "eval.npz"):
        assert (tmp_path / name).read_bytes() == paths[name.split(".")[0]].read_bytes()
    first = keras.models.load_model(paths["model"]).get_weights()
    second = keras.models.load_model(tmp_path / "model.keras").get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))


@pytest.mark.slow
def test_int8_tflite_passes_through_unchanged(example, tmp_path):
    paths, int8_path, first = example
    copied = tmp_path / "copy.tflite"
    report = convert(int8_path, copied, eval_data=paths["eval"])
    assert report.passthrough and report.source_kind == "tflite"
    assert copied.read_bytes() == int8_path.read_bytes()
    assert any("unchanged" in note for note in report.notes)
    # Same int8 model, same data: same int8 accuracy; no float model to compare with.
    assert report.evaluation["int8_accuracy"] == first.evaluation["int8_accuracy"]
    assert "top1_agreement" not in report.evaluation


@pytest.mark.slow
def test_regressor_from_h5_and_saved_model(regressor, tmp_path):
    out, _ = regressor
    y = np.load(out / "eval.npz")["y"]
    for source in (out / "model.h5", out / "saved_model"):
        target = tmp_path / f"{source.stem}_int8.tflite"
        report = convert(source, target, calib=out / "calib.npy", eval_data=out / "eval.npz")
        graph = load_tflite(target)
        assert _tensor(graph, graph.inputs[0]).dtype == "INT8"
        assert _tensor(graph, graph.outputs[0]).dtype == "INT8"
        evaluation = report.evaluation
        assert evaluation["task"] == "regressor" and evaluation["metric"] == "MSE against y"
        assert report.budget["metric"] == "MSE increase against y" and report.budget["passed"]
        assert evaluation["mse_float_vs_int8"] < 0.02 * evaluation["float_output_variance"]
        assert evaluation["max_abs_error"] < 0.2 * float(np.ptp(y))
        # The int8 model is about as good as the float one against the targets.
        assert evaluation["int8_mse_vs_y"] < evaluation["float_mse_vs_y"] + 0.05 * float(np.var(y))
    assert report.source_kind == "saved_model"


@pytest.mark.slow
def test_float_tflite_is_refused_with_advice(regressor, tmp_path):
    import tensorflow as tf

    _, model = regressor
    float_path = tmp_path / "float.tflite"
    float_path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    with pytest.raises(McuforgeError) as err:
        convert(float_path, tmp_path / "out.tflite")
    assert "float" in err.value.what
    assert "Keras" in err.value.fix
    assert not (tmp_path / "out.tflite").exists()


@pytest.mark.slow
def test_calibration_of_the_wrong_shape_names_both_shapes(example, tmp_path):
    paths, _, _ = example
    bad = tmp_path / "flat_calib.npy"
    np.save(bad, np.zeros((10, 192), dtype=np.float32))
    target = tmp_path / "model_int8.tflite"
    target.write_bytes(b"previous output")
    with pytest.raises(McuforgeError) as err:
        convert(paths["model"], target, calib=bad)
    message = str(err.value)
    assert "[10, 192]" in message          # found
    assert "64, 3" in message              # expected
    assert "flat_calib.npy" in err.value.where
    assert target.read_bytes() == b"previous output"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flat_calib.npy", "model_int8.tflite"]


def test_keras_model_without_calibration_is_refused(tmp_path):
    import zipfile
    model = tmp_path / "model.keras"
    with zipfile.ZipFile(model, "w") as archive:
        archive.writestr("config.json", "{}")
    with pytest.raises(McuforgeError) as err:
        convert(model, tmp_path / "out.tflite")
    assert "calibration" in err.value.what
    assert "--calib" in err.value.fix


@pytest.mark.parametrize("name, content", [
    ("notes.txt", b"just some text, not a model"),
    ("model.keras", b"not a zip archive"),
    ("model.h5", b"not hdf5 either"),
])
def test_file_that_is_not_a_model_is_refused(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(McuforgeError) as err:
        convert(path, tmp_path / "out.tflite", calib=tmp_path / "calib.npy")
    assert name in err.value.where
    assert err.value.fix


def test_directory_that_is_not_a_saved_model_is_refused(tmp_path):
    with pytest.raises(McuforgeError) as err:
        convert(tmp_path, tmp_path / "out.tflite")
    assert "SavedModel" in err.value.what


def test_missing_model_is_refused(tmp_path):
    with pytest.raises(McuforgeError) as err:
        convert(tmp_path / "nowhere.keras", tmp_path / "out.tflite")
    assert "not found" in err.value.what


def test_truncated_tflite_is_refused(tmp_path):
    shared = ROOT.parent / "shared" / "models" / "hello_world_int8.tflite"
    if not shared.exists():
        pytest.skip(f"reference models not present at {shared.parent}")
    truncated = tmp_path / "truncated.tflite"
    truncated.write_bytes(shared.read_bytes()[:200])
    with pytest.raises(McuforgeError) as err:
        convert(truncated, tmp_path / "out.tflite")
    assert "truncated" in err.value.what or "damaged" in err.value.what
    assert not (tmp_path / "out.tflite").exists()


def test_calibration_npz_without_x_is_refused(tmp_path):
    from mcuforge.codegen.quantize import _pick_x, load_array_file
    path = tmp_path / "calib.npz"
    np.savez(path, a=np.zeros((2, 3)), b=np.zeros((2, 3)))
    with pytest.raises(McuforgeError) as err:
        _pick_x(load_array_file(path, "calibration"), path, "calibration")
    assert "'x'" in err.value.what and "a, b" in err.value.what
    junk = tmp_path / "junk.npy"
    junk.write_bytes(b"not numpy")
    with pytest.raises(McuforgeError):
        load_array_file(junk, "calibration")


def test_agreement_metrics_on_known_outputs():
    from mcuforge.codegen.quantize import agreement
    float_out = np.array([[2.0, 1.0], [0.0, 3.0], [1.0, 0.5], [0.2, 0.1]])
    int8_out = np.array([[2.0, 1.5], [0.0, 3.0], [0.5, 1.0], [0.2, 0.1]])
    result = agreement(float_out, int8_out, np.array([0, 1, 1, 0]))
    assert result["task"] == "classifier"
    assert result["top1_agreement"] == 0.75
    assert result["float_accuracy"] == 0.75 and result["int8_accuracy"] == 1.0
    assert result["max_abs_error"] == 0.5
    assert result["mse_float_vs_int8"] == pytest.approx((0.25 + 0.25 + 0.25) / 8)
    # No labels and outputs that are not probabilities: treated as a regression.
    assert agreement(float_out, int8_out, None)["task"] == "regressor"
    probabilities = np.array([[0.7, 0.3], [0.1, 0.9]])
    assert agreement(probabilities, probabilities, None)["task"] == "classifier"
