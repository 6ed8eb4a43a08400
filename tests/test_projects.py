"""Firmware projects (`mcuforge build`): every board x rtos x engine the board files allow renders a
complete project whose CMake, Kconfig and YAML files are valid; unsupported combinations are refused
with the supported list; the bare-metal application runs on the four emulated cores under QEMU,
bit-exact with TFLM's reference, with its telemetry and its bench mode checked; builds that need
west, idf.py, FreeRTOS, TFLM or MicroPython run when those are present and are skipped otherwise."""
import json
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from mcuforge.boards import all_boards, load_board
from mcuforge.codegen.errors import McuforgeError
from mcuforge.host_tools.cli import cli
from mcuforge.host_tools.console_protocol import bench_commands, parse_console, parse_results, parse_telemetry
from mcuforge.host_tools.firmware import AppSettings, build_host_runner
from mcuforge.host_tools.project import (
    build_firmware, build_project, check_combination, project_kind, render_project, run_application_on_qemu,
    supported_combinations,
)

from conftest import shared_model

EMULATED_BOARDS = ["mps3-an547", "mps2-an386", "mps2-an500", "mps2-an505"]
BOARDS = {board.name: board for board in all_boards()}
COMBINATIONS = [(name, rtos, engine) for name, board in BOARDS.items() for rtos, engine in supported_combinations(board)]

needs_arm_gcc = pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None,
                                   reason="arm-none-eabi-gcc is not installed (Debian: gcc-arm-none-eabi)")
needs_qemu = pytest.mark.skipif(shutil.which("qemu-system-arm") is None,
                                reason="qemu-system-arm is not installed (Debian: qemu-system-arm)")
needs_cmake = pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake is not installed (Debian: cmake)")
needs_cc = pytest.mark.skipif(shutil.which("cc") is None, reason="no host C compiler (cc)")


# ---- compiled models, once per engine and kernel family -----------------------------------------

@pytest.fixture(scope="module")
def hello_world_model():
    return shared_model("hello_world_int8.tflite")


@pytest.fixture(scope="module")
def compiled(tmp_path_factory, hello_world_model):
    """compiled(board, engine): the hello_world model compiled for `engine` (and the board's
    kernel family or NPU), as compile_model writes it."""
    from mcuforge.codegen.emit_aot import emit_aot, kernel_variant_for
    from mcuforge.codegen.emit_tflm import emit_tflm
    from mcuforge.codegen.tflite_model import load_tflite

    root = tmp_path_factory.mktemp("compiled")
    cache = {}

    def get(board, engine):
        if engine == "aot":
            key = ("aot", kernel_variant_for(board.extensions))
        elif engine == "tflm":
            key = ("tflm",)
        else:
            key = ("ethos-u", board.npu)
        if key not in cache:
            out = root / "-".join(key)
            if engine == "aot":
                emit_aot(load_tflite(hello_world_model), out, kernels=key[1])
            elif engine == "tflm":
                emit_tflm(hello_world_model, out)
            else:
                from mcuforge.codegen.emit_ethosu import emit_ethosu, target_for_board

                emit_ethosu(hello_world_model, out, target=target_for_board(board))
            cache[key] = out
        return cache[key]

    return get


# ---- validity of the rendered files ---------------------------------------------------------------

