"""Bare-metal test firmware: rendering from board files, building, and runs under QEMU that are
compared bit for bit with the host build and the TFLM reference."""
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from mcuforge.boards import load_board
from mcuforge.codegen.errors import McuforgeError
from mcuforge.host_tools.console_protocol import parse_results
from mcuforge.host_tools.firmware import (
    build_baremetal_project, build_host_runner, elf_sizes, render_baremetal_project,
)
from mcuforge.host_tools.qemu import run_host_runner, run_on_qemu

MODELS_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "models"
EMULATED_BOARDS = ["mps3-an547", "mps2-an386", "mps2-an500", "mps2-an505"]

needs_arm_gcc = pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None,
                                   reason="arm-none-eabi-gcc is not installed (Debian: gcc-arm-none-eabi)")
needs_qemu = pytest.mark.skipif(shutil.which("qemu-system-arm") is None,
                                reason="qemu-system-arm is not installed (Debian: qemu-system-arm)")
needs_cc = pytest.mark.skipif(shutil.which("cc") is None, reason="no host C compiler (cc)")

# A stand-in model with the generated C API: two inputs, two outputs, and an invoke that
# fails on request (first byte 99), faults (98) or never returns (97). Output 0 is input 0
# reversed, output 1 is input 1 plus a constant from .rodata.
STAND_IN_H = """\
#include <stdint.h>
#define {N}_NUM_INPUTS 2
#define {N}_NUM_OUTPUTS 2
#define {N}_ARENA_BYTES 64
extern const uint32_t {n}_input_bytes[{N}_NUM_INPUTS];
extern const uint32_t {n}_output_bytes[{N}_NUM_OUTPUTS];
int8_t *{n}_input(int index);
const int8_t *{n}_output(int index);
int {n}_invoke(void);
"""
STAND_IN_C = """\
#include "{n}.h"
static int8_t arena[{N}_ARENA_BYTES] __attribute__((aligned(16), section(".bss.mcuforge_arena")));
static const int8_t offsets[5] = {{1, 2, 3, 4, 5}};
const uint32_t {n}_input_bytes[{N}_NUM_INPUTS] = {{3, 5}};
const uint32_t {n}_output_bytes[{N}_NUM_OUTPUTS] = {{3, 5}};
int8_t *{n}_input(int index) {{ return index == 0 ? arena : arena + 16; }}
const int8_t *{n}_output(int index) {{ return index == 0 ? arena + 32 : arena + 48; }}
int {n}_invoke(void)
{{
    if (arena[0] == 99) return -7;
    if (arena[0] == 98) __builtin_trap();
    while (arena[0] == 97) {{ __asm__ volatile(""); }}
    for (int i = 0; i < 3; i++) arena[32 + i] = arena[2 - i];
    for (int i = 0; i < 5; i++) arena[48 + i] = (int8_t)(arena[16 + i] + offsets[i]);
    return 0;
}}
"""
STAND_IN_OUTPUT_SIZES = [3, 5]


def write_stand_in_model(directory: Path, name: str = "model") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.h").write_text(STAND_IN_H.format(n=name, N=name.upper()))
    (directory / f"{name}.c").write_text(STAND_IN_C.format(n=name, N=name.upper()))
    return directory


def stand_in_expected(blob: bytes) -> list[list[bytes]]:
    samples = [blob[i:i + 8] for i in range(0, len(blob), 8)]
    return [[s[2::-1], bytes((b + k) & 0xFF for b, k in zip(s[3:], range(1, 6)))] for s in samples]


def linker_memory_regions(linker_script: str) -> dict[str, tuple[int, int]]:
    pattern = re.compile(r"^\s*(\w+)\s*\(rwx\)\s*:\s*ORIGIN\s*=\s*(0x[0-9A-Fa-f]+),\s*LENGTH\s*=\s*(0x[0-9A-Fa-f]+)", re.M)
    return {name: (int(origin, 16), int(length, 16)) for name, origin, length in pattern.findall(linker_script)}


