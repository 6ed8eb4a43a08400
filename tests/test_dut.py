"""The DUT object and its pytest fixtures: expect() over a console stream, write, reset, on a
pseudo-terminal the test drives, on real firmware under QEMU, and on the virtual MicroPython
board; and the plugin's options used the way a user's test suite uses them."""
import os
import shutil
import threading
import time
import tty
from pathlib import Path

import numpy as np
import pytest

from conftest import nothing_left_running  # noqa: F401  (autouse: no QEMU or Node left behind)

from mcuforge.codegen.errors import McuforgeError
from mcuforge.host_tools.dut import (
    ConsoleClosed, Dut, ExpectTimeout, QemuService, SerialService, VirtualBoardService, service_for,
)

MODELS_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "models"
HELLO_WORLD = MODELS_DIR / "hello_world_int8.tflite"
EMULATED = ["mps3-an547", "mps2-an386"]

pytest_plugins = ["pytester"]

needs_qemu = pytest.mark.skipif(shutil.which("qemu-system-arm") is None or shutil.which("arm-none-eabi-gcc") is None,
                                reason="qemu-system-arm and arm-none-eabi-gcc are needed (Debian: qemu-system-arm, "
                                       "gcc-arm-none-eabi, libnewlib-arm-none-eabi)")
needs_node = pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed (Debian: nodejs)")




# ---- a board the test plays: the far end of a pseudo-terminal ----------------------------------

