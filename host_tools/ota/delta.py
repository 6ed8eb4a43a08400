"""The delta between two versions of a file: `mfdiff1`, a bsdiff-like patch.

A patch turns `old` into `new` with three kinds of bytes: *diff* bytes, added byte by byte
(mod 256) to a run of old bytes; *extra* bytes, copied as they are; and *seeks*, which move the
read position in old. Where new is old with small changes at the same place (a fine-tuned
model: the same layout, most weights off by one or two quanta) the diff bytes are mostly zeros
and small numbers, which deflate packs tightly. Where a block moved, a seek follows it. Where
new is unrelated, extra bytes carry it.

The matching follows Colin Percival's bsdiff idea (approximate matches grown around exact
ones), with a k-gram index of old instead of a suffix array, and a softer notion of "close" for
the growing: a byte counts as matching when the two differ by at most `NEAR` quanta, because
such a diff byte compresses almost as well as a zero.

The patch stream, before compression (docs/ota.md):

    magic b"MFD1" | new_size u32 | old_size u32
    records until new_size bytes are produced, each producing at least one byte:
        seek     (signed: zigzag LEB128)
        add_len  (unsigned LEB128)
        copy_len (unsigned LEB128)
        add_len diff bytes, copy_len extra bytes

Applying a record: pos += seek; out += (old[pos + i] + diff[i]) & 0xFF for the add run, pos +=
add_len; out += extra. The read position starts at 0. `apply_patch` here is the reference; micropython_modules/mf_ota_patch.py
is the device's streaming version (same checks, same errors).
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np

from mcuforge.codegen.errors import McuforgeError

PATCH_MAGIC = b"MFD1"
HEADER = struct.Struct("<4sII")
GRAM = 8                 # bytes hashed per index entry: shorter matches are not looked for
MAX_CANDIDATES = 24      # old positions tried per k-gram (runs of zeros have thousands)
NEAR = 2                 # |new - old| <= NEAR counts as a match while growing a run
BETTER_BY = 8            # a new exact match replaces the current alignment if this much longer
DEFAULT_WBITS = 12       # 4 KiB deflate window: the device's working set stays far below 16 KiB
MIN_WBITS, MAX_WBITS = 9, 13


class PatchError(McuforgeError):
    """A patch that does not apply: malformed, truncated, or made for another file."""


# ---- varints --------------------------------------------------------------------------------

def _uvarint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _svarint(value: int) -> bytes:
    return _uvarint((value << 1) if value >= 0 else ((-value << 1) - 1))


# ---- matching ---------------------------------------------------------------------------------

class _Index:
    """Where each k-gram of old occurs: sorted 64-bit keys, with positions."""

    def __init__(self, old: bytes):
        self.old = old
        n = len(old) - GRAM + 1
        if n <= 0:
            self.keys = np.zeros(0, dtype=np.uint64)
            self.pos = np.zeros(0, dtype=np.int64)
            return
        keys = _gram_keys(old)
        order = np.argsort(keys, kind="stable")
        self.keys = keys[order]
        self.pos = order.astype(np.int64)

    def ranges(self, new: bytes) -> tuple[np.ndarray, np.ndarray]:
        """For each k-gram of new: the [lo, hi) range of the sorted old keys equal to it."""
        if len(new) < GRAM or not len(self.keys):
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        keys = _gram_keys(new)
        return np.searchsorted(self.keys, keys, "left"), np.searchsorted(self.keys, keys, "right")


def _gram_keys(data: bytes) -> np.ndarray:
    arr = np.frombuffer(data, dtype=np.uint8)
    windows = np.lib.stride_tricks.sliding_window_view(arr, GRAM)
    weights = (np.uint64(1) << (np.arange(GRAM, dtype=np.uint64) * np.uint64(8)))
    return (windows.astype(np.uint64) * weights).sum(axis=1, dtype=np.uint64)


def _exact_len(a: bytes, ai: int, b: bytes, bi: int) -> int:
    """Length of the common prefix of a[ai:] and b[bi:]."""
    limit = min(len(a) - ai, len(b) - bi)
    n = 0
    step = 256
    while step:
        while n + step <= limit and a[ai + n:ai + n + step] == b[bi + n:bi + n + step]:
            n += step
        step //= 4
    while n < limit and a[ai + n] == b[bi + n]:
        n += 1
    return n


def _near(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = (a.astype(np.int16) - b.astype(np.int16)) & 0xFF
    return (d <= NEAR) | (d >= 256 - NEAR)


def diff_records(old: bytes, new: bytes) -> list[tuple[int, int, int, int, int]]:
    """The patch as (new_start, add, old_start, copy, seek) runs covering new in order."""
    index = _Index(old)
    lo, hi = index.ranges(new)
    n_new, n_old = len(new), len(old)
    old_arr = np.frombuffer(old, dtype=np.uint8)
    new_arr = np.frombuffer(new, dtype=np.uint8)

    def longest(scan: int, hint: int) -> tuple[int, int]:
        """The longest exact match of new[scan:] in old: (length, old position)."""
        if scan >= len(lo) or lo[scan] == hi[scan]:
            return 0, 0
        best_len, best_pos = 0, 0
        if 0 <= hint < n_old and old[hint:hint + GRAM] == new[scan:scan + GRAM]:
            best_len, best_pos = _exact_len(new, scan, old, hint), hint
        start, stop = int(lo[scan]), int(hi[scan])
        if stop - start > MAX_CANDIDATES:
            stop = start + MAX_CANDIDATES
        for pos in index.pos[start:stop]:
            pos = int(pos)
            if pos == hint:
                continue
            length = _exact_len(new, scan, old, pos)
            if length > best_len:
                best_len, best_pos = length, pos
        return best_len, best_pos

    def aligned(i: int, offset: int) -> bool:
        j = i + offset
        if not 0 <= j < n_old:
            return False
        d = (new[i] - old[j]) & 0xFF
        return d <= NEAR or d >= 256 - NEAR

    runs = []
    scan = length = 0
    last_scan = last_pos = last_offset = 0
    while scan < n_new:
        old_score = 0
        scan += length
        scsc = scan
        pos = 0
        while scan < n_new:
            length, pos = longest(scan, scan + last_offset)
            while scsc < scan + length:
                if aligned(scsc, last_offset):
                    old_score += 1
                scsc += 1
            if (length == old_score and length) or length > old_score + BETTER_BY:
                break
            if aligned(scan, last_offset):
                old_score -= 1
            scan += 1
        if length != old_score or scan >= n_new:
            # Grow the run before `scan` forward from (last_scan, last_pos), and the match at
            # scan backward from (scan, pos): keep the lengths that maximise matches - misses.
            span = min(scan - last_scan, n_old - last_pos)
            forward = 0
            if span > 0:
                hits = _near(new_arr[last_scan:last_scan + span], old_arr[last_pos:last_pos + span])
                score = 2 * np.cumsum(hits) - np.arange(1, span + 1)
                best = int(np.argmax(score))
                if score[best] > 0:
                    forward = best + 1
            backward = 0
            if scan < n_new:
                span = min(scan - last_scan, pos)
                if span > 0:
                    hits = _near(new_arr[scan - span:scan][::-1], old_arr[pos - span:pos][::-1])
                    score = 2 * np.cumsum(hits) - np.arange(1, span + 1)
                    best = int(np.argmax(score))
                    if score[best] > 0:
                        backward = best + 1
            if last_scan + forward > scan - backward:
                # The two runs overlap: split where the forward run stops paying off.
                overlap = (last_scan + forward) - (scan - backward)
                a = _near(new_arr[scan - backward:scan - backward + overlap],
                          old_arr[last_pos + forward - overlap:last_pos + forward])
                b = _near(new_arr[scan - backward:scan - backward + overlap],
                          old_arr[pos - backward:pos - backward + overlap])
                gain = np.concatenate(([0], np.cumsum(a.astype(np.int64) - b.astype(np.int64))))
                split = int(np.argmax(gain))
                forward += split - overlap
                backward -= split
            copy = (scan - backward) - (last_scan + forward)
            seek = (pos - backward) - (last_pos + forward)
            runs.append((last_scan, forward, last_pos, copy, seek))
            last_scan = scan - backward
            last_pos = pos - backward
            last_offset = pos - scan
    return runs


def make_patch(old: bytes, new: bytes) -> bytes:
    """The uncompressed mfdiff1 patch from old to new."""
    out = bytearray(HEADER.pack(PATCH_MAGIC, len(new), len(old)))
    old_arr = np.frombuffer(old, dtype=np.uint8)
    new_arr = np.frombuffer(new, dtype=np.uint8)
    produced = 0
    pending_seek = 0   # a run that produces nothing only moves the read position
    for new_start, add, old_start, copy, seek in diff_records(old, new):
        if add + copy == 0:
            pending_seek += seek
            continue
        out += _svarint(pending_seek) + _uvarint(add) + _uvarint(copy)
        pending_seek = seek
        if add:
            out += (new_arr[new_start:new_start + add] - old_arr[old_start:old_start + add]).tobytes()
        out += new[new_start + add:new_start + add + copy]
        produced += add + copy
    if produced != len(new):
        raise AssertionError(f"internal error: the patch makes {produced} bytes, not {len(new)}")
    return bytes(out)


def parse_header(patch: bytes, where: str = "patch") -> tuple[int, int]:
    if len(patch) < HEADER.size:
        raise PatchError(f"the patch is {len(patch)} bytes, shorter than its {HEADER.size}-byte header", where=where,
                         fix="make the patch again with `mcuforge ota diff`")
    magic, new_size, old_size = HEADER.unpack_from(patch)
    if magic != PATCH_MAGIC:
        raise PatchError(f"not an mfdiff1 patch: it starts with {magic!r}, not {PATCH_MAGIC!r}", where=where,
                         fix="make the patch with `mcuforge ota diff`")
    return new_size, old_size


def apply_patch(old: bytes, patch: bytes, where: str = "patch") -> bytes:
    """Old + patch -> new, checking every bound (the host's reference for the device code)."""
    new_size, old_size = parse_header(patch, where)
    if old_size != len(old):
        raise PatchError(f"the patch was made for a {old_size}-byte file; this one has {len(old)} bytes", where=where,
                         fix="apply it to the version it was made from, or send a full image")
    out = bytearray()
    p = HEADER.size
    pos = 0

    def varint() -> int:
        nonlocal p
        value = shift = 0
        while True:
            if p >= len(patch):
                raise PatchError("the patch ends in the middle of a record", where=f"{where}: byte {p}",
                                 fix="the patch is truncated; make or send it again")
            byte = patch[p]
            p += 1
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7
            if shift > 28:
                raise PatchError("a length in the patch does not fit 32 bits", where=f"{where}: byte {p}",
                                 fix="the patch is corrupted; make or send it again")

    while len(out) < new_size:
        zz, add, copy = varint(), varint(), varint()
        pos += (zz >> 1) ^ -(zz & 1)
        if add + copy == 0:
            raise PatchError("a patch record produces nothing", where=f"{where}: byte {p}",
                             fix="the patch is corrupted; make or send it again")
        if len(out) + add + copy > new_size:
            raise PatchError(f"a record would write past the new file's {new_size} bytes", where=f"{where}: byte {p}",
                             fix="the patch is corrupted; make or send it again")
        if pos < 0 or pos + add > old_size:
            raise PatchError(f"a record reads old bytes {pos}..{pos + add}, outside the {old_size}-byte file",
                             where=f"{where}: byte {p}", fix="the patch is corrupted; make or send it again")
        if p + add + copy > len(patch):
            raise PatchError("the patch ends in the middle of a record", where=f"{where}: byte {p}",
                             fix="the patch is truncated; make or send it again")
        if add:
            d = np.frombuffer(patch, dtype=np.uint8, count=add, offset=p)
            o = np.frombuffer(old, dtype=np.uint8, count=add, offset=pos)
            out += (o + d).tobytes()
        p += add
        out += patch[p:p + copy]
        p += copy
        pos += add
    if p != len(patch):
        raise PatchError(f"{len(patch) - p} bytes follow the last record", where=f"{where}: byte {p}",
                         fix="the patch is corrupted; make or send it again")
    return bytes(out)


# ---- compression ----------------------------------------------------------------------------

def compress(data: bytes, wbits: int = DEFAULT_WBITS) -> bytes:
    """Raw deflate (no zlib header) with a 2**wbits window: what MicroPython's
    deflate.DeflateIO(stream, deflate.RAW, wbits) decompresses."""
    check_wbits(wbits)
    best = None
    # Diff bytes (mostly small numbers, few repeats) sometimes pack better with the filtered
    # or Huffman-only strategies; any of them inflates the same way.
    for strategy in (zlib.Z_DEFAULT_STRATEGY, zlib.Z_FILTERED, zlib.Z_HUFFMAN_ONLY):
        c = zlib.compressobj(9, zlib.DEFLATED, -wbits, 9, strategy)
        out = c.compress(data) + c.flush()
        if best is None or len(out) < len(best):
            best = out
    return best


def decompress(data: bytes, wbits: int = DEFAULT_WBITS, limit: int | None = None) -> bytes:
    d = zlib.decompressobj(-wbits)
    try:
        out = d.decompress(data, limit or 0)
    except zlib.error as exc:
        raise PatchError(f"the payload does not inflate: {exc}", where="payload",
                         fix="the package is corrupted; make or send it again") from None
    return out


def check_wbits(wbits: int) -> None:
    if not MIN_WBITS <= wbits <= MAX_WBITS:
        raise McuforgeError(f"a deflate window of 2**{wbits} bytes is outside {MIN_WBITS}..{MAX_WBITS}",
                            where="--window-bits",
                            fix=f"use {MIN_WBITS} to {MAX_WBITS}: the device holds the window in RAM "
                                f"(2**{MAX_WBITS} = {1 << MAX_WBITS} bytes at most, within the 16 KiB budget)")


@dataclass
class DeltaReport:
    old_bytes: int
    new_bytes: int
    patch_bytes: int          # uncompressed mfdiff1
    compressed_bytes: int     # what goes into the package
    full_compressed_bytes: int

    @property
    def ratio_to_full(self) -> float:
        return self.compressed_bytes / max(1, self.full_compressed_bytes)


def delta(old: bytes, new: bytes, wbits: int = DEFAULT_WBITS) -> tuple[bytes, DeltaReport]:
    """The compressed patch from old to new, with its figures against the compressed full image."""
    patch = make_patch(old, new)
    packed = compress(patch, wbits)
    full = compress(new, wbits)
    return packed, DeltaReport(len(old), len(new), len(patch), len(packed), len(full))
