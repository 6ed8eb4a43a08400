"""A simulated radio (or cable) between the host's sender and a device, in virtual time.

    radio = SimRadio(device.deliver, lora=LoraParams(sf=7, duty=0.01), loss=0.5, latency=0.5, seed=1)
    client = OtaClient(radio.host)           # radio.host is a link.Channel
    client.push(package)
    radio.report()                           # airtime, losses, virtual time

Each packet takes its time on air (LoRa airtime from Semtech's formula, or bytes * 10 / baud on
a serial line), plus `latency` (+ `jitter`), to arrive. On the way it may be lost (`loss`, or
`loss_up`/`loss_down` per direction), corrupted (`corrupt`: one byte flipped; the frame CRC
catches it), duplicated (`duplicate`) or delayed past later packets (`reorder`). During an
outage (`outages`: (start, end) spans of virtual seconds, or `outage(t) -> bool`) nothing gets
through. With `half_duplex`, a radio cannot hear while it transmits. Each transmitter is paced
to the duty cycle when there is one, and every packet's airtime is accounted.

The device side is a function `deliver(wire_bytes) -> [reply wire bytes]`: the device handles
the packet at once, in virtual time (mp_device.MicroPythonDevice.deliver runs the real
MicroPython receiver).
"""
from __future__ import annotations

import heapq
import itertools
import random
from dataclasses import dataclass, field
from typing import Callable

from . import frames
from .frames import Frame
from .link import Channel
from .lora import DutyCycle, LoraParams


@dataclass
class RadioCounts:
    sent: int = 0
    delivered: int = 0
    lost: int = 0
    corrupted: int = 0
    duplicated: int = 0
    collided: int = 0
    outage_lost: int = 0
    airtime_s: float = 0.0
    bytes: int = 0


@dataclass
class _Transmitter:
    name: str
    duty: DutyCycle | None
    counts: RadioCounts = field(default_factory=RadioCounts)
    busy_until: float = 0.0
    transmissions: list = field(default_factory=list)   # (start, end), for half duplex


