"""Render, build and size the bare-metal test firmware, and its host twin.

A rendered bare-metal project is a folder a user can also build with `make`:

    Makefile, linker.ld, mcuforge_project.json
    app/     the application (mcuforge_app.c, port.h), the same on every platform
    port/    start-up, linker symbols' users, UART, semihosting, cycle counter
    model/   the model's C sources, copied from the emitter's output
    build/   firmware.elf and firmware.map

Everything the templates show (memory map, section placement, flags) is computed here.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jinja2

from mcuforge.boards import Board, load_board
from mcuforge.codegen.errors import McuforgeError
from mcuforge.firmware_templates import TEMPLATES_DIR
from mcuforge.host_tools.qemu import qemu_command

ARM_GCC = "arm-none-eabi-gcc"
ARM_SIZE = "arm-none-eabi-size"
ARM_TOOLCHAIN_PACKAGES = "gcc-arm-none-eabi libnewlib-arm-none-eabi"
HOST_CC_PACKAGE = "gcc"

BUILD_DIR = "build"
ELF_NAME = "firmware.elf"
MAP_NAME = "firmware.map"
LINKER_SCRIPT = "linker.ld"
PROJECT_MANIFEST = "mcuforge_project.json"
HOST_RUNNER_NAME = "mcuforge_host_runner"
SOURCE_DIRS = ("app", "port", "model")

DEFAULT_STACK_BYTES = 16 * 1024
DEFAULT_HEAP_BYTES = 4 * 1024
SECTION_KINDS = ("code", "rodata", "weights", "data", "bss", "stack", "heap", "arena")

_COMMON_CFLAGS = ["-O2", "-g", "-std=gnu11", "-Wall", "-ffunction-sections", "-fdata-sections"]
_C_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_COMPILER_ERROR = re.compile(r"(error|undefined reference|multiple definition|will not fit|overflowed)", re.I)
_REGION_OVERFLOW = re.compile(r"region [`'](\w+)' overflowed by (\d+) bytes")


# ---- rendering -------------------------------------------------------------------------------

def _jinja_environment() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)), undefined=jinja2.StrictUndefined,
                              trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
                              autoescape=False)


def _render_tree(template_subdir: str, out_dir: Path, context: dict) -> list[Path]:
    """Render every `.j2` file of a template folder (dropping the suffix) and copy the others."""
    source_root = TEMPLATES_DIR / template_subdir
    environment = _jinja_environment()
    written = []
    for source in sorted(p for p in source_root.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        relative = source.relative_to(source_root)
        if source.suffix == ".j2":
            target = out_dir / relative.with_suffix("")
            template = environment.get_template(source.relative_to(TEMPLATES_DIR).as_posix())
            text = template.render(**context)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        else:
            target = out_dir / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
        written.append(target)
    return written


def _check_model_name(model_name: str) -> None:
    if not _C_IDENTIFIER.match(model_name):
        raise McuforgeError(f"model name {model_name!r} is not a C identifier", where="model_name",
                            fix="use letters, digits and underscores, not starting with a digit")


def _read_model_sources(model_dir: Path, model_name: str) -> dict[Path, bytes]:
    """The emitter's .c and .h files, by path relative to model_dir, read before anything is replaced."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise McuforgeError(f"model source folder not found: {model_dir}",
                            fix="emit the model's C code first (emit_aot)")
    for required in (f"{model_name}.h", f"{model_name}.c"):
        if not (model_dir / required).is_file():
            raise McuforgeError(f"model source folder has no {required}", where=str(model_dir),
                                fix=f"emit the model with name={model_name!r}, or pass the model_name it was emitted with")
    return {p.relative_to(model_dir): p.read_bytes()
            for p in sorted(model_dir.rglob("*")) if p.is_file() and p.suffix in (".c", ".h")}


def _write_model_sources(sources: dict[Path, bytes], model_out: Path) -> None:
    for relative, data in sources.items():
        target = model_out / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


def _replace_source_dirs(project_dir: Path) -> None:
    """Rendering starts from clean source folders, so that no file of an earlier model is built."""
    for name in SOURCE_DIRS:
        shutil.rmtree(project_dir / name, ignore_errors=True)


def _as_board(board: Board | str) -> Board:
    return board if isinstance(board, Board) else load_board(board)


def _console_define(board: Board) -> str:
    console = board.console
    if console.get("kind") == "uart" and console.get("uart_driver") == "cmsdk-apb-uart" and "uart_base" in console:
        return "UART_CMSDK"
    if console.get("kind") == "semihosting":
        return "SEMIHOSTING"
    raise McuforgeError(f"the bare-metal firmware has no driver for the console of board {board.name} "
                        f"({console.get('kind')}, driver {console.get('uart_driver', 'none')})",
                        where=f"{board.path}: console",
                        fix="set console.uart_driver = \"cmsdk-apb-uart\" with console.uart_base, or "
                            "console.kind = \"semihosting\"")


