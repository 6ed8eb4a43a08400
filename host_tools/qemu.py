"""Run firmware on an emulated board (qemu-system-arm), and the host runner, with input vectors.

Both take the input vectors as one blob, the contents of `inputs.bin`, and return the console
text; `console_protocol.parse_results` turns that into results.
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from mcuforge.boards import Board
from mcuforge.codegen.errors import McuforgeError

QEMU = "qemu-system-arm"
QEMU_DEBIAN_PACKAGE = "qemu-system-arm"
INPUTS_FILE = "inputs.bin"


def qemu_command(board: Board, elf: str | Path) -> list[str]:
    """The QEMU command line that runs `elf` on `board`, deterministically (-icount shift=0)."""
    if not board.qemu or not board.qemu.get("machine"):
        raise McuforgeError(f"board {board.name} is not an emulated board: it has no QEMU machine",
                            where=f"{board.path}: qemu.machine",
                            fix="run on one of the emulated boards (mps3-an547, mps2-an386, mps2-an500, "
                                "mps2-an505), or flash the real board")
    return [QEMU, "-M", board.qemu["machine"], "-nographic",
            "-icount", "shift=0",
            "-semihosting-config", "enable=on,target=native",
            "-kernel", str(elf)]


def _require_qemu() -> str:
    path = shutil.which(QEMU)
    if path is None:
        raise McuforgeError(f"{QEMU} is not installed", where="PATH",
                            fix=f"install the Debian package {QEMU_DEBIAN_PACKAGE}: "
                                f"sudo apt-get install {QEMU_DEBIAN_PACKAGE}")
    return path


def _tail(text: str, lines: int = 5) -> str:
    kept = text.strip().splitlines()[-lines:]
    return "\n".join(kept) if kept else "(no output)"


def _run_with_inputs(command: list[str], input_blob: bytes, timeout: float, what: str) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="mcuforge-run-") as run_dir:
        (Path(run_dir) / INPUTS_FILE).write_bytes(bytes(input_blob))
        try:
            return subprocess.run(command, cwd=run_dir, stdin=subprocess.DEVNULL, capture_output=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            partial = (exc.stdout or b"").decode(errors="replace")
            raise McuforgeError(f"{what} did not finish within {timeout:g} s; last console lines:\n{_tail(partial)}",
                                where=" ".join(command),
                                fix="check that the firmware ends with an exit (semihosting SYS_EXIT), or give "
                                    "more time with timeout=") from None


def run_on_qemu(board: Board, elf: str | Path, input_blob: bytes, timeout: float = 60) -> str:
    """Run `elf` under QEMU on the emulated `board` with `input_blob` as inputs.bin; the console text."""
    elf = Path(elf).resolve()
    if not elf.is_file():
        raise McuforgeError(f"firmware not found: {elf}", fix="build it first with build_baremetal_project")
    command = qemu_command(board, elf)
    command[0] = _require_qemu()
    result = _run_with_inputs(command, input_blob, timeout, f"{board.name} under QEMU")
    stderr = result.stderr.decode(errors="replace")
    if result.returncode != 0 and stderr.lstrip().startswith(QEMU):
        # QEMU itself refused (bad machine, an ELF it cannot load), as opposed to the firmware
        # exiting non-zero, which the console protocol reports.
        raise McuforgeError(f"QEMU could not run the firmware: {_tail(stderr)}", where=" ".join(command),
                            fix="check that the ELF was built for this board (its memory map and core)")
    return result.stdout.decode(errors="replace")


def run_host_runner(exe: str | Path, input_blob: bytes, timeout: float = 60) -> str:
    """Run the host build of the application and model with `input_blob` as inputs.bin; the console text."""
    exe = Path(exe).resolve()
    if not exe.is_file():
        raise McuforgeError(f"host runner not found: {exe}", fix="build it first with build_host_runner")
    result = _run_with_inputs([str(exe)], input_blob, timeout, "the host runner")
    return result.stdout.decode(errors="replace")
