import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from mcuforge.boards import load_board
from mcuforge.boards.from_pack import board_from_pdsc, board_toml, list_devices, validate_board
from mcuforge.codegen.errors import McuforgeError
from mcuforge.host_tools.cli import cli

PDSC = Path(__file__).parent / "data" / "Acme.ACM4_DFP.pdsc"


def _write(tmp_path, board):
    path = tmp_path / f"{board['name']}.toml"
    path.write_text(board_toml(board))
    return path


def test_variant_converts_validates_and_loads(tmp_path):
    board = board_from_pdsc(PDSC, "ACM4F512-QFN48")
    validate_board(board, "test")
    assert tomllib.loads(board_toml(board)) == board
    loaded = load_board(str(_write(tmp_path, board)))
    assert loaded.name == "acm4f512-qfn48"
    assert loaded.vendor == "Acme"
    assert "ACM4F512 in a QFN48 package" in loaded.description
    assert loaded.core == "cortex-m4" and loaded.cpu["arch"] == "armv7e-m"
    assert loaded.cpu["fpu"] == "fpv4-sp-d16"
    assert loaded.extensions == ("dsp",)
    assert loaded.clock_hz == 120_000_000
    assert "-mfpu=fpv4-sp-d16" in loaded.cpu["gcc_flags"]
    # IROM1 from the device, IRAM1 (id form) and SRAM2 (name/access form) from the sub-family.
    code = loaded.memory_for("code")
    assert (code.name, code.origin, code.length) == ("IROM1", 0x0800_0000, 0x8_0000)
    assert set(code.holds) == {"code", "rodata", "weights"}
    arena = loaded.memory_for("arena")
    assert (arena.name, arena.origin, arena.length) == ("IRAM1", 0x2000_0000, 0x2_0000)  # the largest RAM
    assert loaded.memory_for("stack").name == "SRAM2"
    assert loaded.npu == "none" and loaded.engines == ("aot", "tflm")
    assert set(loaded.rtos) == {"baremetal", "zephyr", "freertos"}
    assert loaded.flash["tool"] == "pyocd" and loaded.flash["alternatives"] == ["openocd"]
    assert loaded.console == {"kind": "uart", "baud": 115200}


def test_inheritance_and_overrides():
    low_power = board_from_pdsc(PDSC, "ACM4F512-LP", name="acme-lp")
    assert low_power["name"] == "acme-lp"
    assert low_power["cpu"]["clock_hz"] == 48_000_000          # the variant's Dclock
    assert low_power["cpu"]["fpu"] == "fpv4-sp-d16"            # the family's Dfpu
    assert [m["name"] for m in low_power["memory"]] == ["IROM1", "SRAM2", "IRAM1"]
    small = board_from_pdsc(PDSC, "ACM4F256")
    assert small["cpu"]["clock_hz"] == 80_000_000
    assert small["memory"][0]["name"] == "Flash" and small["memory"][0]["length"] == 0x4_0000
    m0 = board_from_pdsc(PDSC, "ACM0L32")                      # the sub-family overrides the family's core
    assert m0["cpu"]["core"] == "cortex-m0plus" and m0["cpu"]["fpu"] == "none"
    assert m0["cpu"]["extensions"] == [] and "-mfloat-abi=soft" in m0["cpu"]["gcc_flags"]
    assert [m["holds"] for m in m0["memory"]] == [["code", "rodata", "weights"],
                                                   ["data", "bss", "stack", "heap", "arena"]]
    # A device that has variants is found under its own name too, case-insensitively.
    assert board_from_pdsc(PDSC, "acm4f512")["cpu"]["clock_hz"] == 120_000_000


def test_cortex_m55_with_mve(tmp_path):
    pdsc = tmp_path / "m55.pdsc"
    pdsc.write_text("""<package><vendor>Acme</vendor><name>M55_DFP</name><devices>
      <family Dfamily="F" Dvendor="Acme:1"><processor Dcore="Cortex-M55" Dfpu="DP_FPU" Dmve="FP_MVE" Dclock="400000000"/>
        <device Dname="ACM55"><memory name="MRAM" access="rx" start="0" size="0x200000" startup="1"/>
          <memory name="SRAM" access="rwx" start="0x20000000" size="0x100000"/></device></family></devices></package>""")
    cpu = board_from_pdsc(pdsc, "ACM55")["cpu"]
    assert (cpu["core"], cpu["arch"], cpu["fpu"]) == ("cortex-m55", "armv8.1-m.main", "fpv5-d16")
    assert cpu["extensions"] == ["dsp", "mve", "mve.fp"]


def test_unknown_device_lists_the_devices():
    with pytest.raises(McuforgeError) as err:
        board_from_pdsc(PDSC, "NOPE")
    assert "NOPE" in err.value.what
    for device in list_devices(PDSC):
        assert device in err.value.fix
    assert "ACM4F512-QFN48" in err.value.fix


def test_not_a_pdsc(tmp_path):
    text = tmp_path / "notes.pdsc"
    text.write_text("this is not XML")
    with pytest.raises(McuforgeError, match="not valid XML"):
        board_from_pdsc(text, "X")
    other = tmp_path / "other.pdsc"
    other.write_text("<project><devices/></project>")
    with pytest.raises(McuforgeError, match="not a CMSIS device pack"):
        board_from_pdsc(other, "X")
    with pytest.raises(McuforgeError, match="not found"):
        board_from_pdsc(tmp_path / "missing.pdsc", "X")


def test_device_without_memory():
    with pytest.raises(McuforgeError) as err:
        board_from_pdsc(PDSC, "ACM0X")
    assert "declares no memory" in err.value.what and "ACM0X" in err.value.where


def test_cli_end_to_end(tmp_path):
    out = tmp_path / "acme-board.toml"
    args = ["board-from-pack", str(PDSC), "--device", "ACM4F512-QFN48", "--name", "acme-board", "-o", str(out)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert str(out) in result.output
    assert load_board(str(out)).core == "cortex-m4"
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 1 and "--force" in again.output
    forced = CliRunner().invoke(cli, args + ["--force"])
    assert forced.exit_code == 0, forced.output


def test_cli_unknown_device_and_mismatched_name(tmp_path):
    result = CliRunner().invoke(cli, ["board-from-pack", str(PDSC), "--device", "NOPE", "-o", str(tmp_path / "x.toml")])
    assert result.exit_code == 1 and "ACM4F256" in result.output
    result = CliRunner().invoke(cli, ["board-from-pack", str(PDSC), "--device", "ACM4F256",
                                      "-o", str(tmp_path / "other.toml")])
    assert result.exit_code == 1 and "acm4f256.toml" in result.output
    assert not (tmp_path / "other.toml").exists()
