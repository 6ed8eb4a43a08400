# Reader of mcuforge's MicroPython model file (.mfm), and the Model object the runtime invokes.
#
#     import mf_model
#     m = mf_model.load("/flash/model.mfm")      # checks the sha256 while it reads
#     out = m.invoke(input_bytes)                 # int8 bytes in, int8 bytes out
#     m.name, m.input_shape, m.input_scale, m.input_zero_point, m.output_shape, m.backend
#     m.metadata                                  # e.g. {"anomaly_threshold": 0.0123, ...}; {} if none
#
# docs/micropython-model-format.md specifies the file. A user C module built into the firmware
# can take over inference (see _native_module): it must expose invoke(bytes) -> bytes.
import array
import struct

from mf_interp import Interpreter, ModelFormatError, OP_NAMES

try:
    import hashlib
except ImportError:
    hashlib = None

MAGIC = b"MFMD"
FORMAT_VERSION = 2          # reads versions 1 (no metadata) and 2 (+ the metadata block)
HEADER_BYTES = 96
IO_ENTRY_BYTES = 44
RECORD_HEADER_BYTES = 8
SECTION_HEADER_BYTES = 8
DIGEST_BYTES = 32
METADATA_MAX_BYTES = 4096
_CHUNK = 2048
_ITEM_BYTES = {"b": 1, "i": 4}


class ModelIntegrityError(ModelFormatError):
    """The file's content does not match the sha256 it carries."""


class TensorInfo:
    def __init__(self, offset, nbytes, scale, zero_point, shape):
        self.offset = offset
        self.nbytes = nbytes
        self.scale = scale
        self.zero_point = zero_point
        self.shape = shape

    def __repr__(self):
        return "<int8 %s scale=%r zero_point=%d>" % (self.shape, self.scale, self.zero_point)


class _Reader:
    """Sequential reads that hash what they read and turn a short read into a clear error."""

    def __init__(self, f, path, size, digest):
        self.f = f
        self.path = path
        self.size = size
        self.pos = 0
        self.digest = digest
        self.chunk = bytearray(_CHUNK)

    def read(self, n, what):
        data = self.f.read(n) if n else b""
        if len(data) != n:
            raise ModelFormatError("%s is truncated: %s at byte %d needs %d bytes, the file has %d left; "
                                   "copy the model file again" % (self.path, what, self.pos, n, len(data)))
        self.pos += n
        if self.digest is not None:
            self.digest.update(data)
        return data

    def read_array(self, typecode, count, what):
        nbytes = count * _ITEM_BYTES[typecode]
        if self.pos + nbytes + DIGEST_BYTES > self.size:
            raise ModelFormatError("%s: %s of %d bytes at byte %d runs past the end of the %d-byte file; "
                                   "copy the model file again" % (self.path, what, nbytes, self.pos, self.size))
        # The array grows by raw appends from one small buffer (extend() from a bytearray copies
        # bytes, it does not convert), so no temporary the size of the section is ever allocated:
        # the weights take their own size in RAM, also at load time.
        values = array.array(typecode)
        chunk = self.chunk
        left = nbytes
        while left:
            want = left if left < len(chunk) else len(chunk)
            part = chunk if want == len(chunk) else memoryview(chunk)[:want]
            got = 0
            while got < want:   # whole items only: a short read must not split an int32
                n = self.f.readinto(memoryview(chunk)[got:want])
                if not n:
                    raise ModelFormatError("%s is truncated in %s at byte %d" % (self.path, what, self.pos + got))
                got += n
            if self.digest is not None:
                self.digest.update(part)
            values.extend(part)
            self.pos += want
            left -= want
        return values


def _file_size(path):
    import os
    return os.stat(path)[6]


def _new_digest():
    if hashlib is not None and hasattr(hashlib, "sha256"):
        return hashlib.sha256()
    return Sha256()


