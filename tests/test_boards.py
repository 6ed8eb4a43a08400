import json
import shutil

import pytest
from click.testing import CliRunner

from mcuforge.boards import BOARDS_DIR, all_boards, load_board, parse_board_file
from mcuforge.codegen.errors import McuforgeError
from mcuforge.host_tools.cli import cli

DESIGN_BOARDS = {"stm32n6570-dk", "esp32-s3-devkitc", "corstone-300-u55", "nrf52840dk",
                 "mps3-an547", "mps2-an386", "mps2-an500", "mps2-an505"}


def test_every_board_of_the_design_has_a_valid_file():
    boards = {b.name: b for b in all_boards()}
    assert DESIGN_BOARDS <= set(boards)
    assert boards["stm32n6570-dk"].npu == "st-neural-art"
    assert boards["corstone-300-u55"].npu.startswith("ethos-u55")
    assert "mve" in boards["mps3-an547"].extensions
    for name in ("mps3-an547", "mps2-an386", "mps2-an500", "mps2-an505"):
        assert boards[name].emulated and boards[name].qemu["machine"] == name


def test_memory_lookup_by_content():
    board = load_board("mps3-an547")
    assert board.memory_for("code").origin == 0
    assert board.memory_for("arena").name == "dtcm"


def test_unknown_board_lists_known_ones():
    with pytest.raises(McuforgeError) as err:
        load_board("no-such-board")
    assert "mps3-an547" in err.value.fix


def _copy_board(tmp_path, text_edit):
    src = BOARDS_DIR / "mps2-an386.toml"
    dst = tmp_path / "mps2-an386.toml"
    dst.write_text(text_edit(src.read_text()))
    return dst


def test_malformed_board_names_file_and_field(tmp_path):
    bad = _copy_board(tmp_path, lambda t: t.replace("clock_hz = 25_000_000", 'clock_hz = "fast"'))
    with pytest.raises(McuforgeError) as err:
        parse_board_file(bad)
    message = str(err.value)
    assert str(bad) in message and "cpu.clock_hz" in message


def test_missing_field_and_bad_memory_entry(tmp_path):
    bad = _copy_board(tmp_path, lambda t: t.replace('npu = "none"\n', ""))
    with pytest.raises(McuforgeError, match="npu"):
        parse_board_file(bad)
    bad = _copy_board(tmp_path, lambda t: t.replace('holds = ["code", "rodata", "weights"]', 'holds = ["code", "sdcard"]'))
    with pytest.raises(McuforgeError) as err:
        parse_board_file(bad)
    assert "memory[0].holds[1]" in str(err.value)


def test_invalid_toml_is_reported(tmp_path):
    bad = _copy_board(tmp_path, lambda t: t.replace("[cpu]", "[cpu"))
    with pytest.raises(McuforgeError, match="not valid TOML"):
        parse_board_file(bad)


def test_boards_command_table_and_json():
    runner = CliRunner()
    table = runner.invoke(cli, ["boards"])
    assert table.exit_code == 0
    for name in DESIGN_BOARDS:
        assert name in table.output
    listed = json.loads(runner.invoke(cli, ["boards", "--json"]).output)
    assert {row["name"] for row in listed} >= DESIGN_BOARDS
    an547 = next(row for row in listed if row["name"] == "mps3-an547")
    assert an547["core"] == "cortex-m55" and an547["qemu_machine"] == "mps3-an547"


def test_board_file_given_by_path(tmp_path):
    shutil.copy(BOARDS_DIR / "mps2-an386.toml", tmp_path / "mps2-an386.toml")
    assert load_board(str(tmp_path / "mps2-an386.toml")).core == "cortex-m4"
