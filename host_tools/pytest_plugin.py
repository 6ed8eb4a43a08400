"""pytest fixtures for board-in-the-loop tests of your own firmware, as with pytest-embedded.

Installed with mcuforge (entry point `pytest11`), so a test needs no import:

    def test_boots(dut):
        hello = dut.expect_record("hello", timeout=10)
        assert hello["protocol"] == 1
        dut.write_line("bench")
        dut.expect(r'"bench":"ready"')

    pytest --mcuforge-board mps3-an547 --mcuforge-firmware build/firmware.elf
    pytest --mcuforge-board mps3-an547,mps2-an386 --mcuforge-firmware ...     # each test on both
    pytest --mcuforge-board nrf52840dk --mcuforge-port /dev/ttyACM0             # a physical board
    pytest --mcuforge-board virtual-board --mcuforge-firmware app/              # app/ becomes its flash

Where the board comes from, first found: an indirect parametrization of `mcuforge_board`,
the `mcuforge` marker (`@pytest.mark.mcuforge(board=..., firmware=..., port=...)`), the
command-line options. A test module can also override the `mcuforge_firmware` fixture to build
its firmware for the board it gets. A test that needs a board it cannot have here (no board
given, a physical board without a port, no QEMU or Node) is skipped with the reason.

Fixtures:
- `dut`: the started DUT (host_tools/dut.py); it is closed after the test, which stops the
  QEMU or virtual board it started. When the test fails, the report shows the board's last
  console lines.
- `dut_factory(board=..., firmware=..., port=...)`: more DUTs in one test (two boards
  talking), all closed after it.
- `mcuforge_board`, `mcuforge_firmware`, `mcuforge_port`: what `dut` is made from.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

MARKER = "mcuforge"
DEFAULT_TIMEOUT_S = 10.0
CONSOLE_LINES_ON_FAILURE = 30
_DUTS = pytest.StashKey[list]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mcuforge", "mcuforge board-in-the-loop tests (the dut fixture)")
    group.addoption("--mcuforge-board", default=None, metavar="BOARD[,BOARD...]",
                    help="Board(s) the dut fixture runs on (mcuforge boards lists them; virtual-board for a virtual "
                         "MicroPython board). Several: every dut test runs on each.")
    group.addoption("--mcuforge-firmware", default=None, metavar="PATH",
                    help="Firmware to run: an ELF or a project built by mcuforge (emulated boards run it under QEMU, "
                         "physical boards are flashed with it); for the virtual board, a folder that becomes its flash.")
    group.addoption("--mcuforge-port", default=None, metavar="PORT",
                    help="Console port of a physical board (or of a board already running).")
    group.addoption("--mcuforge-probe", default=None, metavar="SERIAL", help="Debug probe that flashes the board.")
    group.addoption("--mcuforge-timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="SECONDS",
                    help="Default timeout of dut.expect().")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{MARKER}(board=None, firmware=None, port=None, probe=None): what the dut "
                                       "fixture runs on, for this test")


def _boards_option(config: pytest.Config) -> list[str]:
    text = config.getoption("--mcuforge-board", default=None)
    return [b.strip() for b in text.split(",") if b.strip()] if text else []


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Several boards on the command line: every test that uses the board runs on each, unless the
    test names its board itself."""
    boards = _boards_option(metafunc.config)
    if len(boards) < 2 or "mcuforge_board" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker(MARKER)
    if marker is not None and marker.kwargs.get("board"):
        return
    for parametrize in metafunc.definition.iter_markers("parametrize"):
        names = parametrize.args[0] if parametrize.args else parametrize.kwargs.get("argnames", "")
        if "mcuforge_board" in (names.split(",") if isinstance(names, str) else names):
            return
    metafunc.parametrize("mcuforge_board", boards, indirect=True, ids=boards)


def _from_marker(request: pytest.FixtureRequest, key: str):
    marker = request.node.get_closest_marker(MARKER)
    return marker.kwargs.get(key) if marker is not None else None


def _skip_unless_runnable(board: str, port: str | None) -> None:
    from .dut import VIRTUAL_BOARD

    if board == VIRTUAL_BOARD:
        if port is None and shutil.which("node") is None:
            pytest.skip("the virtual board needs Node (Debian: nodejs)")
        return
    from mcuforge.boards import load_board

    board_data = load_board(board)
    if board_data.flash.get("tool") == "qemu" and port is None:
        if shutil.which("qemu-system-arm") is None:
            pytest.skip(f"{board} is emulated by qemu-system-arm, which is not installed (Debian: qemu-system-arm)")
        return
    if port is None:
        pytest.skip(f"{board} is a physical board: give its console with --mcuforge-port (hardware test)")


@pytest.fixture
def mcuforge_board(request: pytest.FixtureRequest) -> str:
    """The board the dut runs on."""
    board = getattr(request, "param", None) or _from_marker(request, "board")
    if board is None:
        boards = _boards_option(request.config)
        board = boards[0] if boards else None
    if board is None:
        pytest.skip("no board: pass --mcuforge-board BOARD (or mark the test with @pytest.mark.mcuforge(board=...))")
    return board


@pytest.fixture
def mcuforge_firmware(request: pytest.FixtureRequest, mcuforge_board: str) -> Path | None:
    """The firmware the dut runs (override this fixture to build it for `mcuforge_board`)."""
    firmware = _from_marker(request, "firmware") or request.config.getoption("--mcuforge-firmware")
    return Path(firmware) if firmware else None


@pytest.fixture
def mcuforge_port(request: pytest.FixtureRequest) -> str | None:
    """The console port of a physical board, or of one already running."""
    return _from_marker(request, "port") or request.config.getoption("--mcuforge-port")


def _open(request: pytest.FixtureRequest, board: str, firmware, port: str | None, probe: str | None = None):
    from .dut import open_dut

    _skip_unless_runnable(board, port)
    probe = probe or _from_marker(request, "probe") or request.config.getoption("--mcuforge-probe")
    dut = open_dut(board, firmware=firmware, port=port, probe=probe,
                   timeout=request.config.getoption("--mcuforge-timeout"))
    request.node.stash.setdefault(_DUTS, []).append(dut)
    return dut


@pytest.fixture
def dut(request: pytest.FixtureRequest, mcuforge_board: str, mcuforge_firmware, mcuforge_port):
    """A started DUT on the board; closed (and what it started, stopped) after the test."""
    device = _open(request, mcuforge_board, mcuforge_firmware, mcuforge_port)
    try:
        yield device
    finally:
        device.close()


@pytest.fixture
def dut_factory(request: pytest.FixtureRequest):
    """`dut_factory(board, firmware=None, port=None)`: another started DUT; all closed after the test."""
    opened = []

    def make(board: str, firmware=None, port: str | None = None, probe: str | None = None):
        device = _open(request, board, firmware, port, probe)
        opened.append(device)
        return device

    try:
        yield make
    finally:
        for device in reversed(opened):
            device.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed and report.when in ("setup", "call"):
        for device in item.stash.get(_DUTS, []):
            lines = device.recent_lines(CONSOLE_LINES_ON_FAILURE)
            report.sections.append((f"mcuforge console: {device.service.describe()}",
                                    "\n".join(lines) if lines else "(the board printed nothing)"))
