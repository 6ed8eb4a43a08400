# The OTA link over LoRa, device side: a stream for mf_ota_link.Receiver on top of
# micropython-lib's LoRa drivers (lora-sync with lora-sx126x or lora-sx127x).
#
#     from lora import SX1276
#     import mf_ota_link, mf_ota_lora
#     modem = SX1276(spi, cs, dio0=..., reset=..., lora_cfg={"freq_khz": 868100, "sf": 9, "bw": "125"})
#     rx = mf_ota_link.Receiver(updater, mf_ota_lora.LoraStream(modem, sf=9, duty=0.01), max_chunk=104)
#
# Each frame the receiver writes goes out as one packet (frames are COBS-encoded with a zero
# delimiter, so a packet may hold several small ones); each packet received is handed over as
# it came. The device is paced to its own duty cycle: after a packet of airtime T it stays
# silent for T * (1/duty - 1) (ETSI EN 300 220; 1 % on most EU868 sub-bands). Time on air is
# Semtech's formula (AN1200.13), the same as the host's (host_tools/ota/lora.py).
import time

EU868_MTU = {7: 222, 8: 222, 9: 115, 10: 51, 11: 51, 12: 51}


def time_on_air_ms(payload, sf=7, bw_khz=125, cr=1, preamble=8, explicit_header=True, crc=True):
    """Milliseconds on air of one packet of `payload` bytes (cr 1..4 for 4/5..4/8)."""
    t_sym = (1 << sf) / bw_khz                       # ms
    de = 1 if t_sym > 16 else 0
    num = 8 * payload - 4 * sf + 28 + 16 * (1 if crc else 0) - (0 if explicit_header else 20)
    den = 4 * (sf - 2 * de)
    n = 8 + max(-(-num // den) * (cr + 4), 0)
    return (preamble + 4.25) * t_sym + n * t_sym


class LoraStream:
    """A byte stream over a LoRa modem (anything with send(bytes) and recv(timeout_ms) ->
    packet or None, as micropython-lib's sync modems have)."""

    def __init__(self, modem, sf=7, bw_khz=125, cr=1, duty=0.01, mtu=None, rx_timeout_ms=200,
                 ticks_ms=None, sleep_ms=None):
        self.modem = modem
        self.sf = sf
        self.bw_khz = bw_khz
        self.cr = cr
        self.duty = duty
        self.mtu = mtu or EU868_MTU.get(sf, 51)
        self.rx_timeout_ms = rx_timeout_ms
        self._ticks = ticks_ms or time.ticks_ms
        self._sleep = sleep_ms or time.sleep_ms
        self.next_free = None
        self.airtime_ms = 0.0
        self.packets = 0

    def read(self, n):
        packet = self.modem.recv(self.rx_timeout_ms)
        if not packet:
            return None
        return bytes(packet)

    def write(self, data):
        data = bytes(data)
        start = 0
        while start < len(data):
            # Whole frames per packet: cut after a zero delimiter that keeps the packet within the MTU.
            end = min(len(data), start + self.mtu)
            if end < len(data):
                cut = data.rfind(b"\x00", start, end)
                end = cut + 1 if cut >= start else end
            self._send(data[start:end])
            start = end

    def _send(self, packet):
        if self.next_free is not None:
            wait = time.ticks_diff(self.next_free, self._ticks())
            if wait > 0:
                self._sleep(wait)
        self.modem.send(packet)
        airtime = time_on_air_ms(len(packet), self.sf, self.bw_khz, self.cr)
        self.airtime_ms += airtime
        self.packets += 1
        silence = int(airtime * (1.0 / self.duty - 1.0)) if self.duty < 1 else 0
        self.next_free = time.ticks_add(self._ticks(), silence)
