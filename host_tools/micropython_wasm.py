"""Run code under real MicroPython on the host: the WebAssembly port, under Node.

The device runtime (micropython_modules/) is tested here, not under CPython. Each run starts a
fresh MicroPython VM with:

- the runtime modules in `/lib` (on `sys.path`, as `mpremote cp` would put them on a board);
- extra files, such as test modules, wherever the caller wants them;
- a host folder standing for the board's flash at `/flash`, the working directory. The port has
  no host filesystem, so the folder is copied in before the run and mirrored back after it.
  Files the runtime wrote therefore survive into the next run, as they survive a power cycle.

`run_unittest_module` runs one MicroPython `unittest` module in one VM and returns a result per
test, parsed from a machine-readable line that a small driver prints inside MicroPython.
"""
from __future__ import annotations

import ast
import base64
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from mcuforge.codegen.errors import McuforgeError
from mcuforge.micropython_modules import MODULES_DIR

WASM_PACKAGE = "@micropython/micropython-webassembly-pyscript"
WASM_ENTRY = "micropython.mjs"
WASM_ENV = "MCUFORGE_MICROPYTHON_MJS"
HELPER = Path(__file__).resolve().parent / "mp_wasm_run.mjs"
VM_LIB = "/lib"
VM_FLASH = "/flash"
VM_TESTS = "/tests"
DEFAULT_HEAPSIZE = 1024 * 1024
DEFAULT_PYSTACK = 4096
TEST_MARKER = "@@MFTEST "
PLAN_MARKER = "@@MFPLAN "
DONE_MARKER = "@@MFDONE "
# The host-side locator of the runtime package; a board never gets it.
NOT_DEPLOYED = {"__init__.py"}


@dataclass
class RunResult:
    stdout: str
    stderr: str
    exit_ok: bool
    timed_out: bool = False

    def check(self) -> "RunResult":
        """Returns self, or raises McuforgeError with MicroPython's traceback if the code failed."""
        if not self.exit_ok:
            what = "MicroPython code timed out" if self.timed_out else "MicroPython code raised an exception"
            raise McuforgeError(f"{what}:\n{self.stderr.strip() or '(no traceback)'}",
                                where="MicroPython (WebAssembly port)",
                                fix="read the traceback above; the stdout so far was:\n" + _tail(self.stdout))
        return self


@dataclass
class TestOutcome:
    name: str          # "module::Class::test_method"
    status: str        # "ok", "fail", "error" or "skip"
    message: str = ""
    ms: int = 0


@dataclass
class ModuleReport:
    module: str
    outcomes: list[TestOutcome] = field(default_factory=list)
    run: RunResult | None = None
    completed: bool = False
    discovered: list[str] = field(default_factory=list)  # the tests MicroPython found in the module

    def by_name(self) -> dict[str, TestOutcome]:
        return {o.name: o for o in self.outcomes}


def _tail(text: str, lines: int = 15) -> str:
    kept = text.rstrip().splitlines()[-lines:]
    return "\n".join(kept) if kept else "(no output)"


def find_micropython_mjs() -> Path:
    """Where the pinned MicroPython WebAssembly package lives: $MCUFORGE_MICROPYTHON_MJS, or a
    node_modules folder above this package or above the working directory."""
    env = os.environ.get(WASM_ENV)
    if env:
        path = Path(env)
        if path.is_file():
            return path
        raise McuforgeError(f"{WASM_ENV} points at {path}, which does not exist", where=WASM_ENV,
                            fix=f"point it at {WASM_PACKAGE}/{WASM_ENTRY} inside node_modules, or unset it")
    starts = [Path(__file__).resolve().parent, Path.cwd().resolve()]
    for start in starts:
        for folder in (start, *start.parents):
            candidate = folder / "node_modules" / WASM_PACKAGE / WASM_ENTRY
            if candidate.is_file():
                return candidate
    raise McuforgeError(f"the MicroPython WebAssembly port ({WASM_PACKAGE}) is not installed",
                        where="node_modules above " + " and ".join(str(s) for s in starts),
                        fix="run `npm ci` in the repository (scripts/bootstrap.sh does it), or set "
                            f"{WASM_ENV} to the path of {WASM_ENTRY}")


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        raise McuforgeError("node is not installed; the MicroPython WebAssembly port runs under Node",
                            where="PATH", fix="install Node 20 or later (Debian package nodejs)")
    return node


def runtime_module_files(modules_dir: Path = MODULES_DIR) -> list[Path]:
    """The runtime's MicroPython modules, as they are deployed to a board."""
    return sorted(p for p in modules_dir.glob("*.py") if p.name not in NOT_DEPLOYED)


def _encode_files(files: dict[str, str | bytes]) -> dict[str, str]:
    encoded = {}
    for vm_path, content in files.items():
        data = content.encode() if isinstance(content, str) else bytes(content)
        encoded[vm_path] = base64.b64encode(data).decode("ascii")
    return encoded


