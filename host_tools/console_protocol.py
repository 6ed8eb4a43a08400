"""The test firmware's console protocol: one JSON object per line.

    {"vec":0,"cycles":1234,"out":["0a1bff..."]}   one per input vector, one hex string per output
    {"done":N}                                      after the last vector
    {"error":"..."}                                 the firmware gave up (and exits non-zero)

Lines that do not start with "{" are not part of the protocol (boot banners, emulator notes)
and are skipped; every line that does must be well formed.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from mcuforge.codegen.errors import McuforgeError

NANOSECONDS_PER_SECOND = 1_000_000_000


@dataclass(frozen=True)
class VectorResult:
    index: int
    cycles: int
    outputs: list[bytes]


def _malformed(line_number: int, line: str, problem: str) -> McuforgeError:
    return McuforgeError(f"malformed console line: {problem}", where=f"console line {line_number}: {line}",
                         fix="check that the firmware and the host tools come from the same mcuforge version, "
                             "and that nothing else writes to the console")


def _vector(record: dict, line_number: int, line: str, output_sizes: list[int], expected_index: int) -> VectorResult:
    index, cycles, outputs = record.get("vec"), record.get("cycles"), record.get("out")
    if not isinstance(index, int) or isinstance(index, bool) or index != expected_index:
        raise _malformed(line_number, line, f"expected vector index {expected_index}, got {index!r}")
    if not isinstance(cycles, int) or isinstance(cycles, bool) or cycles < 0:
        raise _malformed(line_number, line, f"\"cycles\" must be a non-negative integer, got {cycles!r}")
    if not isinstance(outputs, list) or len(outputs) != len(output_sizes):
        count = len(outputs) if isinstance(outputs, list) else outputs
        raise _malformed(line_number, line, f"expected {len(output_sizes)} output(s) in \"out\", got {count!r}")
    decoded = []
    for i, (text, size) in enumerate(zip(outputs, output_sizes)):
        try:
            data = bytes.fromhex(text) if isinstance(text, str) else None
        except ValueError:
            data = None
        if data is None:
            raise _malformed(line_number, line, f"output {i} is not a hex string")
        if len(data) != size:
            raise _malformed(line_number, line, f"output {i} has {len(data)} bytes, the model's output has {size}")
        decoded.append(data)
    return VectorResult(index, cycles, decoded)


def parse_results(text: str, output_sizes: list[int]) -> list[VectorResult]:
    """The per-vector results in the console text of a complete run.

    Raises McuforgeError on a malformed line, on an {"error":...} line, and when the run
    stopped before {"done":N} (a crash, a hang cut off by a timeout).
    """
    output_sizes = [int(s) for s in output_sizes]
    results: list[VectorResult] = []
    done = None
    last_line = "(no output)"
    for line_number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line.startswith("{"):
            continue
        last_line = line
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise _malformed(line_number, line, f"not JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise _malformed(line_number, line, "not a JSON object")
        if done is not None:
            raise _malformed(line_number, line, "output after {\"done\":N}")
        if "error" in record:
            raise McuforgeError(f"the firmware reported an error: {record['error']}",
                                where=f"console line {line_number}: {line}",
                                fix="see the message; a fault names the PC to look up with arm-none-eabi-addr2line")
        if "done" in record:
            done = record["done"]
            if not isinstance(done, int) or isinstance(done, bool) or done != len(results):
                raise _malformed(line_number, line, f"it reports {done!r} vectors done, but {len(results)} were printed")
            continue
        if "vec" in record:
            results.append(_vector(record, line_number, line, output_sizes, len(results)))
            continue
        raise _malformed(line_number, line, "expected a \"vec\", \"done\" or \"error\" record")
    if done is None:
        raise McuforgeError(f"the firmware stopped after {len(results)} vector(s) without printing {{\"done\":N}}: "
                            f"it crashed, hung or was cut off",
                            where=f"last console line: {last_line}",
                            fix="run it again by hand (make run in the project) to see where it stops")
    return results


def instructions_from_cycles(cycles: int, clock_hz: int) -> int:
    """Instructions executed in `cycles` core-clock cycles under QEMU's -icount shift=0.

    With shift=0 every instruction advances virtual time by 1 ns, and the timer counts the
    board's clock in that virtual time, so instructions = cycles * 1e9 / clock_hz.
    """
    if clock_hz <= 0:
        raise McuforgeError(f"clock must be positive, got {clock_hz} Hz", where="clock_hz",
                            fix="use the board's cpu.clock_hz")
    return round(cycles * NANOSECONDS_PER_SECOND / clock_hz)
