# Streaming patch application for OTA updates: old + patch -> new, in a few KiB of RAM.
#
#     import deflate, mf_ota_patch
#     patch = deflate.DeflateIO(package_file, deflate.RAW, 12)   # positioned at the payload
#     mf_ota_patch.apply(old_file, old_size, patch, out_file, new_size, digest)
#
# The patch is mcuforge's mfdiff1 (host_tools/ota/delta.py writes it; docs/ota.md specifies
# it): a header (magic "MFD1", new size u32, old size u32), then records of (seek, add_len,
# copy_len) as LEB128 varints (seek zigzag-signed), each followed by add_len diff bytes (added
# mod 256 to the old bytes at the read position, which first moves by seek) and copy_len extra
# bytes (copied). The old file is read with
# seeks, the patch and the new file strictly in order, so RAM holds two buffers of `chunk`
# bytes and the deflate window, never a whole file.
#
# Every input is hostile until proven otherwise: lengths are checked against the sizes before
# anything is read or written, each record must produce at least one byte (so there are at
# most new_size records), varints stop at 5 bytes, and the patch must end exactly where the
# new file does. Anything else raises PatchError with what, where and what to do.
import struct

MAGIC = b"MFD1"
HEADER_BYTES = 12
DEFAULT_CHUNK = 512


class PatchError(ValueError):
    pass


def _fill(stream, mv, what):
    """Reads exactly len(mv) bytes from `stream` into the memoryview `mv`."""
    got = 0
    n = len(mv)
    while got < n:
        try:
            k = stream.readinto(mv[got:] if got else mv)
        except Exception as exc:  # deflate raises OSError on a corrupt stream
            raise PatchError("the payload does not inflate (%s) while reading %s; the package is corrupted, "
                             "send it again" % (exc, what))
        if not k:
            raise PatchError("the patch ends early, in %s; the package is truncated, send it again" % what)
        got += k


class _Patch:
    def __init__(self, stream):
        self.stream = stream
        self.one = bytearray(1)
        self.one_mv = memoryview(self.one)
        self.consumed = 0

    def varint(self, what):
        value = 0
        shift = 0
        one = self.one
        while True:
            _fill(self.stream, self.one_mv, what)
            self.consumed += 1
            b = one[0]
            value |= (b & 0x7F) << shift
            if not b & 0x80:
                return value
            shift += 7
            if shift > 28:
                raise PatchError("%s does not fit 32 bits at patch byte %d; the package is corrupted, send it again"
                                 % (what, self.consumed))


def read_header(stream):
    """(new_size, old_size) from the patch header."""
    head = bytearray(HEADER_BYTES)
    _fill(stream, memoryview(head), "the patch header")
    magic, new_size, old_size = struct.unpack("<4sII", head)
    if magic != MAGIC:
        raise PatchError("the payload is not an mfdiff1 patch (it starts with %r); make the package with "
                         "`mcuforge ota make`" % (bytes(magic),))
    return new_size, old_size


def apply(old, old_size, stream, out, new_size, digest=None, chunk=DEFAULT_CHUNK, progress=None):
    """Applies the patch read from `stream` (inflated) to `old` (seek + readinto), writing the
    new file to `out` and feeding `digest` (anything with update()). Checks the header against
    old_size and new_size. Returns the number of bytes written."""
    got_new, got_old = read_header(stream)
    if got_new != new_size:
        raise PatchError("the patch makes a %d-byte file; the manifest says %d; the package is inconsistent, "
                         "make it again" % (got_new, new_size))
    if got_old != old_size:
        raise PatchError("the patch was made for a %d-byte file and this one has %d bytes; it was made from "
                         "another version: send a full image or a patch from this version" % (got_old, old_size))
    patch = _Patch(stream)
    patch.consumed = HEADER_BYTES
    dbuf = bytearray(chunk)
    obuf = bytearray(chunk)
    dmv = memoryview(dbuf)
    omv = memoryview(obuf)
    written = 0
    pos = 0
    while written < new_size:
        zz = patch.varint("a record's seek")
        pos += (zz >> 1) ^ -(zz & 1)
        add = patch.varint("a record's add length")
        copy = patch.varint("a record's copy length")
        if add + copy == 0:
            raise PatchError("a patch record at byte %d produces nothing; the package is corrupted, send it again"
                             % patch.consumed)
        if written + add + copy > new_size:
            raise PatchError("a patch record at byte %d writes past the new file's %d bytes; the package is "
                             "corrupted, send it again" % (patch.consumed, new_size))
        if pos < 0 or pos + add > old_size:
            raise PatchError("a patch record at byte %d reads old bytes %d..%d, outside the %d-byte file; the "
                             "package is corrupted, send it again" % (patch.consumed, pos, pos + add, old_size))
        left = add
        if left:
            old.seek(pos)
        while left:
            n = chunk if left > chunk else left
            d = dmv[:n] if n < chunk else dmv
            o = omv[:n] if n < chunk else omv
            _fill(stream, d, "diff bytes")
            got = 0
            while got < n:
                k = old.readinto(o[got:])
                if not k:
                    raise PatchError("the old file ended early at byte %d of %d; it changed under the update"
                                     % (pos + got, old_size))
                got += k
            for i in range(n):
                b = dbuf[i]
                if b:
                    obuf[i] = (obuf[i] + b) & 0xFF
            out.write(o)
            if digest is not None:
                digest.update(o)
            left -= n
            written += n
        pos += add
        patch.consumed += add
        left = copy
        while left:
            n = chunk if left > chunk else left
            d = dmv[:n] if n < chunk else dmv
            _fill(stream, d, "extra bytes")
            out.write(d)
            if digest is not None:
                digest.update(d)
            left -= n
            written += n
        patch.consumed += copy
        if progress is not None:
            progress(written)
    try:
        extra = stream.readinto(patch.one)
    except Exception as exc:
        raise PatchError("the payload does not inflate (%s) at its end; the package is corrupted, send it again" % exc)
    if extra:
        raise PatchError("the patch goes on after the new file is complete; the package is corrupted, send it again")
    return written


def inflate(stream, out, new_size, digest=None, chunk=DEFAULT_CHUNK, progress=None):
    """A full image: copies new_size inflated bytes from `stream` to `out`, then checks that
    the stream ends there."""
    buf = bytearray(chunk)
    mv = memoryview(buf)
    written = 0
    while written < new_size:
        n = new_size - written
        d = mv if n >= chunk else mv[:n]
        _fill(stream, d, "the image")
        out.write(d)
        if digest is not None:
            digest.update(d)
        written += len(d)
        if progress is not None:
            progress(written)
    try:
        extra = stream.readinto(buf)
    except Exception as exc:
        raise PatchError("the payload does not inflate (%s) at its end; the package is corrupted, send it again" % exc)
    if extra:
        raise PatchError("the image goes on past the %d bytes of the manifest; the package is inconsistent, "
                         "make it again" % new_size)
    return written
