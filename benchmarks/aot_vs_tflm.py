"""mcuforge's AOT engine against TFLM: arena, flash, instructions per inference, convert/compile time.

    .venv/bin/python benchmarks/aot_vs_tflm.py            # the shared models and every architecture
    .venv/bin/python benchmarks/aot_vs_tflm.py --quick    # the shared models only

Prints two tables and writes benchmarks/results/aot_vs_tflm.json. Every emulated run is also a
bit-exactness check against TFLM's reference interpreter: a mismatch (or a run that fails)
is printed and makes the script exit 1, after the results are written. Times are wall clock
on whatever machine ran this; they are reported, never judged. See benchmarks/README.md.
"""
from __future__ import annotations


import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCHMARKS_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCHMARKS_DIR.parent
SHARED_MODELS = REPO_ROOT.parent / "shared" / "models"
RESULTS_FILE = BENCHMARKS_DIR / "results" / "aot_vs_tflm.json"

sys.path.insert(0, str(BENCHMARKS_DIR))
import architectures  # noqa: E402  (a sibling module, not an installed package)
from bench_output import finish  # noqa: E402

FLASH_BOARD = "mps3-an547"
# (key, board, kernel family) of each emulated run
RUNS = [("m55_portable", "mps3-an547", "portable"), ("m55_mve", "mps3-an547", "mve"),
        ("m4_portable", "mps2-an386", "portable"), ("m4_dsp", "mps2-an386", "dsp")]
SEED = 0

# Instructions per inference of TFLM @90b983c2 (reference kernels, and with CMSIS-NN) under
# QEMU 7.2 -icount, and TFLM's arena on Arm for the same builds, from the project's issue.
# The vww and ic figures are for the published MLPerf Tiny int8 models; the rows here are
# rebuilds of the same layer stacks with random weights (same shapes, same MACs).
CITED_SOURCE = "TFLM @90b983c2, QEMU 7.2 -icount (the project's issue)"
CITED_INSTRUCTIONS = {
    "kws_ref_model": {"m4_tflm": 43_100_000, "m4_tflm_cmsis_nn": 7_700_000,
                      "m55_tflm": 42_100_000, "m55_tflm_cmsis_nn": 1_810_000},
    "ad01_int8": {"m4_tflm": 1_950_000, "m4_tflm_cmsis_nn": 583_000, "m55_tflm": 1_700_000, "m55_tflm_cmsis_nn": 150_000},
    "vww": {"m4_tflm": 100_500_000, "m4_tflm_cmsis_nn": 24_100_000, "m55_tflm": 96_400_000, "m55_tflm_cmsis_nn": 6_560_000},
    "ic": {"m4_tflm": 107_500_000, "m4_tflm_cmsis_nn": 29_900_000, "m55_tflm": 97_700_000, "m55_tflm_cmsis_nn": 4_910_000},
}
CITED_TFLM_ARM_ARENA = {"kws_ref_model": 22_772, "ad01_int8": 2_260, "vww": 100_660, "ic": 54_340}


@dataclass
class Row:
    name: str
    source: str                        # "shared" or "architecture"
    description: str
    path: Path
    convert_seconds: float | None = None
    convert_cached: bool = False
    result: dict = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


# ---- inputs ------------------------------------------------------------------------------------

def tflm_heads(sources_md: Path) -> dict[str, int]:
    """TFLM's planned-activation figure ("head") per model, from the table in SOURCES.md."""
    heads = {}
    if not sources_md.is_file():
        return heads
    for line in sources_md.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and re.fullmatch(r"[\d,]+", cells[2]):
            heads[cells[0]] = int(cells[2].replace(",", ""))
    return heads


def shared_rows() -> list[Row]:
    if not SHARED_MODELS.is_dir():
        print(f"note: {SHARED_MODELS.name}/ not found next to the repository ({SHARED_MODELS.parent.name}/models); "
              "the published models are skipped")
        return []
    return [Row(p.stem, "shared", "published model (../shared/models)", p)
            for p in sorted(SHARED_MODELS.glob("*.tflite"))]


