"""Render, build and size Cortex-M firmware (bare metal and FreeRTOS), and its host twin.

A rendered Cortex-M project is a folder a user can also build with `make` or CMake:

    Makefile (bare metal, C engines), CMakeLists.txt, cmake/, linker.ld, mcuforge_project.json
    app/     the application (mcuforge_app.c, port.h, engine glue), the same on every platform
    port/    start-up, linker symbols' users, console, cycle counter, the RTOS port
    model/   the model's C sources, copied from the emitter's output
    build/   firmware.elf and firmware.map

The application comes in two builds. The verify harness (`settings=None`) runs every vector of
inputs.bin, read through semihosting, and exits. The application (`settings=AppSettings(...)`)
runs the duty-cycled inference loop with telemetry and serves bench mode on the console.

Everything the templates show (memory map, section placement, flags, sizes) is computed here.
"""
from __future__ import annotations

import json
import math
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
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
TOOLCHAIN_FILE = "cmake/arm-none-eabi.cmake"
PROJECT_MANIFEST = "mcuforge_project.json"
HOST_RUNNER_NAME = "mcuforge_host_runner"
SOURCE_DIRS = ("app", "port", "model")
MODEL_SOURCE_SUFFIXES = (".c", ".cc", ".cpp", ".h", ".hpp", ".inc")  # .inc: sources included by others
COMPILED_SUFFIXES = (".c", ".cc", ".cpp")

DEFAULT_STACK_BYTES = 16 * 1024
DEFAULT_HEAP_BYTES = 4 * 1024
# Under FreeRTOS the application runs on its task's stack; the main stack only serves
# start-up and interrupts.
FREERTOS_MAIN_STACK_BYTES = 4 * 1024
FREERTOS_KERNEL_HEAP_MARGIN = 6 * 1024
SECTION_KINDS = ("code", "rodata", "weights", "data", "bss", "stack", "heap", "arena")
ENGINES = ("aot", "tflm", "ethos-u")
CORTEX_M_RTOSES = ("baremetal", "freertos")
# TFLM's optimized kernels (CMSIS-NN, ESP-NN) may need scratch on top of the arena measured with
# the reference kernels: room for that, and the 16-byte alignment TFLM wants.
TFLM_ARENA_MARGIN_FRACTION = 0.25
TFLM_ARENA_MARGIN_BYTES = 2048

_COMMON_CFLAGS = ["-O2", "-g", "-std=gnu11", "-Wall", "-ffunction-sections", "-fdata-sections"]
_CMAKE_COMPILE_OPTIONS = ["-O2", "-g", "-Wall", "-ffunction-sections", "-fdata-sections"]
_C_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_COMPILER_ERROR = re.compile(r"(error|undefined reference|multiple definition|will not fit|overflowed)", re.I)
_REGION_OVERFLOW = re.compile(r"region [`'](\w+)' overflowed by (\d+) bytes")
_DTYPE_BYTES = {"int8": 1, "uint8": 1, "bool": 1, "int16": 2, "float16": 2, "int32": 4, "float32": 4,
                "int64": 8, "float64": 8}

# The RTOS-independent application: copied (or rendered, .j2) into every project's app/.
APP_FILES = ("port.h", "engine.h", "mcuforge_app.h", "mcuforge_app.c", "json_writer.h", "json_writer.c",
             "input_source.c", "mcuforge_config.h.j2")
ENGINE_FILES = {"aot": "engine_aot.c.j2", "tflm": "engine_tflm.cc.j2", "ethos-u": "engine_tflm.cc.j2"}
# The Cortex-M support shared by the bare-metal and FreeRTOS ports, into port/.
CORTEX_M_PORT_FILES = ("cortex_m/cortex_m.h", "cortex_m/startup.c", "cortex_m/console.c", "cortex_m/cycles.c",
                       "cortex_m/memory_marks.c", "cortex_m/uart_cmsdk.h", "cortex_m/uart_cmsdk.c",
                       "cortex_m/semihosting.h", "cortex_m/semihosting.c", "cortex_m/mcuforge_board.h.j2",
                       "common/cpu_cycles.h")