KCONFIG_LINE = re.compile(r'^CONFIG_[A-Z0-9_]+=(y|n|-?[0-9]+|0x[0-9A-Fa-f]+|"([^"\\]|\\.)*")$')
CMAKE_COMMAND = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*\(", re.M)


def check_kconfig(path: Path) -> dict[str, str]:
    """Every line is blank, a comment or CONFIG_X=y|n|number|"string"; no option twice."""
    options = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        assert KCONFIG_LINE.match(line), f"{path.name}:{number}: not a Kconfig assignment: {line!r}"
        name, value = line.split("=", 1)
        assert name not in options, f"{path.name}:{number}: {name} set twice"
        options[name] = value
    return options


def _cmake_code(text: str) -> str:
    """CMake text without comments and quoted arguments, which may hold any parentheses."""
    return re.sub(r'"(?:[^"\\]|\\.)*"', '""', re.sub(r"(?m)#.*$", "", text))


def check_cmake(path: Path, required: set[str]) -> set[str]:
    text = path.read_text()
    code = _cmake_code(text)
    depth = 0
    for char in code:
        depth += {"(": 1, ")": -1}.get(char, 0)
        assert depth >= 0, f"{path}: unbalanced ')'"
    assert depth == 0, f"{path}: unbalanced '('"
    commands = set(CMAKE_COMMAND.findall(code))
    assert required <= commands, f"{path}: missing {sorted(required - commands)}"
    assert "{{" not in text and "{%" not in text, f"{path}: template syntax left over"
    if shutil.which("cmake"):
        # cmake reads the whole file before running any of it: a syntax error shows as a parse error,
        # whatever the first commands then do (find_package(Zephyr) fails here, as it should).
        result = subprocess.run(["cmake", "-P", str(path)], capture_output=True, text=True, cwd=path.parent)
        assert "Parse error" not in result.stderr and "Syntax Error" not in result.stderr, result.stderr
    return commands


REQUIRED_CMAKE = {
    "zephyr": {"CMakeLists.txt": {"cmake_minimum_required", "find_package", "project", "target_sources",
                                  "target_include_directories"}},
    "esp-idf": {"CMakeLists.txt": {"cmake_minimum_required", "include", "project"},
                "main/CMakeLists.txt": {"idf_component_register"}},
    "baremetal": {"CMakeLists.txt": {"cmake_minimum_required", "project", "add_executable", "target_link_options",
                                     "target_link_libraries"},
                  "cmake/arm-none-eabi.cmake": {"set"}},
    "freertos": {"CMakeLists.txt": {"cmake_minimum_required", "project", "add_library", "add_subdirectory",
                                    "add_executable", "target_link_libraries"},
                 "cmake/arm-none-eabi.cmake": {"set"}},
    "micropython": {"micropython.cmake": {"include"}},
}


def _listed_sources(project: Path, kind: str) -> tuple[Path, list[str]]:
    """The source root and the sources a project's build file lists."""
    if kind == "zephyr":
        block = re.search(r"target_sources\(app PRIVATE(.*?)\)", (project / "CMakeLists.txt").read_text(), re.S)
        return project, block.group(1).split()
    if kind == "esp-idf":
        block = re.search(r"SRCS(.*?)INCLUDE_DIRS", (project / "main" / "CMakeLists.txt").read_text(), re.S)
        return project / "main", [s.strip('"') for s in block.group(1).split()]
    block = re.search(r"add_executable\(firmware(.*?)\)", (project / "CMakeLists.txt").read_text(), re.S)
    return project, block.group(1).split()


def check_project(project: Path, board, rtos: str, engine: str) -> None:
    kind = project_kind(board, rtos)
    manifest = json.loads((project / "mcuforge_project.json").read_text())
    assert (manifest["board"], manifest["rtos"], manifest["engine"]) == (board.name, rtos, engine)
    for name, required in REQUIRED_CMAKE[kind].items():
        check_cmake(project / name, required)
    readme = (project / "README.md").read_text()
    assert "{{" not in readme and "{%" not in readme
    rendered = [p for p in project.rglob("*") if p.is_file() and "compiled" not in p.relative_to(project).parts]
    for path in rendered:
        if path.suffix in (".png", ".tflite"):
            continue
        text = path.read_text()
        # Relocatable: no path of this machine in anything rendered.
        assert str(project) not in text and str(Path.home()) not in text, f"{path} names a local path"

    if kind == "micropython":
        module = project / "model"
        for name in ("micropython.mk", "micropython.cmake", "modmodel.c"):
            assert (module / name).is_file()
        check_cmake(module / "micropython.cmake", {"add_library", "target_sources", "target_link_libraries"})
        listed = re.findall(r"SRC_USERMOD_C \+= \$\(MODEL_MOD_DIR\)/(\S+)", (module / "micropython.mk").read_text())
        assert sorted(listed) == sorted(p.relative_to(module).as_posix() for p in module.rglob("*.c"))
        assert "MP_REGISTER_MODULE(MP_QSTR_model, model_user_cmodule)" in (module / "modmodel.c").read_text()
        return

    # The build lists every source there is, and only those.
    root, listed = _listed_sources(project, kind)
    on_disk = sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                     if p.suffix in (".c", ".cc") and "build" not in p.relative_to(project).parts
                     and "compiled" not in p.relative_to(project).parts)
    assert sorted(listed) == on_disk
    assert any(s.endswith("mcuforge_app.c") for s in listed)
    assert any(s.endswith("engine_aot.c" if engine == "aot" else "engine_tflm.cc") for s in listed)
    config = next(project.rglob("mcuforge_config.h")).read_text()
    assert '#define MCUFORGE_INPUTS_FROM_FILE 0' in config and "#define MCUFORGE_PERIOD_MS 250u" in config
    assert ("MCUFORGE_TFLM_ARENA_BYTES" in config) == (engine != "aot")

    if kind == "zephyr":
        prj = check_kconfig(project / "prj.conf")
        assert prj["CONFIG_UART_INTERRUPT_DRIVEN"] == "y" and prj["CONFIG_THREAD_STACK_INFO"] == "y"
        assert ("CONFIG_TENSORFLOW_LITE_MICRO" in prj) == (engine != "aot")
        assert ("CONFIG_ETHOS_U" in prj) == (engine == "ethos-u")
        for conf in (project / "boards").glob("*.conf") if (project / "boards").is_dir() else []:
            assert conf.name == board.zephyr_board.replace("/", "_") + ".conf"
            check_kconfig(conf)
        assert f"west build -b {board.zephyr_board}" in readme
    elif kind == "esp-idf":
        defaults = check_kconfig(project / "sdkconfig.defaults")
        assert defaults["CONFIG_IDF_TARGET"] == f'"{board.idf_target}"'
        assert defaults["CONFIG_ESP_DEFAULT_CPU_FREQ_MHZ_240"] == "y" and defaults["CONFIG_ESPTOOLPY_FLASHSIZE_8MB"] == "y"
        component = yaml.safe_load((project / "main" / "idf_component.yml").read_text())
        assert isinstance(component, dict) and component["dependencies"]["idf"] == ">=5.1"
        assert ("espressif/esp-tflite-micro" in component["dependencies"]) == (engine == "tflm")
        assert f"idf.py set-target {board.idf_target}" in readme
        assert "app_main" in (project / "main" / "port" / "port_esp_idf.c").read_text()
    else:
        assert (project / "linker.ld").is_file()
        if kind == "freertos":
            config_h = (project / "port" / "FreeRTOSConfig.h").read_text()
            assert f"#define configCPU_CLOCK_HZ ({board.clock_hz}UL)" in config_h
            assert "FREERTOS_KERNEL_PATH" in (project / "CMakeLists.txt").read_text()
            assert "FREERTOS_KERNEL_PATH" in readme
        if engine != "aot":
            assert "TFLM_ROOT" in (project / "CMakeLists.txt").read_text() and "TFLM_ROOT" in readme
            assert not (project / "Makefile").exists()


