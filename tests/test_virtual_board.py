"""The virtual MicroPython board: real MicroPython (WebAssembly, under Node) behind a pty, driven
with the real mpremote (its console script and its Python API) and pyserial."""
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import serial

from mcuforge.codegen.errors import McuforgeError
from mcuforge.host_tools.virtual_board import (
    LoraChannel, LoraRadio, UartPty, UartWire, UdpLoraChannel, VirtualBoard, lora_airtime_s,
)

BIN = Path(sys.executable).parent
MPREMOTE = str(BIN / "mpremote")
MCUFORGE = str(BIN / "mcuforge")

pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed (Debian: nodejs)")


def mpremote(port, *args, timeout=30):
    result = subprocess.run([MPREMOTE, "connect", port, *args], capture_output=True, timeout=timeout)
    assert result.returncode == 0, result.stderr.decode(errors="replace") + result.stdout.decode(errors="replace")
    return result.stdout.decode(errors="replace")


def transport(board):
    from mpremote.transport_serial import SerialTransport

    # A timeout keeps a test from hanging on a board that does not answer.
    t = SerialTransport(board.port, timeout=5)
    t.enter_raw_repl()
    return t


@pytest.fixture
def board(tmp_path):
    b = VirtualBoard(tmp_path / "flash").start()
    yield b
    b.stop()
    assert not b.running


# ---- mpremote, as a user runs it -------------------------------------------------------------

def test_mpremote_exec_ls_and_cp_both_ways(board, tmp_path):
    out = mpremote(board.port, "exec", "import sys; print(sys.implementation.name, 6 * 7)")
    assert "micropython 42" in out

    payload = bytes(range(256)) * 80  # 20 KB: many raw-paste windows
    source = tmp_path / "blob.bin"
    source.write_bytes(payload)
    mpremote(board.port, "fs", "mkdir", ":lib", "+", "fs", "cp", str(source), ":lib/blob.bin")
    listing = mpremote(board.port, "fs", "ls", ":lib")
    assert f"{len(payload)} blob.bin" in " ".join(listing.split())
    # The board's flash is the host folder.
    assert (board.flash_dir / "lib" / "blob.bin").read_bytes() == payload

    back = tmp_path / "back.bin"
    mpremote(board.port, "fs", "cp", ":lib/blob.bin", str(back))
    assert back.read_bytes() == payload
    mpremote(board.port, "fs", "rm", ":lib/blob.bin")
    assert not (board.flash_dir / "lib" / "blob.bin").exists()


def test_imports_modules_from_flash_lib(board, tmp_path):
    module = tmp_path / "greet.py"
    module.write_text("def hello(name):\n    return 'hello ' + name\n")
    mpremote(board.port, "fs", "mkdir", ":lib", "+", "fs", "cp", str(module), ":lib/greet.py")
    assert "hello board" in mpremote(board.port, "exec", "import greet; print(greet.hello('board'))")


def test_files_survive_soft_reset_and_power_cycle(board):
    mpremote(board.port, "exec", "f = open('state.txt', 'w'); f.write('kept'); f.close()", "+", "soft-reset")
    assert "kept" in mpremote(board.port, "exec", "print(open('state.txt').read())")
    board.power_cycle()
    assert "kept" in mpremote(board.port, "exec", "print(open('state.txt').read())")
    assert (board.flash_dir / "state.txt").read_text() == "kept"


# ---- the REPL protocol details ---------------------------------------------------------------

def test_raw_paste_is_answered_and_used(board):
    t = transport(board)
    try:
        big = "x = 0\n" + "x += 1\n" * 3000 + "print(x)\n"  # ~21 KB of code
        assert t.exec(big).strip() == b"3000"
        assert t.use_raw_paste, "mpremote fell back to the plain raw REPL"
    finally:
        t.close()


def test_soft_reset_prints_soft_reboot_and_starts_a_fresh_vm(board):
    t = transport(board)
    try:
        t.exec("leftover = 1")
        t.serial.write(b"\x04")  # Ctrl-D on an empty raw REPL line
        assert t.read_until(1, b"soft reboot\r\n", timeout=5).endswith(b"soft reboot\r\n")
        assert t.read_until(1, b"raw REPL; CTRL-B to exit\r\n", timeout=5).endswith(b"exit\r\n")
        assert t.eval("'leftover' in globals()") is False
    finally:
        t.close()


