"""Instructions per inference of the AOT code for each kernel family, on the emulated Cortex-M55 and M4.

    .venv/bin/python benchmarks/kernel_instructions.py                  # the shared models
    .venv/bin/python benchmarks/kernel_instructions.py --architectures  # and benchmarks/architectures.py

For every model the AOT engine can compile (the others are listed with the reason), the model is
built and run under QEMU -icount shift=0 with each kernel family a board can execute:
mps3-an547 (Cortex-M55: portable, dsp, mve) and mps2-an386 (Cortex-M4: portable, dsp). Under
-icount every instruction is one tick of virtual time, so the counts are exact and repeatable.
Every run is also a bit-exactness check against TFLM's reference interpreter; a mismatch or a
failed run is printed and makes the script exit 1, after the table and the JSON are written
(benchmarks/results/kernel_instructions.json). Options: --samples N (random inputs per run,
default 2), --output FILE.
"""
from __future__ import annotations


import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCHMARKS_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCHMARKS_DIR.parent
sys.path.insert(0, str(BENCHMARKS_DIR))
from bench_output import finish  # noqa: E402  (a sibling module, not an installed package)
SHARED_MODELS = REPO_ROOT.parent / "shared" / "models"
RESULTS_FILE = BENCHMARKS_DIR / "results" / "kernel_instructions.json"

# (column key, board, kernel family): every family each emulated core can execute.
RUNS = [("m55_portable", "mps3-an547", "portable"), ("m55_dsp", "mps3-an547", "dsp"), ("m55_mve", "mps3-an547", "mve"),
        ("m4_portable", "mps2-an386", "portable"), ("m4_dsp", "mps2-an386", "dsp")]
# The speed-up columns: optimized run against the portable run on the same core.
SPEEDUPS = [("m55_mve", "m55_portable"), ("m55_dsp", "m55_portable"), ("m4_dsp", "m4_portable")]
SEED = 0


def shared_models() -> tuple[list[tuple[str, Path]], list[str]]:
    if not SHARED_MODELS.is_dir():
        return [], [f"the shared models folder {SHARED_MODELS} is absent: no published models measured"]
    return [(p.stem, p) for p in sorted(SHARED_MODELS.glob("*.tflite"))], []


def architecture_models(models_dir: Path) -> list[tuple[str, Path]]:
    sys.path.insert(0, str(BENCHMARKS_DIR))
    import architectures  # a sibling module, not an installed package

    models = []
    for name in architectures.ARCHITECTURES:
        print(f"converting {name} ...", flush=True)
        models.append((name, architectures.quantized(name, models_dir)))
    return models


def compile_problem(path: Path) -> str | None:
    """Why the AOT engine cannot compile the model, or None when it can."""
    from mcuforge.codegen.errors import McuforgeError
    from mcuforge.codegen.emit_aot import render_aot_sources
    from mcuforge.codegen.tflite_model import load_tflite

    try:
        render_aot_sources(load_tflite(path))
    except McuforgeError as exc:
        return str(exc).splitlines()[0]
    return None


def measure(name: str, path: Path, samples: int) -> tuple[dict, list[str]]:
    from mcuforge.host_tools.verify import verify_model

    row = {"model": name, "path": str(path), "instructions": {}, "bit_exact": {}}
    failures = []
    for key, board, family in RUNS:
        print(f"  {name}: {board} {family} ...", flush=True)
        try:
            result = verify_model(path, board, samples=samples, seed=SEED, kernels=family)
        except Exception as exc:  # a failed build or run is reported, and the other runs go on
            failures.append(f"{name} on {board} ({family}): {type(exc).__name__}: {str(exc).splitlines()[0]}")
            continue
        row["macs"] = result.report.get("macs")
        row["ops"] = result.report.get("ops")
        row["instructions"][key] = result.instructions_per_inference
        row["bit_exact"][key] = f"{result.matches}/{result.total}"
        if result.matches != result.total:
            failures.append(f"{name} on {board} ({family}): bit-exact on {result.matches} of {result.total} samples")
    row["speedup"] = {f"{fast}/{base}": round(row["instructions"][base] / row["instructions"][fast], 2)
                      for fast, base in SPEEDUPS if fast in row["instructions"] and base in row["instructions"]}
    return row, failures


def table(rows: list[dict]) -> str:
    headers = ["model", "MACs"] + [f"{board.split('-')[-1]} {family}" for _, board, family in RUNS] + \
              ["M55 mve x", "M55 dsp x", "M4 dsp x"]
    lines = []
    for row in rows:
        counts = [f"{row['instructions'][key]:,}" if key in row["instructions"] else "failed" for key, _, _ in RUNS]
        ratios = [f"{row['speedup'][f'{fast}/{base}']:.2f}" if f"{fast}/{base}" in row["speedup"] else "n/a"
                  for fast, base in SPEEDUPS]
        lines.append([row["model"], f"{row.get('macs') or 0:,}"] + counts + ratios)
    widths = [max(len(str(c)) for c in column) for column in zip(headers, *lines)]
    out = ["  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(headers, widths)))]
    out.append("  ".join("-" * w for w in widths))
    for line in lines:
        out.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths))))
    return "\n".join(out)


def _tool_version(command: list[str]) -> str | None:
    try:
        return subprocess.run(command, capture_output=True, text=True, check=False).stdout.splitlines()[0]
    except (OSError, IndexError):
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--architectures", action="store_true",
                        help="also the Keras architectures of benchmarks/architectures.py (converted first)")
    parser.add_argument("--samples", type=int, default=2, help="random inputs per run, each checked bit for bit (default 2)")
    parser.add_argument("--output", type=Path, default=RESULTS_FILE, help="the JSON file to write")
    args = parser.parse_args(argv)

    wall = time.perf_counter()
    models, skipped = shared_models()
    rows, failures = [], []
    with tempfile.TemporaryDirectory(prefix="mcuforge-kernels-") as tmp:
        if args.architectures:
            models += architecture_models(Path(tmp) / "architectures")
        for name, path in models:
            problem = compile_problem(path)
            if problem is not None:
                skipped.append(f"{name}: the AOT engine cannot compile it yet ({problem})")
                continue
            print(f"measuring {name} ...", flush=True)
            row, row_failures = measure(name, path, args.samples)
            rows.append(row)
            failures += row_failures

    document = {
        "benchmark": "kernel_instructions",
        "unit": "instructions per inference, QEMU -icount shift=0 (one instruction per tick)",
        "runs": {key: {"board": board, "kernels": family} for key, board, family in RUNS},
        "samples_per_run": args.samples,
        "seed": SEED,
        "environment": {"qemu": _tool_version(["qemu-system-arm", "--version"]),
                        "arm_gcc": _tool_version(["arm-none-eabi-gcc", "--version"])},
        "total_seconds": round(time.perf_counter() - wall, 1),
        "skipped": skipped,
        "failures": failures,
        "models": rows,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(document, indent=2) + "\n")

    print()
    print("Instructions per inference (QEMU -icount shift=0; an547 = Cortex-M55, an386 = Cortex-M4);")
    print("x = portable / optimized on the same core")
    print(table(rows))
    for note in skipped:
        print(f"skipped: {note}")
    return finish(args.output, document['total_seconds'], failures)


if __name__ == "__main__":
    sys.exit(main())
