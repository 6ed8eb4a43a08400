"""The firmware's console protocol: results parsed, every kind of bad line rejected with the line."""
import pytest

from mcuforge.codegen.errors import McuforgeError
from mcuforge.host_tools.console_protocol import VectorResult, instructions_from_cycles, parse_results

GOOD = (
    "QEMU boot noise that is not protocol\r\n"
    '{"vec":0,"cycles":1234,"out":["0a1bff","00"]}\r\n'
    '{"vec":1,"cycles":1240,"out":["7f8001","ff"]}\n'
    '{"done":2}\n'
)


def test_parses_vectors_and_skips_lines_outside_the_protocol():
    results = parse_results(GOOD, [3, 1])
    assert results == [
        VectorResult(0, 1234, [bytes([0x0A, 0x1B, 0xFF]), b"\x00"]),
        VectorResult(1, 1240, [bytes([0x7F, 0x80, 0x01]), b"\xff"]),
    ]


def test_zero_vectors_is_a_complete_run():
    assert parse_results('{"done":0}\n', [1]) == []


def test_error_line_raises_with_the_firmware_message():
    text = '{"vec":0,"cycles":5,"out":["00"]}\n{"error":"model_invoke returned -1 on vector 1"}\n'
    with pytest.raises(McuforgeError) as info:
        parse_results(text, [1])
    assert "model_invoke returned -1 on vector 1" in info.value.what
    assert "console line 2" in info.value.where


def test_missing_done_means_the_firmware_stopped():
    text = '{"vec":0,"cycles":5,"out":["00"]}\n'
    with pytest.raises(McuforgeError) as info:
        parse_results(text, [1])
    assert "done" in info.value.what
    assert '{"vec":0' in info.value.where


def test_empty_console_is_a_crash():
    with pytest.raises(McuforgeError, match="without printing"):
        parse_results("", [1])


@pytest.mark.parametrize("line, problem", [
    ('{"vec":0,"cycles":5,"out":["00"]', "not JSON"),
    ('{"vec":1,"cycles":5,"out":["00"]}', "expected vector index 0"),
    ('{"vec":0,"cycles":-5,"out":["00"]}', "cycles"),
    ('{"vec":0,"cycles":"5","out":["00"]}', "cycles"),
    ('{"vec":0,"cycles":5,"out":["00","11"]}', "expected 1 output"),
    ('{"vec":0,"cycles":5,"out":"00"}', "expected 1 output"),
    ('{"vec":0,"cycles":5,"out":["zz"]}', "not a hex string"),
    ('{"vec":0,"cycles":5,"out":[7]}', "not a hex string"),
    ('{"vec":0,"cycles":5,"out":["0000"]}', "has 2 bytes"),
    ('{"done":3}', "3 vectors done"),
    ('{"hello":1}', "expected a"),
])
def test_malformed_line_is_named(line, problem):
    with pytest.raises(McuforgeError) as info:
        parse_results(line + "\n", [1])
    assert problem in info.value.what
    assert line in info.value.where


def test_output_after_done_is_rejected():
    with pytest.raises(McuforgeError, match="after"):
        parse_results('{"done":0}\n{"vec":0,"cycles":5,"out":["00"]}\n', [1])


def test_instructions_from_cycles_uses_one_nanosecond_per_instruction():
    # DESIGN.md: on mps3-an547 (32 MHz) a 300,000-instruction loop read 9,601 SysTick ticks.
    assert instructions_from_cycles(9601, 32_000_000) == 300_031
    assert instructions_from_cycles(1, 25_000_000) == 40
    assert instructions_from_cycles(0, 20_000_000) == 0
    with pytest.raises(McuforgeError):
        instructions_from_cycles(10, 0)