def test_ctrl_c_interrupts_a_running_program(board):
    t = transport(board)
    try:
        t.exec_raw_no_follow("import time\nwhile True:\n    time.sleep(0.01)\n")
        time.sleep(0.3)
        t.serial.write(b"\x03")
        out, err = t.follow(timeout=5)
        assert b"KeyboardInterrupt" in err
        assert t.eval("1 + 1") == 2  # the REPL is usable again
    finally:
        t.close()


def test_main_py_runs_after_power_cycle_and_mpremote_interrupts_it(board):
    (board.flash_dir / "main.py").write_text(
        "import time\nwith open('booted.txt', 'w') as f:\n    f.write('yes')\nwhile True:\n    time.sleep(0.05)\n")
    board.power_cycle()
    deadline = time.monotonic() + 10
    while not (board.flash_dir / "booted.txt").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (board.flash_dir / "booted.txt").read_text() == "yes"
    assert "alive" in mpremote(board.port, "exec", "print('alive')")


def test_a_board_that_cannot_boot_hangs_up_its_port(tmp_path, monkeypatch):
    broken = tmp_path / "broken.mjs"
    broken.write_text("throw new Error('no MicroPython here');\n")
    monkeypatch.setenv("MCUFORGE_MICROPYTHON_MJS", str(broken))
    b = VirtualBoard(tmp_path / "flash").start()
    try:
        port = serial.Serial(b.port, timeout=10)
        with pytest.raises(serial.SerialException):
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                port.write(b"\r\x01")
                port.read(100)  # raises once the port is hung up; never blocks for ever
        assert b.stopped_reason and "no MicroPython here" in b.stopped_reason
    finally:
        b.stop()


# ---- the simulated machine -------------------------------------------------------------------

def test_adc_follows_the_sensor_trace_over_virtual_time(tmp_path):
    trace = tmp_path / "trace.csv"
    trace.write_text("t,adc0,pin5\n0,0,0\n10,10000,1\n20,20000,0\n")
    with VirtualBoard(tmp_path / "flash", sensor_trace=trace) as b:
        t = transport(b)
        try:
            t.exec("import machine, time\nadc = machine.ADC(machine.Pin(0))\nt0 = time.ticks_ms()")
            before = t.eval("adc.read_u16()")
            t.exec("machine.lightsleep(12000)")  # 12 s of virtual time, at once
            elapsed = t.eval("time.ticks_diff(time.ticks_ms(), t0)")
            assert 12000 <= elapsed < 14000
            after = t.eval("adc.read_u16()")
            assert before < 1000 and 11000 <= after <= 14000
            assert t.eval("machine.Pin(5, machine.Pin.IN).value()") == 1
            assert t.eval("adc.read_uv()") == pytest.approx(after * 3300000 / 65535, rel=0.05)
        finally:
            t.close()


def test_bad_sensor_trace_is_refused_with_the_file_and_the_fix(tmp_path):
    trace = tmp_path / "bad.csv"
    trace.write_text("time,adc0\n0,1\n")
    with pytest.raises(McuforgeError) as info:
        VirtualBoard(tmp_path / "flash", sensor_trace=trace)
    assert str(trace) in info.value.where and "t" in info.value.fix


def test_deepsleep_advances_the_clock_and_resets_keeping_rtc_memory(board):
    t = transport(board)
    try:
        t.exec("import machine, time\nmachine.RTC().memory(b'slept')\nprint(time.time())")
        before = int(t.eval("time.time()"))
        t.exec("machine.deepsleep(3600000)")  # an hour
        t.read_until(1, b">>> ", timeout=10)  # the board boots again into the friendly REPL
    finally:
        t.close()
    out = mpremote(board.port, "exec",
                   "import machine, time\nprint(machine.reset_cause(), machine.RTC().memory(), time.time())")
    cause, memory, now = out.split()
    assert cause == "4" and memory == "b'slept'"
    assert 3600 <= int(now) - before < 3660


def test_watchdog_resets_a_program_that_stops_feeding_it(board):
    t = transport(board)
    try:
        t.exec("import machine\nwdt = machine.WDT(timeout=1000)\nmachine.lightsleep(500)\nwdt.feed()")
        t.exec("machine.lightsleep(5000)")
        t.read_until(1, b">>> ", timeout=10)
    finally:
        t.close()
    assert mpremote(board.port, "exec", "import machine; print(machine.reset_cause())").strip() == "3"


def test_uart_wire_links_two_boards(tmp_path):
    wire = UartWire()
    with VirtualBoard(tmp_path / "a", uart=wire.a) as a, VirtualBoard(tmp_path / "b", uart=wire.b) as b:
        ta, tb = transport(a), transport(b)
        try:
            tb.exec("import machine\nu = machine.UART(1, 115200, timeout=3000)")
            ta.exec("import machine\nmachine.UART(1, 115200).write(b'hello b\\n')")
            assert tb.eval("u.readline()") == b"hello b\n"
        finally:
            ta.close()
            tb.close()