def _check_baremetal_board(board: Board) -> None:
    if not board.is_arm:
        raise McuforgeError(f"board {board.name} has a {board.core} core; the bare-metal firmware is for Arm Cortex-M",
                            where=f"{board.path}: cpu.core", fix="use an Arm Cortex-M board, or the RTOS the board supports")
    if not board.cpu.get("gcc_flags"):
        raise McuforgeError(f"board {board.name} gives no compiler flags", where=f"{board.path}: cpu.gcc_flags",
                            fix='add gcc_flags, e.g. ["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard"]')


def linker_layout(board: Board) -> dict:
    """The memory map and section placement of a board, as the linker script shows them."""
    memories = [{"name": m.name, "origin": f"0x{m.origin:08X}", "length": f"0x{m.length:08X}", "holds": list(m.holds)}
                for m in board.memories]
    region = {kind: board.memory_for(kind).name for kind in SECTION_KINDS}
    # .data has to survive a power cycle, so its initial values are stored with the code.
    region["data_load"] = region["code"]
    return {"memories": memories, "region": region}


def _cycle_counter(board: Board) -> str:
    # QEMU does not model the DWT cycle counter, and a Cortex-M0+ has none.
    return "SYSTICK" if board.emulated or board.core == "cortex-m0plus" else "DWT"


def baremetal_flags(board: Board, project_dir: Path) -> dict[str, list[str]]:
    """Compiler and linker flags for a rendered project, with paths relative to the project folder."""
    include_dirs = ["app", "port"] + sorted({p.parent.relative_to(project_dir).as_posix()
                                             for p in (project_dir / "model").rglob("*.h")} | {"model"})
    cflags = list(board.cpu["gcc_flags"]) + _COMMON_CFLAGS + [f"-I{d}" for d in include_dirs]
    ldflags = ["-nostartfiles", "--specs=nano.specs", "--specs=nosys.specs", f"-T{LINKER_SCRIPT}",
               "-Wl,--gc-sections", f"-Wl,-Map={BUILD_DIR}/{MAP_NAME}", "-Wl,--no-warn-rwx-segments"]
    return {"cflags": cflags, "ldflags": ldflags, "ldlibs": ["-lm"]}


def _project_sources(project_dir: Path, dirs=SOURCE_DIRS) -> list[str]:
    return sorted(p.relative_to(project_dir).as_posix() for d in dirs for p in (project_dir / d).rglob("*.c"))


def render_baremetal_project(board: Board | str, model_dir: str | Path, out_dir: str | Path, model_name: str = "model",
                             *, stack_bytes: int = DEFAULT_STACK_BYTES, heap_bytes: int = DEFAULT_HEAP_BYTES) -> Path:
    """Render the bare-metal test firmware for `board` around the model's C sources in `model_dir`."""
    board = _as_board(board)
    _check_model_name(model_name)
    _check_baremetal_board(board)
    model_sources = _read_model_sources(Path(model_dir), model_name)
    project_dir = Path(out_dir)
    project_dir.mkdir(parents=True, exist_ok=True)
    _replace_source_dirs(project_dir)
    _write_model_sources(model_sources, project_dir / "model")

    console = board.console
    console_define = _console_define(board)
    uart_base = f"0x{console['uart_base']:08X}" if console_define == "UART_CMSDK" else None
    context = {
        "board_name": board.name,
        "model_name": model_name,
        "model_macro": model_name.upper(),
        "clock_hz": board.clock_hz,
        "console_kind": console["kind"],
        "console_define": console_define,
        "uart_base": uart_base,
        "uart_baud_divisor": board.clock_hz // console["baud"],
        "cycle_counter": _cycle_counter(board),
        "enable_fpu": board.cpu.get("fpu", "none") != "none" or "mve" in board.extensions,
        "has_msplim": board.cpu.get("arch", "").startswith(("armv8-m.main", "armv8.1-m.main")),
        "stack_bytes": stack_bytes,
        "heap_bytes": heap_bytes,
        **linker_layout(board),
    }
    _render_tree("app", project_dir / "app", context)
    _render_tree("baremetal/port", project_dir / "port", context)

    # The Makefile lists the sources, so the top-level files are rendered once they are in place.
    context.update(baremetal_flags(board, project_dir), sources=_project_sources(project_dir),
                   linker_script=LINKER_SCRIPT, elf=f"{BUILD_DIR}/{ELF_NAME}", elf_map=f"{BUILD_DIR}/{MAP_NAME}",
                   qemu_command=(qemu_command(board, f"{BUILD_DIR}/{ELF_NAME}") if board.qemu else None))
    environment = _jinja_environment()
    for name in (LINKER_SCRIPT, "Makefile"):
        text = environment.get_template(f"baremetal/{name}.j2").render(**context)
        (project_dir / name).write_text(text)
    (project_dir / PROJECT_MANIFEST).write_text(json.dumps(
        {"kind": "baremetal", "board": board.name, "model_name": model_name}, indent=2) + "\n")
    return project_dir


