"""OTA benchmark: patch sizes, LoRa airtime, and the device's cost of an update.

    .venv/bin/python benchmarks/ota.py                 # trains the model pairs (about 2 minutes)
    .venv/bin/python benchmarks/ota.py --models-dir D  # keeps the trained pairs in D and reuses them

Pairs (old -> new), from a sensor classifier (MLP, 128 -> 256 -> 128 -> 10, int8, 73 KB):
- `finetune-head`: its last layer retrained on drifted field data, the rest frozen (on-device
  personalisation, the common field update);
- `finetune-all-1ep`, `finetune-all-3ep`: every layer trained on for 1 or 3 epochs at a small
  learning rate (Adam, 1e-5) on the drifted data;
- `retrained`: the same architecture trained again from another random start;
- `app-code`: an edit of the runtime's mf_runtime.py (a constant, a new method, a renamed
  variable).

For each pair: the new file deflated whole (raw deflate, 4 KiB window, what the device
inflates; and zlib -9 with a 32 KiB window for reference), mcuforge's mfdiff1 patch deflated,
the signed package, and detools 0.53 (bsdiff, sequential patches, heatshrink and lzma) when it
is installed. Then the package's time on air and wall time over LoRa at SF7 and SF12 (EU868
MTU, 1 % duty cycle, no loss), from a transfer through the simulated radio to the real device
receiver (MicroPython); the RAM and time to apply the fine-tuned patch under MicroPython; and
Ed25519 verification time under MicroPython. Times are the WebAssembly port's on this machine.

Writes benchmarks/results/ota.json.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "ota.json"
FEATURES, CLASSES = 128, 10


# ---- the model pairs -------------------------------------------------------------------------

def _signals(n: int, seed: int, drift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Vibration-like windows: class k is a mix of two tones at class-specific frequencies;
    `drift` shifts the frequencies and gains (a sensor aged or mounted elsewhere)."""
    rng = np.random.default_rng(seed)
    t = np.arange(FEATURES) / FEATURES
    y = rng.integers(0, CLASSES, n)
    f1 = 3 + 2.0 * y + drift * 1.5
    f2 = 17 + 1.3 * y - drift
    phase = rng.random((n, 2)) * 2 * np.pi
    x = (np.sin(2 * np.pi * f1[:, None] * t + phase[:, :1]) * (1 + 0.3 * drift)
         + 0.6 * np.sin(2 * np.pi * f2[:, None] * t + phase[:, 1:]) + rng.normal(0, 0.35, (n, FEATURES)))
    return x.astype(np.float32), y


# (name, layers trained, Adam learning rate, epochs on the drifted data)
FINE_TUNES = (("finetune-head", "head", 1e-3, 5), ("finetune-all-1ep", "all", 1e-5, 1),
              ("finetune-all-3ep", "all", 1e-5, 3))


def _model_pairs(work: Path) -> tuple[dict[str, tuple[bytes, bytes]], dict[str, float]]:
    """The pairs, and per pair the mean relative change of the float weights."""
    import tensorflow as tf
    keras = tf.keras

    from mcuforge.codegen.emit_micropython import render_model_file
    from mcuforge.codegen.quantize import convert
    from mcuforge.codegen.tflite_model import parse_tflite

    work.mkdir(parents=True, exist_ok=True)
    names = ("base",) + tuple(f[0] for f in FINE_TUNES) + ("retrained",)
    record = work / "changes.json"
    if all((work / f"{n}.mfm").exists() for n in names) and record.exists():
        files = {n: (work / f"{n}.mfm").read_bytes() for n in names}
        changes = json.loads(record.read_text())
    else:
        xa, ya = _signals(6000, 1)
        xb, yb = _signals(2000, 2, drift=0.3)
        np.save(work / "calib.npy", xa[:256])

        def build(seed):
            keras.utils.set_random_seed(seed)
            m = keras.Sequential([keras.Input((FEATURES,)), keras.layers.Dense(256, activation="relu"),
                                  keras.layers.Dense(128, activation="relu"),
                                  keras.layers.Dense(CLASSES, activation="softmax")])
            m.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
            return m

        def export(m, name):
            path = work / f"{name}.keras"
            m.save(path)
            convert(path, work / f"{name}.tflite", calib=work / "calib.npy")
            raw = (work / f"{name}.tflite").read_bytes()
            content, _ = render_model_file(parse_tflite(raw, name), "sensor", raw)
            (work / f"{name}.mfm").write_bytes(content)
            print(f"  {name}: accuracy on the drifted data {m.evaluate(xb, yb, verbose=0)[1]:.3f}")

        def change(m):
            pairs = zip(base.get_weights(), m.get_weights())
            return float(np.mean([np.mean(np.abs(a - b)) / np.mean(np.abs(a)) for a, b in pairs]))

        base = build(0)
        base.fit(xa, ya, epochs=8, batch_size=64, verbose=0)
        export(base, "base")
        changes = {}
        for name, layers, lr, epochs in FINE_TUNES:
            tuned = keras.models.clone_model(base)
            tuned.set_weights(base.get_weights())
            if layers == "head":
                for layer in tuned.layers[:-1]:
                    layer.trainable = False
            tuned.compile(keras.optimizers.Adam(lr), "sparse_categorical_crossentropy", metrics=["accuracy"])
            tuned.fit(xb, yb, epochs=epochs, batch_size=64, verbose=0)
            export(tuned, name)
            changes[name] = change(tuned)
        scratch = build(1)
        scratch.fit(np.concatenate([xa, xb]), np.concatenate([ya, yb]), epochs=8, batch_size=64, verbose=0)
        export(scratch, "retrained")
        changes["retrained"] = change(scratch)
        record.write_text(json.dumps(changes))
        files = {n: (work / f"{n}.mfm").read_bytes() for n in names}
    return {n: (files["base"], files[n]) for n in names[1:]}, changes


