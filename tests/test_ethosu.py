"""The ethos-u engine: Vela compiles the model for the board's NPU, its summary becomes the report,
and the compiled model becomes an aligned C array for TFLM's ethos-u operator."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from mcuforge.boards import load_board
from mcuforge.codegen import emit_ethosu as ethosu_module
from mcuforge.codegen.emit_ethosu import EthosUTarget, emit_ethosu, target_for_board
from mcuforge.codegen.errors import McuforgeError
from mcuforge.codegen.tflite_model import load_tflite
from mcuforge.codegen.vela_summary import parse_cpu_fallbacks, parse_operator_counts, parse_summary_csv
from mcuforge.host_tools.cli import cli
from mcuforge.host_tools.compile import compile_model

from conftest import shared_model

BOARD = "corstone-300-u55"
NO_NPU_BOARD = "mps3-an547"


def _array_bytes(source: str, name: str) -> bytes:
    body = source.split(f"{name}_data[] = {{", 1)[1].split("};", 1)[0]
    return bytes(int(token, 16) for token in body.replace("\n", " ").split(",") if token.strip())


def _vela_by_hand(model: Path, out: Path) -> tuple[bytes, dict, str]:
    """Vela run directly (not through mcuforge) with the board's options: its model, summary row, stdout."""
    board = load_board(BOARD)
    argv = [sys.executable, "-m", "ethosu.vela", str(model), "--accelerator-config", board.npu,
            "--config", "Arm/vela.ini", "--system-config", board.npu_config["system_config"],
            "--memory-mode", board.npu_config["memory_mode"], "--output-dir", str(out)]
    done = subprocess.run(argv, capture_output=True, text=True, check=True)
    with open(next(out.glob("*_summary_*.csv"))) as f:
        row = next(csv.DictReader(f))
    return next(out.glob("*_vela.tflite")).read_bytes(), row, done.stdout


@pytest.fixture(scope="module")
def kws(tmp_path_factory):
    model = shared_model("kws_ref_model.tflite")
    root = tmp_path_factory.mktemp("kws")
    report = compile_model(model, "ethos-u", root / "out", name="kws", board=BOARD)
    return model, root / "out", report, _vela_by_hand(model, root / "vela")


def test_kws_reports_op_split_memory_and_cycles(kws):
    model, out, report, (_, vela_row, vela_stdout) = kws
    assert json.loads((out / "report.json").read_text()) == report
    assert report["engine"] == "ethos-u" and report["board"] == BOARD and not report["already_compiled"]
    assert report["npu"] == {"accelerator": "ethos-u55-128", "system_config": "Ethos_U55_High_End_Embedded",
                             "memory_mode": "Shared_Sram"}
    source_ops = load_tflite(model).op_counts()
    assert report["source_ops"] == source_ops
    split = report["op_split"]
    assert split["cpu"] == 0 and split["cpu_ops"] == {} and report["cpu_fallbacks"] == []
    assert split["npu"] == split["total"] == sum(source_ops.values())
    assert report["ops"] == {"CUSTOM:ethos-u": 1}
    # The figures are Vela's own, as its CSV and its printed summary give them.
    memory, perf = report["memory"], report["performance"]
    assert memory["sram_bytes"] == round(float(vela_row["sram_memory_used"]) * 1024) > 0
    assert memory["flash_bytes"] == round(float(vela_row["off_chip_flash_memory_used"]) * 1024) > 0
    assert f"Total SRAM used {memory['sram_bytes'] / 1024:.2f} KiB" in " ".join(vela_stdout.split())
    assert perf["total_cycles"] == int(vela_row["cycles_total"]) >= perf["npu_cycles"] == int(vela_row["cycles_npu"]) > 0
    assert perf["inference_time_s"] == pytest.approx(perf["total_cycles"] / perf["npu_clock_hz"])
    assert report["macs"] == perf["macs"] == int(vela_row["nn_macs"])
    # The scratch area lives in the TFLM arena, and the compiled model's tensors agree with Vela's figures.
    assert report["npu_tensors"]["scratch_bytes"] == memory["sram_bytes"]
    assert report["npu_tensors"]["read_only_bytes"] == memory["flash_bytes"]
    assert report["arena_bytes"] > memory["sram_bytes"]


def test_kws_per_layer_cycles(kws):
    _, _, report, _ = kws
    layers = report["layers"]
    assert [layer["op"] for layer in layers] == [op.opcode for op in load_tflite(shared_model("kws_ref_model.tflite")).operators]
    assert all(layer["target"] == "NPU" for layer in layers)
    # Every row of Vela's per-layer table went to a layer, so the layers add up to the network.
    assert sum(layer["cycles"] for layer in layers) == report["performance"]["total_cycles"]
    assert sum(layer["macs"] for layer in layers) == report["performance"]["macs"]
    convs = [layer for layer in layers if layer["op"] == "CONV_2D"]
    assert all(layer["cycles"] > 0 and layer["vela_ops"][0] == "Conv2D" for layer in convs)
    softmax = next(layer for layer in layers if layer["op"] == "SOFTMAX")
    assert len(softmax["vela_ops"]) > 1  # Vela lowers the softmax into many NPU operations


