"""The MicroPython int8 interpreter under real MicroPython: RAM to import it and to load each
shared model, time and heap allocation per inference.

    .venv/bin/python benchmarks/micropython_inference.py
    .venv/bin/python benchmarks/micropython_inference.py --models ad01_int8 --runs 20

Runs the WebAssembly port of MicroPython (the one the tests use) under Node, one fresh VM per
model. RAM comes from the garbage collector, after gc.collect(): gc.mem_alloc() before and after
(the bytes the heap holds) and gc.mem_free() before and after (the port's heap grows on demand,
so the free figure can move by more than what was allocated). Times are wall clock of the
WebAssembly VM on whatever machine ran this, running the plain-Python loops (the port has no
viper or native emitter); they are reported, never judged. The port has no bytecode counter
(no sys.settrace), so the work per inference is given as int8 MACs instead. Each model's first
output is also compared with TFLM's reference interpreter; a mismatch makes the script exit 1,
after the results are written. Prints a table and writes benchmarks/results/micropython_inference.json.
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
from pathlib import Path

BENCHMARKS_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCHMARKS_DIR.parent
SHARED_MODELS = REPO_ROOT.parent / "shared" / "models"
RESULTS_FILE = BENCHMARKS_DIR / "results" / "micropython_inference.json"
MODELS = ("hello_world_int8", "ad01_int8", "micro_speech_quantized", "str_ww_ref_model", "kws_ref_model")
HEAP = 8 * 1024 * 1024
SEED = 0

# Node driver: one MicroPython VM, files written into its filesystem, then each phase of code run
# by its own runPython() call. Phases matter for the RAM figures: within one runPython() call the
# WebAssembly port's gc.collect() does not free garbage made in nested calls (the C stack of the
# running call is scanned conservatively), so a figure taken in the phase after a load is the
# load's lasting RAM, and one taken in the same phase would add its transient garbage.
_NODE_DRIVER = r"""
import fs from "node:fs";
import { pathToFileURL } from "node:url";
const job = JSON.parse(fs.readFileSync(0, "utf8"));
const { loadMicroPython } = await import(pathToFileURL(job.micropython).href);
const mp = await loadMicroPython({ heapsize: job.heapsize, pystack: 4096, linebuffer: true,
    stdout: (line) => process.stdout.write(line + "\n"), stderr: (line) => process.stderr.write(line + "\n") });
mp.FS.mkdirTree("/lib");
mp.FS.mkdirTree("/flash");
for (const [vmPath, b64] of Object.entries(job.files)) mp.FS.writeFile(vmPath, Buffer.from(b64, "base64"));
mp.FS.chdir("/flash");
try {
    for (const phase of job.phases) mp.runPython(phase);
} catch (exc) {
    process.stderr.write(String(exc.message || exc) + "\n");
    process.exitCode = 1;
}
"""

# The phases, run inside MicroPython. NAME and RUNS are set by the host.
_PHASES = [
    "import sys\nsys.path.append('/lib')\nimport gc, time\ngc.collect()\na0, f0 = gc.mem_alloc(), gc.mem_free()",
    "import mf_model, mf_kernels",
    "gc.collect()\na1, f1 = gc.mem_alloc(), gc.mem_free()",
    "m = mf_model.load(NAME + '.mfm')",
    "gc.collect()\na2, f2 = gc.mem_alloc(), gc.mem_free()",
    """
with open(NAME + '.in', 'rb') as f:
    data = f.read()