APP_EDITS = [
    ("HEALTH_MS = ", "HEALTH_MS_DEFAULT = "),
    ("3600000", "1800000"),
]


def _app_pair() -> tuple[bytes, bytes]:
    old = (REPO / "micropython_modules" / "mf_runtime.py").read_bytes()
    new = old
    for a, b in APP_EDITS:
        new = new.replace(a.encode(), b.encode(), 1)
    new += (b"\n\ndef uptime_report(rt):\n"
            b"    \"\"\"A short line for the console: uptime, inferences and the model in use.\"\"\"\n"
            b"    stats = rt.chain.stats()\n"
            b"    return \"up %d s, %d inferences, model %s\" % (rt.hal.ms() // 1000, stats[\"inferences\"],\n"
            b"                                                  stats[\"model\"])\n")
    assert new != old
    return old, new


# ---- measurements ------------------------------------------------------------------------------

def _detools_sizes(old: bytes, new: bytes) -> dict | None:
    try:
        import detools
    except ImportError:
        return None
    import io
    out = {}
    for compression in ("heatshrink", "lzma"):
        patch = io.BytesIO()
        detools.create_patch(io.BytesIO(old), io.BytesIO(new), patch, compression=compression)
        out[compression] = len(patch.getvalue())
    return out


def _sizes(name: str, old: bytes, new: bytes, key) -> dict:
    from mcuforge.host_tools.ota.delta import compress, make_patch
    from mcuforge.host_tools.ota.package import make_package

    t0 = time.perf_counter()
    patch = make_patch(old, new)
    diff_s = time.perf_counter() - t0
    packed = compress(patch, 12)
    full = compress(new, 12)
    zlib_full = len(zlib.compress(new, 9))
    delta_pkg, _ = make_package(new, key=key, product="bench", to_version=2, old=old, from_version=1, mode="delta")
    full_pkg, _ = make_package(new, key=key, product="bench", to_version=2, mode="full")
    row = {"pair": name, "old_bytes": len(old), "new_bytes": len(new), "full_deflate_bytes": len(full),
           "full_zlib9_bytes": zlib_full, "patch_raw_bytes": len(patch), "patch_bytes": len(packed),
           "patch_vs_full": round(len(packed) / len(full), 4), "delta_package_bytes": len(delta_pkg.to_bytes()),
           "full_package_bytes": len(full_pkg.to_bytes()), "diff_seconds": round(diff_s, 3),
           "_packages": {"delta": delta_pkg, "full": full_pkg}}
    det = _detools_sizes(old, new)
    if det is not None:
        row["detools_heatshrink_bytes"] = det["heatshrink"]
        row["detools_lzma_bytes"] = det["lzma"]
    return row


