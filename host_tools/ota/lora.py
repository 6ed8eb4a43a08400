"""LoRa link budget: time on air (Semtech's formula), MTU per spreading factor, duty-cycle pacing.

Time on air of one packet (Semtech AN1200.13, "LoRa Modem Designer's Guide"):

    T_sym      = 2**SF / BW
    T_preamble = (n_preamble + 4.25) * T_sym
    n_payload  = 8 + max(ceil((8*PL - 4*SF + 28 + 16*CRC - 20*IH) / (4*(SF - 2*DE))) * (CR + 4), 0)
    T_packet   = T_preamble + n_payload * T_sym

PL payload bytes, IH 1 for implicit header, DE 1 when low data rate optimisation is on
(mandated when T_sym exceeds 16 ms: SF11 and SF12 at 125 kHz), CR 1..4 for coding rates
4/5..4/8.

The MTU follows the LoRaWAN regional parameters for EU868 (the largest application payload per
data rate, no repeater): SF7-8 222 bytes, SF9 115, SF10-12 51. A radio link without LoRaWAN
can carry up to 255 bytes; `--mtu` overrides.

Duty cycle: a transmitter that used the air for T must then stay silent for T * (1/duty - 1)
(ETSI EN 300 220: 1 % on most EU868 sub-bands, 10 % on 869.4-869.65 MHz).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from mcuforge.codegen.errors import McuforgeError

EU868_MTU = {7: 222, 8: 222, 9: 115, 10: 51, 11: 51, 12: 51}
BANDWIDTHS = (7_800, 10_400, 15_600, 20_800, 31_250, 41_700, 62_500, 125_000, 250_000, 500_000)


def time_on_air(payload_bytes: int, sf: int = 7, bw_hz: int = 125_000, cr: int = 1, preamble: int = 8,
                explicit_header: bool = True, crc: bool = True, low_data_rate: bool | None = None) -> float:
    """Seconds on air of one LoRa packet of `payload_bytes` (cr: 1..4 for 4/5..4/8)."""
    t_sym = (2 ** sf) / bw_hz
    de = (t_sym > 0.016) if low_data_rate is None else low_data_rate
    ih = 0 if explicit_header else 1
    numerator = 8 * payload_bytes - 4 * sf + 28 + 16 * int(crc) - 20 * ih
    n_payload = 8 + max(math.ceil(numerator / (4 * (sf - 2 * int(de)))) * (cr + 4), 0)
    return (preamble + 4.25) * t_sym + n_payload * t_sym


@dataclass
class LoraParams:
    """One LoRa configuration: modulation, MTU and duty cycle."""
    sf: int = 7
    bw_hz: int = 125_000
    cr: int = 1
    preamble: int = 8
    duty: float = 0.01
    mtu: int | None = None

    def __post_init__(self):
        if not 6 <= self.sf <= 12:
            raise McuforgeError(f"spreading factor {self.sf} is outside 6..12", where="--sf", fix="use 7 to 12")
        if self.bw_hz not in BANDWIDTHS:
            raise McuforgeError(f"bandwidth {self.bw_hz} Hz is not a LoRa bandwidth", where="--bw",
                                fix="use one of " + ", ".join(str(b) for b in BANDWIDTHS))
        if not 1 <= self.cr <= 4:
            raise McuforgeError(f"coding rate index {self.cr} is outside 1..4 (4/5..4/8)", where="--cr", fix="use 1 to 4")
        if not 0 < self.duty <= 1:
            raise McuforgeError(f"duty cycle {self.duty} is outside (0, 1]", where="--duty",
                                fix="use 0.01 for 1 %, 0.1 for 10 %, 1 for none")
        if self.mtu is None:
            self.mtu = EU868_MTU.get(self.sf, 51)
        if not 20 <= self.mtu <= 255:
            raise McuforgeError(f"an MTU of {self.mtu} bytes is outside 20..255", where="--mtu",
                                fix="a LoRa packet carries at most 255 bytes; frames need at least 20")

    def airtime(self, nbytes: int) -> float:
        if nbytes > self.mtu:
            raise McuforgeError(f"a {nbytes}-byte packet exceeds the {self.mtu}-byte MTU at SF{self.sf}",
                                where="LoRa link", fix="send smaller frames (the sender sizes them to the MTU)")
        return time_on_air(nbytes, self.sf, self.bw_hz, self.cr, self.preamble)

    def off_time(self, airtime: float) -> float:
        return airtime * (1.0 / self.duty - 1.0)


@dataclass
class DutyCycle:
    """Paces one transmitter: each packet's airtime buys a silence of airtime * (1/duty - 1).
    Also counts the airtime used, for the report."""
    params: LoraParams
    next_free: float = 0.0
    airtime_s: float = 0.0
    packets: int = 0
    history: list = field(default_factory=list)

    def earliest(self, now: float) -> float:
        return max(now, self.next_free)

    def transmit(self, start: float, nbytes: int) -> float:
        """Books a packet starting at `start` (>= earliest); returns when it has left the air."""
        airtime = self.params.airtime(nbytes)
        self.next_free = start + airtime + self.params.off_time(airtime)
        self.airtime_s += airtime
        self.packets += 1
        self.history.append((start, airtime))
        return start + airtime

    def used_in_window(self, end: float, window: float = 3600.0) -> float:
        """Airtime in the `window` seconds before `end` (the regulator's view)."""
        return sum(a for s, a in self.history if s >= end - window)


def parity_recovery_rate(group: int) -> float:
    """The loss rate up to which XOR parity over `group` frames recovers on average without a
    retransmission round: one loss per group+1 frames."""
    return 1.0 / (group + 1)