def load(path, native=None, verify=True):
    """Read a model file. `verify`: compare the content with the sha256 it carries, while reading
    (raises ModelIntegrityError on a mismatch). `native`: None looks for a user C module named
    after the model, False never uses one, a module (or module name) uses that one."""
    size = _file_size(path)
    with open(path, "rb") as f:
        reader = _Reader(f, path, size, _new_digest() if verify else None)
        header = f.read(HEADER_BYTES)
        if len(header) < 6 or header[:4] != MAGIC:
            raise ModelFormatError("%s is not a mcuforge MicroPython model: it starts with %r, not %r; "
                                   "export one with `mcuforge compile MODEL --engine micropython`"
                                   % (path, bytes(header[:4]), MAGIC))
        version = struct.unpack_from("<H", header, 4)[0]
        if not 1 <= version <= FORMAT_VERSION:
            raise ModelFormatError("%s is model-file format version %d, and this runtime reads version %d and older; "
                                   "export the model with the mcuforge that matches the device runtime, or "
                                   "update mf_model.py and mf_interp.py on the device"
                                   % (path, version, FORMAT_VERSION))
        if len(header) < HEADER_BYTES:
            raise ModelFormatError("%s is truncated: %d bytes, shorter than the %d-byte header"
                                   % (path, len(header), HEADER_BYTES))
        reader.pos = HEADER_BYTES
        if reader.digest is not None:
            reader.digest.update(header)
        (header_bytes, file_bytes, arena_bytes, n_records, n_sections, n_inputs, n_outputs) = \
            struct.unpack_from("<HIIHHBB", header, 6)
        source_digest = bytes(header[24:56])
        try:
            name = bytes(header[56:88]).split(b"\0")[0].decode()
        except UnicodeError:
            raise ModelFormatError("%s: the model name in the header is not UTF-8; the file is damaged" % path)
        if header_bytes != HEADER_BYTES:
            raise ModelFormatError("%s: header size %d, %d expected for format version %d"
                                   % (path, header_bytes, HEADER_BYTES, version))
        if file_bytes != size:
            raise ModelFormatError("%s is %d bytes but its header says %d: the copy is incomplete or damaged; "
                                   "copy the model file again" % (path, size, file_bytes))
        # Version 2: the size of the metadata block between the last section and the trailer
        # (bytes 88..91; a version-1 file has none).
        metadata_bytes = struct.unpack_from("<I", header, 88)[0] if version >= 2 else 0
        if metadata_bytes > METADATA_MAX_BYTES or HEADER_BYTES + metadata_bytes + DIGEST_BYTES > size:
            raise ModelFormatError("%s: the header declares %d bytes of metadata (at most %d, in a %d-byte file); "
                                   "the file is damaged" % (path, metadata_bytes, METADATA_MAX_BYTES, size))
        if n_inputs < 1 or n_outputs < 1:
            raise ModelFormatError("%s declares %d inputs and %d outputs" % (path, n_inputs, n_outputs))

        tensors = []
        for i in range(n_inputs + n_outputs):
            entry = reader.read(IO_ENTRY_BYTES, "input/output entry %d" % i)
            offset, nbytes, scale, zero_point, rank, dtype = struct.unpack_from("<IIfiBB", entry, 0)
            dims = struct.unpack_from("<6I", entry, 20)
            if dtype != ord("b") or not 0 <= rank <= 6 or offset + nbytes > arena_bytes:
                raise ModelFormatError("%s: input/output entry %d (type %d, rank %d, %d bytes at %d) does not fit "
                                       "the %d-byte arena" % (path, i, dtype, rank, nbytes, offset, arena_bytes))
            tensors.append(TensorInfo(offset, nbytes, scale, zero_point, tuple(dims[:rank])))

        records = []
        for i in range(n_records):
            opcode, n_params, first, count = struct.unpack("<BxHHH", reader.read(RECORD_HEADER_BYTES,
                                                                                  "operator %d" % i))
            params = struct.unpack("<%di" % n_params, reader.read(4 * n_params, "operator %d parameters" % i))
            if first + count > n_sections:
                raise ModelFormatError("%s: operator %d uses constant sections %d..%d of %d"
                                       % (path, i, first, first + count - 1, n_sections))
            records.append((opcode, params, first, count))

        sections = []
        for i in range(n_sections):
            count, code = struct.unpack("<IB3x", reader.read(SECTION_HEADER_BYTES, "constant section %d" % i))
            typecode = chr(code)
            if typecode not in _ITEM_BYTES:
                raise ModelFormatError("%s: constant section %d has type %r" % (path, i, typecode))
            sections.append((typecode, reader.read_array(typecode, count, "constant section %d" % i)))
            padding = (-count * _ITEM_BYTES[typecode]) % 4
            if padding:
                reader.read(padding, "padding of constant section %d" % i)

        if reader.pos + metadata_bytes + DIGEST_BYTES != size:
            raise ModelFormatError("%s: %d bytes between the last section and the sha256 trailer where the header "
                                   "declares %d of metadata; the file is damaged"
                                   % (path, size - reader.pos - DIGEST_BYTES, metadata_bytes))
        at = reader.pos
        metadata = _parse_metadata(reader.read(metadata_bytes, "metadata"), path, at)
        computed = reader.digest.digest() if reader.digest is not None else None
        stored = f.read(DIGEST_BYTES)
    if computed is not None and computed != stored:
        raise ModelIntegrityError("%s fails its sha256 check (stored %s, content %s): the file is corrupted; "
                                  "copy or send the model again" % (path, _hex(stored), _hex(computed)))
    model = Model(path, name, stored, source_digest, tensors[:n_inputs], tensors[n_inputs:],
                  Interpreter(arena_bytes, records, sections), metadata, version)
    model._attach_native(native)
    return model


