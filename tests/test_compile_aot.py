import json

from click.testing import CliRunner

from mcuforge.host_tools.cli import cli

from conftest import require_tool, shared_model
from model_surgery import with_operator_replaced


def _model_with_unsupported_op(tmp_path):
    path = tmp_path / "hard_swish.tflite"
    path.write_bytes(with_operator_replaced(shared_model("hello_world_int8.tflite").read_bytes(), 1, "HARD_SWISH"))
    return path


def test_compile_writes_sources_and_report(tmp_path):
    out = tmp_path / "aot"
    result = CliRunner().invoke(cli, ["compile", str(shared_model("ad01_int8.tflite")), "--engine", "aot", "-o", str(out)])
    assert result.exit_code == 0, result.output
    files = {p.name for p in out.iterdir()}
    assert {"model.h", "model.c", "report.json", "fully_connected_s8.c", "mf_quant.h"} <= files
    report = json.loads((out / "report.json").read_text())
    assert report["engine"] == "aot" and report["ops"] == {"FULLY_CONNECTED": 10}
    assert report["input"][0]["shape"] == [1, 640] and report["input"][0]["dtype"] == "int8"
    assert isinstance(report["output"][0]["scale"], float) and isinstance(report["output"][0]["zero_point"], int)
    assert 0 < report["arena_bytes"] <= 768
    # Weights and biases of ten dense layers are all in flash: at least one byte per weight.
    assert report["weights_bytes"] >= report["macs"]
    source = (out / "model.c").read_text()
    assert "flatbuffer" not in source.lower() and "tflite" not in (out / "model.h").read_text().split("\n", 1)[1]
    assert "static int8_t model_arena[MODEL_ARENA_BYTES]" in source


def test_failed_compile_keeps_previous_output(tmp_path):
    out = tmp_path / "aot"
    runner = CliRunner()
    assert runner.invoke(cli, ["compile", str(shared_model("hello_world_int8.tflite")), "-o", str(out)]).exit_code == 0
    before = (out / "model.c").read_text()
    result = runner.invoke(cli, ["compile", str(_model_with_unsupported_op(tmp_path)), "-o", str(out)])
    assert result.exit_code == 1
    assert (out / "model.c").read_text() == before


def test_unsupported_op_error_names_op_node_and_supported_set(tmp_path):
    result = CliRunner().invoke(cli, ["compile", str(_model_with_unsupported_op(tmp_path)), "-o", str(tmp_path / "x")])
    assert result.exit_code == 1
    assert "unsupported operator HARD_SWISH at node 1" in result.output
    assert "FULLY_CONNECTED" in result.output and "RESHAPE" in result.output
    assert "Traceback" not in result.output


def test_bad_model_files_get_clear_errors(tmp_path):
    runner = CliRunner()
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"\x00" * 64)
    result = runner.invoke(cli, ["compile", str(junk), "-o", str(tmp_path / "o")])
    assert result.exit_code == 1 and "not a TensorFlow Lite model" in result.output
    cut = tmp_path / "cut.tflite"
    cut.write_bytes(shared_model("ad01_int8.tflite").read_bytes()[:20000])
    result = runner.invoke(cli, ["compile", str(cut), "-o", str(tmp_path / "o")])
    assert result.exit_code == 1 and "truncated" in result.output and "Traceback" not in result.output


def test_debug_flag_shows_the_traceback(tmp_path):
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"nonsense" * 4)
    result = CliRunner().invoke(cli, ["--debug", "compile", str(junk), "-o", str(tmp_path / "o")])
    assert result.exit_code != 0 and result.exception is not None


def test_report_lists_every_layer_with_its_arena_placement(tmp_path):
    out = tmp_path / "aot"
    assert CliRunner().invoke(cli, ["compile", str(shared_model("ad01_int8.tflite")), "-o", str(out)]).exit_code == 0
    report = json.loads((out / "report.json").read_text())
    layers = report["layers"]
    assert [layer["op"] for layer in layers] == ["FULLY_CONNECTED"] * 10
    assert sum(layer["macs"] for layer in layers) == report["macs"]
    for layer in layers:
        assert 0 <= layer["arena_offset"] and layer["arena_offset"] + layer["output_bytes"] <= report["arena_bytes"]
    assert layers[-1]["output_shape"] == [1, 640]


def test_compile_for_an_arm_board_measures_flash(tmp_path):
    require_tool("arm-none-eabi-gcc", "gcc-arm-none-eabi")
    out = tmp_path / "aot"
    result = CliRunner().invoke(cli, ["compile", str(shared_model("hello_world_int8.tflite")), "-o", str(out),
                                      "--board", "mps2-an386"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["kernels"] == "dsp" and report["board"] == "mps2-an386"
    # Code and weights: more than the constants alone, and in the same order of magnitude for a tiny model.
    assert report["weights_bytes"] < report["flash_bytes"] < report["weights_bytes"] + 16384
    assert "flash:" in result.output


def test_compile_refuses_an_engine_the_board_lacks(tmp_path):
    from mcuforge.boards import BOARDS_DIR

    board_file = tmp_path / "mps2-an386.toml"
    board_file.write_text((BOARDS_DIR / "mps2-an386.toml").read_text().replace('engines = ["aot", "tflm"]', 'engines = ["aot"]'))
    result = CliRunner().invoke(cli, ["compile", str(shared_model("hello_world_int8.tflite")), "-o", str(tmp_path / "y"),
                                      "--board", str(board_file), "--engine", "tflm"])
    assert result.exit_code == 1
    assert "does not support the tflm engine" in result.output and "use one of: aot" in result.output
    assert not (tmp_path / "y").exists()