def test_kws_c_array_is_aligned_and_equals_vela_output(kws):
    _, out, report, (vela_model, _, _) = kws
    source = (out / "kws_data.cc").read_text()
    assert "alignas(16) const unsigned char kws_data[]" in source
    assert _array_bytes(source, "kws") == vela_model == (out / "kws_vela.tflite").read_bytes()
    assert f"const unsigned int kws_data_len = {len(vela_model)};" in source
    assert report["model_bytes"] == len(vela_model)
    header = (out / "kws_data.h").read_text()
    assert f"#define KWS_TFLM_ARENA_BYTES {report['arena_bytes']}" in header
    resolver = (out / "kws_op_resolver.h").read_text()
    assert "resolver.AddEthosU()" in resolver and "MicroMutableOpResolver<kws_op_count>" in resolver
    assert "constexpr unsigned int kws_op_count = 1;" in resolver


def test_already_compiled_model_is_embedded_as_it_is(kws, tmp_path, monkeypatch):
    _, out, _, _ = kws
    compiled = out / "kws_vela.tflite"

    def no_vela(*args, **kwargs):
        raise AssertionError("Vela must not run on a compiled model")

    monkeypatch.setattr(ethosu_module, "run_vela", no_vela)
    report = compile_model(compiled, "ethos-u", tmp_path / "again", name="kws", board=BOARD)
    assert report["already_compiled"] is True and report["vela"] is None and report["performance"] is None
    assert any("already holds an ethos-u operator" in note for note in report["notes"])
    assert _array_bytes((tmp_path / "again" / "kws_data.cc").read_text(), "kws") == compiled.read_bytes()
    assert report["op_split"]["npu"] == 1 and report["op_split"]["cpu"] == 0
    assert report["memory"]["sram_bytes"] > 0 and report["memory"]["flash_bytes"] > 0
    # Without a board too: there is nothing left to compile.
    assert emit_ethosu(compiled, tmp_path / "no_board", name="kws")["already_compiled"] is True


def test_board_without_ethosu_names_the_boards_that_have_one(tmp_path):
    model = shared_model("kws_ref_model.tflite")
    with pytest.raises(McuforgeError) as caught:
        compile_model(model, "ethos-u", tmp_path / "x", board=NO_NPU_BOARD)
    error = caught.value
    assert f"board {NO_NPU_BOARD} has no Ethos-U NPU" in error.what
    assert error.where.endswith(f"{NO_NPU_BOARD}.toml: npu")
    assert BOARD in error.fix
    assert not (tmp_path / "x").exists()
    result = CliRunner().invoke(cli, ["compile", str(model), "--engine", "ethos-u", "--board", NO_NPU_BOARD,
                                      "-o", str(tmp_path / "y")])
    assert result.exit_code == 1 and BOARD in result.output and "Traceback" not in result.output


def test_uncompiled_model_without_board_is_told_to_pass_one(tmp_path):
    with pytest.raises(McuforgeError) as caught:
        compile_model(shared_model("hello_world_int8.tflite"), "ethos-u", tmp_path / "x")
    assert caught.value.where == "--board" and BOARD in caught.value.fix


def test_bad_npu_config_names_the_board_field(tmp_path):
    text = load_board(BOARD).path.read_text().replace('"Ethos_U55_High_End_Embedded"', '"Ethos_U55_Imaginary"')
    board_file = tmp_path / f"{BOARD}.toml"
    board_file.write_text(text)
    with pytest.raises(McuforgeError) as caught:
        target_for_board(load_board(str(board_file)))
    assert "Ethos_U55_Imaginary" in caught.value.what
    assert caught.value.where == f"{board_file}: npu_config.system_config"
    assert "Ethos_U55_High_End_Embedded" in caught.value.fix


def test_vela_failure_is_a_clear_error(tmp_path, monkeypatch):
    def failing_run(argv, **kwargs):
        return subprocess.CompletedProcess(argv, 1, stdout="", stderr="Traceback ...\nRuntimeError: Compilation failed: boom\n")

    monkeypatch.setattr(ethosu_module.subprocess, "run", failing_run)
    with pytest.raises(McuforgeError) as caught:
        emit_ethosu(shared_model("hello_world_int8.tflite"), tmp_path / "x", target=EthosUTarget("ethos-u55-128"))
    assert "Vela could not compile hello_world_int8.tflite" in caught.value.what
    assert "Compilation failed: boom" in caught.value.what
    assert not (tmp_path / "x").exists()