@pytest.mark.parametrize("board_name, rtos, engine", COMBINATIONS, ids=["-".join(c) for c in COMBINATIONS])
def test_every_supported_combination_renders(tmp_path, compiled, board_name, rtos, engine):
    board = BOARDS[board_name]
    project = render_project(board, rtos, engine, compiled(board, engine), tmp_path / "p",
                             settings=AppSettings(period_ms=250))
    check_project(project, board, rtos, engine)


def test_the_seed_families_cover_every_rtos_and_engine():
    covered = {(rtos, engine) for name in ("stm32n6570-dk", "esp32-s3-devkitc", "corstone-300-u55")
               for rtos, engine in supported_combinations(BOARDS[name])}
    assert {rtos for rtos, _ in covered} == {"zephyr", "freertos", "baremetal", "micropython"}
    assert {engine for _, engine in covered} == {"aot", "tflm", "ethos-u"}
    assert project_kind(BOARDS["esp32-s3-devkitc"], "freertos") == "esp-idf"
    assert project_kind(BOARDS["stm32n6570-dk"], "freertos") == "freertos"


@pytest.mark.parametrize("board_name, rtos, engine, problem", [
    ("esp32-s3-devkitc", "freertos", "ethos-u", "does not support the ethos-u engine"),
    ("esp32-s3-devkitc", "baremetal", "aot", "does not support baremetal"),
    ("mps3-an547", "zephyr", "aot", "does not support zephyr"),
    ("corstone-300-u55", "micropython", "aot", "does not run MicroPython"),
    ("nrf52840dk", "micropython", "tflm", "wraps the aot engine"),
])
def test_an_unsupported_combination_lists_the_supported_ones(board_name, rtos, engine, problem):
    board = BOARDS[board_name]
    with pytest.raises(McuforgeError) as info:
        check_combination(board, rtos, engine)
    assert problem in info.value.what
    assert str(board.path) in info.value.where
    for supported_rtos, supported_engine in supported_combinations(board):
        assert f"--rtos {supported_rtos} --engine {supported_engine}" in info.value.fix


def test_ethos_u_needs_an_ethos_u_npu_whatever_the_engines_list(tmp_path):
    text = BOARDS["stm32n6570-dk"].path.read_text().replace('name = "stm32n6570-dk"', 'name = "n6-with-ethos"')
    text = text.replace('engines = ["aot", "tflm", "micropython"]', 'engines = ["aot", "tflm", "ethos-u"]')
    (tmp_path / "n6-with-ethos.toml").write_text(text)
    with pytest.raises(McuforgeError, match="needs an Ethos-U NPU, and board n6-with-ethos has st-neural-art"):
        check_combination(load_board(str(tmp_path / "n6-with-ethos.toml")), "zephyr", "ethos-u")


def test_unknown_rtos_and_engine_are_named():
    with pytest.raises(McuforgeError, match="unknown RTOS 'nuttx'"):
        check_combination(BOARDS["nrf52840dk"], "nuttx", "aot")
    with pytest.raises(McuforgeError, match="unknown engine 'onnx'"):
        check_combination(BOARDS["nrf52840dk"], "zephyr", "onnx")


def test_a_model_compiled_for_another_engine_is_refused(tmp_path, compiled):
    board = BOARDS["nrf52840dk"]
    with pytest.raises(McuforgeError, match="compiled for the aot engine, not tflm"):
        render_project(board, "zephyr", "tflm", compiled(board, "aot"), tmp_path / "p")


def test_rendering_again_replaces_the_sources_and_keeps_the_build(tmp_path, compiled):
    board = BOARDS["esp32-s3-devkitc"]
    project = render_project(board, "freertos", "tflm", compiled(board, "tflm"), tmp_path / "p")
    (project / "build").mkdir()
    (project / "build" / "app.bin").write_text("previous build")
    render_project(board, "freertos", "aot", compiled(board, "aot"), project)
    assert not (project / "main" / "model" / "model_data.cc").exists()
    assert not (project / "main" / "app" / "engine_tflm.cc").exists()
    assert (project / "main" / "model" / "model.c").exists()
    assert "esp-tflite-micro" not in (project / "main" / "idf_component.yml").read_text()
    assert (project / "build" / "app.bin").read_text() == "previous build"


