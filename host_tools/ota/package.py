"""OTA update packages: manifest, Ed25519 signature, payload (docs/ota.md, format 1).

    b"MFUP" | format u8 (1) | flags u8 (0) | manifest length u16 | manifest (UTF-8 JSON)
    | Ed25519 signature (64 bytes) of b"mcuforge-ota-v1\\0" + manifest | payload

The payload is raw deflate (no zlib header, window 2**window_bits) of either an mfdiff1 patch
(delta "mfdiff1") or the whole new file (delta "none"). The manifest names the product, the
component and slot, both versions with their sha256 and sizes, and the payload's size and
sha256, so one signature covers everything the device installs.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from mcuforge.codegen.errors import McuforgeError

from . import delta as delta_mod

MAGIC = b"MFUP"
FORMAT = 1
MANIFEST_FORMAT = 1
HEADER = struct.Struct("<4sBBH")
SIGNATURE_BYTES = 64
SIGN_CONTEXT = b"mcuforge-ota-v1\x00"
MAX_MANIFEST_BYTES = 1024
COMPONENTS = ("model", "app", "firmware")
MAX_VERSION = 0xFFFFFFFE
DEFAULT_HEALTH_FIX = "make the package again with `mcuforge ota make`"


# ---- keys ---------------------------------------------------------------------------------------

def key_id(public_raw: bytes) -> str:
    return hashlib.sha256(public_raw).digest()[:8].hex()


def public_raw(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def generate_keys(out: Path, force: bool = False) -> dict:
    """Writes OUT.key (private, PEM, mode 0600), OUT.pub (public, PEM) and OUT_pub.py (the
    public key as a MicroPython constant for the device). Returns their paths and the key id."""
    out = Path(out)
    private_path, public_path = out.with_suffix(".key"), out.with_suffix(".pub")
    device_path = out.with_name(out.name + "_pub.py")
    for path in (private_path, public_path):
        if path.exists() and not force:
            raise McuforgeError(f"{path} exists; a new key would orphan every device that trusts the old one",
                                where=str(path), fix="choose another name, or pass --force to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    pub = key.public_key()
    public_path.write_bytes(pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    raw = public_raw(pub)
    device_path.write_text(f"# The Ed25519 public key that signs this product's OTA packages (key id {key_id(raw)}).\n"
                           f"# Pass it to mf_ota.Updater(keys=[PUBLIC_KEY]).\n"
                           f"PUBLIC_KEY = {raw!r}\n")
    return {"private": private_path, "public": public_path, "device": device_path, "key_id": key_id(raw)}


def load_private_key(path: Path) -> Ed25519PrivateKey:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise McuforgeError(f"cannot read the signing key: {exc.strerror}", where=str(path),
                            fix="make one with `mcuforge ota keygen`") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise McuforgeError(f"not an unencrypted PEM private key ({exc})", where=str(path),
                            fix="give the .key file that `mcuforge ota keygen` wrote") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise McuforgeError(f"the key is {type(key).__name__}, not Ed25519", where=str(path),
                            fix="make an Ed25519 key with `mcuforge ota keygen`")
    return key


def load_public_key(path: Path) -> bytes:
    """The raw 32-byte public key from a .pub (PEM), a .key (its public half), a raw 32-byte file
    or the _pub.py that keygen writes."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise McuforgeError(f"cannot read the public key: {exc.strerror}", where=str(path),
                            fix="give the .pub file that `mcuforge ota keygen` wrote") from None
    if b"PRIVATE KEY" in data:
        return public_raw(load_private_key(path).public_key())
    if b"PUBLIC KEY" in data:
        try:
            key = serialization.load_pem_public_key(data)
        except ValueError as exc:
            raise McuforgeError(f"not a PEM public key ({exc})", where=str(path), fix="give the .pub file keygen wrote") from None
        if not isinstance(key, Ed25519PublicKey):
            raise McuforgeError(f"the key is {type(key).__name__}, not Ed25519", where=str(path),
                                fix="use an Ed25519 key from `mcuforge ota keygen`")
        return public_raw(key)
    if b"PUBLIC_KEY" in data:
        import ast
        for line in data.decode().splitlines():
            if line.startswith("PUBLIC_KEY"):
                value = ast.literal_eval(line.split("=", 1)[1].strip())
                if isinstance(value, bytes) and len(value) == 32:
                    return value
    if len(data) == 32:
        return data
    raise McuforgeError("not a public key file (PEM, raw 32 bytes or keygen's _pub.py)", where=str(path),
                        fix="give the .pub file that `mcuforge ota keygen` wrote")


# ---- manifest -------------------------------------------------------------------------------------

@dataclass
class Package:
    manifest: dict
    manifest_bytes: bytes
    signature: bytes
    payload: bytes

    def to_bytes(self) -> bytes:
        return (HEADER.pack(MAGIC, FORMAT, 0, len(self.manifest_bytes)) + self.manifest_bytes + self.signature
                + self.payload)

    @property
    def package_id(self) -> bytes:
        """What the link calls this package: the first 4 bytes of its sha256."""
        return hashlib.sha256(self.to_bytes()).digest()[:4]


