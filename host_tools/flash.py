"""Put a built firmware on a board: `mcuforge flash DIR --board BOARD [--port P]`.

By the board file's flash.tool:

- qemu (the emulated boards): QEMU starts in the background with the firmware and the board's
  UART on a pseudo-terminal, which is the board's port from then on. The CPU waits until a
  monitor attaches (`mcuforge monitor`/`run`, or `resume_emulated_board`), so no early line is
  lost; QEMU keeps running after flash returns, until the firmware ends or it is stopped.
  Flashing the same firmware again replaces the running one.
- esptool (ESP32-S3): esptool as a library: the chip is detected and checked against the board,
  the files and offsets come from ESP-IDF's build/flasher_args.json (or Zephyr's zephyr.bin at
  0x0), then written at the board's baud, verified and the chip hard-reset.
- pyocd, openocd, stm32cubeprogrammer, nrfjprog (Cortex-M): the board's tool, else one of its
  alternatives, found on PATH; none found is an error that says what to install. --port names
  the debug probe (its serial number) for these.

A port that vanishes while flashing is an error that names the likely cause in its advice.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from mcuforge.boards import Board, load_board
from mcuforge.codegen.errors import McuforgeError

from .qemu import QEMU, QEMU_DEBIAN_PACKAGE, qemu_command
from .transport import QmpClient, lookup_port, register_port, runtime_dir, unregister_port

PROJECT_MANIFEST = "mcuforge_project.json"
BUILD_DIR = "build"
ESP_IDF_FLASHER_ARGS = "flasher_args.json"
# Where each kind of build leaves the file a probe flashes, in order of preference.
FIRMWARE_CANDIDATES = ("firmware.elf", "zephyr/zephyr.elf", "zephyr/zephyr.hex", "*.elf", "*.hex")
PTY_LINE = re.compile(r"char device redirected to (/dev/pts/\d+) \(label ([\w.-]+)\)")
QEMU_START_TIMEOUT_S = 10.0
ESP_CONNECT_ATTEMPTS = 3

PROBE_TOOLS = {
    "pyocd": {"exe": "pyocd", "install": "pip install pyocd"},
    "openocd": {"exe": "openocd", "install": "sudo apt-get install openocd"},
    "stm32cubeprogrammer": {"exe": "STM32_Programmer_CLI",
                            "install": "install STM32CubeProgrammer from st.com and put its bin/ folder on PATH"},
    "nrfjprog": {"exe": "nrfjprog", "install": "install nRF Command Line Tools from nordicsemi.com"},
}
FVP = {"exe": "FVP_Corstone_SSE-300_Ethos-U55",
       "install": "download Arm's Corstone-300 Ecosystem FVP (developer.arm.com) and put its models/ folder on PATH"}


@dataclass
class FlashResult:
    board: str
    tool: str
    firmware: list[str]
    port: str | None = None            # the console port afterwards (the pty of an emulated board)
    command: list[str] | None = None   # the tool's command line, for probe tools
    emulator: "EmulatedBoard | None" = None
    notes: list[str] = field(default_factory=list)


def _as_board(board: Board | str) -> Board:
    return board if isinstance(board, Board) else load_board(board)


def _read_project_manifest(project_dir: Path) -> dict:
    path = project_dir / PROJECT_MANIFEST
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def check_project(project_dir: Path, board: Board) -> Path:
    """The build folder of a project, checked against the board it is flashed to."""
    if not project_dir.is_dir():
        raise McuforgeError(f"project folder not found: {project_dir}", where="DIR",
                            fix="give the folder `mcuforge build ... -o DIR --compile` wrote")
    manifest = _read_project_manifest(project_dir)
    built_for = manifest.get("board")
    if built_for and built_for != board.name:
        raise McuforgeError(f"the project was built for {built_for}, not {board.name}",
                            where=str(project_dir / PROJECT_MANIFEST),
                            fix=f"flash it with --board {built_for}, or build it again for {board.name}")
    build_dir = project_dir / BUILD_DIR
    return build_dir if build_dir.is_dir() else project_dir


def find_firmware(project_dir: Path, board: Board) -> Path:
    """The ELF (or hex) a probe or QEMU loads."""
    build_dir = check_project(project_dir, board)
    for pattern in FIRMWARE_CANDIDATES:
        found = sorted(build_dir.glob(pattern))
        if found:
            return found[0]
    raise McuforgeError(f"no firmware (.elf or .hex) in {build_dir}", where=str(build_dir),
                        fix="build it first: mcuforge build MODEL --board ... -o DIR --compile")


# ---- emulated boards -------------------------------------------------------------------------

@dataclass
class EmulatedBoard:
    """A QEMU running a firmware in the background, its UART on `port`."""

    board: str
    elf: str
    pid: int
    port: str
    qmp: str
    session_dir: str
    process: subprocess.Popen | None = None  # set when this process started it

    @property
    def running(self) -> bool:
        if self.process is not None:
            return self.process.poll() is None
        try:
            os.kill(self.pid, 0)
        except OSError:
            return False
        return not _is_zombie(self.pid)

    def resume(self) -> None:
        with QmpClient(self.qmp) as qmp:
            if not qmp.execute("query-status").get("running", True):
                qmp.execute("cont")

    def exit_code(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def stop(self, timeout: float = 5.0) -> None:
        if self.running:
            with contextlib.suppress(OSError):
                os.kill(self.pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while self.running and time.monotonic() < deadline:
                time.sleep(0.05)
            if self.running:
                with contextlib.suppress(OSError):
                    os.kill(self.pid, signal.SIGKILL)
        if self.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=timeout)
        unregister_port(self.port, self.pid)
        shutil.rmtree(self.session_dir, ignore_errors=True)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def _sessions_dir() -> Path:
    path = runtime_dir() / "qemu"
    path.mkdir(exist_ok=True)
    return path


def emulated_boards() -> list[EmulatedBoard]:
    """The QEMU sessions `mcuforge flash` started that are still running."""
    found = []
    for session in sorted(_sessions_dir().glob("*/session.json")):
        try:
            entry = json.loads(session.read_text())
            board = EmulatedBoard(**entry)
        except (OSError, ValueError, TypeError):
            continue
        if board.running:
            found.append(board)
        else:
            board.stop()
    return found


def _qemu_serial_command(board: Board, elf: Path, qmp_socket: Path, paused: bool) -> list[str]:
    """qemu_command with the UART on a new pty, a QMP socket, no monitor, and optionally paused."""
    command = [part for part in qemu_command(board, elf) if part != "-nographic"]
    command += ["-display", "none", "-monitor", "none", "-serial", "pty",
                "-qmp", f"unix:{qmp_socket},server=on,wait=off"]
    if paused:
        command.append("-S")
    return command


def start_emulated_board(board: Board | str, elf: str | Path, *, paused: bool = True,
                         inputs: bytes | None = None) -> EmulatedBoard:
    """Starts QEMU in the background with `elf`, its UART on a pty; replaces a running QEMU of
    the same board and ELF. `inputs` becomes the semihosting inputs.bin (verify builds)."""
    board = _as_board(board)
    elf = Path(elf).resolve()
    if not elf.is_file():
        raise McuforgeError(f"firmware not found: {elf}", fix="build it first (mcuforge build ... --compile)")
    qemu = shutil.which(QEMU)
    if qemu is None:
        raise McuforgeError(f"{QEMU} is not installed", where="PATH",
                            fix=f"install the Debian package {QEMU_DEBIAN_PACKAGE}: sudo apt-get install {QEMU_DEBIAN_PACKAGE}")
    for running in emulated_boards():
        if running.elf == str(elf) and running.board == board.name:
            running.stop()
    session_dir = _sessions_dir() / f"{board.name}-{os.getpid()}-{time.monotonic_ns()}"
    session_dir.mkdir()
    (session_dir / "inputs.bin").write_bytes(inputs or b"")
    qmp_socket = session_dir / "qmp.sock"
    command = _qemu_serial_command(board, elf, qmp_socket, paused)
    command[0] = qemu
    log_path = session_dir / "qemu.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=session_dir, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                   start_new_session=True)
    port = _wait_for_pty(process, log_path, qmp_socket, command)
    emulated = EmulatedBoard(board=board.name, elf=str(elf), pid=process.pid, port=port, qmp=str(qmp_socket),
                             session_dir=str(session_dir), process=process)
    entry = {k: v for k, v in emulated.__dict__.items() if k != "process"}
    (session_dir / "session.json").write_text(json.dumps(entry, indent=1))
    register_port(port, {"kind": "qemu", "pid": process.pid, "qmp": str(qmp_socket), "board": board.name,
                         "elf": str(elf)})
    return emulated


def _wait_for_pty(process: subprocess.Popen, log_path: Path, qmp_socket: Path, command: list[str]) -> str:
    deadline = time.monotonic() + QEMU_START_TIMEOUT_S
    while time.monotonic() < deadline:
        text = log_path.read_text(errors="replace")
        match = PTY_LINE.search(text)
        if match and qmp_socket.exists():
            return match.group(1)
        if process.poll() is not None:
            raise McuforgeError(f"QEMU did not start: {text.strip()[-800:] or f'exit status {process.returncode}'}",
                                where=shlex.join(command),
                                fix="check that the ELF was built for this board (its memory map and core)")
        time.sleep(0.02)
    process.kill()
    process.wait()
    raise McuforgeError("QEMU did not put the UART on a pseudo-terminal in time", where=shlex.join(command),
                        fix="check that qemu-system-arm works: run the command by hand")


def emulated_board_for_port(port: str) -> EmulatedBoard | None:
    entry = lookup_port(port)
    if not entry or entry.get("kind") != "qemu":
        return None
    return next((b for b in emulated_boards() if b.port == entry.get("port")), None)


# ---- ESP32 through esptool ---------------------------------------------------------------------

@dataclass
class EspFlashPlan:
    chip: str                               # esptool's name: esp32s3
    baud: int
    files: list[tuple[int, Path]]           # (offset, file)
    flash_mode: str = "keep"
    flash_freq: str = "keep"
    flash_size: str = "keep"
    before: str = "default-reset"
    after: str = "hard-reset"


def _board_esptool_options(board: Board) -> dict:
    args = list(board.flash.get("args", []))
    options = {}
    for flag in ("--chip", "--baud", "--before", "--after"):
        if flag in args and args.index(flag) + 1 < len(args):
            options[flag[2:]] = args[args.index(flag) + 1]
    return options


def esp_flash_plan(project_dir: str | Path, board: Board | str) -> EspFlashPlan:
    """What to write where, from ESP-IDF's flasher_args.json (or a Zephyr zephyr.bin at 0x0)."""
    board = _as_board(board)
    project_dir = Path(project_dir)
    build_dir = check_project(project_dir, board)
    options = _board_esptool_options(board)
    chip = options.get("chip") or board.idf_target
    if not chip:
        raise McuforgeError(f"board {board.name} does not say which Espressif chip it has", where=f"{board.path}: flash.args",
                            fix='add "--chip", "esp32s3" to flash.args (or idf_target)')
    baud = int(options.get("baud", 460800))
    flasher_args = build_dir / ESP_IDF_FLASHER_ARGS
    if flasher_args.is_file():
        try:
            spec = json.loads(flasher_args.read_text())
            files = [(int(offset, 0), build_dir / name) for offset, name in spec["flash_files"].items()]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise McuforgeError(f"cannot read flasher_args.json: {exc}", where=str(flasher_args),
                                fix="build the project again with idf.py (it writes this file)") from None
        settings = spec.get("flash_settings", {})
        extra = spec.get("extra_esptool_args", {})
        if extra.get("chip") and extra["chip"] != chip:
            raise McuforgeError(f"the build is for {extra['chip']}, the board has {chip}", where=str(flasher_args),
                                fix=f"build for {chip} (idf.py set-target {chip}) or flash the right board")
        plan = EspFlashPlan(chip=chip, baud=baud, files=sorted(files),
                            flash_mode=settings.get("flash_mode", "keep"), flash_freq=settings.get("flash_freq", "keep"),
                            flash_size=settings.get("flash_size", "keep"),
                            before=extra.get("before", options.get("before", "default_reset")).replace("_", "-"),
                            after=extra.get("after", options.get("after", "hard_reset")).replace("_", "-"))
    elif (build_dir / "zephyr" / "zephyr.bin").is_file():
        plan = EspFlashPlan(chip=chip, baud=baud, files=[(0x0, build_dir / "zephyr" / "zephyr.bin")])
    else:
        raise McuforgeError(f"no ESP32 flash image in {build_dir} (no {ESP_IDF_FLASHER_ARGS}, no zephyr/zephyr.bin)",
                            where=str(build_dir), fix="build the project first: mcuforge build ... --compile (idf.py)")
    missing = [str(path) for _, path in plan.files if not path.is_file()]
    if missing:
        raise McuforgeError(f"the build lists files that are not there: {', '.join(missing)}", where=str(build_dir),
                            fix="build the project again")
    return plan


