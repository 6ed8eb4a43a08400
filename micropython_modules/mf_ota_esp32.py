# Firmware images over the air on ESP32: the updater's slot for component "firmware".
#
#     import mf_ota, mf_ota_esp32
#     ota = mf_ota.Updater(hal, "acme-vib", [KEY], {"model": "model.mfm",
#                                                   "fw": mf_ota_esp32.FirmwareSlot()})
#
# The patch reads the running application partition and writes the next OTA partition
# (esp32.Partition.get_next_update()), 4 KiB flash block by 4 KiB block; the switch is
# set_boot() on it, effective at the next reset. After the health window, commit() calls
# esp32.Partition.mark_app_valid_cancel_rollback(), so that a bootloader built with app
# rollback (CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE) keeps it; before that, a reset that never
# reaches the commit makes the bootloader go back by itself. rollback() sets the previous
# partition to boot. The board resets when the application decides (machine.reset()).
#
# A partition table without OTA slots (one factory app) cannot take a firmware update: the
# slot says so when it is created, with what to do.
import mf_ota
import mf_ota_patch

try:
    import hashlib
    _sha256 = hashlib.sha256
except ImportError:
    import mf_model
    _sha256 = mf_model.Sha256

BLOCK = 4096


class PartitionReader:
    """seek/readinto over a partition's first `size` bytes."""

    def __init__(self, part, size):
        self.part = part
        self.size = size
        self.pos = 0

    def seek(self, pos):
        self.pos = pos

    def readinto(self, buf):
        n = min(len(buf), self.size - self.pos)
        if n <= 0:
            return 0
        done = 0
        while done < n:
            block, offset = divmod(self.pos, BLOCK)
            take = min(n - done, BLOCK - offset)
            mv = memoryview(buf)[done:done + take]
            self.part.readblocks(block, mv, offset)
            self.pos += take
            done += take
        return n


class PartitionWriter:
    """Sequential writes into a partition, one erased 4 KiB block at a time."""

    def __init__(self, part, capacity):
        self.part = part
        self.capacity = capacity
        self.buf = bytearray(BLOCK)
        self.fill = 0
        self.block = 0

    def write(self, data):
        n = len(data)
        if self.block * BLOCK + self.fill + n > self.capacity:
            raise mf_ota_patch.PatchError("the image does not fit the %d-byte OTA partition" % self.capacity)
        mv = memoryview(data)
        done = 0
        while done < n:
            take = min(n - done, BLOCK - self.fill)
            self.buf[self.fill:self.fill + take] = mv[done:done + take]
            self.fill += take
            done += take
            if self.fill == BLOCK:
                self._flush()
        return n

    def _flush(self):
        if self.fill < BLOCK:
            for i in range(self.fill, BLOCK):
                self.buf[i] = 0xFF
        self.part.writeblocks(self.block, self.buf)
        self.block += 1
        self.fill = 0

    def close(self):
        if self.fill:
            self._flush()


class FirmwareSlot:
    """See the module comment. `esp32`: the module (a stand-in in tests)."""

    def __init__(self, esp32=None):
        if esp32 is None:
            try:
                import esp32
            except ImportError:
                raise mf_ota.OtaError(mf_ota.E_UNSUPPORTED, "firmware updates need an ESP32 (the esp32 module)")
        self.esp32 = esp32
        self.running = esp32.Partition(esp32.Partition.RUNNING)
        try:
            self.next = self.running.get_next_update()
        except OSError:
            raise mf_ota.OtaError(mf_ota.E_UNSUPPORTED,
                                  "this firmware's partition table has no OTA slots (ota_0, ota_1): flash one "
                                  "that has them (ESP-IDF partitions_two_ota, or MicroPython's *-OTA board "
                                  "variant) over USB, or update models and app code only")

    def _size(self, part):
        info = part.info()
        return info[3]

    def apply(self, m, stream, chunk):
        capacity = self._size(self.next)
        if m["to_size"] > capacity:
            raise mf_ota.OtaError(mf_ota.E_SPACE, "a %d-byte image does not fit the %d-byte OTA partition"
                                  % (m["to_size"], capacity))
        out = PartitionWriter(self.next, capacity)
        h = _sha256()
        if m["delta"] == "mfdiff1":
            old = PartitionReader(self.running, m["from_size"])
            check = _sha256()
            buf = bytearray(512)
            while True:
                n = old.readinto(buf)
                if not n:
                    break
                check.update(memoryview(buf)[:n])
            if mf_ota._hex(check.digest()) != m["from_sha256"]:
                raise mf_ota.OtaError(mf_ota.E_BASE, "the running firmware is not version %d: send a full image"
                                      % m["from_version"])
            old.seek(0)
            n = mf_ota_patch.apply(old, m["from_size"], stream, out, m["to_size"], h, chunk)
        else:
            n = mf_ota_patch.inflate(stream, out, m["to_size"], h, chunk)
        out.close()
        if n != m["to_size"] or mf_ota._hex(h.digest()) != m["to_sha256"]:
            raise mf_ota.OtaError(mf_ota.E_CORRUPT, "the new image's sha256 does not match the manifest; the "
                                  "running firmware stays")

    def switch(self):
        self.next.set_boot()

    def mark_valid(self):
        self.esp32.Partition.mark_app_valid_cancel_rollback()

    def rollback(self):
        boot = self.esp32.Partition(self.esp32.Partition.BOOT)
        if boot.info() == self.running.info():
            # Running the new image: with two OTA slots, the other one holds the previous image.
            self.running.get_next_update().set_boot()
        else:
            # The new image never ran: keep booting this one.
            self.running.set_boot()
