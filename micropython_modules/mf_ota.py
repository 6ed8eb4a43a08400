# The OTA updater of the device: stages a signed package, applies it, switches atomically,
# watches the new version through a health window, and rolls back by itself when it is bad.
#
#     import mf_ota
#     ota = mf_ota.Updater(hal, product="acme-vib", keys=[PUBLIC_KEY],
#                          slots={"model": "model.mfm", "app": "app.py"})
#     ota.boot()                          # once per boot, before the model or app is used
#     model = ota.load_model("model")     # guarded while a new model is on trial
#
# The link layer (mf_ota_link) feeds it: begin() -> write() ... -> install(); rollback() and
# status() answer the host. docs/ota.md describes the package and every step below.
#
# On flash, under `root` (default "ota"):
#   j.<generation>   the journal: append-only records of the whole state (magic 0x4A, length
#                    u16, JSON, CRC-32); the last record that checks is the state
#   pkg              the package being received, then applied
#   new              the patch's output, before the switch
#   prev.<slot>      the previous version of a slot, kept after a switch for rollback
#
# Power may fail at any instant. A switch is: journal "switching" (with everything needed to
# finish it), then two renames (slot -> prev.<slot>, new -> slot), then journal "trial". On
# boot, a "switching" or "rolling_back" journal is finished from whichever files exist, so the
# slot always holds one whole version, old or new, never a mix. Received bytes are journaled
# every `checkpoint` bytes; an interrupted download resumes from there, never from zero.
import json
import struct

import mf_ota_ed25519
import mf_ota_patch

try:
    from binascii import crc32
except ImportError:
    from mf_queue import crc32

try:
    import hashlib
    _sha256 = hashlib.sha256
except (ImportError, AttributeError):
    import mf_model
    _sha256 = mf_model.Sha256

try:
    import deflate
except ImportError:
    deflate = None

try:
    import io
    _IOBase = io.IOBase
except (ImportError, AttributeError):
    _IOBase = None


if _IOBase is not None:
    class _Stream(_IOBase):
        """Makes a HAL file (maybe a Python object, as in tests) a stream that deflate can read."""

        def __init__(self, f):
            self._f = f

        def readinto(self, buf):
            return self._f.readinto(buf)

        def read(self, n=-1):
            return self._f.read(n)
else:
    def _Stream(f):
        return f

PKG_MAGIC = b"MFUP"
PKG_FORMAT = 1
PKG_HEADER_BYTES = 8
SIGNATURE_BYTES = 64
SIGN_CONTEXT = b"mcuforge-ota-v1\x00"
MAX_MANIFEST_BYTES = 1024
MANIFEST_FORMAT = 1
COMPONENTS = ("model", "app", "firmware")
DELTAS = ("mfdiff1", "none")
MAX_WBITS = 13
JOURNAL_MAGIC = 0x4A
JOURNAL_COMPACT_BYTES = 2048
DEFAULT_CHECKPOINT = 4096
NO_VERSION = 0xFFFFFFFF

# Result codes, shared with the host (host_tools/ota/frames.py).
OK = 0
INSTALLED = 1
ROLLED_BACK = 2
COMMITTED = 3
ABORTED = 4
E_SIGNATURE = 10
E_PRODUCT = 11
E_VERSION = 12
E_BASE = 13
E_CORRUPT = 14
E_SPACE = 15
E_REQUEST = 16
E_APPLY = 17
E_STATE = 18
E_HEALTH = 19
E_FORMAT = 20
E_UNSUPPORTED = 21

PHASES = ("idle", "receiving", "received", "switching", "trial", "rolling_back")


