"""Reports people can look at: `compile` writes report.md and a per-layer PNG chart next to
report.json, and `mcuforge report DIR` shows the summary again."""
from __future__ import annotations

import json
import struct
import zlib

import pytest
from click.testing import CliRunner

from mcuforge.host_tools.cli import cli
from mcuforge.host_tools.compile import compile_model
from mcuforge.host_tools.report_render import chart_size_px, layer_chart_png, report_markdown

from conftest import shared_model

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    assert data[:8] == PNG_SIGNATURE
    chunks, position = [], 8
    while position < len(data):
        length, kind = struct.unpack(">I4s", data[position:position + 8])
        body = data[position + 8:position + 8 + length]
        (crc,) = struct.unpack(">I", data[position + 8 + length:position + 12 + length])
        assert zlib.crc32(kind + body) == crc, f"bad CRC in chunk {kind!r}"
        chunks.append((kind, body))
        position += 12 + length
    return chunks


def _check_png(data: bytes, size: tuple[int, int]) -> None:
    """A whole, valid PNG of `size` pixels: signature, IHDR first, CRCs, image data, IEND last."""
    chunks = _png_chunks(data)
    kinds = [kind for kind, _ in chunks]
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND" and b"IDAT" in kinds
    width, height = struct.unpack(">II", chunks[0][1][:8])
    assert (width, height) == size
    pixels = zlib.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT"))
    assert len(pixels) > width * height  # at least one byte per pixel, plus the row filters


@pytest.fixture(scope="module")
def aot_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("aot") / "out"
    return out, compile_model(shared_model("ad01_int8.tflite"), "aot", out)


@pytest.fixture(scope="module")
def ethosu_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("ethosu") / "out"
    return out, compile_model(shared_model("kws_ref_model.tflite"), "ethos-u", out, board="corstone-300-u55")


def test_aot_writes_report_md_and_chart(aot_out):
    out, report = aot_out
    assert report["report_files"] == ["layers.png", "report.md"]
    assert json.loads((out / "report.json").read_text())["report_files"] == report["report_files"]
    markdown = (out / "report.md").read_text()
    assert markdown.startswith("# ad01_int8.tflite: aot engine\n")
    assert "![per-layer chart](layers.png)" in markdown
    assert f"| arena | {report['arena_bytes']} B" in markdown
    # One table row per layer, with its MACs and its arena offset.
    for layer in report["layers"]:
        assert (f"| {layer['index']} | {layer['op']} | `{layer['name']}` | {layer['output_shape']} | {layer['macs']} | "
                f"{layer['arena_offset']} | {layer['output_bytes']} |") in markdown
    size = chart_size_px(report)
    assert size[0] >= 640 and size[1] > 400  # two panels: arena bytes and MACs
    _check_png((out / "layers.png").read_bytes(), size)


def test_ethosu_writes_report_md_and_cycle_chart(ethosu_out):
    out, report = ethosu_out
    markdown = (out / "report.md").read_text()
    assert markdown.startswith("# kws_ref_model.tflite: ethos-u engine\n")
    split = report["op_split"]
    assert f"| operators | {split['npu']} of {split['total']} on the NPU, 0 on the CPU |" in markdown
    assert f"| SRAM used | {report['memory']['sram_bytes']} B" in markdown
    assert f"| cycles (estimated) | {report['performance']['total_cycles']} in all" in markdown
    assert "None: every operator runs on the NPU." in markdown
    assert "![per-layer chart](layers.png)" in markdown
    _check_png((out / "layers.png").read_bytes(), chart_size_px(report))


def test_chart_is_the_same_for_the_same_report(aot_out):
    _, report = aot_out
    assert layer_chart_png(report) == layer_chart_png(report)


def test_engine_without_layers_gets_report_md_and_no_stale_chart(tmp_path):
    out = tmp_path / "out"
    compile_model(shared_model("hello_world_int8.tflite"), "aot", out)
    assert (out / "layers.png").exists()
    report = compile_model(shared_model("hello_world_int8.tflite"), "tflm", out)
    assert report["report_files"] == ["report.md"]
    assert not (out / "layers.png").exists()  # the aot chart would describe another compile
    markdown = (out / "report.md").read_text()
    assert "# hello_world_int8.tflite: tflm engine" in markdown and "layers.png" not in markdown


def test_markdown_escapes_table_cells():
    report = {"engine": "ethos-u", "model": "m.tflite", "name": "m", "op_split": {"npu": 1, "cpu": 1, "total": 2,
              "npu_ops": {"FULLY_CONNECTED": 1}, "cpu_ops": {"GATHER": 1}},
              "cpu_fallbacks": [{"index": 1, "op": "GATHER", "name": "a|b", "reason": "Unsupported opType"}],
              "memory": {"sram_bytes": 32, "flash_bytes": 512}, "arena_bytes": 100, "model_bytes": 3000}
    markdown = report_markdown(report)
    assert "| 1 | GATHER | `a\\|b` | Unsupported opType |" in markdown
    assert "| GATHER | 0 | 1 |" in markdown


def test_report_command_prints_the_summary_again(aot_out):
    out, report = aot_out
    runner = CliRunner()
    result = runner.invoke(cli, ["report", str(out)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"report of {out}/ (aot engine;")
    assert f"arena:    {report['arena_bytes']} B" in result.output and "FULLY_CONNECTED x10" in result.output
    raw = runner.invoke(cli, ["report", str(out), "--json"])
    assert raw.exit_code == 0 and json.loads(raw.output) == json.loads((out / "report.json").read_text())
    with_layers = runner.invoke(cli, ["report", str(out), "--layers"])
    assert with_layers.exit_code == 0
    assert len([line for line in with_layers.output.splitlines() if "FULLY_CONNECTED  " in line]) == len(report["layers"])


def test_report_command_on_ethosu_output(ethosu_out):
    out, report = ethosu_out
    result = CliRunner().invoke(cli, ["report", str(out), "--layers"])
    assert result.exit_code == 0, result.output
    assert "ethos-u engine" in result.output and "on the NPU" in result.output
    assert f"sram:     {report['memory']['sram_bytes']} B" in result.output
    assert "SOFTMAX" in result.output


def test_report_command_without_report_json_is_a_clear_error(tmp_path):
    runner = CliRunner()
    result = runner.invoke(cli, ["report", str(tmp_path)])
    assert result.exit_code == 1
    assert f"no report.json in {tmp_path}" in result.output and "mcuforge compile" in result.output
    assert "Traceback" not in result.output
    missing = runner.invoke(cli, ["report", str(tmp_path / "nowhere")])
    assert missing.exit_code == 1 and "no such directory" in missing.output
    (tmp_path / "report.json").write_text("{not json")
    broken = runner.invoke(cli, ["report", str(tmp_path)])
    assert broken.exit_code == 1 and "not valid JSON" in broken.output and "Traceback" not in broken.output