# FreeRTOS-Kernel's CMake port names (FREERTOS_PORT) per core.
FREERTOS_PORTS = {
    "cortex-m0plus": "GCC_ARM_CM0", "cortex-m3": "GCC_ARM_CM3", "cortex-m4": "GCC_ARM_CM4F",
    "cortex-m7": "GCC_ARM_CM7", "cortex-m33": "GCC_ARM_CM33_NTZ_NONSECURE",
    "cortex-m55": "GCC_ARM_CM55_NTZ_NONSECURE", "cortex-m85": "GCC_ARM_CM85_NTZ_NONSECURE",
}
# TFLM's cortex_m_generic TARGET_ARCH per core, hard-float where the core has an FPU.
TFLM_TARGET_ARCH = {
    "cortex-m0plus": "cortex-m0plus", "cortex-m3": "cortex-m3", "cortex-m4": "cortex-m4+fp", "cortex-m7": "cortex-m7+fp",
    "cortex-m33": "cortex-m33", "cortex-m55": "cortex-m55", "cortex-m85": "cortex-m85",
}


# ---- what the application needs to know -----------------------------------------------------

@dataclass(frozen=True)
class AppSettings:
    """The generated application's settings: one inference every `period_ms`, `iterations` of
    them (0: forever), on a thread or task with `stack_bytes` of stack (None: the default for
    the engine)."""
    period_ms: int = 1000
    iterations: int = 0
    stack_bytes: int | None = None

    def __post_init__(self):
        if not isinstance(self.period_ms, int) or self.period_ms < 0 or self.period_ms > 86_400_000:
            raise McuforgeError(f"period must be 0 to 86400000 ms, got {self.period_ms!r}", where="--period-ms",
                                fix="give the time between inferences in milliseconds (0: back to back)")
        if not isinstance(self.iterations, int) or self.iterations < 0 or self.iterations >= 2**32:
            raise McuforgeError(f"iterations must be a non-negative 32-bit count, got {self.iterations!r}",
                                where="--iterations", fix="give how many inferences to run, or 0 to run forever")
        if self.stack_bytes is not None and (not isinstance(self.stack_bytes, int) or self.stack_bytes < 1024):
            raise McuforgeError(f"stack must be at least 1024 bytes, got {self.stack_bytes!r}", where="--stack-bytes",
                                fix="give the application thread's stack in bytes (e.g. 16384)")

    def app_stack_bytes(self, engine: str) -> int:
        if self.stack_bytes is not None:
            return self.stack_bytes
        return 8 * 1024 if engine == "aot" else 16 * 1024


@dataclass(frozen=True)
class ModelIO:
    """Sizes of the model's inputs and outputs, and the element type of each output."""
    input_bytes: tuple[int, ...]
    output_bytes: tuple[int, ...]
    output_dtypes: tuple[str, ...]

    @property
    def total_input_bytes(self) -> int:
        return sum(self.input_bytes)

    @property
    def result_type(self) -> str:
        """How telemetry reads output 0: as int8 scores, float scores, or raw bytes."""
        return {"int8": "INT8", "float32": "FLOAT32"}.get(self.output_dtypes[0] if self.output_dtypes else "", "RAW")


def _tensor_bytes(entry: dict, where: str) -> int:
    dtype = str(entry.get("dtype", "")).lower()
    shape = entry.get("shape")
    if dtype not in _DTYPE_BYTES or not isinstance(shape, list):
        raise McuforgeError(f"the compile report describes a tensor without a usable shape and dtype: {entry!r}",
                            where=where, fix="compile the model again with this mcuforge version")
    return math.prod(int(d) for d in shape) * _DTYPE_BYTES[dtype]


def compile_report(model_dir: str | Path) -> dict:
    path = Path(model_dir) / "report.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise McuforgeError(f"the compiled model has no report.json: {path}", where=str(model_dir),
                            fix="compile the model with `mcuforge compile` (or compile_model) first") from None
    except json.JSONDecodeError as exc:
        raise McuforgeError(f"report.json is not valid JSON: {exc.msg}", where=str(path),
                            fix="compile the model again") from None


def model_io_from_report(report: dict, where: str = "report.json") -> ModelIO:
    """The inputs and outputs a compile report lists (every engine writes `input` and `output`)."""
    inputs, outputs = report.get("input"), report.get("output")
    if not isinstance(inputs, list) or not isinstance(outputs, list) or not inputs or not outputs:
        raise McuforgeError("the compile report does not list the model's inputs and outputs", where=where,
                            fix="compile the model again with this mcuforge version")
    return ModelIO(tuple(_tensor_bytes(e, where) for e in inputs), tuple(_tensor_bytes(e, where) for e in outputs),
                   tuple(str(e.get("dtype", "")).lower() for e in outputs))