def section_region(linker_script: str, section: str) -> str:
    """The memory an output section is placed in (its `> region` after the closing brace)."""
    match = re.search(rf"^\s*{re.escape(section)}\b[^\n]*\n\s*\{{.*?^\s*\}}\s*>\s*(\w+)", linker_script, re.S | re.M)
    assert match, f"section {section} not found"
    return match.group(1)


# ---- rendering: layout comes from the board file ---------------------------------------------

@pytest.mark.parametrize("board_name", EMULATED_BOARDS + ["corstone-300-u55"])
def test_linker_script_memories_and_placement_come_from_the_board_file(tmp_path, board_name):
    board = load_board(board_name)
    project = render_baremetal_project(board, write_stand_in_model(tmp_path / "m"), tmp_path / "p")
    script = (project / "linker.ld").read_text()

    assert linker_memory_regions(script) == {m.name: (m.origin, m.length) for m in board.memories}
    placement = {".text": "code", ".rodata": "rodata", ".mcuforge_weights": "weights", ".stack": "stack",
                 ".data": "data", ".bss": "bss", ".heap": "heap", ".mcuforge_arena": "arena"}
    for section, kind in placement.items():
        assert section_region(script, section) == board.memory_for(kind).name, section
    assert f"AT> {board.memory_for('code').name}" in script  # .data's initial values live with the code
    assert re.search(r"\.mcuforge_arena \(NOLOAD\)", script)
    assert "*(.bss.mcuforge_arena)" in script


def test_a_new_board_file_changes_the_memory_map(tmp_path):
    text = load_board("mps2-an386").path.read_text()
    text = text.replace('name = "mps2-an386"', 'name = "my-board"').replace("0x2000_0000", "0x2100_0000")
    text = text.replace('uart_base = 0x4000_4000', 'uart_base = 0x4000_5000')
    board_file = tmp_path / "my-board.toml"
    board_file.write_text(text)
    board = load_board(str(board_file))
    project = render_baremetal_project(board, write_stand_in_model(tmp_path / "m"), tmp_path / "p")

    assert linker_memory_regions((project / "linker.ld").read_text())["ssram23"] == (0x2100_0000, 0x40_0000)
    header = (project / "port" / "mcuforge_board.h").read_text()
    assert "#define MCUFORGE_UART_BASE 0x40005000u" in header
    assert "#define MCUFORGE_CORE_CLOCK_HZ 25000000u" in header


def test_cycle_counter_is_systick_when_emulated_and_dwt_on_silicon(tmp_path):
    model = write_stand_in_model(tmp_path / "m")
    emulated = render_baremetal_project("mps3-an547", model, tmp_path / "emulated")
    silicon = render_baremetal_project("corstone-300-u55", model, tmp_path / "silicon")
    assert "#define MCUFORGE_CYCLES_SYSTICK 1" in (emulated / "port" / "mcuforge_board.h").read_text()
    assert "#define MCUFORGE_CYCLES_DWT 1" in (silicon / "port" / "mcuforge_board.h").read_text()


def test_model_name_is_chosen_at_render_time(tmp_path):
    project = render_baremetal_project("mps2-an386", write_stand_in_model(tmp_path / "m", "kws"), tmp_path / "p",
                                       model_name="kws")
    engine = (project / "app" / "engine_aot.c").read_text()
    assert '#include "kws.h"' in engine and "kws_invoke()" in engine and "KWS_NUM_INPUTS" in engine
    assert "model_" not in engine
    assert '#define MCUFORGE_MODEL_NAME "kws"' in (project / "app" / "mcuforge_config.h").read_text()


def test_rendering_again_drops_the_sources_of_the_previous_model(tmp_path):
    first = write_stand_in_model(tmp_path / "first")
    (first / "old_kernel.c").write_text("int old_kernel;\n")
    project = render_baremetal_project("mps2-an386", first, tmp_path / "p")
    assert (project / "model" / "old_kernel.c").exists()
    render_baremetal_project("mps2-an386", write_stand_in_model(tmp_path / "second"), project)
    assert not (project / "model" / "old_kernel.c").exists()
    assert "old_kernel" not in (project / "Makefile").read_text()


