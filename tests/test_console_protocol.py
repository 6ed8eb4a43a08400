"""The firmware's console protocol: results parsed, every kind of bad line rejected with the line."""
import pytest

from mcuforge.codegen.errors import McuforgeError
from mcuforge.host_tools.console_protocol import (
    VectorResult, bench_commands, instructions_from_cycles, parse_console, parse_results, parse_telemetry,
)

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
    ('{"hello":1}', "must say \"mcuforge\""),
    ('{"bogus":1}', "expected a"),
    ('{"bench":"maybe"}', "ready"),
    ('{"inference":1,"cycles":5,"result":{"class":0},"stack_hwm":1,"heap_hwm":0,"uptime_ms":0}', "expected inference 0"),
    ('{"inference":0,"cycles":5,"result":[],"stack_hwm":1,"heap_hwm":0,"uptime_ms":0}', "result"),
    ('{"inference":0,"cycles":5,"result":{"class":0},"stack_hwm":-1,"heap_hwm":0,"uptime_ms":0}', "stack_hwm"),
    ('{"stopped":"x"}', "stopped"),
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


# ---- the application: hello, telemetry, bench sessions ----------------------------------------

HELLO = ('{"hello":"mcuforge","protocol":1,"board":"mps3-an547","rtos":"baremetal","engine":"aot","model":"model",'
         '"clock_hz":32000000,"cycle_counter":"systick","period_ms":10,"iterations":2,"inputs":[1],"outputs":[2]}')
TELEMETRY = '{{"inference":{n},"cycles":44,"result":{{"class":1,"score":-8}},"stack_hwm":{s},"heap_hwm":0,"uptime_ms":{t}}}'
APP_RUN = "\n".join([
    HELLO,
    TELEMETRY.format(n=0, s=260, t=0),
    '{"bench":"ready","inputs":[1],"outputs":[2]}',
    '{"vec":0,"cycles":44,"out":["f800"]}',
    '{"vec":1,"cycles":45,"out":["0102"]}',
    '{"done":2}',
    TELEMETRY.format(n=1, s="null", t=10),
    '{"stopped":2}',
]) + "\n"


def test_an_application_run_is_parsed_whole():
    run = parse_console(APP_RUN)
    assert run.hello.board == "mps3-an547" and run.hello.input_sizes == [1] and run.hello.output_sizes == [2]
    assert run.hello.cycle_counter == "systick" and run.hello.period_ms == 10
    assert [t.index for t in run.telemetry] == [0, 1]
    assert run.telemetry[0].result == {"class": 1, "score": -8}
    assert run.telemetry[0].stack_hwm == 260 and run.telemetry[1].stack_hwm is None
    assert run.bench_sessions == 1 and run.done == 2 and run.stopped == 2
    # the bench results, sized by the hello line when the caller gives no sizes
    assert [v.outputs for v in run.vectors] == [[b"\xf8\x00"], [b"\x01\x02"]]


def test_bench_results_of_an_application_run():
    assert [r.cycles for r in parse_results(APP_RUN, [2])] == [44, 45]
    with pytest.raises(McuforgeError, match="another model"):
        parse_results(APP_RUN, [1])
    without_hello = APP_RUN.split("\n", 1)[1]
    with pytest.raises(McuforgeError, match="the model's output has 1"):
        parse_results(without_hello, [1])


def test_telemetry_of_a_run_that_stopped():
    assert len(parse_telemetry(APP_RUN, expected=2)) == 2
    with pytest.raises(McuforgeError, match="expected 3 inferences"):
        parse_telemetry(APP_RUN, expected=3)
    cut_off = APP_RUN.replace('{"stopped":2}\n', "")
    with pytest.raises(McuforgeError, match="did not stop"):
        parse_telemetry(cut_off, expected=2)
    with pytest.raises(McuforgeError, match="no hello"):
        parse_telemetry('{"stopped":0}\n')


def test_nothing_may_follow_stopped_and_a_restart_is_named():
    with pytest.raises(McuforgeError, match="after"):
        parse_console(APP_RUN + TELEMETRY.format(n=2, s=1, t=20) + "\n")
    with pytest.raises(McuforgeError, match="restarted"):
        parse_console(HELLO + "\n" + HELLO + "\n")


def test_a_firmware_of_another_protocol_version_is_refused():
    with pytest.raises(McuforgeError, match="protocol 2") as info:
        parse_console(HELLO.replace('"protocol":1', '"protocol":2') + "\n")
    assert "build the firmware again" in info.value.fix


def test_a_second_bench_session_replaces_the_first():
    text = APP_RUN.replace('{"done":2}\n', '{"done":2}\n{"bench":"ready","inputs":[1],"outputs":[2]}\n'
                                           '{"vec":0,"cycles":9,"out":["aaaa"]}\n{"done":1}\n')
    run = parse_console(text)
    assert run.bench_sessions == 2 and [v.cycles for v in run.vectors] == [9]


def test_bench_commands():
    assert bench_commands([b"\x05", bytes([0xff, 0x00])]) == b"bench\nrun 05\nrun ff00\nend\nquit\n"
    assert bench_commands([], finish="end") == b"bench\nend\n"
    with pytest.raises(McuforgeError):
        bench_commands([], finish="stop")