def tflm_arena_bytes(report: dict) -> int:
    """The TFLM arena to allocate: the report's figure plus room for optimized kernels' scratch."""
    measured = int(report.get("arena_bytes") or 0)
    if measured <= 0:
        raise McuforgeError("the compile report gives no TFLM arena size", where="report.json: arena_bytes",
                            fix="compile the model again with the tflm or ethos-u engine")
    padded = measured + max(TFLM_ARENA_MARGIN_BYTES, int(measured * TFLM_ARENA_MARGIN_FRACTION))
    return (padded + 15) // 16 * 16


def cycle_counter(board: Board | None, rtos: str) -> tuple[str, str]:
    """What port_cycles() reads on `board` under `rtos`: (name, explanation)."""
    if board is None:
        return "host", "CLOCK_MONOTONIC nanoseconds of the build machine (a notional 1 GHz clock)"
    if not board.is_arm:
        return "ccount", "the Xtensa CCOUNT register, one count per CPU clock cycle"
    if rtos == "baremetal" and (board.emulated or board.core == "cortex-m0plus"):
        return "systick", ("SysTick at the core clock (QEMU does not model the DWT; under -icount shift=0 "
                           "the count follows the instructions executed)")
    return "dwt", "DWT->CYCCNT, one count per core clock cycle"


def app_context(*, board_name: str, rtos: str, engine: str, model_name: str, io: ModelIO | None,
                settings: AppSettings | None, clock_hz: int, counter: tuple[str, str],
                report: dict | None = None, npu: bool = False) -> dict:
    """The values mcuforge_config.h and the engine glue are rendered with."""
    context = {
        "board_name": board_name, "rtos": rtos, "engine": engine, "model_name": model_name,
        "model_macro": model_name.upper(), "clock_hz": clock_hz,
        "cycle_counter": counter[0], "cycle_counter_note": counter[1],
        "inputs_from_file": settings is None,
        "period_ms": settings.period_ms if settings else 0,
        "iterations": settings.iterations if settings else 0,
        "app_stack_bytes": (settings or AppSettings()).app_stack_bytes(engine),
        "input_bytes": io.total_input_bytes if io else 0,
        "result_type": io.result_type if io else "RAW",
        "tflm_arena_bytes": None, "tflm_arena_note": "", "npu": npu,
    }
    if engine in ("tflm", "ethos-u"):
        context["tflm_arena_bytes"] = tflm_arena_bytes(report or {})
        context["tflm_arena_note"] = (f"{report.get('arena_bytes')} B from the compile report "
                                      f"({report.get('arena_source', 'measured')}), plus room for optimized "
                                      f"kernels' scratch")
    return context


# ---- rendering -------------------------------------------------------------------------------

def jinja_environment() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)), undefined=jinja2.StrictUndefined,
                              trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
                              autoescape=False)



def render_file(template: str, target: Path, context: dict) -> Path:
    """Render `template` (a path under firmware_templates/; `.j2` files are rendered, others
    copied) to `target`."""
    target.parent.mkdir(parents=True, exist_ok=True)
    source = TEMPLATES_DIR / template
    if source.suffix == ".j2":
        target.write_text(jinja_environment().get_template(template).render(**context))
    else:
        shutil.copyfile(source, target)
    return target


def render_files(templates, out_dir: Path, context: dict) -> list[Path]:
    """Render each template into `out_dir` under its file name (without .j2)."""
    written = []
    for template in templates:
        name = Path(template).name
        written.append(render_file(template, out_dir / (name[:-3] if name.endswith(".j2") else name), context))
    return written


def render_app(app_dir: Path, engine: str, context: dict) -> list[Path]:
    """The RTOS-independent application and the engine glue, into `app_dir`."""
    if engine not in ENGINE_FILES:
        raise McuforgeError(f"unknown engine {engine!r}", where="--engine", fix=f"use one of {', '.join(ENGINES)}")
    return render_files([f"app/{name}" for name in APP_FILES] + [f"app/{ENGINE_FILES[engine]}"], app_dir, context)