def merge_esp_image(plan: EspFlashPlan, output: str | Path) -> Path:
    """One image of every file at its offset (esptool merge-bin), for web flashers and factories."""
    from esptool.cmds import merge_bin

    output = Path(output)
    with contextlib.redirect_stdout(io.StringIO()):
        merge_bin([(offset, str(path)) for offset, path in plan.files], plan.chip, str(output),
                  flash_mode=plan.flash_mode, flash_freq=plan.flash_freq, flash_size=plan.flash_size)
    return output


def _port_vanished(port: str, exc: BaseException, stage: str, command_hint: str) -> McuforgeError:
    gone = not os.path.exists(port)
    cause = ("the board reset or was unplugged: the port disappeared" if gone else
             f"the port stopped working ({exc})")
    return McuforgeError(f"{port} vanished while {stage}" if gone else f"{port} failed while {stage}: {exc}",
                         where=port,
                         fix=f"cause: {cause}. Check the USB cable and power and do not press reset while flashing "
                             f"(a chip's own USB port re-enumerates on every reset, which also ends the flash); once "
                             f"the port is back, retry: {command_hint}")


def flash_esp(plan: EspFlashPlan, port: str, *, command_hint: str = "mcuforge flash again",
              connect_attempts: int = ESP_CONNECT_ATTEMPTS, verify: bool = True) -> str:
    """Writes the plan with esptool (library); the chip's description."""
    import termios

    import serial
    from esptool.cmds import attach_flash, detect_chip, reset_chip, run_stub, verify_flash, write_flash
    from esptool.util import FatalError

    if not port:
        raise McuforgeError("flashing an ESP32 needs its serial port", where="--port",
                            fix="pass --port /dev/ttyUSB0 (python -m serial.tools.list_ports lists them)")
    stage = "connecting"
    esp = None
    try:
        esp = detect_chip(port, 115200, connect_mode=plan.before, connect_attempts=connect_attempts)
        description = esp.get_chip_description()
        if esp.CHIP_NAME.lower().replace("-", "") != plan.chip.lower().replace("-", ""):
            raise McuforgeError(f"the chip on {port} is an {esp.CHIP_NAME}, the board file says {plan.chip}",
                                where=port, fix="connect the right board, or flash with the board file for this chip")
        stage = "starting the flasher stub"
        esp = run_stub(esp)
        if plan.baud != 115200:
            esp.change_baud(plan.baud)
        attach_flash(esp)
        addr_data = [(offset, str(path)) for offset, path in plan.files]
        stage = "writing the flash"
        write_flash(esp, addr_data, flash_freq=plan.flash_freq, flash_mode=plan.flash_mode,
                    flash_size=plan.flash_size, compress=True)
        if verify:
            stage = "verifying the flash"
            verify_flash(esp, addr_data, flash_freq=plan.flash_freq, flash_mode=plan.flash_mode,
                         flash_size=plan.flash_size)
        stage = "resetting the chip"
        reset_chip(esp, plan.after)
        return description
    except FatalError as exc:
        text = str(exc)
        if not os.path.exists(port):
            raise _port_vanished(port, exc, stage, command_hint) from None
        if "No serial data received" in text or "Failed to connect" in text or "Invalid head of packet" in text:
            raise McuforgeError(f"no Espressif chip answers on {port}: {text.splitlines()[0]}", where=port,
                                fix="check that this is the board's USB-UART port; hold BOOT, press and release RESET, "
                                    f"release BOOT to force the download mode; then retry: {command_hint}") from None
        raise McuforgeError(f"esptool failed while {stage}: {text}", where=port,
                            fix=f"see esptool's message; retry: {command_hint}") from None
    except (serial.SerialException, OSError, termios.error) as exc:
        raise _port_vanished(port, exc, stage, command_hint) from None
    finally:
        if esp is not None:
            with contextlib.suppress(Exception):
                esp._port.close()