def architecture_rows(models_dir: Path, reuse: bool) -> list[Row]:
    rows = []
    for name, arch in architectures.ARCHITECTURES.items():
        cached = reuse and architectures.is_cached(name, models_dir)
        print(f"{'reusing' if cached else 'converting'} {name} ...", flush=True)
        path = architectures.quantized(name, models_dir, force=not reuse)
        record = architectures.conversion_record(name, models_dir)
        rows.append(Row(name, "architecture", arch.description, path,
                        convert_seconds=record.get("build_and_convert_seconds"), convert_cached=cached))
    return rows


# ---- measuring ---------------------------------------------------------------------------------

def measure(row: Row, heads: dict[str, int], samples: int, work: Path) -> None:
    from mcuforge.codegen.reference import measure_tflm_arena
    from mcuforge.host_tools.compile import compile_model
    from mcuforge.host_tools.verify import verify_model

    print(f"measuring {row.name} ...", flush=True)
    started = time.perf_counter()
    report = compile_model(row.path, "aot", work / row.name, board=FLASH_BOARD)
    compile_seconds = time.perf_counter() - started
    r = row.result
    r.update({
        "model": row.name,
        "source": row.source,
        "description": row.description,
        "file": row.path.name if row.source == "shared" else f"architectures.py:{row.name}",
        "ops": report["ops"],
        "macs": report["macs"],
        "aot_arena_bytes": report["arena_bytes"],
        "largest_live_set_bytes": report["largest_live_set_bytes"],
        "in_place_ops": len(report["in_place_ops"]),
        "tflm_arena_bytes": measure_tflm_arena(str(row.path)),
        "tflm_head_bytes": heads.get(row.name),
        "tflm_arm_arena_bytes_cited": CITED_TFLM_ARM_ARENA.get(row.name),
        "aot_flash_bytes": report["flash_bytes"],
        "aot_flash_kernels": report["kernels"],
        "aot_weights_bytes": report["weights_bytes"],
        "tflm_model_bytes": row.path.stat().st_size,
        "convert_seconds": round(row.convert_seconds, 2) if row.convert_seconds is not None else None,
        "convert_cached": row.convert_cached,
        "compile_seconds": round(compile_seconds, 2),
        "instructions": {},
        "bit_exact": {},
        "optimized_kernel_files": {},
        "tflm_instructions_cited": CITED_INSTRUCTIONS.get(row.name),
    })
    for key, board, kernels in RUNS:
        try:
            verdict = verify_model(row.path, board, samples=samples, seed=SEED, kernels=kernels)
        except Exception as exc:  # a broken kernel family must not hide the other columns
            row.failures.append(f"{row.name} on {board} ({kernels}): {type(exc).__name__}: {exc}")
            r["instructions"][key] = None
            r["bit_exact"][key] = None
            continue
        r["instructions"][key] = verdict.instructions_per_inference
        r["bit_exact"][key] = {"matches": verdict.matches, "total": verdict.total}
        # Kernels without a file for this family fall back to portable C; record which ones had one.
        r["optimized_kernel_files"][key] = sorted(f for f, family in verdict.report.get("kernel_files", {}).items()
                                                  if family == kernels and kernels != "portable")
        if verdict.matches != verdict.total:
            row.failures.append(f"{row.name} on {board} ({kernels}): bit-exact {verdict.matches}/{verdict.total}\n    "
                                + "\n    ".join(verdict.details()))


# ---- output --------------------------------------------------------------------------------------

def _bytes(value) -> str:
    return "n/a" if value is None else f"{value:,}"


def _instr(value) -> str:
    if value is None:
        return "n/a"
    return f"{value / 1e6:.2f}M" if value >= 1e5 else f"{value / 1e3:.1f}k"


def _seconds(value) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    line = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def memory_table(results: list[dict]) -> str:
    header = ["model", "AOT arena", "live set", "TFLM arena", "TFLM head", "TFLM arena ARM*",
              "AOT flash", "TFLM model", "convert s", "compile s"]
    rows = [[r["model"], _bytes(r["aot_arena_bytes"]), _bytes(r["largest_live_set_bytes"]),
             _bytes(r["tflm_arena_bytes"]), _bytes(r["tflm_head_bytes"]), _bytes(r["tflm_arm_arena_bytes_cited"]),
             _bytes(r["aot_flash_bytes"]), _bytes(r["tflm_model_bytes"]),
             _seconds(r["convert_seconds"]) + (" (cached)" if r["convert_cached"] else ""),
             _seconds(r["compile_seconds"])] for r in results]
    return _table(header, rows)