def _parse_metadata(block, path, at):
    """The metadata block as a dict: u16 entries, 2 zero bytes, then per entry u8 key length,
    u8 type, u16 value length, the key and the value (text); zero padding to 4 bytes. Types:
    's' str, 'i' int, 'f' float; a value of a type this runtime does not know stays bytes."""
    meta = {}
    if not block:
        return meta
    end = len(block)
    if end < 4:
        raise ModelFormatError("%s: metadata block of %d bytes at byte %d is too short" % (path, end, at))
    count = struct.unpack_from("<H", block, 0)[0]
    pos = 4
    for i in range(count):
        if pos + 4 > end:
            raise ModelFormatError("%s: metadata entry %d at byte %d runs past the metadata block"
                                   % (path, i, at + pos))
        key_len, code, value_len = struct.unpack_from("<BBH", block, pos)
        start = pos + 4
        pos = start + key_len + value_len
        if key_len == 0 or pos > end:
            raise ModelFormatError("%s: metadata entry %d at byte %d (key %d bytes, value %d bytes) runs past the "
                                   "metadata block" % (path, i, at + start - 4, key_len, value_len))
        raw = bytes(block[start + key_len:pos])
        try:
            key = bytes(block[start:start + key_len]).decode()
            kind = chr(code)
            if kind == "s":
                value = raw.decode()
            elif kind == "i":
                value = int(raw.decode())
            elif kind == "f":
                value = float(raw.decode())
            else:
                value = raw     # a newer writer's type: kept as bytes, not refused
        except (UnicodeError, ValueError):
            raise ModelFormatError("%s: metadata entry %d at byte %d has a bad %r value %r"
                                   % (path, i, at + start - 4, chr(code), raw))
        if key in meta:
            raise ModelFormatError("%s: metadata key %r appears twice" % (path, key))
        meta[key] = value
    if end - pos > 3 or bytes(block[pos:]) != bytes(end - pos):
        raise ModelFormatError("%s: %d bytes after the last metadata entry at byte %d are not padding"
                               % (path, end - pos, at + pos))
    return meta


