"""Firmware projects: a compiled model rendered into a project for a board, an RTOS and an engine,
and built with that SDK's own tool where it is installed.

The stages, each a plain function:

    supported_combinations(board)            the (rtos, engine) pairs a board file allows
    render_project(board, rtos, engine, ...)  compiled model -> complete project folder
    build_project(project_dir)                project -> firmware in project_dir/build
    build_firmware(model, board, ...)         model file -> converted, compiled, rendered (and built)

What is rendered, by RTOS (and board):

    zephyr       CMakeLists.txt, prj.conf, boards/<board>.conf, src/{app,port,model}   west build
    freertos     on ESP32-S3: an ESP-IDF project (main/, sdkconfig.defaults,
                 idf_component.yml)                                                     idf.py build
                 on Cortex-M: a CMake project taking FREERTOS_KERNEL_PATH               cmake
    baremetal    Makefile / CMakeLists.txt, linker.ld, {app,port,model}                 arm-none-eabi-gcc
    micropython  a user C module (micropython.mk, micropython.cmake, C) wrapping the
                 AOT model: `import <name>`, `<name>.invoke(bytes) -> bytes`             MicroPython's make

The application in app/ is the same everywhere (mcuforge_app.c); only port/ differs.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from mcuforge.boards import Board, load_board
from mcuforge.codegen.errors import McuforgeError

from . import firmware
from .firmware import AppSettings, ModelIO

RTOSES = ("zephyr", "freertos", "baremetal", "micropython")
ENGINES = ("aot", "tflm", "ethos-u")
COMPILED_DIR = "compiled"
BUILD_DIR = "build"
BUILD_LOG = "mcuforge-build.log"
MANIFEST = firmware.PROJECT_MANIFEST
KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
ZEPHYR_WEIGHTS_SNIPPET = "mcuforge_weights.ld"
MICROPYTHON_MODEL_DIR = "aot"
ESP_IDF_WEIGHTS_FRAGMENT = "mcuforge_weights.lf"
ESP_IDF_VERSION = ">=5.1"
ESP_TFLITE_MICRO = {"name": "espressif/esp-tflite-micro", "version": "^1.3.3"}
ZEPHYR_HEAP_BYTES = {"aot": 4096, "tflm": 4096, "ethos-u": 16384}
# What each kind of project builds into build/, kept when a later build fails.
ARTIFACTS = {
    "zephyr": ("zephyr/zephyr.elf", "zephyr/zephyr.hex", "zephyr/zephyr.bin", "zephyr/zephyr.map"),
    "esp-idf": ("*.elf", "*.bin", "*.map", "bootloader/bootloader.bin", "partition_table/partition-table.bin",
                "flasher_args.json"),
    "baremetal": ("firmware.elf", "firmware.map"),
    "freertos": ("firmware.elf", "firmware.map"),
    "micropython": ("micropython",),
}
INSTALL_HINTS = {
    "west": "install west (pip install west) and a Zephyr workspace with the Zephyr SDK: west init ~/zephyrproject "
            "&& cd ~/zephyrproject && west update, then run mcuforge from a shell where ZEPHYR_BASE is set "
            "(https://docs.zephyrproject.org/latest/develop/getting_started/)",
    "idf.py": "install ESP-IDF v5.1 or later (git clone --recursive https://github.com/espressif/esp-idf, "
              "./install.sh esp32s3) and run `. ./export.sh` in this shell so that idf.py is on PATH",
    "cmake": "install CMake 3.16 or later: sudo apt-get install cmake",
    "make": "install make: sudo apt-get install make",
}


# ---- what a board supports ------------------------------------------------------------------

def project_kind(board: Board, rtos: str) -> str:
    """The kind of project `rtos` means on `board`: zephyr, esp-idf, freertos (Cortex-M),
    baremetal or micropython."""
    if rtos == "freertos" and not board.is_arm:
        return "esp-idf"
    return rtos


def _combination_problem(board: Board, rtos: str, engine: str) -> str | None:
    """Why the board file rules out `rtos` with `engine`, or None when it allows them."""
    if rtos == "micropython":
        if "micropython" not in board.engines:
            return f"board {board.name} does not run MicroPython (its engines do not list micropython)"
        if engine != "aot":
            return "the MicroPython user C module wraps the aot engine's C"
        return None
    if rtos not in board.rtos:
        return f"board {board.name} does not support {rtos}"
    if engine not in board.engines:
        return f"board {board.name} does not support the {engine} engine"
    if engine == "ethos-u" and not board.npu.startswith("ethos-u"):
        return f"the ethos-u engine needs an Ethos-U NPU, and board {board.name} has {board.npu}"
    if rtos == "zephyr" and not board.zephyr_board:
        return f"board {board.name} names no Zephyr board (zephyr_board)"
    if project_kind(board, rtos) == "esp-idf" and not board.idf_target:
        return f"board {board.name} is not an Arm board and names no ESP-IDF target (idf_target)"
    if rtos == "baremetal" and not board.is_arm:
        return f"mcuforge's bare-metal firmware is for Arm Cortex-M, and board {board.name} has a {board.core}"
    return None


def supported_combinations(board: Board) -> list[tuple[str, str]]:
    """Every (rtos, engine) the board file allows, in the order of RTOSES and ENGINES."""
    return [(rtos, engine) for rtos in RTOSES for engine in ENGINES if _combination_problem(board, rtos, engine) is None]


def check_combination(board: Board, rtos: str, engine: str) -> None:
    if rtos not in RTOSES:
        raise McuforgeError(f"unknown RTOS {rtos!r}", where="--rtos", fix=f"use one of {', '.join(RTOSES)}")
    if engine not in ENGINES:
        raise McuforgeError(f"unknown engine {engine!r}", where="--engine", fix=f"use one of {', '.join(ENGINES)}")
    problem = _combination_problem(board, rtos, engine)
    if problem:
        supported = ", ".join(f"--rtos {r} --engine {e}" for r, e in supported_combinations(board)) or "none"
        raise McuforgeError(problem, where=f"{board.path}: rtos {list(board.rtos)}, engines {list(board.engines)}, "
                                           f"npu {board.npu}",
                            fix=f"board {board.name} supports: {supported}")


def _as_board(board: Board | str) -> Board:
    return board if isinstance(board, Board) else load_board(board)


# ---- rendering ------------------------------------------------------------------------------

def _readme(kind: str, context: dict) -> str:
    return firmware.jinja_environment().get_template(f"readme/{kind}.md.j2").render(**context)


def _kconfig(title: str, groups: list[dict], context: dict) -> str:
    """A Kconfig fragment (prj.conf, board .conf, sdkconfig.defaults): CONFIG_X=value lines in
    commented groups. Values are y/n, numbers or quoted strings."""
    return firmware.jinja_environment().get_template("common/kconfig_fragment.j2").render(
        title=title, groups=[g for g in groups if g["options"]], **context)


def _group(why: str, *options: tuple[str, object]) -> dict:
    return {"why": why, "options": [{"name": name, "value": _kconfig_value(value)} for name, value in options]}


def _kconfig_value(value) -> str:
    if value is True:
        return "y"
    if value is False:
        return "n"
    if isinstance(value, int):
        return str(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _sources(root: Path, base: Path, suffixes=firmware.COMPILED_SUFFIXES) -> list[str]:
    return sorted(p.relative_to(base).as_posix() for p in root.rglob("*") if p.is_file() and p.suffix in suffixes)


def _header_dirs(root: Path, base: Path) -> list[str]:
    return sorted({p.parent.relative_to(base).as_posix() for p in root.rglob("*") if p.suffix in (".h", ".hpp")})


def _write_sources(source_root: Path, model_sources: dict[Path, bytes], engine: str, context: dict,
                   port_files: list[str]) -> None:
    """app/, port/ and model/ under `source_root`, from clean folders."""
    firmware.replace_source_dirs(source_root)
    firmware.write_model_sources(model_sources, source_root / "model")
    firmware.render_app(source_root / "app", engine, context)
    firmware.render_files(port_files, source_root / "port", context)


def _zephyr_conf_name(board: Board) -> str:
    """boards/<board>_<qualifiers>.conf, as Zephyr looks for it (slashes become underscores)."""
    return board.zephyr_board.replace("/", "_") + ".conf"


def _zephyr_board_conf(board: Board, context: dict) -> str | None:
    groups = []
    if board.is_arm and board.cpu.get("fpu", "none") != "none":
        groups.append(_group(f"The core's FPU ({board.cpu['fpu']}): float inputs and outputs, TFLM's float paths",
                             ("FPU", True)))
    return _kconfig(f"Kconfig for {board.zephyr_board}", groups, context) if groups else None


def _zephyr_prj_conf(board: Board, engine: str, stack_bytes: int, context: dict) -> str:
    groups = [
        _group("Console: JSON lines out, bench commands in (received by interrupt, so no byte is lost while "
               "the application sleeps)", ("SERIAL", True), ("CONSOLE", True), ("UART_CONSOLE", True),
               ("UART_INTERRUPT_DRIVEN", True)),
        _group("Nothing else on the console than the protocol's lines", ("BOOT_BANNER", False), ("LOG", False)),
        _group("Telemetry: stack and heap high-water marks", ("INIT_STACKS", True), ("THREAD_STACK_INFO", True),
               ("SYS_HEAP_RUNTIME_STATS", True), ("HEAP_MEM_POOL_SIZE", ZEPHYR_HEAP_BYTES[engine])),
        _group("The application runs in the main thread", ("MAIN_STACK_SIZE", stack_bytes)),
    ]
    if engine in ("tflm", "ethos-u"):
        groups.append(_group("TFLM from Zephyr's tflite-micro module (C++17)", ("CPP", True), ("STD_CPP17", True),
                             ("REQUIRES_FULL_LIBCPP", True), ("TENSORFLOW_LITE_MICRO", True)))
        if board.is_arm:
            groups.append(_group("CMSIS-NN kernels for Arm cores", ("TENSORFLOW_LITE_MICRO_CMSIS_NN_KERNELS", True)))
    if engine == "ethos-u":
        groups.append(_group(f"The {board.npu} NPU driver; TFLM's ethos-u operator runs the Vela-compiled parts on it",
                             ("ETHOS_U", True)))
    return _kconfig("Kconfig for the application", groups, context)


def render_zephyr_project(board: Board, engine: str, model_sources: dict[Path, bytes], out_dir: Path,
                          context: dict, stack_bytes: int) -> None:
    src = out_dir / "src"
    _write_sources(src, model_sources, engine, context, ["zephyr/port_zephyr.c", "common/cpu_cycles.h"])
    shutil.rmtree(out_dir / "boards", ignore_errors=True)
    weights = ZEPHYR_WEIGHTS_SNIPPET if engine == "aot" else None
    if weights:
        firmware.render_file(f"zephyr/{weights}", out_dir / weights, context)
    else:
        (out_dir / ZEPHYR_WEIGHTS_SNIPPET).unlink(missing_ok=True)
    cmake = {**context, "sources": _sources(src, out_dir), "include_dirs": _header_dirs(src, out_dir),
             "weights_section": weights, "cxx": engine != "aot", "zephyr_board": board.zephyr_board}
    firmware.render_file("zephyr/CMakeLists.txt.j2", out_dir / "CMakeLists.txt", cmake)
    (out_dir / "prj.conf").write_text(_zephyr_prj_conf(board, engine, stack_bytes, context))
    board_conf = _zephyr_board_conf(board, context)
    if board_conf:
        (out_dir / "boards").mkdir()
        (out_dir / "boards" / _zephyr_conf_name(board)).write_text(board_conf)


def _flash_size_option(board: Board) -> tuple[str, bool] | None:
    size_mb = board.memory_for("code").length // (1024 * 1024)
    return (f"ESPTOOLPY_FLASHSIZE_{size_mb}MB", True) if size_mb in (1, 2, 4, 8, 16, 32, 64, 128) else None


def _esp_idf_sdkconfig(board: Board, context: dict) -> str:
    target = [("IDF_TARGET", board.idf_target), (f"ESP_DEFAULT_CPU_FREQ_MHZ_{board.clock_hz // 1_000_000}", True)]
    flash = _flash_size_option(board)
    groups = [
        _group(f"Target and clock, from boards/{board.name}.toml", *target, *([flash] if flash else [])),
        _group("Ticks of one millisecond for the duty cycle", ("FREERTOS_HZ", 1000)),
        _group("Console on the UART: JSON lines out, bench commands in", ("ESP_CONSOLE_UART_DEFAULT", True),
               ("ESP_CONSOLE_UART_BAUDRATE", board.console["baud"])),
        _group("Nothing else on the console than warnings and the protocol's lines", ("LOG_DEFAULT_LEVEL_WARN", True),
               ("BOOTLOADER_LOG_LEVEL_WARN", True)),
        _group("Optimize for speed", ("COMPILER_OPTIMIZATION_PERF", True)),
    ]
    return _kconfig("sdkconfig defaults (idf.py applies them when it first configures the project)", groups, context)


def render_esp_idf_project(board: Board, engine: str, model_sources: dict[Path, bytes], out_dir: Path,
                           context: dict) -> None:
    main = out_dir / "main"
    _write_sources(main, model_sources, engine, context, ["esp-idf/port_esp_idf.c"])
    fragment = ESP_IDF_WEIGHTS_FRAGMENT if engine == "aot" else None
    if fragment:
        firmware.render_file(f"esp-idf/main/{fragment}", main / fragment, context)
    else:
        (main / ESP_IDF_WEIGHTS_FRAGMENT).unlink(missing_ok=True)
    component = {**context, "sources": _sources(main, main), "include_dirs": _header_dirs(main, main),
                 "weights_fragment": fragment, "cxx": engine != "aot", "idf_target": board.idf_target,
                 "idf_version": ESP_IDF_VERSION, "dependencies": [ESP_TFLITE_MICRO] if engine == "tflm" else []}
    firmware.render_file("esp-idf/CMakeLists.txt.j2", out_dir / "CMakeLists.txt", component)
    firmware.render_file("esp-idf/main/CMakeLists.txt.j2", main / "CMakeLists.txt", component)
    firmware.render_file("esp-idf/main/idf_component.yml.j2", main / "idf_component.yml", component)
    (out_dir / "sdkconfig.defaults").write_text(_esp_idf_sdkconfig(board, context))


def render_micropython_module(model_sources: dict[Path, bytes], out_dir: Path, context: dict, io: ModelIO,
                              model_sha256: str) -> None:
    """`model_sha256`: the digest of the source .tflite; the device runtime checks it against the
    model file before handing inference to this module."""
    module = context["model_name"]
    module_dir = out_dir / module
    shutil.rmtree(module_dir, ignore_errors=True)
    firmware.write_model_sources(model_sources, module_dir / MICROPYTHON_MODEL_DIR)
    values = {**context, "module": module, "input_sizes": list(io.input_bytes), "output_sizes": list(io.output_bytes),
              "model_sha256": model_sha256,
              "output_total": sum(io.output_bytes),
              "model_sources": _sources(module_dir / MICROPYTHON_MODEL_DIR, module_dir, (".c",)),
              "include_dirs": _header_dirs(module_dir / MICROPYTHON_MODEL_DIR, module_dir)}
    firmware.render_file("micropython/micropython.mk.j2", module_dir / "micropython.mk", values)
    firmware.render_file("micropython/module.cmake.j2", module_dir / "micropython.cmake", values)
    firmware.render_file("micropython/module.c.j2", module_dir / f"mod{module}.c", values)
    firmware.render_file("micropython/micropython.cmake.j2", out_dir / "micropython.cmake", values)


def render_project(board: Board | str, rtos: str, engine: str, model_dir: str | Path, out_dir: str | Path,
                   model_name: str = "model", settings: AppSettings | None = None) -> Path:
    """Render the project for `board` x `rtos` x `engine` around the compiled model in `model_dir`
    (the output of compile_model: sources and report.json) into `out_dir`; returns `out_dir`.

    Source folders are replaced; build/ and anything else in `out_dir` are left alone."""
    board = _as_board(board)
    check_combination(board, rtos, engine)
    firmware.check_model_name(model_name)
    settings = settings or AppSettings()
    kind = project_kind(board, rtos)
    if kind == "micropython" and not model_name.isidentifier():
        raise McuforgeError(f"{model_name!r} cannot be a MicroPython module name", where="--name",
                            fix="use a Python identifier")
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    report = firmware.compile_report(model_dir)
    if report.get("engine") != engine:
        raise McuforgeError(f"the model in {model_dir} was compiled for the {report.get('engine')} engine, "
                            f"not {engine}", where=str(model_dir / "report.json"),
                            fix=f"compile it with --engine {engine}")
    io = firmware.model_io_from_report(report, str(model_dir / "report.json"))
    stack_bytes = settings.app_stack_bytes(engine)
    readme_context = {
        "board": board, "board_name": board.name, "rtos": rtos, "engine": engine, "kind": kind,
        "model_name": model_name, "settings": settings, "stack_bytes": stack_bytes, "report": report, "io": io,
        "zephyr_board": board.zephyr_board, "idf_target": board.idf_target, "npu": board.npu,
        "flash_tool": board.flash.get("tool"), "baud": board.console.get("baud"),
        "counter": firmware.cycle_counter(board, rtos if kind != "esp-idf" else "freertos"),
        "app_dir": {"zephyr": "src/app", "esp-idf": "main/app"}.get(kind, "app"),
        "port_dir": {"zephyr": "src/port", "esp-idf": "main/port"}.get(kind, "port"),
    }

    if kind in ("baremetal", "freertos"):
        # render_cortex_m_project writes the README last, once the sources are known.
        readme_context["cmake"] = {"required_variables": firmware.cmake_variables(rtos, engine, board),
                                   "tflm_target_arch": firmware.TFLM_TARGET_ARCH.get(board.core, board.core),
                                   "freertos_port": firmware.FREERTOS_PORTS.get(board.core, "")}
        readme_context["console"] = firmware.console_driver(board, fall_back_to_semihosting=True)[1]
        readme_context["qemu"] = board.qemu is not None
        return firmware.render_cortex_m_project(board, model_dir, out_dir, model_name, rtos=rtos, engine=engine,
                                                settings=settings, readme=_readme(kind, readme_context))

    model_sources = firmware.read_model_sources(model_dir, model_name, engine)
    out_dir.mkdir(parents=True, exist_ok=True)
    counter = firmware.cycle_counter(board, "freertos" if kind == "esp-idf" else rtos)
    context = firmware.app_context(board_name=board.name, rtos=rtos, engine=engine, model_name=model_name, io=io,
                                   settings=settings, clock_hz=board.clock_hz, counter=counter, report=report,
                                   npu=engine == "ethos-u")
    if kind == "zephyr":
        render_zephyr_project(board, engine, model_sources, out_dir, context, stack_bytes)
        readme_context["board_conf"] = _zephyr_conf_name(board) if (out_dir / "boards").is_dir() else None
    elif kind == "esp-idf":
        render_esp_idf_project(board, engine, model_sources, out_dir, context)
    else:
        render_micropython_module(model_sources, out_dir, context, io, (report.get("model") or {}).get("sha256", ""))
    (out_dir / "README.md").write_text(_readme(kind, readme_context))
    manifest = {"kind": kind, "board": board.name, "rtos": rtos, "engine": engine, "model_name": model_name,
                "application": kind != "micropython",
                "settings": {"period_ms": settings.period_ms, "iterations": settings.iterations,
                             "stack_bytes": stack_bytes}}
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return out_dir


# ---- building -------------------------------------------------------------------------------

def read_manifest(project_dir: str | Path) -> dict:
    path = Path(project_dir) / MANIFEST
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise McuforgeError(f"not a project rendered by mcuforge: {project_dir}", where=str(path),
                            fix="render it first: mcuforge build MODEL --board B --rtos R --engine E -o DIR") from None


def require_tool(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise McuforgeError(f"{tool} is not installed (not found on PATH)", where="PATH",
                            fix=INSTALL_HINTS.get(tool, f"install {tool}"))
    return path


def _tail(path: Path, lines: int = 15) -> str:
    try:
        kept = path.read_text(errors="replace").strip().splitlines()[-lines:]
    except FileNotFoundError:
        return "(no output)"
    return "\n".join(kept) or "(no output)"


@contextlib.contextmanager
def _keeping_artifacts(build_dir: Path, patterns: tuple[str, ...]):
    """Run a build in `build_dir`; when it fails, put back the artifacts of the last good build
    (the SDK's own tools may have deleted or half-written them)."""
    saved = Path(tempfile.mkdtemp(prefix=".mcuforge-artifacts-", dir=build_dir.parent))
    kept = []
    try:
        for pattern in patterns:
            for path in build_dir.glob(pattern):
                if path.is_file():
                    relative = path.relative_to(build_dir)
                    (saved / relative).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(path, saved / relative)
                    kept.append(relative)
        try:
            yield
        except BaseException:
            for relative in kept:
                (build_dir / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(saved / relative, build_dir / relative)
            raise
    finally:
        shutil.rmtree(saved, ignore_errors=True)


def _run_build_step(command: list[str], cwd: Path, log: Path, what: str, fix: str, env: dict | None = None) -> None:
    with open(log, "a") as out:
        out.write(f"$ {' '.join(command)}\n")
        out.flush()
        result = subprocess.run(command, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=env)
    if result.returncode != 0:
        raise McuforgeError(f"{what} failed (exit code {result.returncode}); last lines of its output:\n{_tail(log)}",
                            where=f"{' '.join(command)}\n  full log: {log}", fix=fix)


def _cmake_definitions(project_dir: Path) -> list[str]:
    """-D options for the CMake cache variables the project needs, from the environment; a
    missing one is named with what it is."""
    text = (project_dir / "CMakeLists.txt").read_text()
    manifest = read_manifest(project_dir)
    board = load_board(manifest["board"])
    definitions = []
    for variable in firmware.cmake_variables(manifest["rtos"], manifest["engine"], board):
        if variable["name"] not in text:
            continue
        value = os.environ.get(variable["name"])
        if not value:
            raise McuforgeError(f"{variable['name']} is not set: the build needs {variable['help']}",
                                where=f"environment variable {variable['name']}",
                                fix=f"export {variable['name']}=... and run again (see {project_dir / 'README.md'})")
        definitions.append(f"-D{variable['name']}={value}")
    return definitions


def _build_cmake(project_dir: Path, build_dir: Path, log: Path) -> Path:
    cmake = require_tool("cmake")
    firmware._require_arm_toolchain()
    definitions = _cmake_definitions(project_dir)
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    _run_build_step([cmake, "-S", str(project_dir), "-B", str(build_dir), *generator, *definitions], project_dir, log,
                    "configuring with CMake", "see the log; the README lists what the project needs")
    _run_build_step([cmake, "--build", str(build_dir)], project_dir, log, "building with CMake",
                    "see the compiler errors in the log")
    return build_dir / firmware.ELF_NAME


def build_project(project_dir: str | Path) -> dict:
    """Build a rendered project with its SDK's tool, into project_dir/build; the artifacts.

    A missing tool is named with how to install it. A failed build leaves the artifacts of
    the last good build in place."""
    project_dir = Path(project_dir).resolve()
    manifest = read_manifest(project_dir)
    kind, board = manifest["kind"], load_board(manifest["board"])
    build_dir = project_dir / BUILD_DIR
    if kind == "baremetal" and manifest["engine"] == "aot":
        elf = firmware.build_baremetal_project(project_dir, board)  # scratch build: keeps the old ELF itself
        return {"tool": firmware.ARM_GCC, "artifacts": [str(elf)], "sizes": firmware.elf_sizes(elf)}
    if kind == "micropython":
        return _build_micropython(project_dir, manifest)
    tools = {"zephyr": "west", "esp-idf": "idf.py", "baremetal": "cmake", "freertos": "cmake"}
    require_tool(tools[kind])
    build_dir.mkdir(exist_ok=True)
    log = build_dir / BUILD_LOG
    log.write_text("")
    with _keeping_artifacts(build_dir, ARTIFACTS[kind]):
        if kind == "zephyr":
            _run_build_step(["west", "build", "-b", board.zephyr_board, "-d", str(build_dir), str(project_dir)],
                            project_dir, log, "west build",
                            "see the log; west must run inside a Zephyr workspace with the modules the README lists")
            main = build_dir / "zephyr" / "zephyr.elf"
        elif kind == "esp-idf":
            base = ["idf.py", "-C", str(project_dir), "-B", str(build_dir)]
            if not (project_dir / "sdkconfig").exists():
                _run_build_step([*base, "set-target", board.idf_target], project_dir, log, "idf.py set-target",
                                "see the log; check that ESP-IDF supports " + board.idf_target)
            _run_build_step([*base, "build"], project_dir, log, "idf.py build", "see the compiler errors in the log")
            main = next(iter(sorted(build_dir.glob("*.elf"))), build_dir)
        else:
            main = _build_cmake(project_dir, build_dir, log)
    result = {"tool": tools[kind], "artifacts": [str(main)], "log": str(log)}
    if main.suffix == ".elf" and board.is_arm and shutil.which(firmware.ARM_SIZE):
        with contextlib.suppress(McuforgeError):  # sizes are a courtesy; the build itself succeeded
            result["sizes"] = firmware.elf_sizes(main)
    return result


def _build_micropython(project_dir: Path, manifest: dict) -> dict:
    """Build MicroPython's unix port with the module, from the source tree in MICROPYTHON_DIR:
    the quickest check that the module compiles and imports."""
    source = os.environ.get("MICROPYTHON_DIR")
    if not source or not (Path(source) / "ports" / "unix" / "Makefile").is_file():
        raise McuforgeError("a MicroPython user C module is built into a MicroPython firmware, and MICROPYTHON_DIR "
                            "does not name a MicroPython source tree", where="environment variable MICROPYTHON_DIR",
                            fix="git clone https://github.com/micropython/micropython, export MICROPYTHON_DIR=<it> "
                                "(mcuforge then builds the unix port with the module), or build your board's port "
                                f"as {project_dir / 'README.md'} says")
    make = require_tool("make")
    build_dir = project_dir / BUILD_DIR
    build_dir.mkdir(exist_ok=True)
    log = build_dir / BUILD_LOG
    log.write_text("")
    unix = Path(source) / "ports" / "unix"
    with _keeping_artifacts(build_dir, ARTIFACTS["micropython"]):
        _run_build_step([make, "-C", str(unix), "submodules"], project_dir, log, "fetching MicroPython's submodules",
                        "see the log")
        _run_build_step([make, "-C", str(unix), f"USER_C_MODULES={project_dir}", f"BUILD={build_dir / 'unix'}",
                         f"PROG={build_dir / 'micropython'}"], project_dir, log, "building MicroPython's unix port",
                        "see the compiler errors in the log")
    return {"tool": "make", "artifacts": [str(build_dir / "micropython")], "log": str(log)}


# ---- the whole stage --------------------------------------------------------------------------

def _int8_model(model: Path, calib: Path | None, out_dir: Path, notes: list[str]) -> Path:
    """The int8 .tflite to compile: `model` itself, or its conversion (into `out_dir`) when it is a
    Keras model."""
    if model.suffix == ".tflite":
        if not model.is_file():
            raise McuforgeError(f"model not found: {model}", where="MODEL", fix="give the path of an int8 .tflite")
        return model
    if not (model.suffix in KERAS_SUFFIXES or model.is_dir()):
        raise McuforgeError(f"cannot tell what kind of model {model} is", where="MODEL",
                            fix="give an int8 .tflite, a Keras model (.keras, .h5) or a SavedModel folder")
    if calib is None:
        raise McuforgeError(f"{model.name} is a Keras model: converting it to int8 needs calibration data",
                            where="--calib", fix="pass --calib with representative inputs (.npy or .npz)")
    from mcuforge.codegen.native_log import native_stderr_captured
    from mcuforge.codegen.quantize import convert

    target = out_dir / f"{model.stem}_int8.tflite"
    out_dir.mkdir(parents=True, exist_ok=True)
    with native_stderr_captured(enabled=True):
        convert(model, target, calib=calib)
    notes.append(f"converted {model.name} to {target.name} with calibration data from {calib.name}")
    return target


def build_firmware(model: str | Path, board: str | Board, rtos: str, engine: str, out_dir: str | Path, *,
                   calib: str | Path | None = None, name: str = "model", settings: AppSettings | None = None,
                   compile: bool = False, kernels: str | None = None) -> dict:
    """`mcuforge build`: convert the model if it is a Keras model, compile it for the engine,
    render the project for board x rtos x engine into `out_dir`, and build it with `compile`.

    The compiler's output (report.json, report.md) stays in out_dir/compiled, and a converted
    model in out_dir/<name>_int8.tflite."""
    from .compile import compile_model

    board = _as_board(board)
    check_combination(board, rtos, engine)
    firmware.check_model_name(name)
    settings = settings or AppSettings()
    out_dir = Path(out_dir)
    compiled_dir = out_dir / COMPILED_DIR
    notes: list[str] = []
    tflite = _int8_model(Path(model), Path(calib) if calib else None, out_dir, notes)
    report = compile_model(tflite, engine, compiled_dir, name=name, board=board.name, kernels=kernels)
    project = render_project(board, rtos, engine, compiled_dir, out_dir, model_name=name, settings=settings)
    result = {"project": str(project), "kind": project_kind(board, rtos), "board": board.name, "rtos": rtos,
              "engine": engine, "model": str(tflite), "compiled": str(compiled_dir), "report": report, "notes": notes,
              "settings": {"period_ms": settings.period_ms, "iterations": settings.iterations,
                           "stack_bytes": settings.app_stack_bytes(engine)}}
    if compile:
        try:
            result["build"] = build_project(project)
        except McuforgeError as exc:
            raise McuforgeError(exc.what, where=exc.where,
                                fix=f"{exc.fix} (the project itself is rendered: {project})") from None
    return result


# ---- running a bare-metal application under QEMU ------------------------------------------------

def run_application_on_qemu(board: Board | str, elf: str | Path, console_input: bytes = b"", timeout: float = 60) -> str:
    """Run an application build on an emulated board, with `console_input` arriving on its UART
    (QEMU's serial port on stdin); the console text. The application must end by itself: a
    bounded number of iterations, or a `quit` in the input.

    The input is sent once the application has said hello: QEMU's CMSDK UART drops what arrives
    before the firmware has enabled its receiver (a real UART does too)."""
    import threading

    from .qemu import _require_qemu, _tail as tail_lines, qemu_command

    board = _as_board(board)
    elf = Path(elf).resolve()
    if not elf.is_file():
        raise McuforgeError(f"firmware not found: {elf}", fix="build it first (mcuforge build ... --compile)")
    command = qemu_command(board, elf)
    command[0] = _require_qemu()
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    lines: list[bytes] = []
    said_hello = threading.Event()

    def read_console():
        for line in process.stdout:
            lines.append(line)
            if line.lstrip().startswith(b'{"hello"'):
                said_hello.set()
        said_hello.set()  # the console closed: nothing to wait for any more

    reader = threading.Thread(target=read_console, daemon=True)
    reader.start()
    try:
        if said_hello.wait(timeout) and process.poll() is None:
            with contextlib.suppress(BrokenPipeError):
                process.stdin.write(bytes(console_input))
                process.stdin.flush()
        with contextlib.suppress(BrokenPipeError):
            process.stdin.close()
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        reader.join(timeout=5)
        partial = b"".join(lines).decode(errors="replace")
        raise McuforgeError(f"{board.name} under QEMU did not finish within {timeout:g} s; last console lines:\n"
                            f"{tail_lines(partial)}", where=" ".join(command),
                            fix="build with --iterations N, or end the console input with quit") from None
    reader.join(timeout=5)
    return b"".join(lines).decode(errors="replace")