# ---- building --------------------------------------------------------------------------------

def _require_arm_toolchain() -> str:
    gcc = shutil.which(ARM_GCC)
    if gcc is None:
        raise McuforgeError(f"{ARM_GCC} is not installed", where="PATH",
                            fix=f"install the Debian packages {ARM_TOOLCHAIN_PACKAGES}: "
                                f"sudo apt-get install {ARM_TOOLCHAIN_PACKAGES}")
    found = subprocess.run([gcc, "-print-file-name=nano.specs"], capture_output=True, text=True).stdout.strip()
    if not os.path.isabs(found):
        raise McuforgeError(f"{ARM_GCC} has no newlib C library (nano.specs not found)", where=gcc,
                            fix="install the Debian package libnewlib-arm-none-eabi: "
                                "sudo apt-get install libnewlib-arm-none-eabi")
    return gcc


def _require_host_cc() -> str:
    candidate = os.environ.get("CC") or "cc"
    path = shutil.which(candidate) or shutil.which("gcc")
    if path is None:
        raise McuforgeError("no host C compiler (cc) found", where="PATH / $CC",
                            fix=f"install the Debian package {HOST_CC_PACKAGE}: sudo apt-get install {HOST_CC_PACKAGE}")
    return path


def _error_lines(stderr: str, limit: int = 12) -> str:
    lines = [line for line in stderr.splitlines() if _COMPILER_ERROR.search(line)]
    return "\n".join((lines or stderr.strip().splitlines() or ["(no compiler output)"])[:limit])


def _run_tool(command: list[str], cwd: Path, what: str, where: str) -> None:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise McuforgeError(f"{what} failed:\n{_error_lines(result.stderr)}",
                            where=f"{where}\n  command: {shlex.join(command)}",
                            fix="fix the C source at the lines shown; for generated code, report the error "
                                "with the model that produced it")


def _compile_all(compiler: str, cflags: list[str], sources: list[str], project_dir: Path, obj_dir: Path) -> list[Path]:
    def compile_one(source: str) -> Path:
        obj = obj_dir / Path(source).with_suffix(".o")
        obj.parent.mkdir(parents=True, exist_ok=True)
        _run_tool([compiler, *cflags, "-c", source, "-o", str(obj)], project_dir,
                  f"compiling {source}", str(project_dir / source))
        return obj

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        futures = [pool.submit(compile_one, s) for s in sources]
        # Report the first failing file in source order, whatever order they finished in.
        return [f.result() for f in futures]


def _link_error(board: Board, stderr: str, command: list[str]) -> McuforgeError:
    overflow = _REGION_OVERFLOW.search(stderr)
    if overflow:
        name, over = overflow.group(1), int(overflow.group(2))
        memory = next((m for m in board.memories if m.name == name), None)
        size = f" of {memory.length} bytes" if memory else ""
        return McuforgeError(f"the firmware does not fit memory {name!r}{size} of board {board.name}: "
                             f"{over} bytes over",
                             where=f"{board.path}: memory {name} (holds {', '.join(memory.holds) if memory else '?'})",
                             fix="use a smaller model, a board with more memory, or move some kinds "
                                 "(arena, weights) to a larger memory in the board file")
    return McuforgeError(f"linking the firmware failed:\n{_error_lines(stderr)}",
                         where=f"command: {shlex.join(command)}",
                         fix="check that the model's sources define every function model.h declares")


