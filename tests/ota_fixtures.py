"""The OTA fixtures the MicroPython tests read (tests/micropython/ota_fixtures/).

They are made on the host (signing needs `cryptography`, the delta needs numpy) and committed,
because the MicroPython tests run on their own. Run this file to make them again:

    .venv/bin/python tests/ota_fixtures.py

Keys come from fixed seeds and Ed25519 signatures are deterministic, so a second run gives the
same signatures; tests/test_ota.py checks that every fixture still verifies and unpacks.
The models are the published hello_world_int8.tflite (../shared/models) as a .mfm file, and
variants of it: fine-tuned (weights nudged by one quantum), broken (a byte changed without
fixing the file's own sha256: it fails to load) and wrong (weights scrambled: it loads, and
fails its canary check).
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
OUT = HERE / "micropython" / "ota_fixtures"
PRODUCT = "acme-vib"
CREATED = 1767225600

APP_V1 = b'''# The app of a test device, version 1.
VERSION = 1


def selftest():
    return True


def scale(x):
    return x * 2
'''
APP_V2 = APP_V1.replace(b"version 1", b"version 2").replace(b"VERSION = 1", b"VERSION = 2") + b'''

def offset(x):
    return x + 3
'''


def test_key(name: str = "test") -> Ed25519PrivateKey:
    """A key for tests only, from a public seed: never trust it on a device."""
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"mcuforge OTA test key: " + name.encode()).digest())


def _models() -> dict[str, bytes]:
    from mcuforge.codegen.emit_micropython import render_model_file
    from mcuforge.codegen.tflite_model import parse_tflite

    source = REPO.parent / "shared" / "models" / "hello_world_int8.tflite"
    raw = source.read_bytes()

    def render(mutate=None) -> bytes:
        graph = parse_tflite(raw, str(source))
        if mutate is not None:
            rng = np.random.default_rng(7)
            for tensor in graph.tensors:
                if tensor.data is not None and tensor.data.dtype == np.int8 and tensor.data.size > 8:
                    tensor.data = mutate(tensor.data, rng)
        content, _ = render_model_file(graph, "sine", raw)
        return content

    def fine_tune(w, rng):
        nudged = w.astype(np.int16) + rng.choice([-1, 0, 0, 1], size=w.shape)
        return np.clip(nudged, -127, 127).astype(np.int8)

    def scramble(w, rng):
        return rng.integers(-127, 128, size=w.shape).astype(np.int8)

    v1, v2, wrong = render(), render(fine_tune), render(scramble)
    broken = bytearray(v2)
    broken[len(broken) // 2] ^= 0x55       # the file's own sha256 no longer matches
    return {"v1.mfm": v1, "v2.mfm": v2, "v3_broken.mfm": bytes(broken), "v3_wrong.mfm": wrong}


def make_fixtures(out: Path = OUT) -> dict:
    from mcuforge.host_tools.ota.package import SIGN_CONTEXT, Package, make_package, public_raw

    out.mkdir(parents=True, exist_ok=True)
    key, other = test_key(), test_key("other")
    files: dict[str, bytes] = dict(_models())
    rng = np.random.default_rng(3)
    fw_v1 = rng.integers(0, 256, size=12288, dtype=np.uint8).tobytes()
    fw_v2 = fw_v1[:3000] + b"new routine" * 20 + fw_v1[3000:9000] + bytes(np.frombuffer(fw_v1[9000:], np.uint8) ^ 1)
    files["fw_v1.bin"] = fw_v1
    files["fw_v2.bin"] = fw_v2
    files["app_v1.py"] = APP_V1
    files["app_v2.py"] = APP_V2
    files["key.pub"] = public_raw(key.public_key())
    files["other.pub"] = public_raw(other.public_key())

    def pkg(new, to_version, old=None, from_version=None, signer=key, product=PRODUCT, component="model",
            slot=None, mode="auto"):
        package, _ = make_package(new, key=signer, product=product, to_version=to_version, old=old,
                                  from_version=from_version, component=component, slot=slot, mode=mode,
                                  created=CREATED)
        return package

    m = files
    packages = {
        "v1_v2.mfu": pkg(m["v2.mfm"], 2, m["v1.mfm"], 1, mode="delta"),
        "v2_full.mfu": pkg(m["v2.mfm"], 2, mode="full"),
        "v2_v3_broken.mfu": pkg(m["v3_broken.mfm"], 3, m["v2.mfm"], 2, mode="delta"),
        "v2_v3_wrong.mfu": pkg(m["v3_wrong.mfm"], 3, m["v2.mfm"], 2, mode="delta"),
        "v1_v2_other_key.mfu": pkg(m["v2.mfm"], 2, m["v1.mfm"], 1, signer=other, mode="delta"),
        "v1_v2_other_product.mfu": pkg(m["v2.mfm"], 2, m["v1.mfm"], 1, product="acme-cam", mode="delta"),
        "v1_full_downgrade.mfu": pkg(m["v1.mfm"], 1, mode="full"),
        "app_v1_v2.mfu": pkg(APP_V2, 2, APP_V1, 1, component="app", mode="delta"),
        "fw_v1_v2.mfu": pkg(fw_v2, 2, fw_v1, 1, component="firmware", slot="fw", mode="delta"),
    }
    blobs = {name: p.to_bytes() for name, p in packages.items()}
    good = packages["v1_v2.mfu"]
    # Tampered: one payload byte flipped (the signature still checks; the payload hash does not).
    tampered = bytearray(blobs["v1_v2.mfu"])
    tampered[-3] ^= 0x01
    blobs["v1_v2_tampered_payload.mfu"] = bytes(tampered)
    # A manifest edited after signing: version 2 announced as 9.
    edited = json.loads(good.manifest_bytes)
    edited["to_version"] = 9
    edited_bytes = json.dumps(edited, sort_keys=True, separators=(",", ":")).encode()
    blobs["v1_v2_edited_manifest.mfu"] = Package(edited, edited_bytes, good.signature, good.payload).to_bytes()
    # Unsigned: zeros where the signature goes.
    blobs["v1_v2_unsigned.mfu"] = Package(good.manifest, good.manifest_bytes, bytes(64), good.payload).to_bytes()
    assert key.public_key().verify(good.signature, SIGN_CONTEXT + good.manifest_bytes) is None
    files.update(blobs)
    index = {name: {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()} for name, data in files.items()}
    files["index.json"] = json.dumps(index, indent=1, sort_keys=True).encode()
    for name, data in files.items():
        (out / name).write_bytes(data)
    return index


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    made = make_fixtures()
    print(f"{len(made)} fixtures in {OUT}")