def instruction_table(results: list[dict]) -> str:
    header = ["model", "MACs", "M55 portable", "M55 mve", "M4 portable", "M4 dsp",
              "M55 TFLM*", "M55 TFLM+CMSIS-NN*", "M4 TFLM*", "M4 TFLM+CMSIS-NN*", "bit-exact"]
    rows = []
    for r in results:
        cited = r["tflm_instructions_cited"] or {}
        checks = [c for c in r["bit_exact"].values()]
        exact = ("FAILED" if any(c is None for c in checks) else
                 f"{sum(c['matches'] for c in checks)}/{sum(c['total'] for c in checks)}")
        rows.append([r["model"], _instr(r["macs"]), *(_instr(r["instructions"].get(k)) for k, _, _ in RUNS),
                     _instr(cited.get("m55_tflm")), _instr(cited.get("m55_tflm_cmsis_nn")),
                     _instr(cited.get("m4_tflm")), _instr(cited.get("m4_tflm_cmsis_nn")), exact])
    return _table(header, rows)


def _tool_version(command: list[str]) -> str | None:
    if shutil.which(command[0]) is None:
        return None
    out = subprocess.run(command, capture_output=True, text=True).stdout
    return out.splitlines()[0].strip() if out else None


def environment() -> dict:
    import tensorflow as tf

    return {"qemu": _tool_version(["qemu-system-arm", "--version"]),
            "arm_gcc": _tool_version(["arm-none-eabi-gcc", "--version"]),
            "tensorflow": tf.__version__}


# ---- main ----------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="the shared models only (no Keras conversions)")
    parser.add_argument("--samples", type=int, default=2, help="random inputs per emulated run (default 2)")
    parser.add_argument("--models-dir", type=Path,
                        help="keep the converted architectures here and reuse them while their fingerprint "
                             "matches (default: convert afresh into a temporary folder, which times the conversion)")
    parser.add_argument("--output", type=Path, default=RESULTS_FILE, help="the JSON file to write")
    args = parser.parse_args(argv)

    wall = time.perf_counter()
    heads = tflm_heads(SHARED_MODELS / "SOURCES.md")
    with tempfile.TemporaryDirectory(prefix="mcuforge-bench-") as tmp:
        work = Path(tmp)
        rows = shared_rows()
        if not args.quick:
            models_dir = args.models_dir or work / "architectures"
            rows += architecture_rows(models_dir, reuse=args.models_dir is not None)
        for row in rows:
            try:
                measure(row, heads, args.samples, work / "compiled")
            except Exception as exc:
                row.failures.append(f"{row.name}: {type(exc).__name__}: {exc}")

    results = [row.result for row in rows if row.result.get("instructions") is not None]
    failures = [f for row in rows for f in row.failures]
    document = {
        "benchmark": "aot_vs_tflm",
        "quick": args.quick,
        "samples_per_run": args.samples,
        "seed": SEED,
        "flash_board": FLASH_BOARD,
        "runs": {key: {"board": board, "kernels": kernels} for key, board, kernels in RUNS},
        "cited": {"source": CITED_SOURCE, "instructions": CITED_INSTRUCTIONS, "tflm_arm_arena_bytes": CITED_TFLM_ARM_ARENA,
                  "note": "vww and ic cite the published MLPerf Tiny models; the rows rebuild their layer stacks "
                          "with random weights"},
        "environment": environment(),
        "total_seconds": round(time.perf_counter() - wall, 1),
        "failures": failures,
        "models": results,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(document, indent=2) + "\n")

    print()
    print("Memory (bytes) and time (seconds, wall clock)")
    print(memory_table(results))
    print()
    print("Instructions per inference (QEMU -icount shift=0; M55 = mps3-an547, M4 = mps2-an386)")
    print(instruction_table(results))
    print()
    print(f"* cited: {CITED_SOURCE}; for vww and ic, the published MLPerf Tiny models of the same layer stacks.")
    return finish(args.output, document['total_seconds'], failures)


if __name__ == "__main__":
    sys.exit(main())