class FakeBoard:
    def __init__(self):
        self.master, slave = os.openpty()
        tty.setraw(slave)
        self.port = os.ttyname(slave)
        self._slave = slave

    def say(self, data: bytes) -> None:
        os.write(self.master, data)

    def heard(self, size=4096, timeout=2.0) -> bytes:
        import select

        ready, _, _ = select.select([self.master], [], [], timeout)
        return os.read(self.master, size) if ready else b""

    def unplug(self) -> None:
        for fd in (self.master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass


@pytest.fixture
def fake():
    board = FakeBoard()
    yield board
    board.unplug()


@pytest.fixture
def fake_dut(fake):
    dut = Dut(SerialService(fake.port), timeout=2)
    yield dut
    dut.close()


def test_expect_walks_through_the_output_in_order(fake, fake_dut):
    fake.say(b"boot v1.2\r\nready\r\nvalue=7\r\nvalue=9\r\n")
    assert fake_dut.expect(r"boot v([\d.]+)").group(1) == "1.2"
    assert fake_dut.expect(r"^value=(\d+)").group(1) == "7"     # ^ and $ match at line ends
    assert fake_dut.expect(b"value=(\\d+)").group(1) == "9"     # bytes patterns work on the text too
    assert fake_dut.expect_exact("") is not None
    with pytest.raises(ExpectTimeout):
        fake_dut.expect("ready", timeout=0.3)                    # already behind the cursor


def test_expect_waits_for_output_that_comes_later_and_split_utf8(fake, fake_dut):
    text = "température 21°C\n".encode()
    threading.Timer(0.2, fake.say, args=(text[:5],)).start()
    threading.Timer(0.4, fake.say, args=(text[5:],)).start()
    match = fake_dut.expect(r"température (\d+)°C", timeout=3)
    assert match.group(1) == "21"


def test_timeout_error_names_the_pattern_and_shows_recent_lines(fake, fake_dut):
    fake.say(b"".join(b"line %d\n" % i for i in range(40)))
    fake_dut.expect("line 39")
    with pytest.raises(ExpectTimeout) as info:
        fake_dut.expect(r"never \d+", timeout=0.3)
    message = str(info.value)
    assert "nothing matched /never \\d+/ within 0.3 s" in message
    assert "| line 39" in message and "| line 25" in message and "| line 20" not in message
    assert info.value.where == fake.port


def test_expect_record_skips_other_lines_and_fails_on_error_records(fake, fake_dut):
    fake.say(b'banner\n{"inference":0,"cycles":5}\n{"bench":"ready","inputs":[1]}\n')
    assert fake_dut.expect_record("bench") == {"bench": "ready", "inputs": [1]}
    fake.say(b'{"vec":0,"cycles":3,"out":["01"]}\n{"vec":1,"cycles":4,"out":["02"]}\n')
    assert fake_dut.expect_record("vec", vec=1)["out"] == ["02"]
    fake.say(b'{"error":"run: the vector is not hex"}\n')
    with pytest.raises(McuforgeError) as info:
        fake_dut.expect_record("vec", timeout=1)
    assert "the vector is not hex" in info.value.what


def test_write_reaches_the_board(fake, fake_dut):
    fake_dut.write_line("bench")
    fake_dut.write(b"run 05\n")
    received = b""
    deadline = time.monotonic() + 2
    while received.count(b"\n") < 2 and time.monotonic() < deadline:
        received += fake.heard()
    assert received == b"bench\nrun 05\n"


def test_a_vanishing_port_fails_fast_with_console_closed(fake, fake_dut):
    fake.say(b"about to crash\n")
    fake_dut.expect("about to crash")
    fake.unplug()
    started = time.monotonic()
    with pytest.raises(ConsoleClosed) as info:
        fake_dut.expect("never", timeout=10)
    assert time.monotonic() - started < 5
    assert "closed" in info.value.what and "about to crash" in info.value.what


def test_a_pty_cannot_be_reset_and_says_so(fake_dut):
    with pytest.raises(McuforgeError) as info:
        fake_dut.reset()
    assert "DTR/RTS" in info.value.what


def test_service_for_picks_the_link_from_the_board_file(tmp_path):
    elf = tmp_path / "app.elf"
    elf.write_bytes(b"\x7fELF")
    assert isinstance(service_for("mps3-an547", elf), QemuService)
    assert isinstance(service_for("virtual-board"), VirtualBoardService)
    assert isinstance(service_for("virtual-board", port="/dev/pts/99"), SerialService)
    assert isinstance(service_for("nrf52840dk", port="/dev/ttyACM0"), SerialService)
    with pytest.raises(McuforgeError) as info:
        service_for("nrf52840dk")
    assert "physical board" in info.value.what and info.value.where == "port"
    with pytest.raises(McuforgeError) as info:
        service_for("mps3-an547")
    assert "needs the firmware" in info.value.what
    with pytest.raises(McuforgeError) as info:
        service_for("nrf52840dk", elf, port="/dev/ttyACM0")
    assert "project built by mcuforge" in info.value.what


# ---- the fixtures, on real firmware under QEMU and on the virtual board ----------------------------

@pytest.fixture(scope="module")
def hello_world_apps(tmp_path_factory):
    """The hello_world model in the bare-metal application, one build per emulated board."""
    if not HELLO_WORLD.exists():
        pytest.skip(f"model not present: {HELLO_WORLD}")
    from mcuforge.host_tools.firmware import AppSettings
    from mcuforge.host_tools.project import build_firmware

    built = {}

    def build(board):
        if board not in built:
            out = tmp_path_factory.mktemp(f"app-{board}")
            result = build_firmware(HELLO_WORLD, board, "baremetal", "aot", out,
                                    settings=AppSettings(period_ms=20, iterations=0), compile=True)
            built[board] = Path(result["build"]["artifacts"][0])
        return built[board]

    return build


@pytest.fixture
def mcuforge_firmware(request, mcuforge_board, hello_world_apps, tmp_path):
    """Overrides the plugin's fixture: the firmware is built for whichever board the test gets."""
    if mcuforge_board == "virtual-board":
        app = tmp_path / "app"
        app.mkdir()
        (app / "main.py").write_text("import machine\nprint('app started, reset cause', machine.reset_cause())\n")
        return app
    return hello_world_apps(mcuforge_board)


@needs_qemu
@pytest.mark.qemu
@pytest.mark.parametrize("mcuforge_board", EMULATED, indirect=True)
def test_dut_runs_a_bench_session_resets_and_quits_under_qemu(dut, mcuforge_board):
    from mcuforge.codegen.reference import run_reference

    hello = dut.expect_record("hello")
    assert hello["board"] == mcuforge_board and hello["inputs"] == [1] and hello["outputs"] == [1]
    first = dut.expect_record("inference")
    assert first["inference"] == 0 and first["stack_hwm"] > 0

    dut.write_line("bench")
    dut.expect(r'^\{"bench":"ready"')
    vector = np.array([[37]], dtype=np.int8)
    dut.write_line("run " + vector.tobytes().hex())
    record = dut.expect_record("vec")
    want = run_reference(HELLO_WORLD.read_bytes(), [[vector]])[0][0]
    assert bytes.fromhex(record["out"][0]) == want.tobytes()
    dut.write_line("end")
    assert dut.expect_record("done") == {"done": 1}

    dut.reset()  # QMP system_reset: the firmware starts again
    assert dut.expect_record("hello")["board"] == mcuforge_board
    assert dut.expect_record("inference")["inference"] == 0

    dut.write_line("quit")
    # The exit status is the check: the kernel may drop the last line QEMU writes to its pty
    # just before it exits (the pty hangs up), so {"stopped":N} is not waited for.
    assert dut.wait_exit(10) == 0
    with pytest.raises(ConsoleClosed):
        dut.expect("anything more", timeout=5)


@needs_node
@pytest.mark.mcuforge(board="virtual-board")
def test_dut_on_the_virtual_board_runs_main_py_talks_to_the_repl_and_power_cycles(dut):
    assert dut.expect(r"app started, reset cause (\d+)", timeout=15).group(1) == "1"   # PWRON_RESET
    dut.expect(">>> ")
    dut.write("print(6 * 7)\r")
    assert dut.expect(r"^(\d+)\r?$").group(1) == "42"
    dut.reset()  # a power cycle: main.py runs again
    assert dut.expect(r"app started, reset cause (\d+)", timeout=15).group(1) == "1"
    assert dut.service.flash_dir.joinpath("main.py").is_file()


@needs_qemu
@pytest.mark.qemu
def test_dut_factory_runs_two_boards_at_once(dut_factory, hello_world_apps):
    m55 = dut_factory("mps3-an547", firmware=hello_world_apps("mps3-an547"))
    m4 = dut_factory("mps2-an386", firmware=hello_world_apps("mps2-an386"))
    assert m55.expect_record("hello")["clock_hz"] == 32_000_000
    assert m4.expect_record("hello")["clock_hz"] == 25_000_000
    assert m55.port != m4.port


def test_the_dut_fixture_skips_without_a_board(pytester):
    pytester.makepyfile("""
        def test_needs_a_board(dut):
            raise AssertionError("must not run")
    """)
    result = pytester.runpytest("-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*no board: pass --mcuforge-board*"])