def check_model_name(model_name: str) -> None:
    if not _C_IDENTIFIER.match(model_name):
        raise McuforgeError(f"model name {model_name!r} is not a C identifier", where="model_name",
                            fix="use letters, digits and underscores, not starting with a digit")



def required_model_files(engine: str, model_name: str) -> tuple[str, ...]:
    if engine == "aot":
        return (f"{model_name}.h", f"{model_name}.c")
    return (f"{model_name}_data.h", f"{model_name}_data.cc", f"{model_name}_op_resolver.h")


def read_model_sources(model_dir: Path, model_name: str, engine: str = "aot") -> dict[Path, bytes]:
    """The emitter's sources, by path relative to model_dir, read before anything is replaced."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise McuforgeError(f"model source folder not found: {model_dir}",
                            fix="emit the model's C code first (mcuforge compile)")
    for required in required_model_files(engine, model_name):
        if not (model_dir / required).is_file():
            raise McuforgeError(f"model source folder has no {required}", where=str(model_dir),
                                fix=f"compile the model for the {engine} engine with name={model_name!r}, "
                                    f"or pass the model_name it was compiled with")
    return {p.relative_to(model_dir): p.read_bytes()
            for p in sorted(model_dir.rglob("*")) if p.is_file() and p.suffix in MODEL_SOURCE_SUFFIXES}



def write_model_sources(sources: dict[Path, bytes], model_out: Path) -> None:
    for relative, data in sources.items():
        target = model_out / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)



def replace_source_dirs(project_dir: Path, names=SOURCE_DIRS) -> None:
    """Rendering starts from clean source folders, so that no file of an earlier model is built."""
    for name in names:
        shutil.rmtree(project_dir / name, ignore_errors=True)



def _as_board(board: Board | str) -> Board:
    return board if isinstance(board, Board) else load_board(board)


def console_driver(board: Board, fall_back_to_semihosting: bool) -> tuple[str, str]:
    """The console driver define for mcuforge_board.h, and a note saying what it is."""
    console = board.console
    if console.get("kind") == "uart" and console.get("uart_driver") == "cmsdk-apb-uart" and "uart_base" in console:
        return "UART_CMSDK", f"CMSDK APB UART at 0x{console['uart_base']:08X}, {console['baud']} baud"
    if console.get("kind") == "semihosting":
        return "SEMIHOSTING", "semihosting (output only)"
    if fall_back_to_semihosting:
        return "SEMIHOSTING", (f"semihosting, through the debugger (output only): mcuforge has no bare-metal driver "
                               f"for this board's {console.get('kind')} console")
    raise McuforgeError(f"the bare-metal firmware has no driver for the console of board {board.name} "
                        f"({console.get('kind')}, driver {console.get('uart_driver', 'none')})",
                        where=f"{board.path}: console",
                        fix="set console.uart_driver = \"cmsdk-apb-uart\" with console.uart_base, or "
                            "console.kind = \"semihosting\"")


def check_cortex_m_board(board: Board, rtos: str = "baremetal") -> None:
    what = "FreeRTOS firmware for Cortex-M" if rtos == "freertos" else "bare-metal firmware"
    if not board.is_arm:
        raise McuforgeError(f"board {board.name} has a {board.core} core; the {what} is for Arm Cortex-M",
                            where=f"{board.path}: cpu.core", fix="use an Arm Cortex-M board, or the RTOS the board supports")
    if not board.cpu.get("gcc_flags"):
        raise McuforgeError(f"board {board.name} gives no compiler flags", where=f"{board.path}: cpu.gcc_flags",
                            fix='add gcc_flags, e.g. ["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard"]')
    if rtos == "freertos" and board.core not in FREERTOS_PORTS:
        raise McuforgeError(f"no FreeRTOS port is known for {board.core}", where=f"{board.path}: cpu.core",
                            fix=f"use a board with one of: {', '.join(FREERTOS_PORTS)}")



def linker_layout(board: Board) -> dict:
    """The memory map and section placement of a board, as the linker script shows them."""
    memories = [{"name": m.name, "origin": f"0x{m.origin:08X}", "length": f"0x{m.length:08X}", "holds": list(m.holds)}
                for m in board.memories]
    region = {kind: board.memory_for(kind).name for kind in SECTION_KINDS}
    # .data has to survive a power cycle, so its initial values are stored with the code.
    region["data_load"] = region["code"]
    return {"memories": memories, "region": region}


def _include_dirs(project_dir: Path) -> list[str]:
    return ["app", "port"] + sorted({p.parent.relative_to(project_dir).as_posix()
                                     for p in (project_dir / "model").rglob("*.h")} | {"model"})


def baremetal_flags(board: Board, project_dir: Path) -> dict[str, list[str]]:
    """Compiler and linker flags for a rendered project, with paths relative to the project folder."""
    cflags = list(board.cpu["gcc_flags"]) + _COMMON_CFLAGS + [f"-I{d}" for d in _include_dirs(project_dir)]
    ldflags = ["-nostartfiles", "--specs=nano.specs", "--specs=nosys.specs", f"-T{LINKER_SCRIPT}",
               "-Wl,--gc-sections", f"-Wl,-Map={BUILD_DIR}/{MAP_NAME}", "-Wl,--no-warn-rwx-segments"]
    return {"cflags": cflags, "ldflags": ldflags, "ldlibs": ["-lm"]}


def _project_sources(project_dir: Path, dirs=SOURCE_DIRS, suffixes=(".c",)) -> list[str]:
    return sorted(p.relative_to(project_dir).as_posix() for d in dirs for p in (project_dir / d).rglob("*")
                  if p.is_file() and p.suffix in suffixes)


def cmake_variables(rtos: str, engine: str, board: Board) -> list[dict]:
    """The CMake cache variables a Cortex-M project needs from the user (paths this machine
    cannot know), each with its check and what it is."""
    variables = []
    if rtos == "freertos":
        variables.append({"name": "FREERTOS_KERNEL_PATH", "type": "PATH",
                          "check": 'NOT EXISTS "${FREERTOS_KERNEL_PATH}/tasks.c"',
                          "help": "a FreeRTOS-Kernel source tree, V11.0 or later"})
    if engine in ("tflm", "ethos-u"):
        arch = TFLM_TARGET_ARCH.get(board.core, board.core)
        variables += [
            {"name": "TFLM_ROOT", "type": "PATH",
             "check": 'NOT EXISTS "${TFLM_ROOT}/tensorflow/lite/micro/micro_interpreter.h"',
             "help": "a tflite-micro source tree"},
            {"name": "TFLM_LIB", "type": "FILEPATH", "check": 'NOT EXISTS "${TFLM_LIB}"',
             "help": f"libtensorflow-microlite.a built from TFLM_ROOT for TARGET=cortex_m_generic TARGET_ARCH={arch}"},
        ]
    if engine == "ethos-u":
        variables += [
            {"name": "ETHOSU_BASE_ADDRESS", "type": "STRING", "check": 'ETHOSU_BASE_ADDRESS STREQUAL ""',
             "help": "the Ethos-U NPU's register base address on this board (from its reference manual)"},
            {"name": "ETHOSU_IRQ", "type": "STRING", "check": 'ETHOSU_IRQ STREQUAL ""',
             "help": "the Ethos-U NPU's interrupt number on this board"},
        ]
    return variables


def _tflm_include_dirs(engine: str) -> list[str]:
    downloads = "${TFLM_ROOT}/tensorflow/lite/micro/tools/make/downloads"
    dirs = ["${TFLM_ROOT}", f"{downloads}/flatbuffers/include", f"{downloads}/gemmlowp"]
    if engine == "ethos-u":
        dirs.append(f"{downloads}/ethos_u_core_driver/include")
    return dirs


def cortex_m_cmake_context(board: Board, project_dir: Path, rtos: str, engine: str, model_name: str) -> dict:
    """What CMakeLists.txt and the toolchain file of a Cortex-M project show."""
    tflm = engine in ("tflm", "ethos-u")
    definitions = ["TF_LITE_STATIC_MEMORY"] if tflm else []
    if engine == "ethos-u":
        definitions += ["MCUFORGE_ETHOSU_BASE_ADDRESS=${ETHOSU_BASE_ADDRESS}", "MCUFORGE_ETHOSU_IRQ=${ETHOSU_IRQ}"]
    libraries = (["freertos_kernel"] if rtos == "freertos" else []) + (["${TFLM_LIB}"] if tflm else []) + ["m"]
    return {
        "board_name": board.name, "core": board.core, "engine": engine, "model_name": model_name,
        "freertos": rtos == "freertos", "freertos_port": FREERTOS_PORTS.get(board.core, ""), "cxx": tflm,
        "cpu_flags": list(board.cpu["gcc_flags"]), "toolchain_file": TOOLCHAIN_FILE, "linker_script": LINKER_SCRIPT,
        "sources": _project_sources(project_dir, suffixes=COMPILED_SUFFIXES),
        "include_dirs": _include_dirs(project_dir) + (_tflm_include_dirs(engine) if tflm else []),
        "definitions": definitions, "compile_options": _CMAKE_COMPILE_OPTIONS, "libraries": libraries,
        "required_variables": cmake_variables(rtos, engine, board),
        "tflm_target_arch": TFLM_TARGET_ARCH.get(board.core, board.core),
    }


def _freertos_context(board: Board, settings: AppSettings, engine: str) -> dict:
    fpu = board.cpu.get("fpu", "none") != "none"
    app_stack = settings.app_stack_bytes(engine)
    return {"armv8m": board.cpu.get("arch", "").startswith(("armv8-m", "armv8.1-m")), "has_fpu": fpu,
            "has_mve": "mve" in board.extensions, "priority_bits": 3,
            "total_heap_bytes": app_stack + FREERTOS_KERNEL_HEAP_MARGIN}


def render_cortex_m_project(board: Board | str, model_dir: str | Path, out_dir: str | Path, model_name: str = "model",
                            *, rtos: str = "baremetal", engine: str = "aot", settings: AppSettings | None = None,
                            stack_bytes: int | None = None, heap_bytes: int = DEFAULT_HEAP_BYTES,
                            readme: str | None = None) -> Path:
    """Render bare-metal or FreeRTOS firmware for a Cortex-M `board` around the compiled model
    in `model_dir`. `settings=None` renders the verify harness (bare metal, aot only)."""
    board = _as_board(board)
    check_model_name(model_name)
    if rtos not in CORTEX_M_RTOSES:
        raise McuforgeError(f"{rtos!r} is not a Cortex-M firmware kind", where="rtos",
                            fix=f"use one of {', '.join(CORTEX_M_RTOSES)}")
    check_cortex_m_board(board, rtos)
    if settings is None and (rtos != "baremetal" or engine != "aot"):
        raise McuforgeError("the verify harness is bare-metal firmware with the aot engine", where="settings",
                            fix="pass AppSettings to render the application")
    model_sources = read_model_sources(Path(model_dir), model_name, engine)
    report = compile_report(model_dir) if settings is not None else None
    io = model_io_from_report(report, str(Path(model_dir) / "report.json")) if report is not None else None
    project_dir = Path(out_dir)
    project_dir.mkdir(parents=True, exist_ok=True)
    replace_source_dirs(project_dir)
    write_model_sources(model_sources, project_dir / "model")

    console = board.console
    console_define, console_note = console_driver(board, fall_back_to_semihosting=settings is not None)
    counter = cycle_counter(board, rtos)
    if stack_bytes is None:
        stack_bytes = FREERTOS_MAIN_STACK_BYTES if rtos == "freertos" else (
            settings.app_stack_bytes(engine) if settings and settings.stack_bytes else DEFAULT_STACK_BYTES)
    context = {
        **app_context(board_name=board.name, rtos=rtos, engine=engine, model_name=model_name, io=io,
                      settings=settings, clock_hz=board.clock_hz, counter=counter, report=report,
                      npu=engine == "ethos-u"),
        "core": board.core,
        "console_define": console_define, "console_note": console_note,
        "uart_base": f"0x{console['uart_base']:08X}" if console_define == "UART_CMSDK" else None,
        "uart_baud_divisor": board.clock_hz // console["baud"],
        "enable_fpu": board.cpu.get("fpu", "none") != "none" or "mve" in board.extensions,
        "has_msplim": board.cpu.get("arch", "").startswith(("armv8-m.main", "armv8.1-m.main")),
        "exit_through_semihosting": bool(board.emulated or board.flash.get("tool") == "fvp"
                                         or console_define == "SEMIHOSTING"),
        "cycle_counter": counter[0].upper(),
        "stack_bytes": stack_bytes,
        "heap_bytes": heap_bytes,
        **linker_layout(board),
    }
    render_app(project_dir / "app", engine, {**context, "cycle_counter": counter[0]})
    port_files = list(CORTEX_M_PORT_FILES) + (["baremetal/port_baremetal.c"] if rtos == "baremetal" else
                                              ["freertos/port_freertos.c", "freertos/FreeRTOSConfig.h.j2"])
    if rtos == "freertos":
        context.update(_freertos_context(board, settings, engine))
    render_files(port_files, project_dir / "port", context)

    # The build files list the sources, so they are rendered once the sources are in place.
    environment = jinja_environment()
    context.update(baremetal_flags(board, project_dir), sources=_project_sources(project_dir),
                   linker_script=LINKER_SCRIPT, elf=f"{BUILD_DIR}/{ELF_NAME}", elf_map=f"{BUILD_DIR}/{MAP_NAME}",
                   qemu_command=(qemu_command(board, f"{BUILD_DIR}/{ELF_NAME}") if board.qemu else None),
                   inputs_from_file=settings is None)
    (project_dir / LINKER_SCRIPT).write_text(environment.get_template("cortex_m/linker.ld.j2").render(**context))
    if rtos == "baremetal" and engine == "aot":
        (project_dir / "Makefile").write_text(environment.get_template("baremetal/Makefile.j2").render(**context))
    else:
        (project_dir / "Makefile").unlink(missing_ok=True)
    cmake_context = cortex_m_cmake_context(board, project_dir, rtos, engine, model_name)
    render_file("cortex_m/CMakeLists.txt.j2", project_dir / "CMakeLists.txt", cmake_context)
    render_file("cortex_m/arm-none-eabi.cmake.j2", project_dir / TOOLCHAIN_FILE, cmake_context)
    if readme is not None:
        (project_dir / "README.md").write_text(readme)
    manifest = {"kind": rtos, "board": board.name, "rtos": rtos, "engine": engine, "model_name": model_name,
                "application": settings is not None}
    if settings is not None:
        manifest["settings"] = {"period_ms": settings.period_ms, "iterations": settings.iterations,
                                "stack_bytes": settings.app_stack_bytes(engine)}
    (project_dir / PROJECT_MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return project_dir


def render_baremetal_project(board: Board | str, model_dir: str | Path, out_dir: str | Path, model_name: str = "model",
                             *, stack_bytes: int | None = None, heap_bytes: int = DEFAULT_HEAP_BYTES,
                             engine: str = "aot", settings: AppSettings | None = None,
                             readme: str | None = None) -> Path:
    """Render bare-metal firmware for `board` around the model's C sources in `model_dir`: the
    verify harness by default, the application with `settings`."""
    return render_cortex_m_project(board, model_dir, out_dir, model_name, rtos="baremetal", engine=engine,
                                   settings=settings, stack_bytes=stack_bytes, heap_bytes=heap_bytes, readme=readme)


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
    if manifest.get("rtos", "baremetal") != "baremetal" or manifest.get("engine", "aot") != "aot":
        raise McuforgeError(f"this {manifest.get('rtos')} project with the {manifest.get('engine')} engine needs "
                            f"libraries mcuforge does not have (the RTOS kernel or TFLM): it builds with CMake",
                            where=str(manifest_path), fix="see the project's README.md: cmake -B build -D... && "
                                                          "cmake --build build")
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


def build_host_runner(model_dir: str | Path, out_dir: str | Path, model_name: str = "model",
                      settings: AppSettings | None = None) -> Path:
    """Build the application and the (aot) model for the host with `cc`; the path of the
    executable. The verify harness by default; the application (console on stdin/stdout) with
    `settings`."""
    check_model_name(model_name)
    model_sources = read_model_sources(Path(model_dir), model_name)
    io = model_io_from_report(compile_report(model_dir)) if settings is not None else None
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    replace_source_dirs(out_dir)
    write_model_sources(model_sources, out_dir / "model")
    context = app_context(board_name="host", rtos="host", engine="aot", model_name=model_name, io=io,
                          settings=settings, clock_hz=1_000_000_000, counter=cycle_counter(None, "host"))
    render_app(out_dir / "app", "aot", context)
    render_files(["host/port_host.c"], out_dir / "port", context)

    cc = _require_host_cc()
    cflags = ["-O2", "-std=gnu11", "-Wall"] + [f"-I{d}" for d in _include_dirs(out_dir)]
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
