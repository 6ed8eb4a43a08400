"""In-place execution: convolutions and elementwise ops writing over dead inputs, which takes
the arena below the largest set of tensors live at once, still bit-exact with TFLM."""
import numpy as np
import pytest

from mcuforge.codegen.emit_aot import render_aot_sources
from mcuforge.codegen.quantize import convert
from mcuforge.codegen.tflite_model import load_tflite
from mcuforge.host_tools.verify import verify_model

from conftest import load_architectures, shared_model


@pytest.fixture(scope="module")
def ds_cnn(tmp_path_factory):
    import tensorflow as tf

    keras = tf.keras
    keras.utils.set_random_seed(9)
    root = tmp_path_factory.mktemp("inplace")
    inputs, outputs = load_architectures().ds_cnn(keras)
    keras.Model(inputs, outputs).save(root / "ds_cnn.keras")
    np.save(root / "calib.npy", np.random.default_rng(0).normal(size=(48, 20, 8, 1)).astype(np.float32))
    convert(root / "ds_cnn.keras", root / "ds_cnn.tflite", calib=root / "calib.npy")
    return root / "ds_cnn.tflite"


@pytest.mark.slow
def test_in_place_convolutions_are_bit_exact_and_shrink_the_arena(ds_cnn):
    _, report = render_aot_sources(load_tflite(ds_cnn))
    graph = load_tflite(ds_cnn)
    in_place_kinds = {graph.operators[i].opcode for i in report["in_place_ops"]}
    assert {"CONV_2D", "DEPTHWISE_CONV_2D"} <= in_place_kinds
    assert report["arena_bytes"] < report["largest_live_set_bytes"]
    result = verify_model(ds_cnn, "host", samples=30, seed=2)
    assert result.matches == result.total == 30, result.details()


@pytest.mark.slow
@pytest.mark.qemu
@pytest.mark.parametrize("board", ["mps3-an547", "mps2-an386"])
def test_in_place_convolutions_on_cortex_m(ds_cnn, board):
    result = verify_model(ds_cnn, board, samples=8, seed=4)
    assert result.matches == result.total == 8, result.details()


def test_kws_arena_goes_below_tflm_and_the_live_bound():
    _, report = render_aot_sources(load_tflite(shared_model("kws_ref_model.tflite")))
    tflm_head = 16000  # TFLM's planned-activation figure for this model (shared/models/SOURCES.md)
    assert report["largest_live_set_bytes"] == tflm_head
    assert report["arena_bytes"] < tflm_head
    assert report["in_place_ops"]


def test_in_place_never_makes_the_arena_larger():
    for name in ("hello_world_int8.tflite", "ad01_int8.tflite", "micro_speech_quantized.tflite",
                 "str_ww_ref_model.tflite", "kws_ref_model.tflite"):
        _, report = render_aot_sources(load_tflite(shared_model(name)))
        assert report["arena_bytes"] <= report["largest_live_set_bytes"], name