def build_baremetal_project(project_dir: str | Path, board: Board | str) -> Path:
    """Compile and link a rendered project with arm-none-eabi-gcc; the path of its ELF.

    The build happens in a scratch folder and the ELF is moved into build/ only when it
    succeeded, so a failed build leaves the previous firmware in place.
    """
    board = _as_board(board)
    project_dir = Path(project_dir).resolve()
    manifest_path = project_dir / PROJECT_MANIFEST
    if not manifest_path.is_file():
        raise McuforgeError(f"not a rendered firmware project: {project_dir}", where=str(manifest_path),
                            fix="render it first with render_baremetal_project")
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("board") != board.name:
        raise McuforgeError(f"the project was rendered for board {manifest.get('board')}, not {board.name}",
                            where=str(manifest_path), fix=f"render the project again for {board.name}")
    gcc = _require_arm_toolchain()
    flags = baremetal_flags(board, project_dir)
    sources = _project_sources(project_dir)
    build_dir = project_dir / BUILD_DIR
    build_dir.mkdir(exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".build-", dir=project_dir))
    try:
        objects = _compile_all(gcc, flags["cflags"], sources, project_dir, scratch / "obj")
        elf_tmp, map_tmp = scratch / ELF_NAME, scratch / MAP_NAME
        ldflags = [f"-Wl,-Map={map_tmp}" if f.startswith("-Wl,-Map=") else f for f in flags["ldflags"]]
        command = [gcc, *flags["cflags"], *ldflags, *map(str, objects), *flags["ldlibs"], "-o", str(elf_tmp)]
        result = subprocess.run(command, cwd=project_dir, capture_output=True, text=True)
        if result.returncode != 0:
            raise _link_error(board, result.stderr, command)
        os.replace(map_tmp, build_dir / MAP_NAME)
        os.replace(elf_tmp, build_dir / ELF_NAME)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return build_dir / ELF_NAME


def build_host_runner(model_dir: str | Path, out_dir: str | Path, model_name: str = "model") -> Path:
    """Build the application and the model for the host with `cc`; the path of the executable."""
    _check_model_name(model_name)
    model_sources = _read_model_sources(Path(model_dir), model_name)
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    _replace_source_dirs(out_dir)
    _write_model_sources(model_sources, out_dir / "model")
    context = {"model_name": model_name, "model_macro": model_name.upper()}
    _render_tree("app", out_dir / "app", context)
    _render_tree("host/port", out_dir / "port", context)

    cc = _require_host_cc()
    include_dirs = ["app", "port"] + sorted({p.parent.relative_to(out_dir).as_posix()
                                             for p in (out_dir / "model").rglob("*.h")} | {"model"})
    cflags = ["-O2", "-std=gnu11", "-Wall"] + [f"-I{d}" for d in include_dirs]
    scratch = Path(tempfile.mkdtemp(prefix=".build-", dir=out_dir))
    try:
        exe_tmp = scratch / HOST_RUNNER_NAME
        command = [cc, *cflags, *_project_sources(out_dir), "-lm", "-o", str(exe_tmp)]
        _run_tool(command, out_dir, "building the host runner", str(out_dir))
        exe = out_dir / HOST_RUNNER_NAME
        os.replace(exe_tmp, exe)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return exe


# ---- sizes -----------------------------------------------------------------------------------

def elf_sizes(elf: str | Path) -> dict[str, int]:
    """text, data and bss bytes of an ELF, as arm-none-eabi-size counts them (bss includes the
    arena, stack and heap)."""
    tool = shutil.which(ARM_SIZE)
    if tool is None:
        raise McuforgeError(f"{ARM_SIZE} is not installed", where="PATH",
                            fix="install the Debian package binutils-arm-none-eabi (it comes with gcc-arm-none-eabi)")
    result = subprocess.run([tool, "-B", str(elf)], capture_output=True, text=True)
    if result.returncode != 0:
        raise McuforgeError(f"cannot read the sizes of {elf}: {result.stderr.strip()}", where=str(elf),
                            fix="check that the file is an ELF built by build_baremetal_project")
    fields = result.stdout.splitlines()[1].split()
    return {"text": int(fields[0]), "data": int(fields[1]), "bss": int(fields[2])}


def model_flash_bytes(model_dir: str | Path, board: Board | str) -> dict[str, int]:
    """Flash taken by the model alone (its code, weights and constants) when built for `board`:
    every model source compiled with the board's flags and measured with arm-none-eabi-size."""
    board = _as_board(board)
    if not board.is_arm:
        raise McuforgeError(f"board {board.name} is not an Arm board; flash is measured with arm-none-eabi-size",
                            where="--board", fix="pick an Arm Cortex-M board, or build with the board's own SDK")
    gcc = _require_arm_toolchain()
    model_dir = Path(model_dir).resolve()
    sources = sorted(p.name for p in model_dir.glob("*.c"))
    cflags = [*_COMMON_CFLAGS, *board.cpu.get("gcc_flags", []), f"-I{model_dir}"]
    with tempfile.TemporaryDirectory(prefix="mcuforge-size-") as scratch:
        objects = _compile_all(gcc, cflags, sources, model_dir, Path(scratch))
        sizes = [elf_sizes(obj) for obj in objects]
    text, data = sum(s["text"] for s in sizes), sum(s["data"] for s in sizes)
    return {"text": text, "data": data, "total": text + data}
