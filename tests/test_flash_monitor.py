"""flash, monitor and run: on QEMU's pseudo-terminal with real firmware, on pseudo-terminals the
tests drive (a port that vanishes and returns, fault lines decoded against a real ELF), and on
fakes standing in for physical chips and debug probes. Flashing real hardware is marked
`hardware` and skipped here."""
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import tty
from pathlib import Path

import pytest

from mcuforge.boards import load_board
from mcuforge.codegen.errors import McuforgeError
from mcuforge.host_tools.flash import (
    EspFlashPlan, choose_probe_tool, emulated_boards, esp_flash_plan, flash, flash_esp, flash_with_probe,
    merge_esp_image, probe_command, start_emulated_board,
)
from mcuforge.host_tools.monitor import (
    EXIT_MATCHED, EXIT_OK, EXIT_PORT_GONE, EXIT_TIMEOUT, Monitor, decode_record, fault_addresses, line_level,
)
from mcuforge.host_tools.transport import PortGone, SerialTransport, Transport, open_transport

MODELS_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "models"
BIN = Path(sys.executable).parent
MCUFORGE = str(BIN / "mcuforge")
BOARD = "mps3-an547"

needs_qemu = pytest.mark.skipif(shutil.which("qemu-system-arm") is None or shutil.which("arm-none-eabi-gcc") is None,
                                reason="qemu-system-arm and arm-none-eabi-gcc are needed (Debian: qemu-system-arm, "
                                       "gcc-arm-none-eabi, libnewlib-arm-none-eabi)")


# ---- firmware: the hello_world model, AOT-compiled, in the bare-metal application ------------

def build_app(root: Path, period_ms: int, iterations: int) -> Path:
    from mcuforge.codegen.emit_aot import emit_aot
    from mcuforge.codegen.tflite_model import load_tflite
    from mcuforge.host_tools.firmware import AppSettings, build_baremetal_project, render_baremetal_project

    model = MODELS_DIR / "hello_world_int8.tflite"
    if not model.exists():
        pytest.skip(f"model not present: {model}")
    emit_aot(load_tflite(model), root / "aot")
    project = render_baremetal_project(BOARD, root / "aot", root / "fw",
                                       settings=AppSettings(period_ms=period_ms, iterations=iterations))
    build_baremetal_project(project, BOARD)
    return project


@pytest.fixture(scope="module")
def forever_app(tmp_path_factory):
    """Runs until stopped: one inference every 10 ms of virtual time."""
    return build_app(tmp_path_factory.mktemp("forever"), period_ms=10, iterations=0)


@pytest.fixture(scope="module")
def short_app(tmp_path_factory):
    """Three inferences, then {"stopped":3} and exit code 0."""
    return build_app(tmp_path_factory.mktemp("short"), period_ms=10, iterations=3)


@pytest.fixture
def no_stray_qemu():
    yield
    for board in emulated_boards():
        board.stop()


class Collect:
    """A text stream the monitor writes to."""

    def __init__(self):
        self.parts = []

    def write(self, text):
        self.parts.append(text)

    def flush(self):
        pass

    def isatty(self):
        return False

    @property
    def text(self):
        return "".join(self.parts)


# ---- QEMU, with the real firmware ----------------------------------------------------------------