# ---- Cortex-M through a debug probe's tool -------------------------------------------------------

def probe_tools(board: Board) -> list[str]:
    """The board's flash tool, then its alternatives, as tool names."""
    return [board.flash["tool"], *board.flash.get("alternatives", [])]


def choose_probe_tool(board: Board) -> tuple[str, str]:
    """(tool, executable) of the first of the board's tools that is on PATH."""
    wanted = [t for t in probe_tools(board) if t in PROBE_TOOLS]
    for tool in wanted:
        path = shutil.which(PROBE_TOOLS[tool]["exe"])
        if path:
            return tool, path
    hints = "; or ".join(f"{PROBE_TOOLS[t]['exe']}: {PROBE_TOOLS[t]['install']}" for t in wanted)
    raise McuforgeError(f"none of the tools that flash {board.name} is installed "
                        f"({', '.join(PROBE_TOOLS[t]['exe'] for t in wanted)})",
                        where=f"PATH (board file {board.path}: flash.tool / flash.alternatives)",
                        fix=f"install one: {hints}")


def probe_command(tool: str, executable: str, board: Board, firmware: Path, probe: str | None = None) -> list[str]:
    """The command that writes `firmware`, verifies it and resets the target, for one tool.
    The board's flash.args are the primary tool's own arguments."""
    args = list(board.flash.get("args", [])) if tool == board.flash["tool"] else []
    if tool == "pyocd":
        return [executable, "load", *args, *(["--uid", probe] if probe else []), str(firmware)]
    if tool == "openocd":
        script = [executable, *args]
        if probe:
            script += ["-c", f"adapter serial {probe}"]
        return script + ["-c", f"program {firmware} verify reset exit"]
    if tool == "stm32cubeprogrammer":
        connect = args or ["--connect", "port=SWD"]
        if probe:
            connect = [*connect, f"sn={probe}"]
        return [executable, *connect, "--download", str(firmware), "--verify", "-hardRst"]
    if tool == "nrfjprog":
        return [executable, *args, *(["--snr", probe] if probe else []), "--program", str(firmware),
                "--sectorerase", "--verify", "--reset"]
    raise McuforgeError(f"mcuforge does not know how to flash with {tool}", where=f"{board.path}: flash.tool",
                        fix=f"use one of: {', '.join(PROBE_TOOLS)}")


