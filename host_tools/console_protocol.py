"""The firmware's console protocol: one JSON object per line (docs/bench-protocol.md).

From the device:

    {"hello":"mcuforge","protocol":1,"board":...,"inputs":[..],"outputs":[..],...}   at start-up
    {"inference":N,"cycles":C,"result":{...},"stack_hwm":S,"heap_hwm":H,"uptime_ms":T}   telemetry
    {"bench":"ready","inputs":[..],"outputs":[..]}      bench mode entered
    {"vec":0,"cycles":1234,"out":["0a1bff..."]}          one per input vector, one hex string per output
    {"done":N}                                           after the last vector (bench mode left)
    {"stopped":N}                                        the inference loop ended after N inferences
    {"error":"..."}                                      something failed

To the device (bench mode): `bench`, then `run <hex>` per vector (all inputs back to back), then
`end` (back to the loop) or `quit` (end the program). The verify harness reads its vectors from
inputs.bin instead and prints only vec, done and error records.

Lines that do not start with "{" are not part of the protocol (boot banners, emulator notes)
and are skipped; every line that does must be well formed.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from mcuforge.codegen.errors import McuforgeError

NANOSECONDS_PER_SECOND = 1_000_000_000
PROTOCOL_VERSION = 1


@dataclass(frozen=True)
class VectorResult:
    index: int
    cycles: int
    outputs: list[bytes]


@dataclass(frozen=True)
class Hello:
    board: str
    rtos: str
    engine: str
    model: str
    clock_hz: int
    cycle_counter: str
    period_ms: int
    iterations: int
    input_sizes: list[int]
    output_sizes: list[int]


@dataclass(frozen=True)
class Telemetry:
    index: int
    cycles: int
    result: dict
    stack_hwm: int | None
    heap_hwm: int | None
    uptime_ms: int


@dataclass
class ConsoleRun:
    """Everything one run of the application printed, in order of kind."""
    hello: Hello | None = None
    telemetry: list[Telemetry] = field(default_factory=list)
    bench_sessions: int = 0
    vectors: list[VectorResult] = field(default_factory=list)
    done: int | None = None
    stopped: int | None = None


def _malformed(line_number: int, line: str, problem: str) -> McuforgeError:
    return McuforgeError(f"malformed console line: {problem}", where=f"console line {line_number}: {line}",
                         fix="check that the firmware and the host tools come from the same mcuforge version, "
                             "and that nothing else writes to the console")


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _count(record: dict, key: str, line_number: int, line: str, nullable: bool = False) -> int | None:
    value = record.get(key)
    if nullable and value is None and key in record:
        return None
    if not _is_count(value):
        raise _malformed(line_number, line, f"\"{key}\" must be a non-negative integer, got {value!r}")
    return value


def _sizes(record: dict, key: str, line_number: int, line: str) -> list[int]:
    value = record.get(key)
    if not isinstance(value, list) or not value or not all(_is_count(v) for v in value):
        raise _malformed(line_number, line, f"\"{key}\" must be a list of byte counts, got {value!r}")
    return value


def _text(record: dict, key: str, line_number: int, line: str) -> str:
    value = record.get(key)
    if not isinstance(value, str):
        raise _malformed(line_number, line, f"\"{key}\" must be a string, got {value!r}")
    return value


def _vector(record: dict, line_number: int, line: str, output_sizes: list[int] | None, expected_index: int) -> VectorResult:
    index, cycles, outputs = record.get("vec"), record.get("cycles"), record.get("out")
    if not _is_count(index) or index != expected_index:
        raise _malformed(line_number, line, f"expected vector index {expected_index}, got {index!r}")
    if not _is_count(cycles):
        raise _malformed(line_number, line, f"\"cycles\" must be a non-negative integer, got {cycles!r}")
    wanted = len(output_sizes) if output_sizes is not None else (len(outputs) if isinstance(outputs, list) else -1)
    if not isinstance(outputs, list) or len(outputs) != wanted or wanted == 0:
        count = len(outputs) if isinstance(outputs, list) else outputs
        raise _malformed(line_number, line, f"expected {wanted} output(s) in \"out\", got {count!r}")
    decoded = []
    for i, text in enumerate(outputs):
        try:
            data = bytes.fromhex(text) if isinstance(text, str) else None
        except ValueError:
            data = None
        if data is None:
            raise _malformed(line_number, line, f"output {i} is not a hex string")
        if output_sizes is not None and len(data) != output_sizes[i]:
            raise _malformed(line_number, line, f"output {i} has {len(data)} bytes, the model's output has {output_sizes[i]}")
        decoded.append(data)
    return VectorResult(index, cycles, decoded)


def _hello(record: dict, line_number: int, line: str) -> Hello:
    if record.get("hello") != "mcuforge":
        raise _malformed(line_number, line, f"a hello record must say \"mcuforge\", got {record.get('hello')!r}")
    if record.get("protocol") != PROTOCOL_VERSION:
        raise McuforgeError(f"the firmware speaks console protocol {record.get('protocol')!r}; these host tools "
                            f"speak {PROTOCOL_VERSION}", where=f"console line {line_number}: {line}",
                            fix="render and build the firmware again with this mcuforge version")
    return Hello(*(_text(record, k, line_number, line) for k in ("board", "rtos", "engine", "model")),
                 _count(record, "clock_hz", line_number, line), _text(record, "cycle_counter", line_number, line),
                 _count(record, "period_ms", line_number, line), _count(record, "iterations", line_number, line),
                 _sizes(record, "inputs", line_number, line), _sizes(record, "outputs", line_number, line))


def _telemetry(record: dict, line_number: int, line: str, expected_index: int) -> Telemetry:
    index = record.get("inference")
    if not _is_count(index) or index != expected_index:
        raise _malformed(line_number, line, f"expected inference {expected_index}, got {index!r}")
    result = record.get("result")
    if not isinstance(result, dict) or not result:
        raise _malformed(line_number, line, f"\"result\" must be an object, got {result!r}")
    return Telemetry(index, _count(record, "cycles", line_number, line), result,
                     _count(record, "stack_hwm", line_number, line, nullable=True),
                     _count(record, "heap_hwm", line_number, line, nullable=True),
                     _count(record, "uptime_ms", line_number, line))


def parse_console(text: str, output_sizes: list[int] | None = None) -> ConsoleRun:
    """Every protocol record in the console text of a run, checked.

    Raises McuforgeError on a malformed line and on an {"error":...} line. A run may stop
    anywhere (use parse_results or parse_telemetry to require a complete one)."""
    if output_sizes is not None:
        output_sizes = [int(s) for s in output_sizes]
    run = ConsoleRun()
    for line_number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line.startswith("{"):
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise _malformed(line_number, line, f"not JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise _malformed(line_number, line, "not a JSON object")
        if "error" in record:
            raise McuforgeError(f"the firmware reported an error: {record['error']}",
                                where=f"console line {line_number}: {line}",
                                fix="see the message; a fault names the PC to look up with arm-none-eabi-addr2line")
        if run.stopped is not None:
            raise _malformed(line_number, line, "output after {\"stopped\":N}")
        if "vec" in record:
            if run.done is not None:
                raise _malformed(line_number, line, "output after {\"done\":N}")
            run.vectors.append(_vector(record, line_number, line, output_sizes, len(run.vectors)))
        elif "done" in record:
            done = record["done"]
            if not _is_count(done) or done != len(run.vectors):
                raise _malformed(line_number, line, f"it reports {done!r} vectors done, but {len(run.vectors)} were printed")
            run.done = done
        elif "hello" in record:
            if run.hello is not None:
                raise _malformed(line_number, line, "a second hello: the firmware restarted")
            run.hello = _hello(record, line_number, line)
            if output_sizes is None:
                output_sizes = run.hello.output_sizes
            elif output_sizes != run.hello.output_sizes:
                raise McuforgeError(f"the firmware runs a model whose outputs take {run.hello.output_sizes} bytes, "
                                    f"not {output_sizes}: it was built from another model",
                                    where=f"console line {line_number}: {line}",
                                    fix="build the firmware again from the model you are comparing with")
        elif "inference" in record:
            run.telemetry.append(_telemetry(record, line_number, line, len(run.telemetry)))
        elif "bench" in record:
            if record.get("bench") != "ready":
                raise _malformed(line_number, line, f"expected {{\"bench\":\"ready\"}}, got {record.get('bench')!r}")
            if run.done is not None or run.vectors:
                # a second session: only the last one's results are kept
                run.vectors, run.done = [], None
            run.bench_sessions += 1
        elif "stopped" in record:
            run.stopped = _count(record, "stopped", line_number, line)
        else:
            raise _malformed(line_number, line, "expected a \"vec\", \"done\", \"error\", \"hello\", \"inference\", "
                                                "\"bench\" or \"stopped\" record")
    return run


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip().startswith("{")]
    return lines[-1] if lines else "(no output)"


def parse_results(text: str, output_sizes: list[int]) -> list[VectorResult]:
    """The per-vector results in the console text of a complete run (of the verify harness, or
    of a bench session of the application).

    Raises McuforgeError on a malformed line, on an {"error":...} line, and when the run
    stopped before {"done":N} (a crash, a hang cut off by a timeout)."""
    run = parse_console(text, output_sizes)
    if run.done is None:
        raise McuforgeError(f"the firmware stopped after {len(run.vectors)} vector(s) without printing {{\"done\":N}}: "
                            f"it crashed, hung or was cut off",
                            where=f"last console line: {_last_line(text)}",
                            fix="run it again by hand (make run in the project) to see where it stops")
    return run.vectors


def parse_telemetry(text: str, expected: int | None = None) -> list[Telemetry]:
    """The telemetry of an application run; with `expected`, the run must have stopped after
    exactly that many inferences."""
    run = parse_console(text)
    if run.hello is None:
        raise McuforgeError("the firmware printed no hello line: it is not the mcuforge application, or it did not start",
                            where=f"last console line: {_last_line(text)}",
                            fix="check the console (port, baud rate) and that the firmware was built by mcuforge build")
    if expected is not None:
        if run.stopped is None:
            raise McuforgeError(f"the application did not stop (after {len(run.telemetry)} inference(s))",
                                where=f"last console line: {_last_line(text)}",
                                fix="build it with --iterations N to make it stop, or give it more time")
        if run.stopped != expected or len(run.telemetry) != expected:
            raise McuforgeError(f"expected {expected} inferences, the application reported {len(run.telemetry)} "
                                f"and stopped after {run.stopped}", where=f"last console line: {_last_line(text)}",
                                fix="check the --iterations the firmware was built with")
    return run.telemetry


def bench_commands(vectors: list[bytes], finish: str = "quit") -> bytes:
    """What the host sends for a bench session: `bench`, one `run <hex>` per vector (all the
    model's inputs back to back), then `end` (back to the loop) or `quit` (end the program)."""
    if finish not in ("end", "quit"):
        raise McuforgeError(f"a bench session finishes with end or quit, not {finish!r}", where="finish",
                            fix="use end to resume the loop, quit to end the program")
    lines = ["bench"] + [f"run {bytes(v).hex()}" for v in vectors] + (["end", "quit"] if finish == "quit" else ["end"])
    return ("\n".join(lines) + "\n").encode()


def instructions_from_cycles(cycles: int, clock_hz: int) -> int:
    """Instructions executed in `cycles` core-clock cycles under QEMU's -icount shift=0.

    With shift=0 every instruction advances virtual time by 1 ns, and the timer counts the
    board's clock in that virtual time, so instructions = cycles * 1e9 / clock_hz.
    """
    if clock_hz <= 0:
        raise McuforgeError(f"clock must be positive, got {clock_hz} Hz", where="clock_hz",
                            fix="use the board's cpu.clock_hz")
    return round(cycles * NANOSECONDS_PER_SECOND / clock_hz)