@needs_qemu
def test_flash_emulated_board_then_monitor_until_expected_line(forever_app, no_stray_qemu):
    result = subprocess.run([MCUFORGE, "flash", str(forever_app), "--board", BOARD],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    port = re.search(r"UART on (/dev/pts/\d+)", result.stdout).group(1)
    assert "waits for a monitor" in result.stdout

    monitor = subprocess.run([MCUFORGE, "monitor", "--port", port, "--expect", r'"inference":3\b', "--timeout", "60",
                              "--no-color"], capture_output=True, text=True, timeout=90)
    assert monitor.returncode == 0, monitor.stdout + monitor.stderr
    # The CPU waited for the monitor, so the first line is there, and telemetry is decoded.
    assert "firmware up: mps3-an547 baremetal/aot" in monitor.stdout
    assert re.search(r"^\d\d:\d\d:\d\d\.\d{3} inference 0: \d+ cycles \([\d.]+ µs\), class 0", monitor.stdout, re.M)

    # Flashing the same firmware again replaces the running QEMU.
    first = emulated_boards()
    assert len(first) == 1 and first[0].port == port
    again = flash(forever_app, BOARD)
    try:
        assert [b.pid for b in emulated_boards()] == [again.emulator.pid]
    finally:
        again.emulator.stop()


@needs_qemu
def test_monitor_expect_times_out_with_its_own_exit_code(forever_app, no_stray_qemu):
    emulated = start_emulated_board(BOARD, forever_app / "build" / "firmware.elf")
    try:
        result = subprocess.run([MCUFORGE, "monitor", "--port", emulated.port, "--expect", "never printed",
                                 "--timeout", "2", "--no-color"], capture_output=True, text=True, timeout=60)
    finally:
        emulated.stop()
    assert result.returncode == EXIT_TIMEOUT
    assert "no line matched 'never printed' within 2 s" in result.stdout


@needs_qemu
def test_run_shows_decoded_telemetry_and_ends_with_the_firmware(short_app, tmp_path, no_stray_qemu):
    log = tmp_path / "console.log"
    result = subprocess.run([MCUFORGE, "run", str(short_app), "--board", BOARD, "--no-color", "--log", str(log)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "firmware up: mps3-an547 baremetal/aot, model 'model', 32 MHz" in out
    assert all(f"inference {i}: " in out for i in range(2))
    # The very last line can be lost when QEMU exits right after writing it (the pty closes with
    # bytes still unread), so the end is judged by the firmware's exit status, which run returns.
    assert '"inference":2' in log.read_text()  # the log keeps the raw lines
    assert not emulated_boards()


@needs_qemu
def test_reset_of_an_emulated_board_goes_through_qmp(forever_app, no_stray_qemu):
    emulated = start_emulated_board(BOARD, forever_app / "build" / "firmware.elf")
    try:
        with open_transport(emulated.port) as link:
            assert link.kind == "qemu"
            link.resume()
            seen = read_until(link, b'"inference":1')
            assert seen.count(b'"hello"') == 1
            link.reset()
            seen = read_until(link, b'"inference":0')
            assert b'"hello"' in seen  # the firmware started again
    finally:
        emulated.stop()
    assert not emulated.running


def read_until(link: Transport, marker: bytes, timeout: float = 30) -> bytes:
    data = b""
    deadline = time.monotonic() + timeout
    while marker not in data and time.monotonic() < deadline:
        data += link.read(4096, timeout=0.1)
    assert marker in data, data
    return data


# ---- pseudo-terminals the tests drive -------------------------------------------------------------

class FakeDevice:
    """A board's console on a pty behind a stable path (a symlink, as udev's /dev/serial/by-id
    gives). unplug() makes the port vanish, plug() brings a new one back under the same path."""

    def __init__(self, folder: Path):
        self.path = folder / "ttyFAKE0"
        self.master = None
        self.plug()

    def plug(self):
        self.master, slave = os.openpty()
        tty.setraw(slave)
        self._slave = slave
        tmp = self.path.with_suffix(".new")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(os.ttyname(slave))
        os.replace(tmp, self.path)

    def unplug(self):
        self.path.unlink()
        os.close(self._slave)
        os.close(self.master)
        self.master = None

    def say(self, text: str):
        os.write(self.master, text.encode())

    def heard(self) -> bytes:
        import select

        data = b""
        while select.select([self.master], [], [], 0.2)[0]:
            data += os.read(self.master, 1024)
        return data

    def close(self):
        if self.master is not None:
            self.unplug()


@pytest.fixture
def device(tmp_path):
    d = FakeDevice(tmp_path)
    yield d
    d.close()


def run_monitor(monitor: Monitor):
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("code", monitor.run()), daemon=True)
    thread.start()
    return thread, result


def test_monitor_reconnects_when_the_port_vanishes_and_returns(device):
    out = Collect()
    monitor = Monitor(lambda: open_transport(str(device.path)), out=out, expect="after the reset", timeout=30)
    thread, result = run_monitor(monitor)
    time.sleep(0.5)
    device.say("before the reset\n")
    time.sleep(0.5)
    device.unplug()  # USB-CDC re-enumerates while the board resets
    time.sleep(1.0)
    device.plug()
    time.sleep(1.0)
    device.say("after the reset\n")
    thread.join(timeout=30)
    assert result["code"] == EXIT_MATCHED
    text = out.text
    assert text.index("before the reset") < text.index("vanished") < text.index("is back") < \
        text.index("after the reset")


def test_monitor_without_reconnect_reports_the_port_gone(device):
    out = Collect()
    monitor = Monitor(lambda: open_transport(str(device.path)), out=out, reconnect=False)
    thread, result = run_monitor(monitor)
    time.sleep(0.5)
    device.unplug()
    thread.join(timeout=10)
    assert result["code"] == EXIT_PORT_GONE and "vanished" in out.text


def elf_symbol(elf: Path, name: str) -> int:
    nm = subprocess.run(["arm-none-eabi-nm", str(elf)], capture_output=True, text=True, check=True).stdout
    return int(next(line.split()[0] for line in nm.splitlines() if line.split()[-1] == name), 16)


@needs_qemu
def test_monitor_decodes_fault_addresses_with_the_elf(device, forever_app):
    elf = forever_app / "build" / "firmware.elf"
    main, fault_report = elf_symbol(elf, "main"), elf_symbol(elf, "mcuforge_fault_report")
    out = Collect()
    monitor = Monitor(lambda: open_transport(str(device.path)), out=out, elf=elf, expect="HardFault", timeout=20)
    thread, result = run_monitor(monitor)
    time.sleep(0.5)
    device.say('{"error":"HardFault pc=0x%08x lr=0x%08x exc_return=0xfffffffd cfsr=0x00000000 hfsr=0x40000000"}\n'
               % (fault_report, main | 1))
    thread.join(timeout=20)
    assert result["code"] == EXIT_MATCHED
    text = out.text
    assert "firmware error: HardFault" in text
    assert re.search(r"0x%08x: mcuforge_fault_report at .*\.c:\d+" % fault_report, text)
    assert re.search(r"0x%08x: main at .*\.c:\d+" % main, text)


def test_monitor_shows_a_prompt_without_newline_and_logs(device, tmp_path):
    out, log = Collect(), tmp_path / "log.txt"
    monitor = Monitor(lambda: open_transport(str(device.path)), out=out, log=log, timeout=1.5)
    thread, result = run_monitor(monitor)
    time.sleep(0.3)
    device.say("W (120) wifi: weak signal\n>>> ")
    thread.join(timeout=10)
    assert result["code"] == EXIT_OK
    assert "W (120) wifi: weak signal" in out.text and out.text.rstrip().endswith(">>>")
    assert "weak signal" in log.read_text()


class FakeKeys:
    def __init__(self, *chunks):
        self.chunks = list(chunks)

    def take(self):
        return self.chunks.pop(0) if self.chunks else b""


class RecordingTransport(Transport):
    port = "fake"

    def __init__(self):
        self.written, self.resets = b"", 0

    def read(self, size=4096, timeout=0.1):
        time.sleep(0.01)
        return b""

    def write(self, data):
        self.written += data

    def reset(self):
        self.resets += 1

    def close(self):
        pass


def test_menu_keys_reset_forward_and_quit():
    link = RecordingTransport()
    keys = FakeKeys(b"ls\r", b"\x14\x12", b"\x14\x14", b"\x14h", b"\x1d", b"never sent")
    out = Collect()
    code = Monitor(lambda: link, out=out, keys=keys).run()
    assert code == EXIT_OK
    assert link.resets == 1
    assert link.written == b"ls\r\x14"  # Ctrl-T Ctrl-T sends one Ctrl-T
    assert "reset the board" in out.text and "keys:" in out.text


def test_serial_reset_on_a_pty_says_it_has_no_modem_lines(device):
    with SerialTransport(str(device.path)) as link:
        with pytest.raises(McuforgeError) as info:
            link.reset()
    assert "DTR/RTS" in info.value.what and "reset button" in info.value.fix


def test_a_port_that_is_not_there_is_port_gone(tmp_path):
    with pytest.raises(PortGone) as info:
        open_transport(str(tmp_path / "ttyNONE"))
    assert "not there" in info.value.cause


# ---- decoding, without a board -------------------------------------------------------------------

def test_line_levels():
    assert line_level("E (1234) wifi: connect failed") == "error"
    assert line_level("[00:00:01.000,000] <err> app: boom") == "error"
    assert line_level("Traceback (most recent call last):") == "error"
    assert line_level("ValueError: bad") == "error"
    assert line_level("W (1) x: y") == "warning"
    assert line_level("<inf> main: hello") == "info"
    assert line_level("D (3) spi: xfer") == "debug"
    assert line_level("plain text") is None


def test_records_are_decoded_into_words():
    kind, words, _ = decode_record('{"inference":7,"cycles":3200,"result":{"class":2,"score":99},'
                                   '"stack_hwm":300,"heap_hwm":null,"uptime_ms":7000}', clock_hz=32_000_000)
    assert kind == "inference"
    assert words == "inference 7: 3,200 cycles (100.0 µs), class 2 (score 99), stack 300 B, heap n/a, up 7.0 s"
    assert decode_record('{"stopped":3}')[1] == "firmware stopped after 3 inferences"
    assert decode_record("not json") is None and decode_record("{broken") is None


def test_fault_addresses_from_the_usual_reports():
    assert fault_addresses("HardFault pc=0x00001234 lr=0x00002001") == [0x1234, 0x2000]
    assert fault_addresses("Backtrace: 0x42001234:0x3fc91000 0x42005678:0x3fc91020") == [0x42001234, 0x42005678]
    assert fault_addresses("E: Faulting instruction address (r15/pc): 0x000004d2") == [0x4d2]
    assert fault_addresses("inference 3: pc counter 0x00001234") == []


# ---- ESP32: esptool as a library, against fakes ---------------------------------------------------

def fake_esp_build(root: Path) -> Path:
    build = root / "build"
    (build / "bootloader").mkdir(parents=True)
    (build / "partition_table").mkdir()
    (build / "bootloader" / "bootloader.bin").write_bytes(b"\xe9" + bytes(31))
    (build / "partition_table" / "partition-table.bin").write_bytes(b"\xaa\x50" + bytes(30))
    (build / "app.bin").write_bytes(b"\xe9" + bytes(63))
    (build / "flasher_args.json").write_text("""{
      "flash_settings": {"flash_mode": "dio", "flash_size": "8MB", "flash_freq": "80m"},
      "flash_files": {"0x0": "bootloader/bootloader.bin", "0x8000": "partition_table/partition-table.bin",
                      "0x10000": "app.bin"},
      "extra_esptool_args": {"after": "hard_reset", "before": "default_reset", "stub": true, "chip": "esp32s3"}
    }""")
    (root / "mcuforge_project.json").write_text('{"kind": "esp-idf", "board": "esp32-s3-devkitc"}')
    return root


def test_esp_plan_reads_flasher_args_and_merges_one_image(tmp_path):
    plan = esp_flash_plan(fake_esp_build(tmp_path / "proj"), "esp32-s3-devkitc")
    assert plan.chip == "esp32s3" and plan.baud == 921600
    assert [offset for offset, _ in plan.files] == [0x0, 0x8000, 0x10000]
    assert (plan.flash_mode, plan.flash_size, plan.before, plan.after) == ("dio", "8MB", "default-reset", "hard-reset")
    image = merge_esp_image(plan, tmp_path / "merged.bin").read_bytes()
    assert image[0x8000:0x8002] == b"\xaa\x50" and image[0x10000] == 0xE9 and len(image) == 0x10000 + 64


def test_esp_plan_refuses_a_build_for_another_board(tmp_path):
    project = fake_esp_build(tmp_path / "proj")
    (project / "mcuforge_project.json").write_text('{"board": "nrf52840dk"}')
    with pytest.raises(McuforgeError) as info:
        esp_flash_plan(project, "esp32-s3-devkitc")
    assert "built for nrf52840dk" in info.value.what


def silent_port():
    """Fake chip: a pty that never answers."""
    master, slave = os.openpty()
    tty.setraw(slave)
    return master, slave, os.ttyname(slave)


def test_esp_flash_to_a_port_where_nothing_answers(tmp_path):
    plan = esp_flash_plan(fake_esp_build(tmp_path / "proj"), "esp32-s3-devkitc")
    master, slave, port = silent_port()
    try:
        with pytest.raises(McuforgeError) as info:
            flash_esp(plan, port, connect_attempts=1, command_hint="mcuforge flash proj --board esp32-s3-devkitc")
    finally:
        os.close(slave)
        os.close(master)
    assert "no Espressif chip answers" in info.value.what and "BOOT" in info.value.fix


def test_esp_flash_to_a_port_that_vanishes(tmp_path):
    plan = EspFlashPlan(chip="esp32s3", baud=921600, files=[(0, tmp_path / "app.bin")])
    folder = tmp_path / "dev"
    folder.mkdir()
    fake = FakeDevice(folder)  # fake chip on a USB port that disappears mid-session

    def unplug_soon():
        time.sleep(0.3)
        fake.unplug()

    threading.Thread(target=unplug_soon, daemon=True).start()
    hint = f"mcuforge flash proj --board esp32-s3-devkitc --port {fake.path}"
    with pytest.raises(McuforgeError) as info:
        flash_esp(plan, str(fake.path), connect_attempts=5, command_hint=hint)
    assert "vanished" in info.value.what
    assert "cause: the board reset or was unplugged" in info.value.fix and hint in info.value.fix


@pytest.mark.hardware
@pytest.mark.skip(reason="needs an ESP32-S3-DevKitC on a serial port; flashing a physical chip is tested by "
                         "command construction and fakes here")
def test_flash_a_real_esp32s3(tmp_path):
    flash(fake_esp_build(tmp_path / "proj"), "esp32-s3-devkitc", os.environ.get("MCUFORGE_ESP32_PORT"))


# ---- Cortex-M probes: command construction, and fakes -------------------------------------------

def test_probe_commands_write_verify_and_reset(tmp_path):
    elf = tmp_path / "firmware.elf"
    nrf, stm = load_board("nrf52840dk"), load_board("stm32n6570-dk")
    assert probe_command("pyocd", "pyocd", nrf, elf, "0240000034") == [
        "pyocd", "load", "--target", "nrf52840", "--uid", "0240000034", str(elf)]
    assert probe_command("stm32cubeprogrammer", "STM32_Programmer_CLI", stm, elf) == [
        "STM32_Programmer_CLI", "--connect", "port=SWD", "mode=HOTPLUG", "--download", str(elf), "--verify", "-hardRst"]
    assert probe_command("openocd", "openocd", stm, elf, "ABC")[-4:] == [
        "-c", "adapter serial ABC", "-c", f"program {elf} verify reset exit"]
    assert probe_command("nrfjprog", "nrfjprog", nrf, elf.with_suffix(".hex"))[-5:] == [
        "--program", str(elf.with_suffix(".hex")), "--sectorerase", "--verify", "--reset"]


def test_no_probe_tool_installed_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(McuforgeError) as info:
        choose_probe_tool(load_board("stm32n6570-dk"))
    assert "STM32_Programmer_CLI" in info.value.what and "pip install pyocd" in info.value.fix


def test_a_probe_that_vanishes_mid_flash_names_the_cause(monkeypatch, tmp_path):
    # Fake STM32_Programmer_CLI: the ST-LINK drops off the USB bus half-way through.
    fake = tmp_path / "STM32_Programmer_CLI"
    fake.write_text("#!/bin/sh\necho 'Memory Programming ...'\necho 'Error: ST-LINK error (DEV_USB_COMM_ERR): "
                    "USB communication error, the probe disconnected' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    elf = tmp_path / "firmware.elf"
    elf.write_bytes(b"\x7fELF")
    with pytest.raises(McuforgeError) as info:
        flash_with_probe(load_board("stm32n6570-dk"), elf, command_hint="mcuforge flash proj --board stm32n6570-dk")
    assert "STM32_Programmer_CLI failed" in info.value.what
    assert "cause: the debug probe or the board went away" in info.value.fix
    assert "mcuforge flash proj --board stm32n6570-dk" in info.value.fix


@pytest.mark.hardware
@pytest.mark.skip(reason="needs an STM32N6570-DK with its ST-LINK; tested by command construction and a fake tool here")
def test_flash_a_real_stm32n6(tmp_path):
    flash(tmp_path, "stm32n6570-dk")