@pytest.mark.parametrize("board_name, field", [("esp32-s3-devkitc", "cpu.core"), ("nrf52840dk", "console")])
def test_boards_the_baremetal_firmware_cannot_serve_are_refused(tmp_path, board_name, field):
    with pytest.raises(McuforgeError) as info:
        render_baremetal_project(board_name, write_stand_in_model(tmp_path / "m"), tmp_path / "p")
    assert field in info.value.where


def test_bad_model_folder_and_name_are_refused(tmp_path):
    with pytest.raises(McuforgeError, match="not found"):
        render_baremetal_project("mps2-an386", tmp_path / "nothing", tmp_path / "p")
    with pytest.raises(McuforgeError, match="no model.h"):
        render_baremetal_project("mps2-an386", tmp_path, tmp_path / "p")
    with pytest.raises(McuforgeError, match="not a C identifier"):
        render_baremetal_project("mps2-an386", write_stand_in_model(tmp_path / "m"), tmp_path / "p", model_name="9x")


# ---- building --------------------------------------------------------------------------------

@needs_arm_gcc
def test_build_for_another_board_than_rendered_is_refused(tmp_path):
    project = render_baremetal_project("mps2-an386", write_stand_in_model(tmp_path / "m"), tmp_path / "p")
    with pytest.raises(McuforgeError, match="rendered for board mps2-an386"):
        build_baremetal_project(project, "mps2-an505")


@needs_arm_gcc
def test_compile_error_names_the_lines_and_command_and_keeps_the_previous_elf(tmp_path):
    project = render_baremetal_project("mps2-an386", write_stand_in_model(tmp_path / "m"), tmp_path / "p")
    elf = build_baremetal_project(project, "mps2-an386")
    before = elf.read_bytes()
    with open(project / "model" / "model.c", "a") as source:
        source.write("int broken(void) { return undeclared_name; }\n")
    with pytest.raises(McuforgeError) as info:
        build_baremetal_project(project, "mps2-an386")
    assert "undeclared_name" in info.value.what and "error" in info.value.what
    assert "arm-none-eabi-gcc" in info.value.where and "model/model.c" in info.value.where
    assert elf.read_bytes() == before
    assert not list(project.glob(".build-*")), "the scratch build folder is cleaned up"


@needs_arm_gcc
def test_firmware_that_does_not_fit_names_the_memory(tmp_path):
    board = load_board("mps3-an547")
    project = render_baremetal_project(board, write_stand_in_model(tmp_path / "m"), tmp_path / "p",
                                       stack_bytes=board.memory_for("stack").length + 4096)
    with pytest.raises(McuforgeError) as info:
        build_baremetal_project(project, board)
    assert "does not fit memory 'dtcm'" in info.value.what


def test_missing_toolchain_names_the_debian_package(tmp_path, monkeypatch):
    project = render_baremetal_project("mps2-an386", write_stand_in_model(tmp_path / "m"), tmp_path / "p")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(McuforgeError) as info:
        build_baremetal_project(project, "mps2-an386")
    assert "gcc-arm-none-eabi" in info.value.fix
    with pytest.raises(McuforgeError) as info:
        run_on_qemu(load_board("mps2-an386"), __file__, b"")
    assert "apt-get install qemu-system-arm" in info.value.fix


@needs_arm_gcc
@pytest.mark.parametrize("board_name", EMULATED_BOARDS + ["corstone-300-u55"])
def test_builds_for_every_cortex_m_board_with_a_console_driver(tmp_path, board_name):
    project = render_baremetal_project(board_name, write_stand_in_model(tmp_path / "m"), tmp_path / "p")
    elf = build_baremetal_project(project, board_name)
    sizes = elf_sizes(elf)
    assert sizes["text"] > 0 and sizes["bss"] >= 16 * 1024  # the stack is counted in bss


