"""The README's first command: the whole pipeline on the bundled example, on an emulated Cortex-M55.

train (synthetic vibration data) -> convert (int8) -> compile (aot and tflm) -> bare-metal
firmware -> QEMU mps3-an547 -> outputs compared bit for bit with TFLM on the host.

Every stage runs through the real `mcuforge` CLI, and the command is printed before it runs,
so this doubles as a walk-through.
"""
from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "vibration_anomaly"))

from train import train_example  # noqa: E402

_SCRIPT = Path(sys.executable).with_name("mcuforge")
MCUFORGE = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "mcuforge.host_tools.cli"]


def run(args: list[str]) -> str:
    print(f"\n$ mcuforge {shlex.join(args)}", flush=True)
    result = subprocess.run(MCUFORGE + args, capture_output=True, text=True)
    print(result.stdout.rstrip())
    if result.returncode != 0:
        print(result.stderr.rstrip(), file=sys.stderr)
        sys.exit(f"demo failed at: mcuforge {shlex.join(args)}")
    return result.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("demo-out"), help="where to put everything (default: demo-out)")
    parser.add_argument("--board", default="mps3-an547")
    parser.add_argument("--samples", type=int, default=20)
    opts = parser.parse_args()
    out = opts.out.resolve()
    out.mkdir(parents=True, exist_ok=True)

    print(f"== training the bundled example (synthetic vibration data) into {out / 'example'}")
    example = train_example(out / "example")
    int8_model = out / "vibration_int8.tflite"

    convert_out = run(["convert", str(example["model"]), "--calib", str(example["calib"]),
                       "--eval", str(example["eval"]), "-o", str(int8_model), "--json"])
    run(["compile", str(int8_model), "--engine", "aot", "-o", str(out / "aot")])
    run(["compile", str(int8_model), "--engine", "tflm", "-o", str(out / "tflm")])
    verify_out = run(["verify", str(int8_model), "--board", opts.board, "--samples", str(opts.samples),
                      "--keep", str(out / "verify")])

    aot = json.loads((out / "aot" / "report.json").read_text())
    tflm = json.loads((out / "tflm" / "report.json").read_text())
    elves = sorted((out / "verify").rglob("*.elf"))
    flash = None
    if elves:
        from mcuforge.host_tools.firmware import elf_sizes
        sizes = elf_sizes(elves[0])
        flash = sizes["text"] + sizes["data"]
    bit_exact = re.search(r"bit-exact: (\d+)/(\d+)", verify_out)
    instructions = re.search(r"instructions per inference \(QEMU -icount\): (\d+)", verify_out)
    try:
        evaluation = json.loads(convert_out).get("evaluation") or {}
    except json.JSONDecodeError:
        evaluation = {}
    shown = {"top1_agreement": "top-1 agreement", "float_accuracy": "accuracy float",
             "int8_accuracy": "int8", "relative_mse": "relative MSE"}
    agreement = ", ".join(f"{label} {evaluation[key]:.4g}" for key, label in shown.items() if key in evaluation)

    print("\n== report")
    rows = [
        ("model", f"{example['model'].name} -> {int8_model.name} ({int8_model.stat().st_size} B)"),
        ("ops", ", ".join(f"{k} x{v}" for k, v in aot["ops"].items())),
        ("float vs int8 (held-out)", agreement or "n/a"),
        ("arena, aot (planned)", f"{aot['arena_bytes']} B"),
        ("arena, tflm (measured)", f"{tflm['arena_bytes']} B"),
        ("weights, aot", f"{aot['weights_bytes']} B"),
        (f"firmware flash ({opts.board})", f"{flash} B (text + data)" if flash else "n/a"),
        ("instructions per inference", instructions.group(1) if instructions else "n/a"),
        (f"bit-exact vs TFLM ({opts.board})", f"{bit_exact.group(1)}/{bit_exact.group(2)}" if bit_exact else "n/a"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")
    if not bit_exact or bit_exact.group(1) != bit_exact.group(2):
        sys.exit(1)


if __name__ == "__main__":
    main()