def test_a_physical_board_without_a_port_is_skipped_as_hardware(pytester):
    pytester.makepyfile("""
        def test_on_the_devkit(dut):
            raise AssertionError("must not run")
    """)
    result = pytester.runpytest("-rs", "--mcuforge-board", "nrf52840dk")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*nrf52840dk is a physical board*--mcuforge-port*"])


@needs_qemu
@pytest.mark.qemu
def test_a_users_suite_runs_on_two_boards_from_the_command_line(pytester, hello_world_apps):
    """What a user writes: tests of their own firmware, with the board and firmware given to pytest.
    A failing test shows the board's console in its report."""
    firmware = hello_world_apps("mps3-an547")
    pytester.makepyfile("""
        def test_says_hello(dut, mcuforge_board):
            assert dut.expect_record("hello")["board"] == mcuforge_board

        def test_that_fails(dut):
            dut.expect_record("hello")
            dut.expect("a line the firmware never prints", timeout=0.5)
    """)
    result = pytester.runpytest("--mcuforge-board", "mps3-an547", "--mcuforge-firmware", str(firmware),
                                "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*nothing matched /a line the firmware never prints/*",
                                 "*mcuforge console: QEMU mps3-an547*", '*{"hello":"mcuforge"*'])

    # Firmware per board, as a user's conftest.py builds or finds it; every test then runs on each board.
    pytester.makeconftest(f"""
        import pytest
        FIRMWARE = {{"mps3-an547": {str(firmware)!r}, "mps2-an386": {str(hello_world_apps("mps2-an386"))!r}}}

        @pytest.fixture
        def mcuforge_firmware(mcuforge_board):
            return FIRMWARE[mcuforge_board]
    """)
    both = pytester.runpytest("--mcuforge-board", "mps3-an547,mps2-an386", "-k", "says_hello", "-v")
    both.assert_outcomes(passed=2)
    both.stdout.fnmatch_lines(["*test_says_hello?mps3-an547? PASSED*", "*test_says_hello?mps2-an386? PASSED*"])