@needs_arm_gcc
@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_rendered_project_builds_with_make(tmp_path):
    project = render_baremetal_project("mps2-an505", write_stand_in_model(tmp_path / "m"), tmp_path / "p")
    result = subprocess.run(["make", "-s"], cwd=project, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert (project / "build" / "firmware.elf").is_file()


# ---- running the stand-in model: the harness itself ------------------------------------------

@needs_cc
def test_host_runner_runs_the_stand_in_model(tmp_path):
    exe = build_host_runner(write_stand_in_model(tmp_path / "m", "kws"), tmp_path / "host", model_name="kws")
    blob = bytes(range(1, 9)) + bytes(range(100, 108))
    results = parse_results(run_host_runner(exe, blob), STAND_IN_OUTPUT_SIZES)
    assert [r.outputs for r in results] == stand_in_expected(blob)
    with pytest.raises(McuforgeError, match="returned -7 on vector 1"):
        parse_results(run_host_runner(exe, blob[:8] + bytes([99]) + bytes(7)), STAND_IN_OUTPUT_SIZES)
    with pytest.raises(McuforgeError, match="inputs.bin has 9 bytes"):
        parse_results(run_host_runner(exe, bytes(9)), STAND_IN_OUTPUT_SIZES)


@pytest.fixture(scope="module")
def stand_in_firmware(tmp_path_factory):
    root = tmp_path_factory.mktemp("stand_in")
    model = write_stand_in_model(root / "model")
    return {name: build_baremetal_project(render_baremetal_project(name, model, root / name), name)
            for name in EMULATED_BOARDS}


@pytest.mark.qemu
@needs_arm_gcc
@needs_qemu
@pytest.mark.parametrize("board_name", EMULATED_BOARDS)
def test_stand_in_model_under_qemu(stand_in_firmware, board_name):
    board, elf = load_board(board_name), stand_in_firmware[board_name]
    blob = bytes(range(1, 9)) + bytes(range(200, 208)) + bytes(8)
    results = parse_results(run_on_qemu(board, elf, blob), STAND_IN_OUTPUT_SIZES)
    assert [r.outputs for r in results] == stand_in_expected(blob)

    with pytest.raises(McuforgeError, match="returned -7 on vector 0"):
        parse_results(run_on_qemu(board, elf, bytes([99]) + bytes(7)), STAND_IN_OUTPUT_SIZES)
    with pytest.raises(McuforgeError, match="HardFault pc=0x"):
        parse_results(run_on_qemu(board, elf, bytes([98]) + bytes(7)), STAND_IN_OUTPUT_SIZES)


@pytest.mark.qemu
@needs_arm_gcc
@needs_qemu
def test_firmware_that_hangs_is_cut_off_by_the_timeout(stand_in_firmware):
    with pytest.raises(McuforgeError, match="did not finish within 1 s"):
        run_on_qemu(load_board("mps2-an386"), stand_in_firmware["mps2-an386"], bytes([97]) + bytes(7), timeout=1)


@pytest.mark.qemu
@needs_arm_gcc
@needs_qemu
def test_semihosting_console(tmp_path):
    text = load_board("mps2-an386").path.read_text().replace('name = "mps2-an386"', 'name = "semihosted"')
    text = re.sub(r"(?s)\[console\].*?(?=\n\[qemu\])", '[console]\nkind = "semihosting"\nbaud = 115200\n', text)
    (tmp_path / "semihosted.toml").write_text(text)
    board = load_board(str(tmp_path / "semihosted.toml"))
    project = render_baremetal_project(board, write_stand_in_model(tmp_path / "m"), tmp_path / "p")
    assert "MCUFORGE_CONSOLE_SEMIHOSTING" in (project / "port" / "mcuforge_board.h").read_text()
    blob = bytes(range(1, 17))
    results = parse_results(run_on_qemu(board, build_baremetal_project(project, board), blob), STAND_IN_OUTPUT_SIZES)
    assert [r.outputs for r in results] == stand_in_expected(blob)


@pytest.mark.qemu
@needs_arm_gcc
@needs_qemu
def test_firmware_exit_code_reports_failure(stand_in_firmware, tmp_path):
    from mcuforge.host_tools.qemu import qemu_command
    board = load_board("mps3-an547")
    command = qemu_command(board, stand_in_firmware["mps3-an547"])
    (tmp_path / "inputs.bin").write_bytes(bytes(8))
    assert subprocess.run(command, cwd=tmp_path, capture_output=True, timeout=60).returncode == 0
    (tmp_path / "inputs.bin").write_bytes(bytes([99]) + bytes(7))
    assert subprocess.run(command, cwd=tmp_path, capture_output=True, timeout=60).returncode != 0
    (tmp_path / "inputs.bin").unlink()
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, timeout=60)
    assert result.returncode != 0 and b"cannot open inputs.bin" in result.stdout


