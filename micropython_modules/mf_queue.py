# A persistent queue that survives power cuts, for records waiting for the uplink.
#
# On flash, in one folder:
#   <lane>_<first seq, 8 hex>.seg  append-only segments, one chain per priority lane
#   state.<generation>             append-only log of (lane, floor, evicted) records; a
#                                  compaction writes generation n+1, then removes the older
#
# A record: magic 0xA5, lane (u8), length (u16 LE), seq (u32 LE), payload, CRC-32 (u32 LE) of
# everything before it. seq is one counter across lanes and never reused. A state record:
# magic 0x5A, lane, 0, 0, floor (u32), evicted (u32), CRC-32: records of that lane with
# seq <= floor are delivered (acked) or evicted; evicted counts evicted records in total.
#
# Crash safety. A segment is only ever appended to, and a record is complete when its CRC
# matches; reading a segment stops at the first record that does not check, so a torn write
# can lose only the record being written, and it is never delivered. After a reboot a segment
# with a torn tail is sealed: new records go to a new segment, never after garbage. State
# records are written before the files they make obsolete are removed, and are read as a
# maximum per lane, so a cut at any point leaves a state that is at worst one step behind.
#
# Eviction, when a new record would take the queue past `capacity` bytes (or leave less than
# `reserve` bytes free on the filesystem): the oldest segment of the lowest-priority lane that
# has one goes first, telemetry (lane 0) before events (1) before alerts (2), and a record
# never evicts a record of a higher lane: if nothing of its own lane or below is left to
# evict, the new record is refused (dropped). So alerts are kept longest.
#
# Delivery: peek() returns the oldest pending records of the highest non-empty lane (alerts
# first); ack(records) makes them delivered for good. A record is pending from put() until
# its ack, so none is lost before an ack (except by eviction) and none is delivered after one.
import struct

try:
    from binascii import crc32
except ImportError:  # a port built without binascii.crc32
    _TABLE = []
    for _n in range(256):
        _c = _n
        for _k in range(8):
            _c = (_c >> 1) ^ 0xEDB88320 if _c & 1 else _c >> 1
        _TABLE.append(_c)

    def crc32(data, crc=0):
        crc ^= 0xFFFFFFFF
        for b in data:
            crc = _TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
        return crc ^ 0xFFFFFFFF

TELEMETRY, EVENT, ALERT = 0, 1, 2
LANE_NAMES = ("telemetry", "event", "alert")
MAGIC = 0xA5
STATE_MAGIC = 0x5A
HEADER = "<BBHI"
HEADER_SIZE = 8
CRC_SIZE = 4
OVERHEAD = HEADER_SIZE + CRC_SIZE
STATE_RECORD = "<BBBBII"
STATE_SIZE = 16
STATE_PREFIX = "state."
SEGMENT_SUFFIX = ".seg"
STATE_COMPACT_BYTES = 1024


class _OsFiles:
    """Plain files, for a queue used without a HAL (the HAL has the same methods)."""

    def __init__(self):
        import os
        self.os = os

    def open(self, path, mode="rb"):
        return open(path, mode)

    def remove(self, path):
        self.os.remove(path)

    def rename(self, old, new):
        self.os.rename(old, new)

    def listdir(self, path="."):
        return self.os.listdir(path)

    def mkdir(self, path):
        try:
            self.os.mkdir(path)
        except OSError:
            pass

    def size(self, path):
        return self.os.stat(path)[6]

    def fs_free(self, path="."):
        try:
            st = self.os.statvfs(path)
            return st[0] * st[4]
        except (AttributeError, OSError):
            return None


class _Segment:
    def __init__(self, lane, first, name):
        self.lane = lane
        self.first = first
        self.name = name
        self.last = None      # seq of the last valid record
        self.pending = 0      # valid records with seq above the lane's floor
        self.size = 0         # bytes on flash, torn tail included
        self.sealed = False   # no appends: torn tail, or a write failed