t = time.ticks_us()
first = m.invoke(data)
first_us = time.ticks_diff(time.ticks_us(), t)
# The port's microsecond ticks are coarse: time a batch worth about 2 s and divide.
runs = RUNS if RUNS else max(3, min(5000, 2000000 // max(first_us, 200)))
t = time.ticks_us()
for _ in range(runs):
    m.invoke(data)
total_us = time.ticks_diff(time.ticks_us(), t)
gc.collect()
gc.disable()
b0 = gc.mem_alloc()
m.invoke(data)
b1 = gc.mem_alloc()
gc.enable()
""",
    """print('RESULT', {'import_alloc': a1 - a0, 'import_free': f0 - f1, 'load_alloc': a2 - a1, 'load_free': f1 - f2,
                 'first_us': first_us, 'runs': runs, 'mean_us': total_us / runs,
                 'alloc_per_inference': b1 - b0, 'backend': m.backend, 'output': first.hex(),
                 'version': sys.version})""",
]


def run_phases(phases: list[str], files: dict[str, bytes], timeout: float = 600) -> str:
    """Run each phase in its own runPython() call of one MicroPython VM; returns stdout."""
    import base64
    import tempfile

    from mcuforge.host_tools.micropython_wasm import find_micropython_mjs, runtime_module_files

    staged = {f"/lib/{p.name}": p.read_bytes() for p in runtime_module_files()}
    staged.update(files)
    job = {"micropython": str(find_micropython_mjs()), "heapsize": HEAP, "phases": phases,
           "files": {k: base64.b64encode(v).decode() for k, v in staged.items()}}
    with tempfile.TemporaryDirectory() as scratch:
        driver = Path(scratch) / "phases.mjs"
        driver.write_text(_NODE_DRIVER)
        proc = subprocess.run([shutil.which("node") or "node", str(driver)], input=json.dumps(job), text=True,
                              capture_output=True, timeout=timeout)
    if proc.returncode:
        raise RuntimeError(f"MicroPython failed:\n{proc.stderr}\n{proc.stdout[-2000:]}")
    return proc.stdout


def measure(name: str, runs: int) -> dict:
    from mcuforge.codegen.emit_micropython import render_model_file
    from mcuforge.codegen.reference import run_reference
    from mcuforge.codegen.tflite_model import parse_tflite
    from mcuforge.host_tools.verify import random_samples

    path = SHARED_MODELS / f"{name}.tflite"
    raw = path.read_bytes()
    graph = parse_tflite(raw, str(path))
    content, report = render_model_file(graph, name, raw)
    sample = random_samples(graph, 1, SEED)[0]
    expected = run_reference(raw, [sample])[0][0].tobytes()
    phases = [f"NAME = {name!r}\nRUNS = {runs}"] + _PHASES
    stdout = run_phases(phases, {f"/flash/{name}.mfm": content, f"/flash/{name}.in": sample[0].tobytes()})
    line = next(line for line in stdout.splitlines() if line.startswith("RESULT "))
    device = _parse_dict(line[len("RESULT "):])
    output = bytes.fromhex(device.pop("output"))
    return {
        "model": name,
        "file_bytes": len(content),
        "weights_bytes": report["weights_bytes"],
        "arena_bytes": report["arena_bytes"],
        "load_ram_bytes_expected": report["load_ram_bytes"],
        "macs": report["macs"],
        "ops": report["ops"],
        "bit_exact": output == expected,
        "mac_per_s": round(report["macs"] / (device["mean_us"] / 1e6)) if device["mean_us"] else None,
        **device,
    }


def _parse_dict(text: str) -> dict:
    import ast
    return ast.literal_eval(text)


def _node_version() -> str | None:
    node = shutil.which("node")
    if node is None:
        return None
    return subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=list(MODELS))
    parser.add_argument("--runs", type=int, default=0, help="timed inferences per model (default: about 3 s worth)")
    args = parser.parse_args(argv)
    missing = [m for m in args.models if not (SHARED_MODELS / f"{m}.tflite").exists()]
    if missing:
        print(f"shared models not found in {SHARED_MODELS}: {', '.join(missing)} (skipped)")
    rows = [measure(name, args.runs) for name in args.models if name not in missing]

    header = (f"{'model':<24}{'file B':>9}{'arena B':>9}{'import B':>10}{'load B':>9}{'load free B':>12}"
              f"{'held B':>9}{'MACs':>10}{'ms/inf':>9}{'MAC/s':>11}{'alloc/inf B':>12}  exact")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['model']:<24}{r['file_bytes']:>9}{r['arena_bytes']:>9}{r['import_alloc']:>10}{r['load_alloc']:>9}"
              f"{r['load_free']:>12}{r['load_ram_bytes_expected']:>9}{r['macs']:>10}{r['mean_us'] / 1000:>9.1f}{r['mac_per_s'] or 0:>11}"
              f"{r['alloc_per_inference']:>12}  {'yes' if r['bit_exact'] else 'NO'}")
    if rows:
        print(f"\nMicroPython {rows[0]['version']} (WebAssembly port, node {_node_version()}), loops: {rows[0]['backend']}; "
              f"import B = gc.mem_alloc() growth from `import mf_model`, load B = from mf_model.load(), "
              f"load free B = gc.mem_free() drop from it, held B = constants + arena + scratch by the report; "
              f"ms/inf = mean over a batch of runs, alloc/inf B = heap allocated by one inference")

    RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_FILE.write_text(json.dumps({
        "engine": "micropython (WebAssembly port under Node)",
        "node": _node_version(),
        "host": platform.machine(),
        "seed": SEED,
        "models": rows,
    }, indent=2) + "\n")
    print(f"wrote {RESULTS_FILE.relative_to(REPO_ROOT)}")
    failures = [r["model"] for r in rows if not r["bit_exact"]]
    if failures:
        print(f"NOT BIT-EXACT with TFLM: {', '.join(failures)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