def _check_version(name: str, value) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_VERSION:
        raise McuforgeError(f"{name} is {value!r}; versions are whole numbers 0..{MAX_VERSION}", where=name,
                            fix="number each release with a larger integer than the one before")
    return value


def build_manifest(*, product: str, component: str, slot: str, new: bytes, to_version: int,
                   old: bytes | None, from_version: int | None, delta_name: str, payload: bytes,
                   window_bits: int, key_raw: bytes, created: int | None = None) -> dict:
    if component not in COMPONENTS:
        raise McuforgeError(f"component {component!r} is not one of {', '.join(COMPONENTS)}", where="--component",
                            fix="model for .mfm files, app for code, firmware for an ESP32 application image")
    for name, value, limit in (("product", product, 64), ("slot", slot, 32)):
        if not value or len(value) > limit:
            raise McuforgeError(f"{name} {value!r} must be 1..{limit} characters", where=f"--{name}",
                                fix=f"give the {name} the device was set up with")
    _check_version("--to-version", to_version)
    manifest = {
        "format": MANIFEST_FORMAT,
        "product": product,
        "component": component,
        "slot": slot,
        "from_version": None,
        "from_sha256": None,
        "from_size": None,
        "to_version": to_version,
        "to_sha256": hashlib.sha256(new).hexdigest(),
        "to_size": len(new),
        "delta": delta_name,
        "compression": "deflate-raw",
        "window_bits": window_bits,
        "payload_size": len(payload),
        "payload_sha256": hashlib.sha256(payload).hexdigest(),
        "key_id": key_id(key_raw),
        "created": int(time.time()) if created is None else created,
    }
    if old is not None:
        _check_version("--from-version", from_version)
        if from_version >= to_version:
            raise McuforgeError(f"the package goes from version {from_version} to {to_version}; versions must "
                                f"increase (a device refuses downgrades and replays)", where="--to-version",
                                fix=f"give a --to-version above {from_version}")
        manifest.update(from_version=from_version, from_sha256=hashlib.sha256(old).hexdigest(), from_size=len(old))
    return manifest


def make_package(new: bytes, *, key: Ed25519PrivateKey, product: str, to_version: int, component: str = "model",
                 slot: str | None = None, old: bytes | None = None, from_version: int | None = None,
                 window_bits: int = delta_mod.DEFAULT_WBITS, mode: str = "auto",
                 created: int | None = None) -> tuple[Package, dict]:
    """A signed package taking `old` (version from_version) to `new` (to_version). mode: "delta",
    "full", or "auto" (the smaller payload). Returns the package and a report of the sizes."""
    delta_mod.check_wbits(window_bits)
    if mode not in ("auto", "delta", "full"):
        raise McuforgeError(f"mode {mode!r}", where="--mode", fix="use auto, delta or full")
    if mode == "delta" and old is None:
        raise McuforgeError("a delta needs the old version", where="--old", fix="give --old, or use --mode full")
    full_payload = delta_mod.compress(new, window_bits)
    report = {"new_bytes": len(new), "full_compressed_bytes": len(full_payload)}
    payload, delta_name, use_old = full_payload, "none", None
    if old is not None and mode in ("auto", "delta"):
        patch = delta_mod.make_patch(old, new)
        delta_payload = delta_mod.compress(patch, window_bits)
        report.update(old_bytes=len(old), patch_bytes=len(patch), delta_compressed_bytes=len(delta_payload))
        if mode == "delta" or len(delta_payload) < len(full_payload):
            payload, delta_name, use_old = delta_payload, "mfdiff1", old
    if use_old is None and old is not None and from_version is not None:
        _check_version("--from-version", from_version)
        if from_version >= to_version:
            raise McuforgeError(f"the package goes from version {from_version} to {to_version}; versions must increase",
                                where="--to-version", fix=f"give a --to-version above {from_version}")
    raw = public_raw(key.public_key())
    manifest = build_manifest(product=product, component=component, slot=slot or component, new=new,
                              to_version=to_version, old=use_old, from_version=from_version if use_old else None,
                              delta_name=delta_name, payload=payload, window_bits=window_bits, key_raw=raw,
                              created=created)
    package = sign_package(manifest, payload, key)
    report.update(delta=delta_name, payload_bytes=len(payload), package_bytes=len(package.to_bytes()),
                  manifest_bytes=len(package.manifest_bytes))
    return package, report


def encode_manifest(manifest: dict) -> bytes:
    data = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    if len(data) > MAX_MANIFEST_BYTES:
        raise McuforgeError(f"the manifest is {len(data)} bytes; devices read at most {MAX_MANIFEST_BYTES}",
                            where="manifest", fix="shorten the product and slot names")
    return data