class Model:
    """A loaded model: invoke(int8 bytes) -> int8 bytes."""

    def __init__(self, path, name, digest, source_digest, inputs, outputs, interpreter, metadata=None,
                 format_version=FORMAT_VERSION):
        self.path = path
        self.name = name
        self.format_version = format_version
        # Key/values exported with the model, e.g. the calibrated "anomaly_threshold" that
        # mf_anomaly.Reconstruction.from_model() uses; {} for a file without them.
        self.metadata = metadata if metadata is not None else {}
        self.sha256 = _hex(digest)                  # of the model file (its trailer)
        self.source_sha256 = _hex(source_digest)    # of the .tflite it was exported from
        self.inputs = inputs
        self.outputs = outputs
        self.interpreter = interpreter
        self.arena_bytes = len(interpreter.arena)
        self.ops = interpreter.kernel_names
        self.native = None
        self.native_note = ""

    # The first input and output, which is all most models have.
    @property
    def input_shape(self):
        return self.inputs[0].shape

    @property
    def input_scale(self):
        return self.inputs[0].scale

    @property
    def input_zero_point(self):
        return self.inputs[0].zero_point

    @property
    def output_shape(self):
        return self.outputs[0].shape

    @property
    def output_scale(self):
        return self.outputs[0].scale

    @property
    def output_zero_point(self):
        return self.outputs[0].zero_point

    @property
    def anomaly_threshold(self):
        """The reconstruction-error threshold calibrated on normal data, or None."""
        return self.metadata.get("anomaly_threshold")

    @property
    def backend(self):
        """What runs the model: "native:<module>" or the interpreter's loops (viper, native, python, mixed)."""
        if self.native is not None:
            return "native:" + getattr(self.native, "__name__", "module")
        import mf_kernels
        return mf_kernels.backend()

    def invoke(self, data):
        """Run the model. `data`: the int8 bytes of the input (any buffer: bytes, bytearray,
        array('b')), or a list of them for a model with several inputs. Returns the output's bytes,
        or a list of them for several outputs."""
        parts = data if isinstance(data, (list, tuple)) else (data,)
        if len(parts) != len(self.inputs):
            raise ValueError("model %s takes %d inputs, got %d" % (self.name, len(self.inputs), len(parts)))
        for i, (info, part) in enumerate(zip(self.inputs, parts)):
            if len(part) != info.nbytes:
                raise ValueError("input %d of model %s is %d int8 bytes (shape %s), got %d"
                                 % (i, self.name, info.nbytes, info.shape, len(part)))
        if self.native is not None:
            result = self.native.invoke(parts[0] if len(parts) == 1 else b"".join(bytes(p) for p in parts))
            expected = sum(o.nbytes for o in self.outputs)
            if len(result) != expected:
                raise ValueError("native module %s returned %d bytes, the model's outputs are %d"
                                 % (self.backend, len(result), expected))
            outs, at = [], 0
            for o in self.outputs:
                outs.append(bytes(result[at:at + o.nbytes]))
                at += o.nbytes
        else:
            view = self.interpreter.view
            for info, part in zip(self.inputs, parts):
                view[info.offset:info.offset + info.nbytes] = part
            self.interpreter.run()
            outs = [bytes(view[o.offset:o.offset + o.nbytes]) for o in self.outputs]
        return outs[0] if len(outs) == 1 else outs

    def verify_sha256(self):
        """Re-read the file and check it against the sha256 it carries (the one loaded, which a
        changed file on flash no longer matches). True when intact."""
        size = _file_size(self.path)
        if size < HEADER_BYTES + DIGEST_BYTES:
            return False
        digest = _new_digest()
        buf = bytearray(_CHUNK)
        left = size - DIGEST_BYTES
        with open(self.path, "rb") as f:
            while left > 0:
                n = f.readinto(buf) if left >= _CHUNK else f.readinto(memoryview(buf)[:left])
                if not n:
                    return False
                digest.update(memoryview(buf)[:n] if n < _CHUNK else buf)
                left -= n
            stored = f.read(DIGEST_BYTES)
        return _hex(stored) == self.sha256 and digest.digest() == stored

    def quantize(self, values, index=0):
        """Floats to the int8 bytes of input `index` (a convenience for the REPL)."""
        info = self.inputs[index]
        out = bytearray(len(values))
        for i, v in enumerate(values):
            q = int(round(v / info.scale)) + info.zero_point
            out[i] = (-128 if q < -128 else (127 if q > 127 else q)) & 0xFF
        return bytes(out)

    def dequantize(self, data, index=0):
        """The int8 bytes of output `index` as floats."""
        info = self.outputs[index]
        return [((b ^ 0x80) - 0x80 - info.zero_point) * info.scale for b in data]

    def _attach_native(self, native):
        if native is False:
            return
        if native is None:
            if not self.name:
                return
            try:
                module = __import__(self.name)
            except ImportError:
                return
            # Only a module built from this very model may take over: after an OTA update of the
            # model file, a firmware module built from the old model must step aside.
            declared = getattr(module, "sha256", None)
            if isinstance(declared, (bytes, bytearray)):
                declared = _hex(declared) if len(declared) == DIGEST_BYTES else bytes(declared).decode()
            if not hasattr(module, "invoke") or declared not in (self.source_sha256, self.sha256):
                self.native_note = "module %r found but not used: it needs invoke() and a sha256 of this model" \
                    % self.name
                return
        elif isinstance(native, str):
            module = __import__(native)
        else:
            module = native
        if not hasattr(module, "invoke"):
            raise ValueError("native module %r has no invoke()" % getattr(module, "__name__", module))
        self.native = module

    def __repr__(self):
        return "<Model %s %s -> %s, %d ops, arena %d B, %s>" % (
            self.name, self.input_shape, self.output_shape, len(self.ops), self.arena_bytes, self.backend)