class OtaError(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


def _hex(data):
    return "".join("%02x" % b for b in data)


def key_id(public_key):
    """The id a manifest names its signing key by: the first 8 bytes of sha256(key), in hex."""
    return _hex(_sha256(bytes(public_key)).digest()[:8])


# ---- the journal -----------------------------------------------------------------------------

class Journal:
    """The updater's state, as append-only records. A torn record (power cut while writing) and
    anything after it are ignored; the next save then starts a new generation."""

    def __init__(self, fs, folder):
        self.fs = fs
        self.folder = folder
        self.generation = 0
        self.size = 0
        self.torn = False
        self.state = None
        gens = []
        for name in fs.listdir(folder):
            if name.startswith("j.") and name[2:].isdigit():
                gens.append(int(name[2:]))
        gens.sort()
        for gen in reversed(gens):
            state, size, torn = self._read(gen)
            if state is not None:
                self.state, self.generation, self.size, self.torn = state, gen, size, torn
                break
        if self.state is None and gens:
            self.generation = gens[-1]
            self.torn = True
        self._stale = [g for g in gens if g != self.generation]

    def _path(self, gen):
        return "%s/j.%d" % (self.folder, gen)

    def _read(self, gen):
        state = None
        good = 0
        try:
            f = self.fs.open(self._path(gen), "rb")
        except OSError:
            return None, 0, True
        try:
            while True:
                head = f.read(3)
                if len(head) < 3:
                    torn = len(head) > 0
                    break
                magic, n = struct.unpack("<BH", head)
                body = f.read(n + 4) if magic == JOURNAL_MAGIC and n <= 4096 else b""
                if len(body) != n + 4 or crc32(head + body[:n]) & 0xFFFFFFFF != struct.unpack("<I", body[n:])[0]:
                    torn = True
                    break
                try:
                    state = json.loads(body[:n])
                except ValueError:
                    torn = True
                    break
                good += 3 + n + 4
        finally:
            f.close()
        return state, good, torn

    def save(self, state):
        body = json.dumps(state).encode()
        head = struct.pack("<BH", JOURNAL_MAGIC, len(body))
        record = head + body + struct.pack("<I", crc32(head + body) & 0xFFFFFFFF)
        if self.torn or self.size + len(record) > JOURNAL_COMPACT_BYTES or self.size == 0:
            # A new generation holds the whole state in its first record; the older files
            # go only once it is written.
            old = [self.generation] + self._stale if self.size or self.torn else self._stale
            self.generation += 1
            f = self.fs.open(self._path(self.generation), "wb")
            try:
                f.write(record)
            finally:
                f.close()
            self.size = len(record)
            self.torn = False
            for gen in old:
                if gen != self.generation:
                    try:
                        self.fs.remove(self._path(gen))
                    except OSError:
                        pass
            self._stale = []
        else:
            f = self.fs.open(self._path(self.generation), "ab")
            try:
                f.write(record)
            finally:
                f.close()
            self.size += len(record)
        self.state = state


# ---- packages ----------------------------------------------------------------------------------

def _check_int(m, key, optional=False):
    v = m.get(key)
    if v is None and optional:
        return None
    if not isinstance(v, int) or isinstance(v, bool) or v < 0 or v >= NO_VERSION:
        raise OtaError(E_FORMAT, "manifest field %s is %r, not a whole number below 2**32-1" % (key, v))
    return v


def _check_str(m, key, limit=64, optional=False):
    v = m.get(key)
    if v is None and optional:
        return None
    if not isinstance(v, str) or not v or len(v) > limit:
        raise OtaError(E_FORMAT, "manifest field %s is %r, not a string of 1..%d characters" % (key, v, limit))
    return v


def _check_sha(m, key, optional=False):
    v = m.get(key)
    if v is None and optional:
        return None
    if not isinstance(v, str) or len(v) != 64 or any(c not in "0123456789abcdef" for c in v):
        raise OtaError(E_FORMAT, "manifest field %s is not a sha256 in lowercase hex" % key)
    return v


def parse_manifest(raw):
    """The manifest as a dict, every field checked for type and range (it is hostile until its
    signature checks, and a bug must not turn a bad field into a crash)."""
    try:
        m = json.loads(raw)
    except (ValueError, UnicodeError):
        raise OtaError(E_FORMAT, "the manifest is not JSON; make the package with `mcuforge ota make`")
    if not isinstance(m, dict):
        raise OtaError(E_FORMAT, "the manifest is not a JSON object")
    fmt = m.get("format")
    if fmt != MANIFEST_FORMAT:
        raise OtaError(E_UNSUPPORTED, "manifest format %r; this device reads format %d: update mf_ota on the device "
                       "or make the package with a matching mcuforge" % (fmt, MANIFEST_FORMAT))
    _check_str(m, "product")
    if m.get("component") not in COMPONENTS:
        raise OtaError(E_FORMAT, "manifest component %r is not one of %s" % (m.get("component"), ", ".join(COMPONENTS)))
    _check_str(m, "slot", 32)
    if m.get("delta") not in DELTAS:
        raise OtaError(E_UNSUPPORTED, "delta algorithm %r is not one of %s" % (m.get("delta"), ", ".join(DELTAS)))
    if m.get("compression") != "deflate-raw":
        raise OtaError(E_UNSUPPORTED, "compression %r is not deflate-raw" % (m.get("compression"),))
    wbits = _check_int(m, "window_bits")
    if not 9 <= wbits <= MAX_WBITS:
        raise OtaError(E_UNSUPPORTED, "a deflate window of 2**%d bytes is outside 9..%d (RAM budget)" % (wbits, MAX_WBITS))
    delta = m["delta"] == "mfdiff1"
    _check_int(m, "to_version")
    _check_sha(m, "to_sha256")
    _check_int(m, "to_size")
    _check_int(m, "from_version", optional=not delta)
    _check_sha(m, "from_sha256", optional=not delta)
    _check_int(m, "from_size", optional=not delta)
    _check_int(m, "payload_size")
    _check_sha(m, "payload_sha256")
    _check_str(m, "key_id", 16)
    if delta and m["from_version"] >= m["to_version"]:
        raise OtaError(E_VERSION, "the package goes from version %d to %d: versions must increase"
                       % (m["from_version"], m["to_version"]))
    return m


def read_header(f):
    """(manifest bytes, signature, payload offset) from an open package file; OtaError when the
    header is malformed."""
    f.seek(0)
    head = f.read(PKG_HEADER_BYTES)
    if len(head) < PKG_HEADER_BYTES or head[:4] != PKG_MAGIC:
        raise OtaError(E_FORMAT, "not an mcuforge OTA package (it starts with %r, not %r)" % (bytes(head[:4]), PKG_MAGIC))
    fmt, _flags, mlen = struct.unpack("<BBH", head[4:])
    if fmt != PKG_FORMAT:
        raise OtaError(E_UNSUPPORTED, "package format %d; this device reads format %d" % (fmt, PKG_FORMAT))
    if not 2 <= mlen <= MAX_MANIFEST_BYTES:
        raise OtaError(E_FORMAT, "a manifest of %d bytes (at most %d)" % (mlen, MAX_MANIFEST_BYTES))
    manifest = f.read(mlen)
    signature = f.read(SIGNATURE_BYTES)
    if len(manifest) != mlen or len(signature) != SIGNATURE_BYTES:
        raise OtaError(E_FORMAT, "the package ends inside its header")
    return manifest, signature, PKG_HEADER_BYTES + mlen + SIGNATURE_BYTES


def header_bytes_needed(first8):
    """How many bytes the header takes, from its first 8 bytes (None if they are not a header)."""
    if len(first8) < PKG_HEADER_BYTES or first8[:4] != PKG_MAGIC:
        return None
    mlen = struct.unpack("<H", first8[6:8])[0]
    return PKG_HEADER_BYTES + mlen + SIGNATURE_BYTES


# ---- the updater ---------------------------------------------------------------------------------

class Updater:
    """See the module comment. `keys`: Ed25519 public keys (32 bytes each) whose signatures are
    accepted. `slots`: {slot name: file path}; a firmware slot is mf_ota_esp32.FirmwareSlot().
    `canary(model) -> (ok, detail)` runs on a new model before its trial starts.
    `trial_inferences` good inferences end a model's health window; `trial_boots` boots
    without that (a crash loop) roll it back."""

    def __init__(self, fs, product, keys, slots, root="ota", checkpoint=DEFAULT_CHECKPOINT, canary=None,
                 trial_inferences=20, trial_boots=3, max_package=None, chunk=512):
        self.fs = fs
        self.product = product
        self.keys = {}
        for k in keys:
            k = bytes(k)
            if len(k) != 32:
                raise ValueError("an Ed25519 public key is 32 bytes, not %d" % len(k))
            self.keys[key_id(k)] = k
        self.slots = slots
        self.root = root
        self.checkpoint = checkpoint
        self.canary = canary
        self.trial_inferences = trial_inferences
        self.trial_boots = trial_boots
        self.max_package = max_package
        self.chunk = chunk
        self._pkg_file = None
        fs.mkdir(root)
        self.journal = Journal(fs, root)
        self.state = self.journal.state or {"phase": "idle", "slots": {}, "xfer": None, "op": None,
                                            "trial": None, "last": [OK, "no update yet"]}
        self.recover()

    # -- paths and small helpers --
    def _p(self, name):
        return self.root + "/" + name

    def _save(self):
        self.journal.save(self.state)

    def _slot_path(self, slot):
        path = self.slots.get(slot)
        if path is None:
            raise OtaError(E_REQUEST, "this device has no slot %r (it has %s)" % (slot, ", ".join(sorted(self.slots))))
        return path

    def _firmware(self, slot):
        target = self.slots.get(slot)
        return target if target is not None and not isinstance(target, str) else None

    def _file_sha(self, path):
        h = _sha256()
        buf = bytearray(512)
        mv = memoryview(buf)
        size = 0
        f = self.fs.open(path, "rb")
        try:
            while True:
                n = f.readinto(buf)
                if not n:
                    break
                h.update(mv[:n])
                size += n
        finally:
            f.close()
        return _hex(h.digest()), size

    def provision(self, slot, version):
        """Records the version of what the slot holds now (a device as shipped), so that the first
        patch is checked against it."""
        path = self._slot_path(slot)
        sha = self._file_sha(path)[0] if isinstance(path, str) and self.fs.exists(path) else None
        info = self.slot_info(slot)
        self.state["slots"][slot] = {"v": version, "sha": sha, "pv": info["pv"], "psha": info["psha"],
                                     "floor": max(info["floor"], version)}
        self._save()

    def slot_info(self, slot):
        info = self.state["slots"].get(slot)
        if info is None:
            info = {"v": None, "sha": None, "pv": None, "psha": None, "floor": 0}
        return info

    def _finish(self, code, message):
        self.state["last"] = [code, message]
        return code, message

    # -- boot --
    def recover(self):
        """Finishes a switch or rollback that a power cut interrupted; tidies leftovers."""
        st = self.state
        op = st.get("op")
        if st["phase"] == "switching" and op:
            self._switch_files(op)
            self._after_switch(op)
        elif st["phase"] == "rolling_back" and op:
            self._rollback_files(op)
            self._after_rollback(op)
        if st.get("xfer") is None and self.fs.exists(self._p("pkg")) and st["phase"] not in ("switching",):
            self.fs.remove(self._p("pkg"))
        if st["phase"] in ("idle", "trial") and self.fs.exists(self._p("new")):
            self.fs.remove(self._p("new"))

    def boot(self):
        """Counts a boot of a version on trial; too many (a crash loop) roll it back. Call once
        per boot, before the model or app is used. Returns the phase."""
        trial = self.state.get("trial")
        if self.state["phase"] == "trial" and trial:
            trial["boots"] += 1
            if trial["boots"] > self.trial_boots:
                self.rollback("the new version did not pass its health window within %d boots" % self.trial_boots)
            else:
                self._save()
        return self.state["phase"]

    # -- receiving --
    def begin(self, package_id, total):
        """A transfer of `total` bytes named `package_id` (hex): the offset to resume from."""
        st = self.state
        if st["phase"] in ("switching", "rolling_back"):
            raise OtaError(E_STATE, "busy %s" % st["phase"])
        if not 0 < total < NO_VERSION:
            raise OtaError(E_REQUEST, "a package of %d bytes" % total)
        if self.max_package is not None and total > self.max_package:
            raise OtaError(E_SPACE, "a %d-byte package; this device takes at most %d" % (total, self.max_package))
        x = st.get("xfer")
        if x and x["id"] == package_id and x["total"] == total:
            pkg = self._p("pkg")
            if x["off"] > total or (x["off"] and not (self.fs.exists(pkg) and self.fs.size(pkg) >= x["off"])):
                x["off"] = 0
                x["mh"] = None
            return x["off"]
        self._close_pkg()
        free = self.fs.fs_free(self.root)
        if free is not None and free < total * 2 + 4096:
            raise OtaError(E_SPACE, "a %d-byte package needs about %d bytes free (package and new file); %d are free"
                           % (total, total * 2 + 4096, free))
        if self.fs.exists(self._p("pkg")):
            self.fs.remove(self._p("pkg"))
        st["xfer"] = {"id": package_id, "total": total, "off": 0, "mh": None}
        if st["phase"] in ("idle", "receiving", "received"):
            st["phase"] = "receiving"
        self._save()
        return 0

    def _open_pkg(self):
        if self._pkg_file is None:
            path = self._p("pkg")
            if not self.fs.exists(path):
                self.fs.open(path, "wb").close()
            self._pkg_file = self.fs.open(path, "r+b")   # read back too (parity recovery)
        return self._pkg_file

    def _close_pkg(self):
        f = self._pkg_file
        self._pkg_file = None
        if f is not None:
            try:
                f.close()
            except OSError:
                pass

    def write(self, offset, data):
        """Stores received package bytes at `offset` (the next expected one). Checks the header
        as soon as it is complete, so a package that would be refused is refused before its
        payload is sent. Returns the bytes now held."""
        x = self.state.get("xfer")
        if not x:
            raise OtaError(E_STATE, "no transfer open: send START first")
        if offset != x["off"]:
            raise OtaError(E_REQUEST, "data at byte %d; expected byte %d" % (offset, x["off"]))
        if offset + len(data) > x["total"]:
            raise OtaError(E_REQUEST, "data past the announced %d bytes" % x["total"])
        f = self._open_pkg()
        f.seek(offset)
        f.write(data)
        before = x["off"]
        x["off"] = offset + len(data)
        if x["mh"] is None and x["off"] >= PKG_HEADER_BYTES:
            f.flush()
            f.seek(0)
            need = header_bytes_needed(f.read(PKG_HEADER_BYTES))
            if need is None or need > PKG_HEADER_BYTES + MAX_MANIFEST_BYTES + SIGNATURE_BYTES:
                self.abort(keep_last=True)
                raise OtaError(E_FORMAT, "not an mcuforge OTA package, or a manifest over %d bytes" % MAX_MANIFEST_BYTES)
            if x["off"] >= need:
                try:
                    self._check_header(f, x)
                except OtaError:
                    self.abort(keep_last=True)
                    raise
        if x["off"] == x["total"]:
            f.close()
            self._pkg_file = None
            self.state["phase"] = "received" if self.state["phase"] == "receiving" else self.state["phase"]
            self._save()
        elif x["off"] // self.checkpoint != before // self.checkpoint:
            f.flush()
            self._save()
        return x["off"]

    def _check_header(self, f, x):
        manifest_raw, signature, payload_at = read_header(f)
        m = self._verify_manifest(manifest_raw, signature)
        if payload_at + m["payload_size"] != x["total"]:
            raise OtaError(E_FORMAT, "the package is %d bytes; its manifest makes it %d"
                           % (x["total"], payload_at + m["payload_size"]))
        x["mh"] = _hex(_sha256(manifest_raw).digest())
        x["slot"] = m["slot"]
        x["to"] = m["to_version"]
        self._save()
        return m

    def _verify_manifest(self, manifest_raw, signature):
        m = parse_manifest(manifest_raw)
        key = self.keys.get(m["key_id"])
        if key is None:
            raise OtaError(E_SIGNATURE, "signed by key %s, which this device does not trust" % m["key_id"])
        if not mf_ota_ed25519.verify(key, signature, SIGN_CONTEXT + bytes(manifest_raw)):
            raise OtaError(E_SIGNATURE, "the manifest's signature does not verify: tampered or unsigned")
        self._check_target(m)
        return m

    def _check_target(self, m):
        if m["product"] != self.product:
            raise OtaError(E_PRODUCT, "the package is for product %r; this is %r" % (m["product"], self.product))
        slot = m["slot"]
        target = self.slots.get(slot)
        if target is None:
            raise OtaError(E_REQUEST, "this device has no slot %r" % slot)
        firmware = not isinstance(target, str)
        if (m["component"] == "firmware") != firmware:
            raise OtaError(E_REQUEST, "slot %r does not hold a %s" % (slot, m["component"]))
        info = self.slot_info(slot)
        if m["to_version"] <= info["floor"]:
            raise OtaError(E_VERSION, "version %d is not newer than %d (downgrade or replay)"
                           % (m["to_version"], info["floor"]))
        if m["delta"] == "mfdiff1" and info["v"] is not None and m["from_version"] != info["v"]:
            raise OtaError(E_BASE, "the patch is from version %d; this device has %d: send a full image or a "
                           "patch from %d" % (m["from_version"], info["v"], info["v"]))

    def abort(self, keep_last=False):
        self._close_pkg()
        st = self.state
        st["xfer"] = None
        if st["phase"] in ("receiving", "received"):
            st["phase"] = "idle"
        if self.fs.exists(self._p("pkg")):
            self.fs.remove(self._p("pkg"))
        if not keep_last:
            st["last"] = [ABORTED, "transfer aborted"]
        self._save()

    # -- install --
    def install(self, package_id=None):
        """Checks the received package, applies it into `new` and switches. (code, message)."""
        st = self.state
        x = st.get("xfer")
        if st["phase"] == "trial" and x is None and package_id is not None and st.get("done") == package_id:
            return self._finish(INSTALLED, "already installed")
        if not x or x["off"] != x["total"]:
            raise OtaError(E_STATE, "no complete package to install")
        if st["phase"] == "trial":
            raise OtaError(E_STATE, "version %s of %s is on trial: wait for its health window to end, or roll it back"
                           % (self.slot_info(st["trial"]["slot"])["v"], st["trial"]["slot"]))
        if package_id is not None and package_id != x["id"]:
            raise OtaError(E_REQUEST, "INSTALL for %s; the package held is %s" % (package_id, x["id"]))
        self._close_pkg()
        try:
            m = self._checked_package(x)
            slot = m["slot"]
            firmware = self._firmware(slot)
            if firmware is not None:
                return self._install_firmware(firmware, m, x)
            path = self._slot_path(slot)
            info = self.slot_info(slot)
            if m["delta"] == "mfdiff1":
                if not self.fs.exists(path):
                    raise OtaError(E_BASE, "the patch needs %s, which is missing: send a full image" % path)
                sha, size = self._file_sha(path)
                if sha != m["from_sha256"] or size != m["from_size"]:
                    raise OtaError(E_BASE, "%s is not version %d (its sha256 differs): send a full image or a "
                                   "patch from the version it holds" % (path, m["from_version"]))
            self._apply(m, path)
        except OSError as exc:
            self._finish(E_APPLY, "flash error while applying: %s; the old version still runs, retry the install" % exc)
            self._save()
            raise OtaError(E_APPLY, self.state["last"][1])
        except OtaError as exc:
            if exc.code in (E_CORRUPT, E_SIGNATURE, E_FORMAT, E_PRODUCT, E_VERSION, E_UNSUPPORTED, E_BASE):
                self.abort(keep_last=True)
            self._finish(exc.code, exc.message)
            self._save()
            raise
        op = {"kind": "switch", "slot": slot, "path": path, "to": m["to_version"], "sha": m["to_sha256"],
              "from": info["v"], "fsha": info["sha"], "id": x["id"]}
        if info["v"] is None and self.fs.exists(path):
            # A slot never updated before: its version is the patch's base, or 0 (as shipped).
            op["from"] = m.get("from_version") or 0
            op["fsha"], _ = self._file_sha(path)
        st["op"] = op
        st["phase"] = "switching"
        self._save()
        self._switch_files(op)
        self._after_switch(op)
        return self.state["last"][0], self.state["last"][1]

    def _checked_package(self, x):
        f = self.fs.open(self._p("pkg"), "rb")
        try:
            manifest_raw, signature, payload_at = read_header(f)
            if x.get("mh") != _hex(_sha256(manifest_raw).digest()):
                # The header changed since its signature was checked (or never was): check again.
                m = self._verify_manifest(manifest_raw, signature)
            else:
                m = parse_manifest(manifest_raw)
                self._check_target(m)
            h = _sha256()
            buf = bytearray(512)
            mv = memoryview(buf)
            left = m["payload_size"]
            f.seek(payload_at)
            while left:
                n = f.readinto(mv if left >= 512 else mv[:left])
                if not n:
                    break
                h.update(mv[:n])
                left -= n
            if left or _hex(h.digest()) != m["payload_sha256"]:
                raise OtaError(E_CORRUPT, "the payload's sha256 does not match the signed manifest: corrupted in "
                               "transit or in flash; send the package again")
        finally:
            f.close()
        m["_payload_at"] = payload_at
        return m

    def _payload_stream(self, m):
        if deflate is None:
            raise OtaError(E_UNSUPPORTED, "this firmware has no deflate module (MicroPython 1.21+ with "
                           "MICROPY_PY_DEFLATE): it cannot unpack updates")
        f = self.fs.open(self._p("pkg"), "rb")
        f.seek(m["_payload_at"])
        return f, deflate.DeflateIO(_Stream(f), deflate.RAW, m["window_bits"])

    def _apply(self, m, path):
        new_path = self._p("new")
        out = self.fs.open(new_path, "wb")
        pkg, stream = self._payload_stream(m)
        old = None
        h = _sha256()
        try:
            if m["delta"] == "mfdiff1":
                old = self.fs.open(path, "rb")
                n = mf_ota_patch.apply(old, m["from_size"], stream, out, m["to_size"], h, self.chunk)
            else:
                n = mf_ota_patch.inflate(stream, out, m["to_size"], h, self.chunk)
        except mf_ota_patch.PatchError as exc:
            raise OtaError(E_CORRUPT, str(exc))
        finally:
            out.close()
            pkg.close()
            if old is not None:
                old.close()
        if n != m["to_size"] or _hex(h.digest()) != m["to_sha256"]:
            self.fs.remove(new_path)
            raise OtaError(E_CORRUPT, "the patched file's sha256 does not match the manifest; nothing was switched")

    def _switch_files(self, op):
        path, new, prev = op["path"], self._p("new"), self._p("prev." + op["slot"])
        fs = self.fs
        if fs.exists(new):
            if fs.exists(path):
                if fs.exists(prev):
                    fs.remove(prev)
                fs.rename(path, prev)
            fs.rename(new, path)
        elif not fs.exists(path) and fs.exists(prev):
            # Nothing to switch to and the slot is gone: put the old version back.
            fs.rename(prev, path)
            op["failed"] = True

    def _after_switch(self, op):
        st = self.state
        slot = op["slot"]
        info = self.slot_info(slot)
        if op.get("failed"):
            st["phase"] = "idle"
            st["op"] = None
            self._finish(E_APPLY, "the switch to version %d was lost; version %r still runs" % (op["to"], op["from"]))
            self._save()
            return
        st["slots"][slot] = {"v": op["to"], "sha": op["sha"], "pv": op["from"], "psha": op["fsha"],
                             "floor": max(info["floor"], op["to"])}
        st["phase"] = "trial"
        st["trial"] = {"slot": slot, "boots": 0, "ok": 0, "need": self.trial_inferences}
        st["op"] = None
        st["xfer"] = None
        st["done"] = op["id"]
        st["recent"] = slot
        self._finish(INSTALLED, "version %d installed in %s; on trial for %d inferences"
                     % (op["to"], slot, self.trial_inferences))
        self._save()
        if self.fs.exists(self._p("pkg")):
            self.fs.remove(self._p("pkg"))

    # -- health window, commit and rollback --
    def on_trial(self, slot=None):
        trial = self.state.get("trial")
        return self.state["phase"] == "trial" and trial is not None and (slot is None or trial["slot"] == slot)

    def report(self, ok, reason=""):
        """One use of the version on trial: ok, or failed (rolls back at once)."""
        if not self.on_trial():
            return self.state["phase"]
        if not ok:
            self.rollback("the new version failed: %s" % reason)
            return self.state["phase"]
        trial = self.state["trial"]
        trial["ok"] += 1
        if trial["ok"] >= trial["need"]:
            self.commit()
        elif trial["ok"] == 1 or trial["ok"] % 8 == 0:
            self._save()
        return self.state["phase"]

    def commit(self):
        """Ends the health window: the new version stays; the previous one is kept for a later
        rollback on request."""
        trial = self.state.get("trial")
        if self.state["phase"] != "trial" or not trial:
            raise OtaError(E_STATE, "nothing on trial")
        slot = trial["slot"]
        firmware = self._firmware(slot)
        if firmware is not None:
            firmware.mark_valid()
        self.state["phase"] = "idle"
        self.state["trial"] = None
        self._finish(COMMITTED, "version %d of %s passed its health window" % (self.slot_info(slot)["v"], slot))
        self._save()

    def rollback(self, reason="requested by the host", slot=None):
        """Puts the previous version of `slot` (default: the one on trial) back."""
        st = self.state
        trial = st.get("trial")
        if slot is None:
            if trial:
                slot = trial["slot"]
            elif len(self.slots) == 1:
                slot = list(self.slots)[0]
            else:
                raise OtaError(E_REQUEST, "name the slot to roll back (%s)" % ", ".join(sorted(self.slots)))
        info = self.slot_info(slot)
        firmware = self._firmware(slot)
        if info["pv"] is None or (firmware is None and not self.fs.exists(self._p("prev." + slot))):
            raise OtaError(E_STATE, "%s has no previous version to roll back to" % slot)
        if firmware is not None:
            firmware.rollback()
        op = {"kind": "rollback", "slot": slot, "path": None if firmware else self._slot_path(slot), "reason": reason}
        st["op"] = op
        st["phase"] = "rolling_back"
        self._save()
        if firmware is None:
            self._rollback_files(op)
        self._after_rollback(op)
        return self.state["last"][0], self.state["last"][1]

    def _rollback_files(self, op):
        if op["path"] is None:
            return
        prev = self._p("prev." + op["slot"])
        if self.fs.exists(prev):
            if self.fs.exists(op["path"]):
                self.fs.remove(op["path"])
            self.fs.rename(prev, op["path"])

    def _after_rollback(self, op):
        st = self.state
        slot = op["slot"]
        info = self.slot_info(slot)
        bad = info["v"]
        st["slots"][slot] = {"v": info["pv"], "sha": info["psha"], "pv": None, "psha": None, "floor": info["floor"]}
        st["phase"] = "idle" if not st.get("xfer") else ("received" if st["xfer"]["off"] == st["xfer"]["total"]
                                                         else "receiving")
        st["trial"] = None
        st["op"] = None
        self._finish(ROLLED_BACK, "%s rolled back from version %s to %s: %s" % (slot, bad, info["pv"], op["reason"]))
        self._save()

    def load_model(self, slot="model", loader=None):
        """The slot's model, loaded with `loader(path)` (mf_model.load by default). While a new
        model is on trial, a load failure or a failed canary rolls back and loads the previous
        one, and the model returned reports each inference to the health window."""
        if loader is None:
            import mf_model
            loader = mf_model.load
        path = self._slot_path(slot)
        if not self.on_trial(slot):
            return loader(path)
        try:
            model = loader(path)
        except Exception as exc:
            self.rollback("the new model does not load: %s" % exc)
            return loader(path)
        if self.canary is not None:
            try:
                ok, detail = self.canary(model)
            except Exception as exc:
                ok, detail = False, "the canary raised %s" % exc
            if not ok:
                self.rollback("the new model fails its canary check: %s" % detail)
                return loader(path)
        return TrialModel(self, model, slot, path, loader)

    # -- firmware --
    def _install_firmware(self, firmware, m, x):
        pkg, stream = self._payload_stream(m)
        try:
            firmware.apply(m, stream, self.chunk)
        except mf_ota_patch.PatchError as exc:
            raise OtaError(E_CORRUPT, str(exc))
        finally:
            pkg.close()
        slot = m["slot"]
        info = self.slot_info(slot)
        firmware.switch()
        self.state["slots"][slot] = {"v": m["to_version"], "sha": m["to_sha256"], "pv": info["v"],
                                     "psha": info["sha"], "floor": max(info["floor"], m["to_version"])}
        self.state["phase"] = "trial"
        self.state["trial"] = {"slot": slot, "boots": 0, "ok": 0, "need": self.trial_inferences}
        self.state["xfer"] = None
        self.state["done"] = x["id"]
        self.state["recent"] = slot
        self._finish(INSTALLED, "firmware %d written; it runs after a reset, on trial" % m["to_version"])
        self._save()
        if self.fs.exists(self._p("pkg")):
            self.fs.remove(self._p("pkg"))
        return self.state["last"][0], self.state["last"][1]

    # -- status --
    def status(self, slot=None):
        st = self.state
        trial = st.get("trial")
        if slot is None:
            slot = trial["slot"] if trial else (st.get("recent") or (sorted(self.slots)[0] if self.slots else ""))
        info = self.slot_info(slot)
        x = st.get("xfer") or {}
        return {"phase": st["phase"], "slot": slot, "version": info["v"], "previous": info["pv"],
                "floor": info["floor"], "xfer_id": x.get("id"), "offset": x.get("off", 0), "total": x.get("total", 0),
                "trial_ok": trial["ok"] if trial else 0, "trial_need": trial["need"] if trial else 0,
                "last_code": st["last"][0], "last": st["last"][1]}


class TrialModel:
    """A model on trial: each inference is reported to the health window; a failing inference
    rolls back, and the same input runs on the previous model."""

    def __init__(self, updater, model, slot, path, loader):
        self._updater = updater
        self._model = model
        self._slot = slot
        self._path = path
        self._loader = loader
        self.name = getattr(model, "name", slot)

    def __getattr__(self, name):
        return getattr(self._model, name)

    def invoke(self, data):
        up = self._updater
        if not up.on_trial(self._slot):
            return self._model.invoke(data)
        try:
            out = self._model.invoke(data)
        except Exception as exc:
            up.report(False, "inference raised %s" % exc)
            self._model = self._loader(self._path)
            self.name = getattr(self._model, "name", self._slot)
            return self._model.invoke(data)
        up.report(True)
        return out


class CanaryFile:
    """Stored canary samples: `check(model) -> (ok, detail)`.

    The file: magic b"MFCN", version u8, mode u8 (0: expected class index, 1: expected int8
    outputs), count u16, input bytes u16, expected bytes u16, tolerance u8, min agreeing u16,
    then `count` records of input bytes followed by expected bytes. Mode 0 passes when at least
    `min agreeing` samples' argmax equals the class; mode 1 when every output is within
    `tolerance` quanta of the expected one, for at least `min agreeing` samples."""

    def __init__(self, fs, path):
        self.fs = fs
        self.path = path

    def __call__(self, model):
        f = self.fs.open(self.path, "rb")
        try:
            head = f.read(15)
            if len(head) != 15 or head[:4] != b"MFCN":
                return False, "%s is not a canary file" % self.path
            _v, mode, count, n_in, n_exp, tol, need = struct.unpack("<BBHHHBH", head[4:])
            agree = 0
            for i in range(count):
                x = f.read(n_in)
                expected = f.read(n_exp)
                if len(x) != n_in or len(expected) != n_exp:
                    return False, "%s is truncated at sample %d" % (self.path, i)
                out = model.invoke(x)
                if mode == 0:
                    best = 0
                    for j in range(1, len(out)):
                        if _s8(out[j]) > _s8(out[best]):
                            best = j
                    agree += best == expected[0]
                else:
                    worst = 0
                    for j in range(min(len(out), n_exp)):
                        d = abs(_s8(out[j]) - _s8(expected[j]))
                        if d > worst:
                            worst = d
                    agree += worst <= tol and len(out) == n_exp
        finally:
            f.close()
        return agree >= need, "%d of %d canary samples agree (%d needed)" % (agree, count, need)


def _s8(b):
    return b - 256 if b > 127 else b