_PROBE_GONE = re.compile(r"no (connected )?(debug )?probe|probe .*(disconnected|not found)|usb.*(error|disconnect)|"
                         r"libusb|no st-?link|unable to (open|connect)|target (not|is) (connected|responding)|"
                         r"error: no device found|connection to the target lost", re.I)


def _ihex_for(firmware: Path) -> Path:
    """nrfjprog takes Intel hex; convert an ELF beside it."""
    if firmware.suffix == ".hex":
        return firmware
    objcopy = shutil.which("arm-none-eabi-objcopy")
    if objcopy is None:
        raise McuforgeError("arm-none-eabi-objcopy is needed to turn the ELF into a hex file for nrfjprog", where="PATH",
                            fix="install binutils-arm-none-eabi (it comes with gcc-arm-none-eabi)")
    target = firmware.with_suffix(".hex")
    subprocess.run([objcopy, "-O", "ihex", str(firmware), str(target)], check=True)
    return target


def flash_with_probe(board: Board, firmware: Path, probe: str | None = None, *,
                     command_hint: str = "mcuforge flash again") -> list[str]:
    tool, executable = choose_probe_tool(board)
    if tool == "nrfjprog":
        firmware = _ihex_for(firmware)
    command = probe_command(tool, executable, board, firmware, probe)
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        output = (result.stderr + "\n" + result.stdout).strip()
        tail = "\n".join(output.splitlines()[-8:]) or f"exit status {result.returncode}"
        if _PROBE_GONE.search(output):
            fix = (f"cause: the debug probe or the board went away (cable, power, or another program holding the "
                   f"probe). Reconnect it, close other debuggers, then retry: {command_hint}")
        else:
            fix = f"see {PROBE_TOOLS[tool]['exe']}'s message above; retry: {command_hint}"
        raise McuforgeError(f"{PROBE_TOOLS[tool]['exe']} failed to flash {board.name}:\n{tail}",
                            where=shlex.join(command), fix=fix)
    return command