def test_lora_radio_delivers_packets_after_their_airtime(tmp_path):
    channel = LoraChannel()
    radio_a, radio_b = LoraRadio(channel), LoraRadio(channel)
    with VirtualBoard(tmp_path / "a", uart=radio_a) as a, VirtualBoard(tmp_path / "b", uart=radio_b) as b:
        ta, tb = transport(a), transport(b)
        try:
            tb.exec("import machine\nu = machine.UART(1, 9600, timeout=5000)")
            ta.exec("import machine\nmachine.UART(1, 9600).write(b'x' * 300)")  # 240 + 60: two packets
            got = tb.eval("u.read(300)") + (tb.eval("u.read(300)") or b"")
            assert got == b"x" * 300
            assert radio_a.packets_sent == 2
            assert radio_a.airtime_s == pytest.approx(lora_airtime_s(240) + lora_airtime_s(60))
        finally:
            ta.close()
            tb.close()


def test_lora_radios_in_two_processes_talk_over_udp(tmp_path):
    # What `mcuforge virtual-board --lora-listen A --lora-peer B` sets up, in one process here.
    air_a = UdpLoraChannel(("127.0.0.1", 0), [])
    air_b = UdpLoraChannel(("127.0.0.1", 0), [air_a.address])
    air_a.peers = [air_b.address]
    with VirtualBoard(tmp_path / "a", uart=LoraRadio(air_a, spreading_factor=9)) as a, \
            VirtualBoard(tmp_path / "b", uart=LoraRadio(air_b, spreading_factor=9)) as b:
        ta, tb = transport(a), transport(b)
        try:
            tb.exec("import machine\nu = machine.UART(1, timeout=5000)")
            ta.exec("import machine\nmachine.UART(1).write(b'ota frame 1')")
            assert tb.eval("u.read(64)") == b"ota frame 1"
        finally:
            ta.close()
            tb.close()
    air_a.close()
    air_b.close()


def test_lora_airtime_matches_semtech_calculator():
    # SF7, 125 kHz, CR 4/5, 8-symbol preamble, explicit header, CRC: 20 bytes take 56.58 ms.
    assert lora_airtime_s(20) == pytest.approx(0.056576, abs=1e-6)
    # SF12 uses the low data rate optimisation: 51 bytes take 2.466 s.
    assert lora_airtime_s(51, spreading_factor=12) == pytest.approx(2.465792, abs=1e-5)


def test_uart_on_its_own_pty_for_host_programs(tmp_path):
    link = UartPty()
    with VirtualBoard(tmp_path / "flash", uart=link) as b:
        host = serial.Serial(link.port, timeout=5)
        t = transport(b)
        try:
            host.write(b"from host\n")
            t.exec("import machine\nu = machine.UART(1, timeout=3000)")
            assert t.eval("u.readline()") == b"from host\n"
            t.exec("u.write(b'from board\\n')")
            assert host.readline() == b"from board\n"
        finally:
            t.close()
            host.close()


# ---- the command -------------------------------------------------------------------------------

def test_cli_runs_a_board_that_mpremote_and_monitor_reset_use(tmp_path):
    from mcuforge.host_tools.transport import lookup_port, open_transport

    port_file = tmp_path / "port"
    proc = subprocess.Popen([MCUFORGE, "virtual-board", "--flash-dir", str(tmp_path / "flash"),
                             "--port-file", str(port_file)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while not port_file.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        port = port_file.read_text().strip()
        mpremote(port, "exec", "open('x.txt', 'w').write('1')")
        assert (tmp_path / "flash" / "x.txt").read_text() == "1"
        assert lookup_port(port)["kind"] == "virtual-board"
        # The monitor's reset (Ctrl-T Ctrl-R) power-cycles it.
        with open_transport(port) as link:
            assert link.kind == "virtual-board"
            link.reset()
        assert "ok" in mpremote(port, "exec", "print('ok')")
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err.decode()
    assert b"virtual board on /dev/pts/" in out and b"virtual board stopped" in out
    assert not port_file.exists()


def test_cli_refuses_lora_and_pty_together(tmp_path):
    result = subprocess.run([MCUFORGE, "virtual-board", "--flash-dir", str(tmp_path), "--uart-pty",
                             "--lora-peer", "127.0.0.1:7000"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 1 and "error:" in result.stderr and "Traceback" not in result.stderr