def sign_package(manifest: dict, payload: bytes, key: Ed25519PrivateKey) -> Package:
    data = encode_manifest(manifest)
    return Package(manifest, data, key.sign(SIGN_CONTEXT + data), payload)


def read_package(data: bytes, where: str = "package") -> Package:
    """Splits a package into its parts, checking the framing (not the signature)."""
    fix = "the file is not a complete mcuforge OTA package; make it again with `mcuforge ota make`"
    if len(data) < HEADER.size:
        raise McuforgeError(f"{len(data)} bytes is shorter than a package header", where=where, fix=fix)
    magic, fmt, _flags, mlen = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise McuforgeError(f"not an mcuforge OTA package: it starts with {magic!r}, not {MAGIC!r}", where=where, fix=fix)
    if fmt != FORMAT:
        raise McuforgeError(f"package format {fmt}; this mcuforge reads format {FORMAT}", where=where,
                            fix="use the mcuforge version that made the package")
    end = HEADER.size + mlen
    if mlen > MAX_MANIFEST_BYTES or len(data) < end + SIGNATURE_BYTES:
        raise McuforgeError("the package ends inside its header", where=where, fix=fix)
    manifest_bytes = data[HEADER.size:end]
    try:
        manifest = json.loads(manifest_bytes)
    except (ValueError, UnicodeDecodeError) as exc:
        raise McuforgeError(f"the manifest is not JSON ({exc})", where=f"{where}: manifest", fix=fix) from None
    if not isinstance(manifest, dict):
        raise McuforgeError("the manifest is not a JSON object", where=f"{where}: manifest", fix=fix)
    signature = data[end:end + SIGNATURE_BYTES]
    payload = data[end + SIGNATURE_BYTES:]
    if manifest.get("payload_size") != len(payload):
        raise McuforgeError(f"the payload is {len(payload)} bytes; the manifest says {manifest.get('payload_size')}",
                            where=f"{where}: payload", fix="the package is truncated or padded; copy it again")
    return Package(manifest, bytes(manifest_bytes), bytes(signature), bytes(payload))


def verify_package(package: Package, public_keys: list[bytes], where: str = "package") -> None:
    """Checks the signature (by one of `public_keys`) and the payload's sha256, as a device will."""
    by_id = {key_id(k): k for k in public_keys}
    kid = package.manifest.get("key_id")
    key = by_id.get(kid)
    if key is None:
        raise McuforgeError(f"the package is signed by key {kid}, which is not among the keys given "
                            f"({', '.join(by_id) or 'none'})", where=f"{where}: key_id",
                            fix="verify with the .pub of the key that signed it")
    try:
        Ed25519PublicKey.from_public_bytes(key).verify(package.signature, SIGN_CONTEXT + package.manifest_bytes)
    except InvalidSignature:
        raise McuforgeError("the signature does not verify: the manifest was changed after signing, or signed "
                            "by another key", where=f"{where}: signature",
                            fix="do not install it; make and sign the package again") from None
    if hashlib.sha256(package.payload).hexdigest() != package.manifest.get("payload_sha256"):
        raise McuforgeError("the payload's sha256 does not match the signed manifest", where=f"{where}: payload",
                            fix="the payload was corrupted or replaced; make the package again")


def open_package(path: Path) -> Package:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise McuforgeError(f"cannot read the package: {exc.strerror}", where=str(path),
                            fix="give the .mfu file that `mcuforge ota make` wrote") from None
    return read_package(data, str(path))


def unpack_new(package: Package, old: bytes | None) -> bytes:
    """The new file the package makes (from `old` for a delta), checked against to_sha256."""
    m = package.manifest
    wbits = m.get("window_bits", delta_mod.DEFAULT_WBITS)
    raw = delta_mod.decompress(package.payload, wbits)
    if m.get("delta") == "mfdiff1":
        if old is None:
            raise McuforgeError("the package is a delta; the old version is needed to unpack it", where="--old",
                                fix=f"give the file of version {m.get('from_version')}")
        new = delta_mod.apply_patch(old, raw)
    else:
        new = raw
    if hashlib.sha256(new).hexdigest() != m.get("to_sha256"):
        raise McuforgeError("the result's sha256 does not match the manifest", where="package",
                            fix="the package or the old file is not the one it was made for")
    return new


def describe(package: Package) -> list[str]:
    m = package.manifest
    frm = "any" if m.get("from_version") is None else m.get("from_version")
    lines = [f"product {m.get('product')}, {m.get('component')} in slot {m.get('slot')}: version {frm} -> "
             f"{m.get('to_version')}",
             f"delta {m.get('delta')}, deflate window 2**{m.get('window_bits')}, payload {m.get('payload_size')} bytes "
             f"(new file {m.get('to_size')} bytes)",
             f"signed by key {m.get('key_id')}, package id {package.package_id.hex()}, "
             f"{len(package.to_bytes())} bytes in all"]
    return lines
