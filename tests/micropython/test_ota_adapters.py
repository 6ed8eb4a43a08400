# The OTA adapters under MicroPython, against stand-ins for the hardware: ESP32 firmware
# partitions (mf_ota_esp32) and a LoRa modem (mf_ota_lora).
import unittest

import mf_ota
import mf_ota_esp32
import mf_ota_link
import mf_ota_lora
from mf_simhal import SimHAL
from mf_testkit import scratch
from ota_testkit import KEY, PRODUCT, Host, Pipe, fixture


class FakePartition:
    RUNNING = 0
    BOOT = 1
    marked = []
    table = None

    def __init__(self, which, name=None):
        t = FakePartition.table
        if name is None:
            name = t["running"] if which == FakePartition.RUNNING else t["boot"]
        self.name = name

    def info(self):
        return (0, 0x10, 0, len(FakePartition.table["parts"][self.name]), self.name, False)

    def get_next_update(self):
        names = [n for n in sorted(FakePartition.table["parts"]) if n.startswith("ota_")]
        if self.name not in names or len(names) < 2:
            raise OSError(2)
        return FakePartition(None, names[(names.index(self.name) + 1) % len(names)])

    def readblocks(self, block, buf, offset=0):
        data = FakePartition.table["parts"][self.name]
        start = block * 4096 + offset
        buf[:] = data[start:start + len(buf)]

    def writeblocks(self, block, buf):
        data = FakePartition.table["parts"][self.name]
        data[block * 4096:block * 4096 + len(buf)] = buf

    def set_boot(self):
        FakePartition.table["boot"] = self.name

    @staticmethod
    def mark_app_valid_cancel_rollback():
        FakePartition.marked.append(True)


class FakeEsp32:
    Partition = FakePartition


def flash_table(with_ota=True):
    size = 64 * 1024
    parts = {"ota_0": bytearray(b"\xff" * size), "ota_1": bytearray(b"\xff" * size)} if with_ota else \
        {"factory": bytearray(b"\xff" * size)}
    first = "ota_0" if with_ota else "factory"
    v1 = fixture("fw_v1.bin")
    parts[first][:len(v1)] = v1
    FakePartition.table = {"parts": parts, "running": first, "boot": first}
    FakePartition.marked = []
    return parts


class Firmware(unittest.TestCase):
    def _device(self):
        d = scratch("fw")
        up = mf_ota.Updater(SimHAL(), PRODUCT, [KEY], {"fw": mf_ota_esp32.FirmwareSlot(FakeEsp32)}, root=d + "/ota")
        up.provision("fw", 1)
        stream = Pipe()
        return up, Host(mf_ota_link.Receiver(up, stream, max_chunk=256))

    def test_delta_written_to_the_next_partition_then_committed(self):
        parts = flash_table()
        up, host = self._device()
        code, message = host.push(fixture("fw_v1_v2.mfu"))[0]
        self.assertEqual(code, mf_ota.INSTALLED, message)
        v2 = fixture("fw_v2.bin")
        self.assertEqual(bytes(parts["ota_1"][:len(v2)]), v2)
        self.assertEqual(FakePartition.table["boot"], "ota_1")
        self.assertEqual(bytes(parts["ota_0"][:12288]), fixture("fw_v1.bin"))   # the running image is untouched
        # The board resets into the new image; its health window passes.
        FakePartition.table["running"] = "ota_1"
        up.commit()
        self.assertEqual(FakePartition.marked, [True])

    def test_rollback_before_and_after_the_reset(self):
        flash_table()
        up, host = self._device()
        host.push(fixture("fw_v1_v2.mfu"))
        up.rollback("new image never ran")
        self.assertEqual(FakePartition.table["boot"], "ota_0")
        flash_table()
        up, host = self._device()
        host.push(fixture("fw_v1_v2.mfu"))
        FakePartition.table["running"] = "ota_1"
        up.slots["fw"] = mf_ota_esp32.FirmwareSlot(FakeEsp32)      # after the reset
        up.rollback("health window failed")
        self.assertEqual(FakePartition.table["boot"], "ota_0")

    def test_no_ota_partitions_is_a_clear_error(self):
        flash_table(with_ota=False)
        try:
            mf_ota_esp32.FirmwareSlot(FakeEsp32)
        except mf_ota.OtaError as exc:
            self.assertEqual(exc.code, mf_ota.E_UNSUPPORTED)
            self.assertIn("no OTA slots", exc.message)
            return
        self.fail("a factory-only partition table was accepted")


class FakeModem:
    def __init__(self, incoming=()):
        self.sent = []
        self.incoming = list(incoming)

    def send(self, packet):
        self.sent.append(bytes(packet))

    def recv(self, timeout_ms=None):
        return self.incoming.pop(0) if self.incoming else None


class Lora(unittest.TestCase):
    def test_time_on_air_matches_semtech(self):
        # Reference values of Semtech's calculator, 125 kHz, CR 4/5, 8 symbols of preamble.
        self.assertAlmostEqual(mf_ota_lora.time_on_air_ms(51, 7), 102.656, places=2)
        self.assertAlmostEqual(mf_ota_lora.time_on_air_ms(51, 12), 2465.792, places=2)
        self.assertAlmostEqual(mf_ota_lora.time_on_air_ms(222, 9), 1106.944, places=2)

    def test_packets_fit_the_mtu_and_respect_the_duty_cycle(self):
        clock = [0]
        slept = []

        def sleep(ms):
            slept.append(ms)
            clock[0] += ms

        modem = FakeModem()
        stream = mf_ota_lora.LoraStream(modem, sf=12, duty=0.01, ticks_ms=lambda: clock[0], sleep_ms=sleep)
        frames = b"".join(mf_ota_link.cobs_encode(mf_ota_link.encode(mf_ota_link.ACK, i, bytes(8))) for i in range(5))
        stream.write(frames)
        self.assertTrue(all(len(p) <= 51 for p in modem.sent))
        self.assertEqual(b"".join(modem.sent), frames)
        self.assertTrue(all(p.endswith(b"\x00") for p in modem.sent))     # whole frames per packet
        self.assertEqual(len(slept), len(modem.sent) - 1)
        self.assertTrue(slept[0] > 99 * mf_ota_lora.time_on_air_ms(len(modem.sent[0]), 12) * 0.99)

    def test_receiver_over_a_modem(self):
        d = scratch("lora")
        up = mf_ota.Updater(SimHAL(), PRODUCT, [KEY], {"model": d + "/m.mfm"}, root=d + "/ota")
        hello = mf_ota_link.cobs_encode(mf_ota_link.encode(mf_ota_link.HELLO, 0, b""))
        modem = FakeModem([hello])
        rx = mf_ota_link.Receiver(up, mf_ota_lora.LoraStream(modem, sf=7, duty=1.0))
        self.assertTrue(rx.poll())
        kind = mf_ota_link.Deframer().feed(modem.sent[0])[0][0]
        self.assertEqual(kind, mf_ota_link.STATUS)