# ---- the stage ------------------------------------------------------------------------------

def flash(project_dir: str | Path, board: Board | str, port: str | None = None, *,
          paused: bool = True) -> FlashResult:
    """Put the firmware built in `project_dir` on `board`; see the module docstring."""
    board = _as_board(board)
    project_dir = Path(project_dir)
    tool = board.flash["tool"]
    hint = f"mcuforge flash {project_dir} --board {board.name}" + (f" --port {port}" if port else "")
    if tool == "qemu":
        elf = find_firmware(project_dir, board)
        emulated = start_emulated_board(board, elf, paused=paused)
        return FlashResult(board=board.name, tool="qemu", firmware=[str(elf)], port=emulated.port, emulator=emulated)
    if tool == "esptool":
        plan = esp_flash_plan(project_dir, board)
        description = flash_esp(plan, port, command_hint=hint)
        return FlashResult(board=board.name, tool="esptool", firmware=[f"0x{o:x} {p}" for o, p in plan.files],
                           port=port, notes=[f"chip: {description}"])
    if tool == "fvp":
        raise McuforgeError(f"{board.name} runs on Arm's Corstone-300 FVP ({FVP['exe']}), which mcuforge does not "
                            f"start yet", where=f"{board.path}: flash.tool",
                            fix=f"{FVP['install']}; run {FVP['exe']} -a {find_firmware(project_dir, board)} "
                                f"{' '.join(board.flash.get('args', []))}, or use the emulated mps3-an547")
    firmware = find_firmware(project_dir, board)
    command = flash_with_probe(board, firmware, port, command_hint=hint)
    return FlashResult(board=board.name, tool=command[0], firmware=[str(firmware)], port=None, command=command)