class SimRadio:
    def __init__(self, deliver: Callable[[bytes], list[bytes]], *, lora: LoraParams | None = None,
                 baud: int = 115200, loss: float = 0.0, loss_up: float | None = None, loss_down: float | None = None,
                 latency: float = 0.0, jitter: float = 0.0, corrupt: float = 0.0, duplicate: float = 0.0,
                 reorder: float = 0.0, outages: list[tuple[float, float]] | None = None,
                 outage: Callable[[float], bool] | None = None, half_duplex: bool | None = None,
                 device_time: float = 0.0, seed: int = 1):
        self.deliver_to_device = deliver
        self.lora = lora
        self.baud = baud
        self.loss_up = loss if loss_up is None else loss_up      # host -> device
        self.loss_down = loss if loss_down is None else loss_down
        self.latency = latency
        self.jitter = jitter
        self.corrupt = corrupt
        self.duplicate = duplicate
        self.reorder = reorder
        self.outages = outages or []
        self.outage_fn = outage
        self.half_duplex = (lora is not None) if half_duplex is None else half_duplex
        self.device_time = device_time
        self.random = random.Random(seed)
        self.time = 0.0
        self._events: list = []
        self._order = itertools.count()
        self.host_tx = _Transmitter("host", DutyCycle(lora) if lora else None)
        self.device_tx = _Transmitter("device", DutyCycle(lora) if lora else None)
        self.host = SimChannel(self)
        self._inbox: list[Frame] = []
        self._deframer = frames.Deframer()

    # -- physics --
    def airtime(self, nbytes: int) -> float:
        if self.lora is not None:
            return self.lora.airtime(nbytes)
        return nbytes * 10.0 / self.baud

    def _in_outage(self, t: float) -> bool:
        if self.outage_fn is not None and self.outage_fn(t):
            return True
        return any(a <= t < b for a, b in self.outages)

    def _transmit(self, tx: _Transmitter, rx: _Transmitter, wire: bytes, loss: float, to_device: bool) -> float:
        """Puts a packet on the air from `tx` as soon as it may; returns when it has left."""
        start = max(self.time, tx.busy_until)
        if tx.duty is not None:
            start = max(start, tx.duty.earliest(start))
            end = tx.duty.transmit(start, len(wire))
        else:
            end = start + self.airtime(len(wire))
        tx.busy_until = end
        tx.transmissions.append((start, end))
        if len(tx.transmissions) > 64:
            del tx.transmissions[:32]
        c = tx.counts
        c.sent += 1
        c.bytes += len(wire)
        c.airtime_s += end - start
        rnd = self.random
        copies = 2 if self.duplicate and rnd.random() < self.duplicate else 1
        if copies == 2:
            c.duplicated += 1
        for copy in range(copies):
            if self._in_outage(start) or self._in_outage(end):
                c.outage_lost += 1
                continue
            if loss and rnd.random() < loss:
                c.lost += 1
                continue
            data = wire
            if self.corrupt and rnd.random() < self.corrupt:
                flipped = bytearray(data)
                flipped[rnd.randrange(len(flipped))] ^= 1 << rnd.randrange(8)
                data = bytes(flipped)
                c.corrupted += 1
            arrival = end + self.latency + (rnd.random() * self.jitter if self.jitter else 0.0)
            if self.reorder and rnd.random() < self.reorder:
                arrival += self.airtime(len(wire)) * (1 + 3 * rnd.random()) + self.latency
            arrival += copy * self.airtime(len(wire))
            heapq.heappush(self._events, (arrival, next(self._order), to_device, data, start, end, rx))
        return end

    def _heard(self, rx: _Transmitter, start: float, end: float) -> bool:
        """With half duplex, a packet is lost if the receiver transmitted while it arrived."""
        if not self.half_duplex:
            return True
        arrive_start = start + self.latency
        return not any(s < end + self.latency and arrive_start < e for s, e in rx.transmissions)

    def _step(self) -> bool:
        """Runs the next event; False when there is none."""
        if not self._events:
            return False
        arrival, _, to_device, data, start, end, rx = heapq.heappop(self._events)
        self.time = max(self.time, arrival)
        if not self._heard(rx, start, end):
            rx.counts.collided += 1
            return True
        if to_device:
            self.host_tx.counts.delivered += 1
            replies = self.deliver_to_device(data)
            self.time += self.device_time
            for reply in replies:
                self._transmit(self.device_tx, self.host_tx, reply, self.loss_down, False)
        else:
            self.device_tx.counts.delivered += 1
            self._inbox.extend(self._deframer.feed(data))
        return True

    # -- the host's view --
    def _send_from_host(self, wire: bytes) -> None:
        # The sender waits for its radio (and its duty cycle), then for the packet to leave:
        # virtual time moves on, and what happens meanwhile happens.
        start = max(self.time, self.host_tx.busy_until)
        if self.host_tx.duty is not None:
            start = self.host_tx.duty.earliest(start)
        self._advance_to(start, stop_on_frame=False)
        self._transmit(self.host_tx, self.device_tx, wire, self.loss_up, True)
        self._advance_to(self.host_tx.busy_until, stop_on_frame=False)

    def _advance_to(self, t: float, stop_on_frame: bool) -> None:
        while self._events and self._events[0][0] <= t:
            self._step()
            if stop_on_frame and self._inbox:
                return
        self.time = max(self.time, t)

    def _recv_at_host(self, timeout: float) -> Frame | None:
        deadline = self.time + timeout
        while not self._inbox:
            if not self._events or self._events[0][0] > deadline:
                self.time = max(self.time, deadline)
                return None
            self._step()
        return self._inbox.pop(0)

    def report(self) -> dict:
        return {"virtual_time_s": round(self.time, 3),
                "host": {k: (round(v, 3) if isinstance(v, float) else v) for k, v in self.host_tx.counts.__dict__.items()},
                "device": {k: (round(v, 3) if isinstance(v, float) else v) for k, v in self.device_tx.counts.__dict__.items()},
                "bad_frames_at_host": self._deframer.bad}


class SimChannel(Channel):
    """The host's end of a SimRadio (a link.Channel in virtual time)."""

    def __init__(self, radio: SimRadio):
        self.radio = radio
        self.mtu = radio.lora.mtu if radio.lora else None

    def send(self, wire: bytes) -> None:
        self.radio._send_from_host(wire)

    def recv(self, timeout: float) -> Frame | None:
        return self.radio._recv_at_host(timeout)

    def now(self) -> float:
        return self.radio.time

    def airtime_s(self) -> float:
        return self.radio.host_tx.counts.airtime_s + self.radio.device_tx.counts.airtime_s

    def bad_frames(self) -> int:
        return self.radio._deframer.bad