def test_boards_without_a_bare_metal_uart_driver_fall_back_to_semihosting(tmp_path, compiled):
    board = BOARDS["nrf52840dk"]
    project = render_project(board, "baremetal", "aot", compiled(board, "aot"), tmp_path / "p")
    assert "#define MCUFORGE_CONSOLE_SEMIHOSTING 1" in (project / "port" / "mcuforge_board.h").read_text()
    assert "semihosting" in (project / "README.md").read_text()
    # On silicon the cycle counter is the DWT, and the program stops in place rather than exiting.
    board_h = (project / "port" / "mcuforge_board.h").read_text()
    assert "#define MCUFORGE_CYCLES_DWT 1" in board_h and "#define MCUFORGE_EXIT_THROUGH_SEMIHOSTING 1" in board_h


def test_freertos_config_comes_from_the_board_file(tmp_path, compiled):
    n6 = BOARDS["stm32n6570-dk"]
    project = render_project(n6, "freertos", "aot", compiled(n6, "aot"), tmp_path / "n6",
                             settings=AppSettings(stack_bytes=12288))
    config = (project / "port" / "FreeRTOSConfig.h").read_text()
    assert "#define configCPU_CLOCK_HZ (800000000UL)" in config
    assert "#define configENABLE_MVE 1" in config and "#define configENABLE_FPU 1" in config
    assert "GCC_ARM_CM55_NTZ_NONSECURE" in (project / "CMakeLists.txt").read_text()
    assert "#define MCUFORGE_APP_STACK_BYTES 12288u" in (project / "app" / "mcuforge_config.h").read_text()
    # FreeRTOS owns SysTick: the cycle counter is the DWT.
    assert "#define MCUFORGE_CYCLES_DWT 1" in (project / "port" / "mcuforge_board.h").read_text()

    nrf = BOARDS["nrf52840dk"]
    project = render_project(nrf, "freertos", "aot", compiled(nrf, "aot"), tmp_path / "nrf")
    config = (project / "port" / "FreeRTOSConfig.h").read_text()
    assert "#define configCPU_CLOCK_HZ (64000000UL)" in config and "configENABLE_MVE" not in config
    assert "GCC_ARM_CM4F" in (project / "CMakeLists.txt").read_text()


def test_application_settings_are_checked():
    with pytest.raises(McuforgeError, match="period"):
        AppSettings(period_ms=-1)
    with pytest.raises(McuforgeError, match="iterations"):
        AppSettings(iterations=2**32)
    with pytest.raises(McuforgeError, match="stack"):
        AppSettings(stack_bytes=100)


# ---- the application on the host: the protocol's edge cases, fast ------------------------------------

@pytest.fixture(scope="module")
def host_app(tmp_path_factory, compiled):
    if shutil.which("cc") is None:
        pytest.skip("no host C compiler (cc)")
    root = tmp_path_factory.mktemp("host_app")
    return build_host_runner(compiled(BOARDS["mps2-an386"], "aot"), root, settings=AppSettings(period_ms=5, iterations=2))


def _run_host(exe: Path, console_input: bytes) -> str:
    return subprocess.run([str(exe)], input=console_input, capture_output=True, timeout=30).stdout.decode()


def test_host_application_runs_the_loop_and_stops(host_app):
    text = _run_host(host_app, b"")
    telemetry = parse_telemetry(text, expected=2)
    assert telemetry[0].stack_hwm is None and telemetry[0].heap_hwm is None  # the host cannot tell
    assert parse_console(text).hello.cycle_counter == "host"


def test_host_application_bench_matches_the_reference(host_app, hello_world_model):
    from mcuforge.codegen.reference import run_reference

    values = list(range(-128, 128, 5))
    vectors = [bytes([v & 0xFF]) for v in values]
    reference = run_reference(hello_world_model.read_bytes(), [[np.array([[v]], dtype=np.int8)] for v in values])
    results = parse_results(_run_host(host_app, bench_commands(vectors)), [1])
    assert [r.outputs[0] for r in results] == [np.asarray(ref[0], dtype=np.int8).tobytes() for ref in reference]


@pytest.mark.parametrize("line, error", [
    (b"run 05", "not in bench mode"),
    (b"bench\nrun 0g", "not hex"),
    (b"bench\nrun 0506", "wrong vector length"),
    (b"bench\nrun 5", "wrong vector length"),
    (b"bench\nhello", "unknown command"),
    (b"bench\nbench extra", "unexpected argument"),
    (b"bench\nsupercalifragilistic", "command too long"),
])
def test_host_application_answers_a_bad_command_with_an_error_and_carries_on(host_app, line, error):
    text = _run_host(host_app, line + b"\nbench\nrun 05\nend\nquit\n")
    errors = [json.loads(l)["error"] for l in text.splitlines() if l.startswith('{"error"')]
    assert len(errors) == 1 and error in errors[0]
    good = text.replace(next(l for l in text.splitlines() if l.startswith('{"error"')) + "\n", "")
    assert len(parse_results(good, [1])) == 1  # the session after the error works


def test_host_application_ends_when_the_console_closes_in_bench_mode(host_app):
    run = parse_console(_run_host(host_app, b"bench\nrun 05\r\n"))
    assert run.done == 1 and run.stopped == 1  # the first inference ran before the bench command arrived


