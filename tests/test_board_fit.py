"""Board fit: every memory region of the board against what the compiled model puts in it."""
import numpy as np
import pytest

from mcuforge.boards import load_board
from mcuforge.codegen.emit_aot import render_aot_sources
from mcuforge.codegen.errors import McuforgeError
from mcuforge.codegen.quantize import convert
from mcuforge.codegen.tflite_model import load_tflite
from mcuforge.host_tools.board_fit import check_fit

from conftest import shared_model


def _aot_report(path):
    return render_aot_sources(load_tflite(path))[1]


def test_published_models_fit_the_nrf52840dk():
    board = load_board("nrf52840dk")
    for name in ("kws_ref_model.tflite", "ad01_int8.tflite"):
        regions = check_fit(board, _aot_report(shared_model(name)), "aot")
        ram = next(r for r in regions if r.memory == "ram")
        assert ram.fits and ram.used < ram.length


@pytest.fixture(scope="module")
def oversized(tmp_path_factory):
    """A dense model with more weights than the nRF52840 has flash, and a conv model whose
    activations are larger than its RAM."""
    import tensorflow as tf

    keras = tf.keras
    keras.utils.set_random_seed(1)
    root = tmp_path_factory.mktemp("big")
    wide = keras.Sequential([keras.Input((1200,)), keras.layers.Dense(1000, activation="relu"), keras.layers.Dense(4)])
    image = keras.Sequential([keras.Input((128, 128, 3)), keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
                              keras.layers.Conv2D(16, 3, padding="same"), keras.layers.MaxPooling2D(8),
                              keras.layers.Flatten(), keras.layers.Dense(2)])
    paths = {}
    for name, model in (("wide", wide), ("image", image)):
        model.save(root / f"{name}.keras")
        np.save(root / f"{name}.npy", np.random.default_rng(0).normal(size=(8, *model.input_shape[1:])).astype(np.float32))
        convert(root / f"{name}.keras", root / f"{name}.tflite", calib=root / f"{name}.npy")
        paths[name] = root / f"{name}.tflite"
    return paths


@pytest.mark.slow
def test_too_many_weights_for_the_flash(oversized):
    board = load_board("nrf52840dk")
    with pytest.raises(McuforgeError) as err:
        check_fit(board, _aot_report(oversized["wide"]), "aot")
    message = str(err.value)
    assert "does not fit board nrf52840dk" in message and "flash: needs" in message and "has 1048576 B" in message
    assert "ram:" not in message.split("where")[0]            # RAM is fine; only the flash overflows
    assert "prune" in err.value.fix


@pytest.mark.slow
def test_activations_too_large_for_the_ram(oversized):
    board = load_board("nrf52840dk")
    report = _aot_report(oversized["image"])
    with pytest.raises(McuforgeError) as err:
        check_fit(board, report, "aot")
    assert "ram: needs" in str(err.value) and f"tensor arena (planned) {report['arena_bytes']}" in str(err.value)
    assert "smaller input" in err.value.fix
    # The same model fits the Cortex-M55 board with 512 KiB of DTCM for its arena.
    assert all(r.fits for r in check_fit(load_board("mps3-an547"), report, "aot"))


def test_tflm_engine_counts_its_runtime_as_an_estimate():
    board = load_board("nrf52840dk")
    report = {"arena_bytes": 24272, "model_bytes": 60000}
    regions = check_fit(board, report, "tflm")
    flash = next(r for r in regions if r.memory == "flash")
    assert any(n.estimated and "TFLM runtime" in n.what for n in flash.needs)
    huge = {"arena_bytes": 300 * 1024, "model_bytes": 60000}
    with pytest.raises(McuforgeError) as err:
        check_fit(board, huge, "tflm")
    assert "--engine aot" in err.value.fix


@pytest.mark.slow
def test_compile_for_a_board_too_small_fails_and_keeps_the_previous_output(oversized, tmp_path):
    from click.testing import CliRunner

    from mcuforge.host_tools.cli import cli

    out = tmp_path / "out"
    runner = CliRunner()
    good = runner.invoke(cli, ["compile", str(shared_model("ad01_int8.tflite")), "-o", str(out), "--board", "nrf52840dk"])
    assert good.exit_code == 0, good.output
    assert "fits flash" in good.output and "fits ram" in good.output
    before = (out / "model.c").read_text()
    bad = runner.invoke(cli, ["compile", str(oversized["wide"]), "-o", str(out), "--board", "nrf52840dk"])
    assert bad.exit_code == 1
    assert "does not fit board nrf52840dk" in bad.output and "Traceback" not in bad.output
    assert (out / "model.c").read_text() == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]   # no staging left behind


def test_compile_several_models_into_one_shared_arena(tmp_path):
    from click.testing import CliRunner

    from mcuforge.host_tools.cli import cli

    result = CliRunner().invoke(cli, ["compile", str(shared_model("kws_ref_model.tflite")),
                                      str(shared_model("str_ww_ref_model.tflite")),
                                      str(shared_model("hello_world_int8.tflite")), "-o", str(tmp_path / "set")])
    assert result.exit_code == 0, result.output
    assert "shared arena:" in result.output and "separate arenas would take" in result.output
    import json
    report = json.loads((tmp_path / "set" / "report.json").read_text())
    assert [m["role"] for m in report["models"]] == ["primary", "fallback", "minimal"]
    assert report["arena_bytes"] == max(m["arena_bytes"] for m in report["models"])
    refused = CliRunner().invoke(cli, ["compile", str(shared_model("kws_ref_model.tflite")),
                                       str(shared_model("hello_world_int8.tflite")), "--engine", "tflm",
                                       "-o", str(tmp_path / "t")])
    assert refused.exit_code != 0 and "need --engine aot" in refused.output