# ---- the hello_world model, emitted by the AOT engine ----------------------------------------

@pytest.fixture(scope="module")
def hello_world(tmp_path_factory):
    model_path = MODELS_DIR / "hello_world_int8.tflite"
    if not model_path.exists():
        pytest.skip(f"model not present: {model_path}")
    from mcuforge.codegen.emit_aot import emit_aot
    from mcuforge.codegen.reference import run_reference
    from mcuforge.codegen.tflite_model import load_tflite

    graph = load_tflite(model_path)
    root = tmp_path_factory.mktemp("hello_world")
    emit_aot(graph, root / "aot")
    input_tensors = [graph.tensor(i) for i in graph.inputs]
    assert len(input_tensors) == 1 and input_tensors[0].nbytes == 1
    # The input is one int8: every value it can take.
    samples = [[np.full(input_tensors[0].shape, value, dtype=np.int8)] for value in range(-128, 128)]
    reference = run_reference(model_path.read_bytes(), samples)
    return {
        "root": root,
        "aot": root / "aot",
        "blob": b"".join(x.tobytes() for sample in samples for x in sample),
        "output_sizes": [graph.tensor(i).nbytes for i in graph.outputs],
        "reference": [[np.asarray(out, dtype=np.int8).tobytes() for out in outs] for outs in reference],
    }


@pytest.fixture(scope="module")
def hello_world_host_outputs(hello_world):
    if shutil.which("cc") is None:
        pytest.skip("no host C compiler (cc)")
    exe = build_host_runner(hello_world["aot"], hello_world["root"] / "host")
    results = parse_results(run_host_runner(exe, hello_world["blob"]), hello_world["output_sizes"])
    return [r.outputs for r in results]


def test_hello_world_host_runner_matches_tflm(hello_world, hello_world_host_outputs):
    assert hello_world_host_outputs == hello_world["reference"]


@pytest.mark.qemu
@needs_arm_gcc
@needs_qemu
@pytest.mark.parametrize("board_name", EMULATED_BOARDS)
def test_hello_world_under_qemu_matches_host_and_tflm(hello_world, hello_world_host_outputs, board_name):
    board = load_board(board_name)
    project = render_baremetal_project(board, hello_world["aot"], hello_world["root"] / board_name)
    elf = build_baremetal_project(project, board)

    first = parse_results(run_on_qemu(board, elf, hello_world["blob"]), hello_world["output_sizes"])
    outputs = [r.outputs for r in first]
    assert outputs == hello_world_host_outputs
    assert outputs == hello_world["reference"]
    assert all(r.cycles > 0 for r in first)

    # -icount shift=0: the same firmware and inputs give the same counts, run after run.
    second = parse_results(run_on_qemu(board, elf, hello_world["blob"]), hello_world["output_sizes"])
    assert [r.cycles for r in second] == [r.cycles for r in first]


def test_the_verify_harness_is_the_application_built_to_read_inputs_bin(tmp_path):
    project = render_baremetal_project("mps2-an386", write_stand_in_model(tmp_path / "m"), tmp_path / "p")
    config = (project / "app" / "mcuforge_config.h").read_text()
    assert "#define MCUFORGE_INPUTS_FROM_FILE 1" in config
    assert (project / "app" / "mcuforge_app.c").is_file() and (project / "port" / "port_baremetal.c").is_file()
    manifest = json.loads((project / "mcuforge_project.json").read_text())
    assert manifest["application"] is False and manifest["engine"] == "aot"


def test_the_verify_harness_is_aot_on_bare_metal_only(tmp_path):
    from mcuforge.host_tools.firmware import render_cortex_m_project

    with pytest.raises(McuforgeError, match="verify harness is bare-metal firmware with the aot engine"):
        render_cortex_m_project("corstone-300-u55", write_stand_in_model(tmp_path / "m"), tmp_path / "p", rtos="freertos")