# ---- the bare-metal application under QEMU, on the four emulated cores -------------------------------

@pytest.fixture(scope="module")
def emulated_firmware(tmp_path_factory, hello_world_model):
    """The application for each emulated board, built by `build_firmware(..., compile=True)`:
    three inferences 5 ms apart, then it stops."""
    root = tmp_path_factory.mktemp("emulated")
    settings = AppSettings(period_ms=5, iterations=3)
    built = {}
    for name in EMULATED_BOARDS:
        result = build_firmware(hello_world_model, name, "baremetal", "aot", root / name, settings=settings, compile=True)
        built[name] = Path(result["build"]["artifacts"][0])
    return built


@pytest.fixture(scope="module")
def hello_world_reference(hello_world_model):
    from mcuforge.codegen.reference import run_reference

    values = list(range(-128, 128))
    outputs = run_reference(hello_world_model.read_bytes(), [[np.array([[v]], dtype=np.int8)] for v in values])
    return [bytes([v & 0xFF]) for v in values], [np.asarray(o[0], dtype=np.int8).tobytes() for o in outputs]


@pytest.mark.qemu
@needs_arm_gcc
@needs_qemu
@pytest.mark.parametrize("board_name", EMULATED_BOARDS)
def test_application_telemetry_under_qemu(emulated_firmware, board_name):
    board = load_board(board_name)
    text = run_application_on_qemu(board, emulated_firmware[board_name])
    run = parse_console(text)
    assert run.hello.board == board_name and run.hello.cycle_counter == "systick"
    assert run.hello.clock_hz == board.clock_hz and run.hello.period_ms == 5 and run.hello.iterations == 3
    telemetry = parse_telemetry(text, expected=3)
    assert all(t.cycles > 0 for t in telemetry)
    # -icount shift=0: the same input costs the same instructions; the timer's tick boundaries may
    # fall one tick apart from one inference to the next
    assert max(t.cycles for t in telemetry) - min(t.cycles for t in telemetry) <= 1
    assert all(0 < t.stack_hwm < 16 * 1024 and t.heap_hwm == 0 for t in telemetry)
    assert all(set(t.result) == {"class", "score"} for t in telemetry)
    # duty cycle: one inference per period of virtual time
    assert [t.uptime_ms - telemetry[0].uptime_ms for t in telemetry] == [0, 5, 10]


@pytest.mark.qemu
@needs_arm_gcc
@needs_qemu
@pytest.mark.parametrize("board_name", EMULATED_BOARDS)
def test_application_bench_mode_under_qemu_is_bit_exact(emulated_firmware, hello_world_reference, board_name):
    vectors, expected = hello_world_reference
    board = load_board(board_name)
    text = run_application_on_qemu(board, emulated_firmware[board_name], bench_commands(vectors, finish="end"))
    run = parse_console(text)
    results = parse_results(text, [1])
    assert [r.outputs[0] for r in results] == expected  # every int8 input, bit for bit with TFLM
    assert all(r.cycles > 0 for r in results)
    # after `end` the loop resumes on the last bench vector, and stops after its 3 inferences
    assert run.bench_sessions == 1 and run.stopped == 3 and len(run.telemetry) == 3
    assert run.telemetry[-1].result["score"] == int(np.frombuffer(expected[-1], dtype=np.int8)[0])


@pytest.mark.qemu
@needs_arm_gcc
@needs_qemu
def test_a_larger_model_benches_bit_exact_on_the_m55(tmp_path):
    """ad01 (640 int8 inputs): bench lines of 1280 hex digits, the MVE kernels, against TFLM."""
    from mcuforge.codegen.reference import run_reference
    from mcuforge.codegen.tflite_model import load_tflite

    model = shared_model("ad01_int8.tflite")
    graph = load_tflite(model)
    rng = np.random.default_rng(7)
    samples = [[rng.integers(-128, 128, size=graph.tensors[t].shape, dtype=np.int8) for t in graph.inputs]
               for _ in range(4)]
    expected = [[np.ascontiguousarray(o).tobytes() for o in outs] for outs in run_reference(model.read_bytes(), samples)]
    result = build_firmware(model, "mps3-an547", "baremetal", "aot", tmp_path / "p",
                            settings=AppSettings(period_ms=1, iterations=1), compile=True)
    assert result["report"]["kernels"] == "mve"
    vectors = [b"".join(x.tobytes() for x in sample) for sample in samples]
    text = run_application_on_qemu("mps3-an547", result["build"]["artifacts"][0], bench_commands(vectors))
    sizes = [graph.tensors[t].nbytes for t in graph.outputs]
    assert [r.outputs for r in parse_results(text, sizes)] == expected


@pytest.mark.qemu
@needs_arm_gcc
@needs_qemu
@needs_cmake
def test_the_bare_metal_cmake_build_gives_the_same_firmware_behaviour(tmp_path, emulated_firmware, hello_world_reference):
    project = emulated_firmware["mps2-an386"].parents[1]
    build = tmp_path / "cmake-build"
    configure = subprocess.run(["cmake", "-S", str(project), "-B", str(build)], capture_output=True, text=True)
    assert configure.returncode == 0, configure.stderr
    compiled_ = subprocess.run(["cmake", "--build", str(build)], capture_output=True, text=True)
    assert compiled_.returncode == 0, compiled_.stdout + compiled_.stderr
    vectors, expected = hello_world_reference
    text = run_application_on_qemu("mps2-an386", build / "firmware.elf", bench_commands(vectors[:16]))
    assert [r.outputs[0] for r in parse_results(text, [1])] == expected[:16]


