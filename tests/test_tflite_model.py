import numpy as np
import pytest

from mcuforge.codegen.errors import McuforgeError
from mcuforge.codegen.tflite_model import load_tflite, parse_tflite

from conftest import shared_model


def test_reads_the_published_hello_world_model():
    graph = load_tflite(shared_model("hello_world_int8.tflite"))
    assert graph.op_counts() == {"FULLY_CONNECTED": 3}
    first = graph.operators[0]
    weights = graph.tensor(first.inputs[1])
    assert weights.is_constant and weights.dtype == "INT8" and weights.data.shape == weights.shape
    assert graph.tensors[graph.inputs[0]].shape == (1, 1)
    assert first.options["activation"] == "RELU"


def test_kws_model_has_the_documented_operators():
    graph = load_tflite(shared_model("kws_ref_model.tflite"))
    counts = graph.op_counts()
    assert counts["CONV_2D"] == 5 and counts["DEPTHWISE_CONV_2D"] == 4 and counts["SOFTMAX"] == 1


def test_not_a_model(tmp_path):
    path = tmp_path / "notes.tflite"
    path.write_text("these are my notes, not a model")
    with pytest.raises(McuforgeError) as err:
        load_tflite(path)
    assert "not a TensorFlow Lite model" in err.value.what and str(path) in err.value.where


@pytest.mark.parametrize("fraction", [0.05, 0.5, 0.9])
def test_truncated_model(tmp_path, fraction):
    raw = shared_model("ad01_int8.tflite").read_bytes()
    path = tmp_path / "cut.tflite"
    path.write_bytes(raw[: int(len(raw) * fraction)])
    with pytest.raises(McuforgeError, match="truncated or damaged"):
        load_tflite(path)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(McuforgeError, match="not found"):
        load_tflite(tmp_path / "nope.tflite")
    with pytest.raises(McuforgeError, match="directory"):
        load_tflite(tmp_path)


def test_random_bytes_never_crash_the_reader():
    rng = np.random.default_rng(1)
    for _ in range(200):
        blob = bytearray(rng.integers(0, 256, size=int(rng.integers(8, 400)), dtype=np.uint8).tobytes())
        blob[4:8] = b"TFL3"
        try:
            parse_tflite(bytes(blob))
        except McuforgeError:
            pass