def test_cli_end_to_end(tmp_path):
    model = shared_model("kws_ref_model.tflite")
    out = tmp_path / "npu"
    runner = CliRunner()
    result = runner.invoke(cli, ["compile", str(model), "--engine", "ethos-u", "--board", BOARD, "-o", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    split = report["op_split"]
    assert f"{split['npu']} of {split['total']} on the NPU, 0 on the CPU" in result.output
    assert f"sram:     {report['memory']['sram_bytes']} B" in result.output
    assert f"cycles:   {report['performance']['total_cycles']} estimated" in result.output
    assert {"model_data.h", "model_data.cc", "model_op_resolver.h", "model_vela.tflite", "report.json",
            "report.md", "layers.png"} <= {p.name for p in out.iterdir()}
    shown = runner.invoke(cli, ["report", str(out)])
    assert shown.exit_code == 0 and "ethos-u engine" in shown.output
    assert shown.output.split("\n", 1)[1] == result.output.split("\n", 1)[1]  # the same summary, read back


# --- the models Vela cannot put wholly on the NPU -------------------------------------------

@pytest.fixture(scope="module")
def stride4_model(tmp_path_factory):
    """A Keras model whose second convolution has stride 4 with SAME padding, which the Ethos-U55
    cannot run: Vela leaves it to the CPU and says why."""
    import tensorflow as tf

    from mcuforge.codegen.quantize import convert

    keras = tf.keras
    keras.utils.set_random_seed(5)
    x = inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    x = keras.layers.Conv2D(8, 9, strides=4, padding="same")(x)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(4)(x)
    root = tmp_path_factory.mktemp("stride4")
    keras.Model(inputs, outputs).save(root / "stride4.keras")
    np.save(root / "calib.npy", np.random.default_rng(0).normal(size=(32, 16, 16, 3)).astype(np.float32))
    convert(root / "stride4.keras", root / "stride4.tflite", calib=root / "calib.npy")
    return root / "stride4.tflite"


@pytest.mark.slow
def test_cpu_fallback_reports_the_reason(stride4_model, tmp_path):
    report = compile_model(stride4_model, "ethos-u", tmp_path / "out", board=BOARD)
    split = report["op_split"]
    assert split["cpu"] == 1 and split["cpu_ops"] == {"CONV_2D": 1}
    assert split["npu"] == 3 and split["npu_ops"] == {"CONV_2D": 1, "RESHAPE": 1, "FULLY_CONNECTED": 1}
    (fallback,) = report["cpu_fallbacks"]
    assert fallback["op"] == "CONV_2D" and fallback["index"] == 1
    assert "stride" in fallback["reason"].lower() and "Stride>3 is only supported" in fallback["reason"]
    layer = report["layers"][1]
    assert layer["target"] == "CPU" and layer["reason"] == fallback["reason"] and layer["cycles"] is None
    # The CPU convolution stays a TFLite operator between two NPU subgraphs, and TFLM needs its kernel.
    assert report["ops"] == {"CUSTOM:ethos-u": 2, "CONV_2D": 1}
    assert report["op_resolver"]["methods"] == ["AddConv2D", "AddEthosU"]
    assert any("NPU part only" in note for note in report["notes"])
    result = CliRunner().invoke(cli, ["report", str(tmp_path / "out")])
    assert "CONV_2D at node 1" in result.output and "Stride>3 is only supported" in result.output


# --- Vela's outputs, parsed -----------------------------------------------------------------

REGOR_LOG = """
Warning (supported operators) operator: CONV_2D, ofm: 'model/conv;fused'
Reason: Unsupported kernel stride: 4, 4
Stride>3 is only supported IF (dilation = 1 AND padding = VALID)

Warning (supported operators) operator: GATHER, ofm: 'gather'
Reason: Unsupported opType

Network summary for m
"""

LEGACY_LOG = """Warning: CONV_2D 'conv1' is not supported on the NPU. Placing on CPU instead
 - Stride values for both width and height must be in the range [1, 3]
   Op has stride WxH as: 4x4
Warning: Unsupported TensorFlow Lite semantics for MEAN 'mean'. Placing on CPU instead
 - Axis indices must correspond to height and width axes
Info: GATHER 'gather' is a CPU only op
"""


def test_fallback_reasons_are_parsed_from_both_vela_cores():
    assert parse_cpu_fallbacks(REGOR_LOG) == [
        {"op": "CONV_2D", "tensor": "model/conv;fused",
         "reason": "Unsupported kernel stride: 4, 4; Stride>3 is only supported IF (dilation = 1 AND padding = VALID)"},
        {"op": "GATHER", "tensor": "gather", "reason": "Unsupported opType"},
    ]
    assert parse_cpu_fallbacks(LEGACY_LOG) == [
        {"op": "CONV_2D", "tensor": "conv1",
         "reason": "Stride values for both width and height must be in the range [1, 3]; Op has stride WxH as: 4x4"},
        {"op": "MEAN", "tensor": "mean", "reason": "Axis indices must correspond to height and width axes"},
        {"op": "GATHER", "tensor": "gather", "reason": "the operator type is CPU only"},
    ]
    assert parse_cpu_fallbacks("Network summary for m\nCPU operators = 0 (0.0%)\n") == []
    assert parse_operator_counts("CPU operators = 1 (25.0%)\nNPU operators = 3 (75.0%)\n") == {"cpu": 1, "npu": 3}


def test_summary_csv_with_a_missing_column_is_a_clear_error():
    with pytest.raises(McuforgeError) as caught:
        parse_summary_csv("network,cycles_total\nm,10\n", where="m_summary.csv")
    assert "lacks a figure" in caught.value.what and caught.value.where == "m_summary.csv"