def _hex(data):
    return "".join("%02x" % b for b in data)


def op_names():
    """The operators this runtime runs."""
    return [OP_NAMES[k] for k in sorted(OP_NAMES)]


# -- sha256 in Python, for a firmware built without hashlib.sha256 (FIPS 180-4) ---------------------

_K = None


def _round_constants():
    global _K
    if _K is None:
        # The first 32 bits of the fractional parts of the cube roots of the first 64 primes,
        # found with integer arithmetic only.
        primes, n = [], 2
        while len(primes) < 64:
            if all(n % p for p in primes if p * p <= n):
                primes.append(n)
            n += 1
        _K = [_frac_root_bits(p, 3) for p in primes]
    return _K


def _frac_root_bits(p, k):
    # floor(p^(1/k) * 2^32) mod 2^32, by bisection on integers.
    target = p << (32 * k)
    lo, hi = 0, 1 << 40
    while lo < hi:
        mid = (lo + hi + 1) >> 1
        if mid ** k <= target:
            lo = mid
        else:
            hi = mid - 1
    return lo & 0xFFFFFFFF


class Sha256:
    def __init__(self):
        primes, n = [], 2
        while len(primes) < 8:
            if all(n % p for p in primes if p * p <= n):
                primes.append(n)
            n += 1
        self._h = [_frac_root_bits(p, 2) for p in primes]
        self._buf = b""
        self._length = 0

    def update(self, data):
        data = bytes(data)
        self._length += len(data)
        data = self._buf + data
        cut = len(data) - len(data) % 64
        for i in range(0, cut, 64):
            self._block(data[i:i + 64])
        self._buf = data[cut:]

    def digest(self):
        h, buf, length = list(self._h), self._buf, self._length
        tail = buf + b"\x80" + b"\0" * ((55 - len(buf)) % 64) + struct.pack(">Q", length * 8)
        for i in range(0, len(tail), 64):
            self._block(tail[i:i + 64])
        out = struct.pack(">8I", *self._h)
        self._h = h
        return out

    def _block(self, block):
        mask = 0xFFFFFFFF
        k = _round_constants()
        w = list(struct.unpack(">16I", block))
        for i in range(16, 64):
            a, b = w[i - 15], w[i - 2]
            s0 = ((a >> 7 | a << 25) ^ (a >> 18 | a << 14) ^ (a >> 3)) & mask
            s1 = ((b >> 17 | b << 15) ^ (b >> 19 | b << 13) ^ (b >> 10)) & mask
            w.append((w[i - 16] + s0 + w[i - 7] + s1) & mask)
        a, b, c, d, e, f, g, h = self._h
        for i in range(64):
            s1 = ((e >> 6 | e << 26) ^ (e >> 11 | e << 21) ^ (e >> 25 | e << 7)) & mask
            t1 = (h + s1 + ((e & f) ^ (~e & g)) + k[i] + w[i]) & mask
            s0 = ((a >> 2 | a << 30) ^ (a >> 13 | a << 19) ^ (a >> 22 | a << 10)) & mask
            t2 = (s0 + ((a & b) ^ (a & c) ^ (b & c))) & mask
            h, g, f, e, d, c, b, a = g, f, e, (d + t1) & mask, c, b, a, (t1 + t2) & mask
        self._h = [(x + y) & mask for x, y in zip(self._h, (a, b, c, d, e, f, g, h))]