def _lora(package, old: bytes, sf: int, flash: Path, key_raw: bytes) -> dict:
    from mcuforge.host_tools.ota.link import OtaClient
    from mcuforge.host_tools.ota.lora import LoraParams
    from mcuforge.host_tools.ota.mp_device import MicroPythonDevice
    from mcuforge.host_tools.ota.simradio import SimRadio

    flash.mkdir(parents=True, exist_ok=True)
    (flash / "model.mfm").write_bytes(old)
    params = LoraParams(sf=sf, duty=0.01)
    device = MicroPythonDevice(flash, product="bench", keys=[key_raw], slots={"model": "model.mfm"},
                               provision={"model": 1}, max_chunk=256)
    try:
        radio = SimRadio(device.deliver, lora=params, seed=1)
        result = OtaClient(radio.host, window=16, rto=30.0, max_timeouts=20).push(package)
    finally:
        device.stop()
    report = radio.report()
    return {"sf": sf, "mtu": params.mtu, "chunk": result.chunk, "frames_up": report["host"]["sent"],
            "frames_down": report["device"]["sent"], "airtime_up_s": report["host"]["airtime_s"],
            "airtime_down_s": report["device"]["airtime_s"], "wall_time_s": round(result.elapsed_s, 1)}


DEVICE_APPLY = r"""
import deflate, gc, hashlib, time, mf_ota_patch
gc.collect()
base = gc.mem_alloc()
peaks = [0]
def sample(done):
    gc.collect()
    live = gc.mem_alloc() - base
    if live > peaks[0]:
        peaks[0] = live
old = open("old", "rb"); pkg = open("patch", "rb"); out = open("new", "wb")
t0 = time.ticks_ms()
stream = deflate.DeflateIO(pkg, deflate.RAW, 12)
n = mf_ota_patch.apply(old, OLD_SIZE, stream, out, NEW_SIZE, hashlib.sha256(), 512, sample)
ms = time.ticks_diff(time.ticks_ms(), t0)
out.close()
print("APPLY", n, ms, peaks[0])
"""

DEVICE_APPLY_ALLOC = r"""
import deflate, gc, hashlib, mf_ota_patch
old = open("old", "rb"); pkg = open("patch", "rb"); out = open("new", "wb")
gc.collect()
gc.disable()
before = gc.mem_alloc()
stream = deflate.DeflateIO(pkg, deflate.RAW, 12)
mf_ota_patch.apply(old, OLD_SIZE, stream, out, NEW_SIZE, hashlib.sha256(), 512)
print("ALLOCATED", gc.mem_alloc() - before)
gc.enable()
"""

DEVICE_VERIFY = r"""
import time, binascii, mf_ota_ed25519 as ed
pub = binascii.unhexlify(PUB); sig = binascii.unhexlify(SIG); msg = binascii.unhexlify(MSG)
ed.verify(pub, sig, msg)
t0 = time.ticks_us()
for i in range(RUNS):
    assert ed.verify(pub, sig, msg)
print("VERIFY_US", time.ticks_diff(time.ticks_us(), t0) // RUNS)
t0 = time.ticks_us()
for i in range(RUNS):
    ed.sha512(msg)
print("SHA512_US", time.ticks_diff(time.ticks_us(), t0) // RUNS)
"""


def _device_apply(old: bytes, new: bytes) -> dict:
    from mcuforge.host_tools.micropython_wasm import run_micropython
    from mcuforge.host_tools.ota.delta import compress, make_patch

    patch = compress(make_patch(old, new), 12)
    files = {"/flash/old": old, "/flash/patch": patch}
    subst = lambda code: code.replace("OLD_SIZE", str(len(old))).replace("NEW_SIZE", str(len(new)))  # noqa: E731
    run = run_micropython(subst(DEVICE_APPLY), files=files, heapsize=512 * 1024).check()
    _, n, ms, live = next(line for line in run.stdout.splitlines() if line.startswith("APPLY")).split()
    run = run_micropython(subst(DEVICE_APPLY_ALLOC), files=files, heapsize=512 * 1024).check()
    allocated = int(next(line for line in run.stdout.splitlines() if line.startswith("ALLOCATED")).split()[1])
    return {"new_bytes": int(n), "apply_ms": int(ms), "live_peak_bytes": int(live), "allocated_bytes": allocated,
            "kb_per_s": round(int(n) / 1024 / max(int(ms), 1) * 1000, 1)}