def run_micropython(code: str | list[str], files: dict[str, str | bytes] | Path | None = None,
                    flash_dir: Path | None = None, heapsize: int = DEFAULT_HEAPSIZE,
                    timeout: float = 120.0, pystack: int = DEFAULT_PYSTACK,
                    with_runtime: bool = True) -> RunResult:
    """Runs `code` in a fresh MicroPython VM and returns its output.

    code: the source, or a list of sources run one after the other in the same VM, stopping at
    the first that raises. Split long runs: this port frees garbage only between two of them.

    files: extra files, either {vm_path: content} or a host folder whose contents go to /tests
    (also on sys.path). flash_dir: the host folder behind /flash, the working directory; files
    written there are copied back when the run ends. With no flash_dir, /flash starts empty and
    is thrown away. with_runtime: put the runtime modules in /lib.
    """
    trees = []
    if with_runtime:
        staged = {f"{VM_LIB}/{p.name}": p.read_bytes() for p in runtime_module_files()}
    else:
        staged = {}
    if isinstance(files, (str, Path)):
        trees.append({"host": str(Path(files).resolve()), "vm": VM_TESTS, "writeback": False})
    elif files:
        staged.update(files)
    if flash_dir is not None:
        flash_dir = Path(flash_dir)
        flash_dir.mkdir(parents=True, exist_ok=True)
        trees.append({"host": str(flash_dir.resolve()), "vm": VM_FLASH, "writeback": True})
    prelude = f"import sys\nsys.path.append('{VM_TESTS}')\n"
    job = {
        "micropython": str(find_micropython_mjs()),
        "heapsize": heapsize,
        "pystack": pystack,
        "trees": trees,
        "files": _encode_files(staged),
        "cwd": VM_FLASH,
        "chunks": [prelude] + ([code] if isinstance(code, str) else list(code)),
    }
    command = [_node(), str(HELPER)]
    try:
        proc = subprocess.run(command, input=json.dumps(job).encode(), capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        return RunResult(stdout=(exc.stdout or b"").decode(errors="replace"),
                         stderr=(exc.stderr or b"").decode(errors="replace")
                         + f"\ntimed out after {timeout:g} s (flash not written back)",
                         exit_ok=False, timed_out=True)
    if proc.returncode == 2:
        raise McuforgeError("the MicroPython runner (Node helper) failed:\n" + _tail(proc.stderr.decode(errors="replace")),
                            where=str(HELPER),
                            fix="check the Node version (20 or later) and the npm package "
                                f"{WASM_PACKAGE} (npm ci)")
    return RunResult(stdout=proc.stdout.decode(errors="replace"), stderr=proc.stderr.decode(errors="replace"),
                     exit_ok=proc.returncode == 0)


# Runs inside MicroPython: imports one test module, then runs the tests it is asked for, one
# chunk each, printing one JSON line per test. Written for MicroPython's unittest, which has no
# per-test result list of its own.
_DRIVER = r"""
import sys, io, json, time, unittest

def _mf_trace(exc):
    buf = io.StringIO()
    sys.print_exception(exc, buf)
    return buf.getvalue()

def _mf_emit(name, status, message, ms):
    print('\n' + MARKER + json.dumps({'name': name, 'status': status, 'message': message, 'ms': ms}))

def _mf_nothing():
    pass

def _mf_call(fn):
    try:
        fn()
        return 'ok', ''
    except unittest.SkipTest as exc:
        return 'skip', str(exc.args[0]) if exc.args else ''
    except AssertionError as exc:
        return 'fail', _mf_trace(exc)
    except Exception as exc:
        return 'error', _mf_trace(exc)

def _mf_classes(modname):
    mod = __import__(modname)
    found = []
    for cname in sorted(dir(mod)):
        cls = getattr(mod, cname)
        if isinstance(cls, type) and issubclass(cls, unittest.TestCase) and cls is not unittest.TestCase:
            names = [n for n in sorted(dir(cls)) if n.startswith('test') and callable(getattr(cls, n))]
            if names:
                found.append((cname, cls, names))
    return found

def _mf_start(modname):
    global _mf_plan, _mf_count
    _mf_count = 0
    try:
        _mf_plan = _mf_classes(modname)
    except Exception as exc:
        _mf_plan = []
        _mf_emit(modname + '::<import>', 'error', _mf_trace(exc), 0)
    names = [modname + '::' + c + '::' + t for c, cls, ts in _mf_plan for t in ts]
    print('\n' + PLAN + json.dumps(names))

def _mf_test(modname, cname, tname):
    global _mf_count
    full = modname + '::' + cname + '::' + tname
    for name, cls, names in _mf_plan:
        if name == cname and tname in names:
            break
    else:
        _mf_emit(full, 'error', 'no such test in the module as MicroPython imported it', 0)
        return
    _mf_count += 1
    state = _mf_class_state.get(cname)
    if state is None:
        setup_class = getattr(cls, 'setUpClass', None)
        state = _mf_class_state[cname] = _mf_call(setup_class) if setup_class else ('ok', '')
    if state[0] != 'ok':
        _mf_emit(full, state[0], 'setUpClass: ' + state[1], 0)
        return
    case = cls()
    t0 = time.ticks_ms()
    st, msg = _mf_call(getattr(case, 'setUp', _mf_nothing))
    if st == 'ok':
        st, msg = _mf_call(getattr(case, tname))
        st2, msg2 = _mf_call(getattr(case, 'tearDown', _mf_nothing))
        if st == 'ok' and st2 != 'ok':
            st, msg = st2, 'tearDown: ' + msg2
    if hasattr(case, 'doCleanups'):
        st3, msg3 = _mf_call(case.doCleanups)
        if st == 'ok' and st3 != 'ok':
            st, msg = st3, 'cleanup: ' + msg3
    _mf_emit(full, st, msg, time.ticks_diff(time.ticks_ms(), t0))

def _mf_class_done(cname):
    for name, cls, names in _mf_plan:
        if name == cname and _mf_class_state.get(cname, ('',))[0] == 'ok':
            teardown_class = getattr(cls, 'tearDownClass', None)
            if teardown_class:
                _mf_call(teardown_class)

def _mf_finish():
    print('\n' + DONE + json.dumps({'tests': _mf_count}))

_mf_class_state = {}
"""


def parse_test_lines(stdout: str) -> tuple[list[TestOutcome], list[str], bool]:
    """The driver's lines: (outcomes, tests discovered in the module, whether it finished)."""
    outcomes, discovered, done = [], [], False
    for line in stdout.splitlines():
        if line.startswith(TEST_MARKER):
            record = json.loads(line[len(TEST_MARKER):])
            outcomes.append(TestOutcome(record["name"], record["status"], record.get("message", ""),
                                        record.get("ms", 0)))
        elif line.startswith(PLAN_MARKER):
            discovered = json.loads(line[len(PLAN_MARKER):])
        elif line.startswith(DONE_MARKER):
            done = True
    return outcomes, discovered, done


def run_unittest_module(module_path: Path, flash_dir: Path | None = None, only: list[str] | None = None,
                        timeout: float = 300.0, heapsize: int = DEFAULT_HEAPSIZE) -> ModuleReport:
    """Runs the MicroPython unittest module at `module_path` in one VM (its folder goes on
    sys.path, so helper modules beside it can be imported). Tests are named module::Class::test
    and found by reading the source (collect_test_names); each runs in its own chunk, so that
    memory is reclaimed between tests. `only`: run just these names."""
    module_path = Path(module_path)
    module = module_path.stem
    names = collect_test_names(module_path)
    if only is not None:
        names = [n for n in names if n in set(only)]
    chunks = [f"MARKER = {TEST_MARKER!r}\nPLAN = {PLAN_MARKER!r}\nDONE = {DONE_MARKER!r}\n" + _DRIVER + f"\n_mf_start({module!r})\n"]
    previous_class = None
    for name in names:
        _, cls, test = name.split("::")
        if previous_class not in (None, cls):
            chunks.append(f"_mf_class_done({previous_class!r})")
        chunks.append(f"_mf_test({module!r}, {cls!r}, {test!r})")
        previous_class = cls
    if previous_class is not None:
        chunks.append(f"_mf_class_done({previous_class!r})")
    chunks.append("_mf_finish()")
    with tempfile.TemporaryDirectory(prefix="mcuforge-mpflash-") as scratch:
        run = run_micropython(chunks, files=module_path.parent, flash_dir=flash_dir or Path(scratch),
                              timeout=timeout, heapsize=heapsize)
    outcomes, discovered, done = parse_test_lines(run.stdout)
    return ModuleReport(module=module, outcomes=outcomes, run=run, completed=done and run.exit_ok,
                        discovered=discovered)


def collect_test_names(module_path: Path) -> list[str]:
    """The tests in a MicroPython unittest module, found by reading its source (no VM needed),
    in the order the driver runs them: module::Class::test_method."""
    module_path = Path(module_path)
    tree = ast.parse(module_path.read_text(), filename=str(module_path))
    case_classes: dict[str, list[str]] = {}
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        bases = {ast.unparse(b) for b in node.bases}
        if not ({"unittest.TestCase", "TestCase"} & bases or bases & set(case_classes)):
            continue
        methods = [f.name for f in node.body if isinstance(f, ast.FunctionDef) and f.name.startswith("test")]
        for base in bases & set(case_classes):
            methods += case_classes[base]
        case_classes[node.name] = sorted(set(methods))
    return [f"{module_path.stem}::{cls}::{name}" for cls in sorted(case_classes) for name in case_classes[cls]]