def segment_name(lane, first):
    return "%d_%08x%s" % (lane, first, SEGMENT_SUFFIX)


def encode_record(lane, seq, payload):
    head = struct.pack(HEADER, MAGIC, lane, len(payload), seq)
    crc = crc32(payload, crc32(head))
    return head + payload + struct.pack("<I", crc)


def decode_records(data, lane=None, max_payload=0xFFFF):
    """The valid records at the start of `data`: ([(seq, payload), ...], bytes they span).
    Stops at the first record that does not check (magic, lane, length, CRC, rising seq)."""
    out = []
    off = 0
    end_all = len(data)
    mv = memoryview(data)
    prev = -1
    while off + OVERHEAD <= end_all:
        magic, rec_lane, length, seq = struct.unpack_from(HEADER, data, off)
        if magic != MAGIC or (lane is not None and rec_lane != lane) or length > max_payload:
            break
        end = off + HEADER_SIZE + length
        if end + CRC_SIZE > end_all:
            break
        if crc32(mv[off:end]) != struct.unpack_from("<I", data, end)[0] or seq <= prev:
            break
        out.append((seq, bytes(mv[off + HEADER_SIZE:end])))
        prev = seq
        off = end + CRC_SIZE
    return out, off


class Queue:
    """path: the queue's folder. fs: the HAL (or any object with its file methods).
    capacity: bytes on flash for all segments. segment: bytes per segment (the eviction unit).
    """

    def __init__(self, path="queue", fs=None, capacity=65536, segment=4096, lanes=3, reserve=0):
        if capacity < 2 * segment * lanes:
            raise ValueError("capacity %d is too small for %d lanes of %d-byte segments: give at least %d"
                             % (capacity, lanes, segment, 2 * segment * lanes))
        self.path = path
        self.fs = fs if fs is not None else _OsFiles()
        self.capacity = capacity
        self.segment_bytes = segment
        self.max_payload = min(0xFFFF, segment - OVERHEAD)
        self.lanes = lanes
        self.reserve = reserve
        self.segments = [[] for _ in range(lanes)]
        self.floor = [0] * lanes
        self.evicted = [0] * lanes
        self.dropped = [0] * lanes
        self.total = 0
        self.next_seq = 1
        self.torn = 0
        self._writers = [None] * lanes
        self._state_size = 0
        self._state_gen = 0
        self._recover()

    # --- recovery -----------------------------------------------------------------------------
    def _p(self, name):
        return self.path + "/" + name

    def _recover(self):
        fs = self.fs
        fs.mkdir(self.path)
        names = fs.listdir(self.path)
        top = self._recover_state(names)
        for name in names:
            if not name.endswith(SEGMENT_SUFFIX):
                continue
            try:
                lane = int(name[:name.index("_")])
                first = int(name[name.index("_") + 1:-len(SEGMENT_SUFFIX)], 16)
            except ValueError:
                continue
            if lane >= self.lanes:
                continue
            seg = _Segment(lane, first, name)
            data = self._read(seg)
            records, valid = decode_records(data, lane)
            seg.size = len(data)
            if valid != len(data):
                seg.sealed = True
                self.torn += 1
            for seq, _ in records:
                if seq > self.floor[lane]:
                    seg.pending += 1
            if records:
                seg.last = records[-1][0]
                top = max(top, seg.last)
            if seg.pending == 0:
                fs.remove(self._p(name))  # delivered, evicted, or never held a whole record
                continue
            self.segments[lane].append(seg)
            self.total += seg.size
        for lane in range(self.lanes):
            self.segments[lane].sort(key=lambda s: s.first)
        self.next_seq = top + 1

    # --- the state log ----------------------------------------------------------------------------
    # state.<generation>: appended to; compaction writes a full snapshot as the next generation,
    # then removes the older ones. Every file is read and folded as a maximum, so a cut while
    # writing or removing leaves the newest complete values readable.
    def _recover_state(self, names):
        gens = []
        for name in names:
            if name.startswith(STATE_PREFIX):
                try:
                    gens.append(int(name[len(STATE_PREFIX):]))
                except ValueError:
                    pass
        gens.sort()
        clean = False
        for gen in gens:
            clean = self._read_state(gen)
        top = max(self.floor) if self.lanes else 0
        self._state_gen = gens[-1] if gens else 0
        if gens and not (clean and len(gens) == 1):
            self._compact_state()
        return top

    def _read_state(self, gen):
        """Folds one state file into floor/evicted; True when it ends on a record boundary."""
        f = self.fs.open(self._p(STATE_PREFIX + str(gen)), "rb")
        try:
            data = f.read()
        finally:
            f.close()
        off = 0
        while off + STATE_SIZE <= len(data):
            magic, lane, _, _, floor, evicted = struct.unpack_from(STATE_RECORD, data, off)
            crc = struct.unpack_from("<I", data, off + 12)[0]
            if magic != STATE_MAGIC or lane >= self.lanes or crc32(data[off:off + 12]) != crc:
                break
            if floor > self.floor[lane]:
                self.floor[lane] = floor
            if evicted > self.evicted[lane]:
                self.evicted[lane] = evicted
            off += STATE_SIZE
        self._state_size = off
        return off == len(data)

    def _state_record(self, lane):
        rec = struct.pack(STATE_RECORD, STATE_MAGIC, lane, 0, 0, self.floor[lane], self.evicted[lane])
        return rec + struct.pack("<I", crc32(rec))

    def _write_state(self, lane):
        if self._state_gen == 0 or self._state_size >= STATE_COMPACT_BYTES:
            self._compact_state()
            return
        f = self.fs.open(self._p(STATE_PREFIX + str(self._state_gen)), "ab")
        try:
            f.write(self._state_record(lane))
            f.flush()
        finally:
            f.close()
        self._state_size += STATE_SIZE

    def _compact_state(self):
        gen = self._state_gen + 1
        f = self.fs.open(self._p(STATE_PREFIX + str(gen)), "wb")
        try:
            for lane in range(self.lanes):
                f.write(self._state_record(lane))
            f.flush()
        finally:
            f.close()
        for name in self.fs.listdir(self.path):
            if name.startswith(STATE_PREFIX) and name != STATE_PREFIX + str(gen):
                self.fs.remove(self._p(name))
        self._state_gen = gen
        self._state_size = STATE_SIZE * self.lanes

    def _read(self, seg):
        f = self.fs.open(self._p(seg.name), "rb")
        try:
            return f.read()
        finally:
            f.close()

    # --- writing --------------------------------------------------------------------------------
    def put(self, payload, lane=TELEMETRY):
        """Appends a record; returns its seq, or None when the queue is full of records of
        higher lanes (the record is dropped and counted)."""
        if isinstance(payload, str):
            payload = payload.encode()
        if len(payload) > self.max_payload:
            raise ValueError("record of %d bytes is larger than the %d a segment holds" % (len(payload), self.max_payload))
        if lane < 0 or lane >= self.lanes:
            raise ValueError("lane %d out of range 0..%d" % (lane, self.lanes - 1))
        n = len(payload) + OVERHEAD
        if not self._make_room(n, lane):
            self.dropped[lane] += 1
            return None
        segs = self.segments[lane]
        seg = segs[-1] if segs else None
        if seg is None or seg.sealed or seg.size + n > self.segment_bytes:
            self._close_writer(lane)
            seg = _Segment(lane, self.next_seq, segment_name(lane, self.next_seq))
            segs.append(seg)
        f = self._writers[lane]
        if f is None:
            f = self._writers[lane] = self.fs.open(self._p(seg.name), "ab")
        seq = self.next_seq
        record = encode_record(lane, seq, payload)
        try:
            f.write(record)
            f.flush()
        except OSError:
            # A failed write may have left part of the record: seal the segment.
            seg.sealed = True
            self._close_writer(lane)
            try:
                grown = self.fs.size(self._p(seg.name)) - seg.size
            except OSError:
                grown = 0
            seg.size += grown
            self.total += grown
            if seg.pending == 0:
                self._drop_segment(seg)
            raise
        self.next_seq = seq + 1
        seg.size += n
        seg.last = seq
        seg.pending += 1
        self.total += n
        return seq

    def put_many(self, payloads, lane=TELEMETRY):
        return [self.put(p, lane) for p in payloads]

    def _make_room(self, n, lane):
        while self.total + n > self.capacity or not self._enough_free(n):
            victim = None
            for low in range(lane + 1):
                if self.segments[low]:
                    victim = self.segments[low][0]
                    break
            if victim is None:
                return False
            self._evict(victim)
        return True

    def _enough_free(self, n):
        if not self.reserve:
            return True
        free = self.fs.fs_free(self.path)
        return free is None or free - n >= self.reserve

    def _evict(self, seg):
        lane = seg.lane
        self.evicted[lane] += seg.pending
        if seg.last is not None and seg.last > self.floor[lane]:
            self.floor[lane] = seg.last
        self._write_state(lane)
        self._drop_segment(seg)

    def _drop_segment(self, seg):
        lane = seg.lane
        segs = self.segments[lane]
        if segs and segs[-1] is seg:
            self._close_writer(lane)
        self.fs.remove(self._p(seg.name))
        segs.remove(seg)
        self.total -= seg.size

    def _close_writer(self, lane):
        f = self._writers[lane]
        if f is not None:
            self._writers[lane] = None
            f.close()

    # --- delivery -------------------------------------------------------------------------------
    def peek(self, n=16, lane=None):
        """Up to n pending records [(seq, lane, payload), ...], oldest first, all from one lane:
        the given one, or the highest lane that has any."""
        lanes = (lane,) if lane is not None else range(self.lanes - 1, -1, -1)
        for ln in lanes:
            out = []
            floor = self.floor[ln]
            for seg in self.segments[ln]:
                if seg.pending == 0:
                    continue
                records, _ = decode_records(self._read(seg), ln)
                for seq, payload in records:
                    if seq > floor:
                        out.append((seq, ln, payload))
                        if len(out) >= n:
                            return out
            if out:
                return out
        return []

    def ack(self, records):
        """Marks records from peek() delivered. Each lane's floor moves to the highest seq
        acked in it; segments left with nothing pending are removed."""
        top = {}
        for rec in records:
            seq, lane = rec[0], rec[1]
            if seq > top.get(lane, 0):
                top[lane] = seq
        for lane in top:
            upto = top[lane]
            if upto <= self.floor[lane]:
                continue
            self.floor[lane] = upto
            self._write_state(lane)
            for seg in list(self.segments[lane]):
                if seg.first > upto:
                    break
                if seg.last is None:
                    continue
                if seg.last <= upto:
                    seg.pending = 0
                    self._drop_segment(seg)
                else:
                    records_left, _ = decode_records(self._read(seg), lane)
                    seg.pending = sum(1 for seq, _ in records_left if seq > upto)
                    break

    # --- figures --------------------------------------------------------------------------------
    def pending(self, lane=None):
        lanes = range(self.lanes) if lane is None else (lane,)
        return sum(seg.pending for ln in lanes for seg in self.segments[ln])

    def stats(self):
        return {"pending": [self.pending(l) for l in range(self.lanes)], "bytes": self.total,
                "capacity": self.capacity, "segments": sum(len(s) for s in self.segments),
                "evicted": list(self.evicted), "dropped": list(self.dropped), "next_seq": self.next_seq,
                "torn": self.torn}

    def close(self):
        for lane in range(self.lanes):
            self._close_writer(lane)