def _device_verify(key, manifest: bytes) -> dict:
    from mcuforge.host_tools.micropython_wasm import run_micropython
    from mcuforge.host_tools.ota.package import SIGN_CONTEXT, public_raw

    msg = SIGN_CONTEXT + manifest
    sig = key.sign(msg)
    code = (DEVICE_VERIFY.replace("PUB", repr(public_raw(key.public_key()).hex())).replace("SIG", repr(sig.hex()))
            .replace("MSG", repr(msg.hex())).replace("RUNS", "20"))
    run = run_micropython(code).check()
    values = dict(line.split() for line in run.stdout.splitlines() if "_US" in line)
    return {"message_bytes": len(msg), "verify_ms": int(values["VERIFY_US"]) / 1000,
            "sha512_ms": int(values["SHA512_US"]) / 1000}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models-dir", type=Path, help="Keep the trained model pairs here, and reuse them.")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--no-lora", action="store_true", help="Skip the LoRa transfers (they need node).")
    args = parser.parse_args(argv)

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from mcuforge.host_tools.ota.package import public_raw

    # A throwaway key from a public seed: the benchmark signs, it never protects a device.
    key = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"mcuforge OTA benchmark key").digest())
    with tempfile.TemporaryDirectory(prefix="mcuforge-ota-bench-") as tmp:
        tmp = Path(tmp)
        print("training and converting the model pairs ...")
        pairs, changes = _model_pairs(args.models_dir or tmp / "models")
        pairs["app-code"] = _app_pair()
        rows = [_sizes(name, old, new, key) for name, (old, new) in pairs.items()]
        for row in rows:
            if row["pair"] in changes:
                row["weight_change"] = round(changes[row["pair"]], 5)
        lora_rows = []
        if not args.no_lora:
            for row in rows:
                old = pairs[row["pair"]][0]
                for kind in ("delta", "full"):
                    for sf in (7, 12):
                        entry = _lora(row["_packages"][kind].to_bytes(), old, sf, tmp / f"flash-{row['pair']}-{kind}-{sf}",
                                      public_raw(key.public_key()))
                        lora_rows.append({"pair": row["pair"], "package": kind,
                                          "package_bytes": len(row["_packages"][kind].to_bytes()), **entry})
        apply = _device_apply(*pairs["finetune-all-1ep"])
        verify = _device_verify(key, rows[0]["_packages"]["delta"].manifest_bytes)
    for row in rows:
        row.pop("_packages")

    print()
    print(f"{'pair':<17} {'dw':>6} {'new':>7} {'full(defl)':>10} {'zlib-9':>7} {'mfdiff1':>8} {'ratio':>6} "
          f"{'package':>8} {'detools-hs':>10} {'detools-lzma':>12}")
    for r in rows:
        dw = f"{100 * r['weight_change']:.2f}%" if "weight_change" in r else "-"
        print(f"{r['pair']:<17} {dw:>6} {r['new_bytes']:>7} {r['full_deflate_bytes']:>10} {r['full_zlib9_bytes']:>7} "
              f"{r['patch_bytes']:>8} {100 * r['patch_vs_full']:>5.1f}% {r['delta_package_bytes']:>8} "
              f"{r.get('detools_heatshrink_bytes', '-'):>10} {r.get('detools_lzma_bytes', '-'):>12}")
    if lora_rows:
        print()
        print(f"{'pair':<17} {'package':<6} {'bytes':>7} {'SF':>3} {'frames up/down':>15} {'airtime up/down s':>18} "
              f"{'wall time':>10}")
        for r in lora_rows:
            print(f"{r['pair']:<17} {r['package']:<6} {r['package_bytes']:>7} {r['sf']:>3} "
                  f"{r['frames_up']:>7}/{r['frames_down']:<7} {r['airtime_up_s']:>9.1f}/{r['airtime_down_s']:<8.1f} "
                  f"{r['wall_time_s'] / 60:>8.1f} min")
    print()
    print(f"apply under MicroPython (finetune-all-1ep patch, {apply['new_bytes']} bytes out): {apply['apply_ms']} ms, "
          f"{apply['kb_per_s']} KiB/s; live RAM peak {apply['live_peak_bytes']} B, "
          f"allocated with GC off {apply['allocated_bytes']} B")
    print(f"Ed25519 verify under MicroPython ({verify['message_bytes']}-byte manifest): {verify['verify_ms']:.1f} ms "
          f"(SHA-512 of it: {verify['sha512_ms']:.1f} ms)")
    report = {"machine": platform.machine(), "python": platform.python_version(),
              "detools": _detools_version(), "pairs": rows, "lora": lora_rows, "device_apply": apply,
              "ed25519": verify}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten to {args.output}")
    return 0


def _detools_version() -> str | None:
    try:
        import detools
        return detools.__version__
    except ImportError:
        return None


if __name__ == "__main__":
    sys.exit(main())