# ---- building: the SDK tools, when present ---------------------------------------------------------

def _fake_tool(directory: Path, name: str, script: str) -> None:
    directory.mkdir(exist_ok=True)
    path = directory / name
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


@pytest.mark.parametrize("board_name, rtos, tool, hint", [
    ("nrf52840dk", "zephyr", "west", "pip install west"),
    ("esp32-s3-devkitc", "freertos", "idf.py", "export.sh"),
])
def test_a_missing_sdk_tool_is_named_with_how_to_install_it(tmp_path, compiled, monkeypatch, board_name, rtos, tool, hint):
    board = BOARDS[board_name]
    project = render_project(board, rtos, "aot", compiled(board, "aot"), tmp_path / "p")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(McuforgeError) as info:
        build_project(project)
    assert f"{tool} is not installed" in info.value.what and hint in info.value.fix


@pytest.mark.parametrize("engine, variable", [("tflm", "TFLM_ROOT"), ("ethos-u", "TFLM_ROOT")])
def test_a_cmake_build_names_the_variable_it_lacks(tmp_path, compiled, monkeypatch, engine, variable):
    if shutil.which("cmake") is None:
        _fake_tool(tmp_path / "bin", "cmake", "exit 0\n")
        monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    board = BOARDS["corstone-300-u55"]
    project = render_project(board, "baremetal", engine, compiled(board, engine), tmp_path / "p")
    for name in ("TFLM_ROOT", "TFLM_LIB", "ETHOSU_BASE_ADDRESS", "ETHOSU_IRQ"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(McuforgeError) as info:
        build_project(project)
    assert f"{variable} is not set" in info.value.what and "README.md" in info.value.fix


@needs_cmake
@pytest.mark.parametrize("rtos, engine, variable", [
    ("freertos", "aot", "FREERTOS_KERNEL_PATH"),
    ("baremetal", "tflm", "TFLM_ROOT"),
    ("baremetal", "ethos-u", "TFLM_ROOT"),
])
def test_cmake_itself_stops_on_a_missing_library_path(tmp_path, compiled, rtos, engine, variable):
    """Configuring with plain cmake, as the README says, runs the project's own checks."""
    board = BOARDS["corstone-300-u55"]
    project = render_project(board, rtos, engine, compiled(board, engine), tmp_path / "p")
    env = {k: v for k, v in os.environ.items() if k not in ("FREERTOS_KERNEL_PATH", "TFLM_ROOT", "TFLM_LIB")}
    result = subprocess.run(["cmake", "-S", str(project), "-B", str(tmp_path / "b")], capture_output=True, text=True,
                            env=env)
    assert result.returncode != 0
    assert f"{variable} is not set or wrong" in result.stderr


def test_a_failed_sdk_build_puts_the_previous_artifacts_back(tmp_path, compiled, monkeypatch):
    """A stand-in west: it records its arguments, writes zephyr.elf when it succeeds, and deletes
    it before failing, as a real failed link does."""
    board = BOARDS["nrf52840dk"]
    project = render_project(board, "zephyr", "aot", compiled(board, "aot"), tmp_path / "p")
    _fake_tool(tmp_path / "bin", "west", 'echo "$@" > "$WEST_ARGS"\nmkdir -p "$5/zephyr"\n'
                                         'if [ -n "$WEST_FAIL" ]; then rm -f "$5/zephyr/zephyr.elf"; echo "error: boom"; exit 2; fi\n'
                                         'echo good > "$5/zephyr/zephyr.elf"\n')
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("WEST_ARGS", str(tmp_path / "west-args"))
    monkeypatch.delenv("WEST_FAIL", raising=False)
    result = build_project(project)
    elf = project / "build" / "zephyr" / "zephyr.elf"
    assert result["tool"] == "west" and Path(result["artifacts"][0]) == elf
    assert (tmp_path / "west-args").read_text().split() == ["build", "-b", board.zephyr_board, "-d",
                                                            str(project / "build"), str(project)]
    monkeypatch.setenv("WEST_FAIL", "1")
    with pytest.raises(McuforgeError) as info:
        build_project(project)
    assert "west build failed" in info.value.what and "error: boom" in info.value.what
    assert elf.read_text() == "good\n"


@pytest.mark.skipif(shutil.which("west") is None, reason="west is not installed (no Zephyr workspace on this machine)")
@pytest.mark.parametrize("board_name", ["nrf52840dk", "stm32n6570-dk", "corstone-300-u55", "esp32-s3-devkitc"])
def test_zephyr_project_builds_with_west(tmp_path, compiled, board_name):
    board = BOARDS[board_name]
    project = render_project(board, "zephyr", "aot", compiled(board, "aot"), tmp_path / "p")
    assert Path(build_project(project)["artifacts"][0]).is_file()


@pytest.mark.skipif(shutil.which("idf.py") is None, reason="idf.py is not installed (no ESP-IDF on this machine)")
@pytest.mark.parametrize("engine", ["aot", "tflm"])
def test_esp_idf_project_builds_with_idf_py(tmp_path, compiled, engine):
    board = BOARDS["esp32-s3-devkitc"]
    project = render_project(board, "freertos", engine, compiled(board, engine), tmp_path / "p")
    assert Path(build_project(project)["artifacts"][0]).is_file()


@needs_arm_gcc
@needs_cmake
@pytest.mark.skipif(not os.environ.get("FREERTOS_KERNEL_PATH"),
                    reason="FREERTOS_KERNEL_PATH is not set (no FreeRTOS-Kernel source tree on this machine)")
@pytest.mark.parametrize("board_name", ["nrf52840dk", "stm32n6570-dk", "corstone-300-u55"])
def test_freertos_project_builds(tmp_path, compiled, board_name):
    board = BOARDS[board_name]
    project = render_project(board, "freertos", "aot", compiled(board, "aot"), tmp_path / "p")
    assert Path(build_project(project)["artifacts"][0]).is_file()


@needs_arm_gcc
@needs_cmake
@pytest.mark.skipif(not (os.environ.get("TFLM_ROOT") and os.environ.get("TFLM_LIB")),
                    reason="TFLM_ROOT and TFLM_LIB are not set (the TFLM C++ library is not on this machine)")
def test_bare_metal_tflm_project_builds(tmp_path, compiled):
    board = BOARDS["mps3-an547"]
    project = render_project(board, "baremetal", "tflm", compiled(board, "tflm"), tmp_path / "p")
    assert Path(build_project(project)["artifacts"][0]).is_file()


@pytest.mark.skipif(not os.environ.get("MICROPYTHON_DIR"),
                    reason="MICROPYTHON_DIR is not set (no MicroPython source tree on this machine)")
def test_micropython_module_builds_into_the_unix_port(tmp_path, compiled):
    board = BOARDS["nrf52840dk"]
    project = render_project(board, "micropython", "aot", compiled(board, "aot"), tmp_path / "p")
    micropython = Path(build_project(project)["artifacts"][0])
    out = subprocess.run([str(micropython), "-c", "import model; print(len(model.invoke(bytes(1))))"],
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "1"


def test_micropython_without_a_source_tree_says_how_to_build(tmp_path, compiled, monkeypatch):
    board = BOARDS["nrf52840dk"]
    project = render_project(board, "micropython", "aot", compiled(board, "aot"), tmp_path / "p")
    monkeypatch.delenv("MICROPYTHON_DIR", raising=False)
    with pytest.raises(McuforgeError) as info:
        build_project(project)
    assert "MICROPYTHON_DIR" in info.value.what and "README.md" in info.value.fix


# ---- the command line ---------------------------------------------------------------------------------

def test_cli_build_renders_and_compiles(tmp_path, hello_world_model):
    if shutil.which("arm-none-eabi-gcc") is None:
        pytest.skip("arm-none-eabi-gcc is not installed (Debian: gcc-arm-none-eabi)")
    out = tmp_path / "fw"
    result = CliRunner().invoke(cli, ["build", str(hello_world_model), "--board", "mps2-an505", "--rtos", "baremetal",
                                      "-o", str(out), "--period-ms", "20", "--iterations", "2", "--compile"])
    assert result.exit_code == 0, result.output
    assert "baremetal project" in result.output and "firmware.elf" in result.output
    assert (out / "build" / "firmware.elf").is_file() and (out / "compiled" / "report.json").is_file()
    config = (out / "app" / "mcuforge_config.h").read_text()
    assert "#define MCUFORGE_PERIOD_MS 20u" in config and "#define MCUFORGE_ITERATIONS 2u" in config


def test_cli_build_refuses_an_unsupported_combination(tmp_path, hello_world_model):
    result = CliRunner().invoke(cli, ["build", str(hello_world_model), "--board", "esp32-s3-devkitc", "--rtos",
                                      "freertos", "--engine", "ethos-u", "-o", str(tmp_path / "fw")])
    assert result.exit_code == 1
    assert "does not support the ethos-u engine" in result.output and "--rtos freertos --engine tflm" in result.output
    assert not (tmp_path / "fw").exists()


def test_cli_build_needs_calibration_for_a_keras_model(tmp_path):
    model = tmp_path / "net.keras"
    model.write_bytes(b"not really")
    result = CliRunner().invoke(cli, ["build", str(model), "--board", "nrf52840dk", "--rtos", "zephyr",
                                      "-o", str(tmp_path / "fw")])
    assert result.exit_code == 1 and "needs calibration data" in result.output and "--calib" in result.output


@pytest.mark.slow
def test_cli_build_converts_a_keras_model(tmp_path):
    import keras

    inputs = keras.Input(shape=(8,))
    outputs = keras.layers.Dense(4, activation="softmax")(keras.layers.Dense(16, activation="relu")(inputs))
    model = keras.Model(inputs, outputs)
    model.save(tmp_path / "net.keras")
    np.save(tmp_path / "calib.npy", np.random.default_rng(0).normal(size=(32, 8)).astype(np.float32))
    result = CliRunner().invoke(cli, ["build", str(tmp_path / "net.keras"), "--calib", str(tmp_path / "calib.npy"),
                                      "--board", "esp32-s3-devkitc", "--rtos", "freertos", "-o", str(tmp_path / "fw")])
    assert result.exit_code == 0, result.output
    assert "converted net.keras" in result.output
    assert (tmp_path / "fw" / "net_int8.tflite").is_file()
    assert (tmp_path / "fw" / "main" / "model" / "model.c").is_file()


# ---- the RTOS ports and the TFLM glue compile (against stub SDK headers) -----------------------------

STUBS = Path(__file__).resolve().parent / "sdk_stubs"
STRICT = ["-fsyntax-only", "-Wall", "-Werror"]


def _syntax_check(compiler: str, sources: list[Path], include_dirs: list[Path], flags: list[str]) -> None:
    for source in sources:
        command = [compiler, *STRICT, *flags, *[f"-I{d}" for d in include_dirs], str(source)]
        result = subprocess.run(command, capture_output=True, text=True)
        assert result.returncode == 0, f"{source.name}:\n{result.stderr}"


def _arm_flags(board) -> list[str]:
    return list(board.cpu["gcc_flags"]) + ["-std=gnu11"]


@needs_arm_gcc
@pytest.mark.parametrize("board_name", ["nrf52840dk", "stm32n6570-dk", "corstone-300-u55"])
def test_freertos_port_compiles(tmp_path, compiled, board_name):
    board = BOARDS[board_name]
    project = render_project(board, "freertos", "aot", compiled(board, "aot"), tmp_path / "p")
    sources = sorted(project.glob("*/*.c"))
    assert project / "port" / "port_freertos.c" in sources
    _syntax_check("arm-none-eabi-gcc", sources, [STUBS / "freertos", project / "app", project / "port", project / "model"],
                  _arm_flags(board))


@needs_arm_gcc
def test_zephyr_port_compiles(tmp_path, compiled):
    board = BOARDS["nrf52840dk"]
    project = render_project(board, "zephyr", "aot", compiled(board, "aot"), tmp_path / "p")
    src = project / "src"
    _syntax_check("arm-none-eabi-gcc", sorted(src.glob("*/*.c")), [STUBS / "zephyr", src / "app", src / "port", src / "model"],
                  _arm_flags(board))


@needs_cc
def test_esp_idf_port_compiles(tmp_path, compiled):
    board = BOARDS["esp32-s3-devkitc"]
    project = render_project(board, "freertos", "aot", compiled(board, "aot"), tmp_path / "p")
    main = project / "main"
    _syntax_check("cc", sorted(main.glob("*/*.c")), [STUBS / "esp-idf", main / "app", main / "model"], ["-std=gnu11"])


@needs_cc
def test_micropython_module_compiles(tmp_path, compiled):
    board = BOARDS["nrf52840dk"]
    project = render_project(board, "micropython", "aot", compiled(board, "aot"), tmp_path / "p")
    module = project / "model"
    _syntax_check("cc", [module / "modmodel.c"], [STUBS / "micropython", module, module / "aot"], ["-std=gnu11"])


@needs_arm_gcc
@pytest.mark.skipif(shutil.which("arm-none-eabi-g++") is None, reason="arm-none-eabi-g++ is not installed")
@pytest.mark.parametrize("engine", ["tflm", "ethos-u"])
def test_tflm_engine_glue_compiles(tmp_path, compiled, engine):
    board = BOARDS["corstone-300-u55"]
    project = render_project(board, "baremetal", engine, compiled(board, engine), tmp_path / "p")
    npu = ["-DMCUFORGE_ETHOSU_BASE_ADDRESS=0x48102000", "-DMCUFORGE_ETHOSU_IRQ=56"] if engine == "ethos-u" else []
    includes = [STUBS / "tflm", project / "app", project / "port", project / "model"]
    _syntax_check("arm-none-eabi-g++", [project / "app" / "engine_tflm.cc", project / "model" / "model_data.cc"],
                  includes, list(board.cpu["gcc_flags"]) + ["-std=c++17", "-fno-exceptions", "-fno-rtti",
                                                             "-DTF_LITE_STATIC_MEMORY", *npu])
    # the start-up code wires the NPU's interrupt when the build names it
    _syntax_check("arm-none-eabi-gcc", [project / "port" / "startup.c"], includes, _arm_flags(board) + npu)


def test_micropython_module_carries_the_source_model_digest(tmp_path, compiled):
    """The device runtime only lets the native module take over when this digest equals the
    model file's source sha256 (micropython_modules/mf_model.py)."""
    import hashlib
    import json as json_module

    board = BOARDS["nrf52840dk"]
    model_dir = compiled(board, "aot")
    report = json_module.loads((Path(model_dir) / "report.json").read_text())
    source = Path(report["model"]["path"]).read_bytes()
    project = render_project(board, "micropython", "aot", model_dir, tmp_path / "p")
    module_c = (project / "model" / "modmodel.c").read_text()
    assert f'"{hashlib.sha256(source).hexdigest()}"' in module_c
    assert "MP_QSTR_sha256" in module_c
