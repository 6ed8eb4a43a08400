"""OTA updates, host side and end to end (issue 7).

- tier 1: the delta generator and its reference applier, packages and signatures, frames,
  LoRa airtime and duty cycle, the CLI's offline commands;
- tier 4/5: the host's sender against the device's real receiver (MicroPython, WebAssembly
  port, over a pipe) through a simulated radio in virtual time: 50 % loss with 500 ms latency
  on LoRa at 1 % duty cycle, intermittent outages, duplicated/reordered/corrupted frames, a
  device power-cycled in the middle; then `mcuforge ota push|status|rollback` to a MicroPython
  device on a pseudo-terminal, and through the virtual board's UART.

The device-side unit tests (patch applier, Ed25519, frames, updater, power cuts at every
write) are MicroPython unittest modules in tests/micropython/test_ota_*.py, run by
tests/test_micropython_runtime.py.
"""
from __future__ import annotations

import hashlib
import json
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from mcuforge.codegen.errors import McuforgeError
from mcuforge.host_tools.cli import cli
from mcuforge.host_tools.micropython_wasm import run_micropython
from mcuforge.host_tools.ota import delta, frames, lora
from mcuforge.host_tools.ota.link import DeviceRefused, LinkDown, OtaClient
from mcuforge.host_tools.ota.package import (make_package, open_package, public_raw, read_package, unpack_new,
                                             verify_package)

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ota_fixtures  # noqa: E402

FIXTURES = Path(__file__).resolve().parent / "micropython" / "ota_fixtures"
PRODUCT = ota_fixtures.PRODUCT
KEY = ota_fixtures.test_key()
KEY_RAW = public_raw(KEY.public_key())


def weights(n: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(0, 30, n), -127, 127).astype(np.int8).tobytes()


def fine_tuned(old: bytes, seed: int, fraction: float = 0.3) -> bytes:
    rng = np.random.default_rng(seed)
    w = np.frombuffer(old, np.int8).astype(np.int16)
    step = rng.choice([-1, 1], size=w.size) * (rng.random(w.size) < fraction)
    return np.clip(w + step, -127, 127).astype(np.int8).tobytes()


# ---- delta -----------------------------------------------------------------------------------

@pytest.mark.parametrize("case", ["same", "sparse", "insert", "delete", "move", "unrelated", "empty_old",
                                  "empty_new", "tiny"])
def test_patch_round_trip(case):
    rng = random.Random(case)
    old = bytes(rng.randrange(256) for _ in range(5000))
    new = {
        "same": old,
        "sparse": bytes((b + (i % 13 == 0)) & 0xFF for i, b in enumerate(old)),
        "insert": old[:1000] + b"inserted!" * 20 + old[1000:],
        "delete": old[:1000] + old[2500:],
        "move": old[3000:] + old[:3000],
        "unrelated": bytes(rng.randrange(256) for _ in range(4000)),
        "empty_old": b"abc" * 10,
        "empty_new": b"",
        "tiny": b"x",
    }[case]
    if case == "empty_old":
        old = b""
    patch = delta.make_patch(old, new)
    assert delta.apply_patch(old, patch) == new
    packed = delta.compress(patch)
    assert delta.apply_patch(old, delta.decompress(packed)) == new


def test_fine_tuned_weights_give_a_small_delta():
    old = weights(60_000, 1)
    new = fine_tuned(old, 2)
    packed, report = delta.delta(old, new)
    assert report.ratio_to_full < 0.4
    assert delta.apply_patch(old, delta.decompress(packed)) == new


def test_reference_applier_refuses_hostile_patches():
    old = bytes(range(200))
    good = delta.make_patch(old, old[50:] + b"tail")
    rng = random.Random(3)
    refused = 0
    for _ in range(300):
        bad = bytearray(good)
        for _ in range(rng.randrange(1, 4)):
            bad[rng.randrange(len(bad))] = rng.randrange(256)
        try:
            out = delta.apply_patch(old, bytes(bad))
            assert len(out) == delta.parse_header(bytes(bad))[0]
        except delta.PatchError:
            refused += 1
    assert refused > 20   # most changes land in diff or extra bytes: applied, then caught by the sha256
    with pytest.raises(delta.PatchError, match="made for a 200-byte file; this one has 199"):
        delta.apply_patch(old[:-1], good)
    with pytest.raises(delta.PatchError, match="not an mfdiff1"):
        delta.apply_patch(old, b"XXXX" + good[4:])


def test_window_bits_are_bounded_by_the_device_ram():
    with pytest.raises(McuforgeError, match="outside 9..13"):
        delta.compress(b"x", 15)


# ---- packages --------------------------------------------------------------------------------

def test_package_round_trip_and_verify():
    old, new = weights(3000, 1), fine_tuned(weights(3000, 1), 5)
    package, report = make_package(new, key=KEY, product=PRODUCT, to_version=2, old=old, from_version=1)
    assert report["delta"] == "mfdiff1" and report["payload_bytes"] < report["full_compressed_bytes"]
    again = read_package(package.to_bytes())
    verify_package(again, [KEY_RAW])
    assert unpack_new(again, old) == new
    m = again.manifest
    assert (m["product"], m["from_version"], m["to_version"], m["delta"], m["compression"]) == \
        (PRODUCT, 1, 2, "mfdiff1", "deflate-raw")
    assert m["from_sha256"] == hashlib.sha256(old).hexdigest() and m["to_size"] == len(new)


def test_package_refusals():
    old, new = weights(2000, 1), weights(2000, 2)
    package, _ = make_package(new, key=KEY, product=PRODUCT, to_version=2, old=old, from_version=1)
    other = ota_fixtures.test_key("other")
    with pytest.raises(McuforgeError, match="not among the keys"):
        verify_package(package, [public_raw(other.public_key())])
    data = bytearray(package.to_bytes())
    data[-1] ^= 1
    with pytest.raises(McuforgeError, match="payload's sha256"):
        verify_package(read_package(bytes(data)), [KEY_RAW])
    tampered = read_package(package.to_bytes())
    tampered.manifest_bytes = tampered.manifest_bytes.replace(b'"to_version":2', b'"to_version":7')
    with pytest.raises(McuforgeError, match="signature does not verify"):
        verify_package(tampered, [KEY_RAW])
    with pytest.raises(McuforgeError, match="versions must increase"):
        make_package(new, key=KEY, product=PRODUCT, to_version=1, old=old, from_version=1, mode="delta")
    with pytest.raises(McuforgeError, match="not an mcuforge OTA package"):
        read_package(b"PK\x03\x04" + bytes(100))
    with pytest.raises(McuforgeError, match="truncated or padded"):
        read_package(package.to_bytes()[:-5])


def test_committed_fixtures_verify_and_unpack():
    """tests/micropython/ota_fixtures: what the MicroPython tests assume of them holds."""
    index = json.loads((FIXTURES / "index.json").read_text())
    for name, entry in index.items():
        assert hashlib.sha256((FIXTURES / name).read_bytes()).hexdigest() == entry["sha256"], name
    key_raw = (FIXTURES / "key.pub").read_bytes()
    assert key_raw == KEY_RAW
    good = {"v1_v2.mfu": ("v1.mfm", "v2.mfm"), "v2_full.mfu": (None, "v2.mfm"),
            "v2_v3_broken.mfu": ("v2.mfm", "v3_broken.mfm"), "v2_v3_wrong.mfu": ("v2.mfm", "v3_wrong.mfm"),
            "app_v1_v2.mfu": ("app_v1.py", "app_v2.py"), "fw_v1_v2.mfu": ("fw_v1.bin", "fw_v2.bin"),
            "v1_v2_other_product.mfu": ("v1.mfm", "v2.mfm"), "v1_full_downgrade.mfu": (None, "v1.mfm")}
    for name, (old, new) in good.items():
        package = open_package(FIXTURES / name)
        verify_package(package, [key_raw])
        old_bytes = (FIXTURES / old).read_bytes() if old else None
        assert unpack_new(package, old_bytes) == (FIXTURES / new).read_bytes(), name
    for name in ("v1_v2_other_key.mfu", "v1_v2_unsigned.mfu", "v1_v2_edited_manifest.mfu",
                 "v1_v2_tampered_payload.mfu"):
        with pytest.raises(McuforgeError):
            verify_package(open_package(FIXTURES / name), [key_raw])


def test_fixture_signatures_are_reproducible(tmp_path):
    if not (ota_fixtures.REPO.parent / "shared" / "models" / "hello_world_int8.tflite").exists():
        pytest.skip("../shared/models is absent: the fixture models cannot be made again")
    ota_fixtures.make_fixtures(tmp_path)
    for name in ("v1.mfm", "v2.mfm", "key.pub"):
        assert (tmp_path / name).read_bytes() == (FIXTURES / name).read_bytes(), name
    made = open_package(tmp_path / "v1_v2.mfu")
    committed = open_package(FIXTURES / "v1_v2.mfu")
    assert made.manifest == committed.manifest


# ---- frames and LoRa ---------------------------------------------------------------------------

def test_host_and_device_frames_are_the_same_bytes():
    cases = [(frames.DATA | frames.ACK_REQUEST, 65535, bytes(range(256))[:200]), (frames.HELLO, 0, b""),
             (frames.ACK, 7, b"\x00\x00\x01\x02\x00\x00\x00\x00")]
    code = "import mf_ota_link as L, binascii\n" + "".join(
        f"print(binascii.hexlify(L.cobs_encode(L.encode({t}, {s}, {p!r}))).decode())\n" for t, s, p in cases)
    run = run_micropython(code, with_runtime=True).check()
    device = run.stdout.split()
    assert device == [frames.wire(t, s, p).hex() for t, s, p in cases]
    for (t, s, p), wire in zip(cases, device):
        frame = frames.Deframer().feed(bytes.fromhex(wire))[0]
        assert (frame.type, frame.seq, frame.payload) == (t, s, p)


def test_host_deframer_survives_garbage():
    rng = random.Random(1)
    deframer = frames.Deframer(limit=300)
    good = frames.wire(frames.ACK, 3, b"12345678")
    found = 0
    for _ in range(500):
        junk = bytes(rng.randrange(256) for _ in range(rng.randrange(100)))
        found += len(deframer.feed(junk))
    assert [f.seq for f in deframer.feed(b"\x00" + good)] == [3]


def test_time_on_air_and_mtu():
    # Semtech's calculator: 125 kHz, CR 4/5, 8-symbol preamble, explicit header, CRC on.
    assert lora.time_on_air(51, 7) == pytest.approx(0.102656, abs=1e-6)
    assert lora.time_on_air(51, 12) == pytest.approx(2.465792, abs=1e-6)
    assert lora.time_on_air(222, 7) == pytest.approx(0.348416, abs=1e-6)
    for sf, mtu in lora.EU868_MTU.items():
        payload = frames.max_payload_for(mtu)
        assert frames.wire_size(payload) <= mtu < frames.wire_size(payload + 1)
    with pytest.raises(McuforgeError, match="exceeds the 51-byte MTU"):
        lora.LoraParams(sf=12).airtime(52)
    with pytest.raises(McuforgeError, match="spreading factor"):
        lora.LoraParams(sf=13)


def test_duty_cycle_pacing():
    duty = lora.DutyCycle(lora.LoraParams(sf=7, duty=0.01))
    end = duty.transmit(0.0, 51)
    assert end == pytest.approx(0.102656, abs=1e-6)
    assert duty.earliest(0.2) == pytest.approx(0.102656 * 100, rel=1e-6)
    duty.transmit(duty.earliest(0.2), 51)
    assert duty.used_in_window(3600.0) == pytest.approx(2 * 0.102656, rel=1e-6)


# ---- the link, against the real device receiver (MicroPython) -------------------------------------

needs_wasm = pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed (scripts/bootstrap.sh)")


def _device(flash: Path, old: bytes, **kw):
    from mcuforge.host_tools.ota.mp_device import MicroPythonDevice

    if not (flash / "model.mfm").exists():
        flash.mkdir(parents=True, exist_ok=True)
        (flash / "model.mfm").write_bytes(old)
    return MicroPythonDevice(flash, product=PRODUCT, keys=[KEY_RAW], slots={"model": "model.mfm"},
                             provision={"model": 1}, **kw)


@pytest.fixture(scope="module")
def update_pair():
    """A 6 KB model and its fine-tuned version, as a full package (~5 KB of payload, so that
    a transfer takes tens of frames)."""
    old = weights(6000, 11)
    new = fine_tuned(old, 12, 0.5)
    package, _ = make_package(new, key=KEY, product=PRODUCT, to_version=2, old=old, from_version=1, mode="full")
    return old, new, package


def _push_through(radio_kw: dict, update_pair, tmp_path, client_kw=None, resume_attempts=0):
    from mcuforge.host_tools.ota.simradio import SimRadio

    old, new, package = update_pair
    device = _device(tmp_path / "flash", old)
    try:
        radio = SimRadio(device.deliver, **radio_kw)
        client = OtaClient(radio.host, **(client_kw or {}))
        result = client.push(package, resume_attempts=resume_attempts)
    finally:
        device.stop()
    assert (tmp_path / "flash" / "model.mfm").read_bytes() == new
    assert device.status()["version"] == 2
    return result, radio, device


@needs_wasm
def test_lora_at_half_loss_and_half_second_latency(update_pair, tmp_path):
    params = lora.LoraParams(sf=7, duty=0.01)
    result, radio, _ = _push_through(dict(lora=params, loss=0.5, latency=0.5, seed=4), update_pair, tmp_path,
                                     client_kw=dict(parity_group=4, max_timeouts=30))
    report = radio.report()
    assert report["host"]["lost"] > 10 and report["device"]["lost"] > 2
    assert result.retransmissions > 0
    # Every frame fitted the MTU; the host never used more than 1 % of an hour's air.
    assert all(a <= params.airtime(params.mtu) for _, a in radio.host_tx.duty.history)
    hour = max(3600.0, radio.time)
    assert radio.host_tx.duty.used_in_window(radio.time, hour) <= 0.01 * hour + params.airtime(params.mtu)


@needs_wasm
def test_intermittent_link_resumes_without_starting_over(update_pair, tmp_path):
    # Up 40 s, down 100 s, over and over, on a serial-speed radio with some loss: the sender gives
    # up during outages and resumes; no session starts from byte 0 once some were held.
    def outage(t):
        return t % 140.0 >= 40.0

    starts = []
    from mcuforge.host_tools.ota import link as link_mod
    original = link_mod.OtaClient._start

    def spy(self, data):
        offset = original(self, data)
        starts.append(offset)
        return offset

    link_mod.OtaClient._start = spy
    try:
        result, radio, _ = _push_through(dict(baud=2400, loss=0.1, latency=0.5, outage=outage, seed=2),
                                         update_pair, tmp_path, client_kw=dict(max_timeouts=3, rto=1.0),
                                         resume_attempts=50)
    finally:
        link_mod.OtaClient._start = original
    assert result.sessions > 1
    assert starts[0] == 0 and all(b >= a for a, b in zip(starts, starts[1:]))
    assert starts[-1] > 0


@needs_wasm
def test_duplicated_reordered_and_corrupted_frames(update_pair, tmp_path):
    result, radio, device = _push_through(dict(baud=115200, duplicate=0.2, reorder=0.2, corrupt=0.1, latency=0.05,
                                               jitter=0.05, seed=9), update_pair, tmp_path)
    report = radio.report()
    assert report["host"]["corrupted"] > 0 and report["host"]["duplicated"] > 0
    assert device.link_counts()["bad"] > 0      # the device's CRC caught them


@needs_wasm
def test_device_power_cycled_mid_transfer_resumes(update_pair, tmp_path):
    from mcuforge.host_tools.ota.simradio import SimRadio

    old, new, package = update_pair
    flash = tmp_path / "flash"
    device = _device(flash, old, options={"checkpoint": 512})
    radio = SimRadio(device.deliver, baud=115200)
    client = OtaClient(radio.host, chunk=128, window=4)
    offset = client._start(package.to_bytes())
    data = package.to_bytes()
    for i in range(20):   # 2560 bytes, then the device loses power (a clean stop keeps its flash)
        radio.host.send(frames.wire(frames.DATA | frames.ACK_REQUEST, i, data[i * 128:(i + 1) * 128]))
        radio.host.recv(1.0)
    device.stop()
    device = _device(flash, old, options={"checkpoint": 512})
    try:
        radio = SimRadio(device.deliver, baud=115200)
        result = OtaClient(radio.host, chunk=128).push(package)
    finally:
        device.stop()
    assert offset == 0 and result.resumed_from == 2560 - 2560 % 512
    assert (flash / "model.mfm").read_bytes() == new


@needs_wasm
def test_device_refusals_reach_the_host(tmp_path):
    from mcuforge.host_tools.ota.simradio import SimRadio

    old = (FIXTURES / "v1.mfm").read_bytes()
    device = _device(tmp_path / "flash", old)
    try:
        radio = SimRadio(device.deliver, baud=115200)
        client = OtaClient(radio.host)
        with pytest.raises(DeviceRefused, match="bad signature") as refused:
            client.push((FIXTURES / "v1_v2_other_key.mfu").read_bytes())
        assert refused.value.code == 10
        with pytest.raises(DeviceRefused, match="wrong product"):
            client.push((FIXTURES / "v1_v2_other_product.mfu").read_bytes())
        assert client.push((FIXTURES / "v1_v2.mfu").read_bytes()).ok
        assert client.status().version == 2
        code, message = client.rollback()
        assert code == 2 and "rolled back" in message
        assert client.status().version == 1
    finally:
        device.stop()
    assert (tmp_path / "flash" / "model.mfm").read_bytes() == old


@needs_wasm
def test_link_down_when_nobody_answers(tmp_path):
    from mcuforge.host_tools.ota.simradio import SimRadio

    device = _device(tmp_path / "flash", b"x")
    try:
        radio = SimRadio(device.deliver, baud=115200, loss=1.0)
        with pytest.raises(LinkDown, match="does not answer START"):
            OtaClient(radio.host, max_timeouts=3).push((FIXTURES / "v1_v2.mfu").read_bytes())
    finally:
        device.stop()


# ---- the CLI --------------------------------------------------------------------------------------

def test_cli_keygen_make_verify_diff(tmp_path):
    runner = CliRunner()
    old, new = weights(4000, 1), fine_tuned(weights(4000, 1), 3)
    (tmp_path / "v1.bin").write_bytes(old)
    (tmp_path / "v2.bin").write_bytes(new)
    r = runner.invoke(cli, ["ota", "keygen", "--out", str(tmp_path / "keys" / "acme")])
    assert r.exit_code == 0, r.output
    assert "key id" in r.output and (tmp_path / "keys" / "acme.key").stat().st_mode & 0o777 == 0o600
    r = runner.invoke(cli, ["ota", "keygen", "--out", str(tmp_path / "keys" / "acme")])
    assert r.exit_code == 1 and "--force" in r.output and "Traceback" not in r.output
    r = runner.invoke(cli, ["ota", "make", str(tmp_path / "v2.bin"), "--old", str(tmp_path / "v1.bin"),
                            "--from-version", "1", "--to-version", "2", "--product", PRODUCT,
                            "--key", str(tmp_path / "keys" / "acme.key"), "-o", str(tmp_path / "v2.mfu")])
    assert r.exit_code == 0, r.output
    assert "delta" in r.output
    r = runner.invoke(cli, ["ota", "verify", str(tmp_path / "v2.mfu"), "--pub", str(tmp_path / "keys" / "acme.pub"),
                            "--old", str(tmp_path / "v1.bin")])
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli, ["ota", "verify", str(tmp_path / "v2.mfu"), "--pub", str(FIXTURES / "key.pub")])
    assert r.exit_code == 1 and "not among the keys" in r.output
    r = runner.invoke(cli, ["ota", "diff", str(tmp_path / "v1.bin"), str(tmp_path / "v2.bin"), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["ratio_to_full"] < 0.5
    device_key = (tmp_path / "keys" / "acme_pub.py").read_text()
    assert "PUBLIC_KEY = b" in device_key


@needs_wasm
def test_cli_push_status_rollback_over_a_pseudo_terminal(tmp_path):
    """mcuforge ota push, as a user runs it, to MicroPython on a pseudo-terminal."""
    old = (FIXTURES / "v1.mfm").read_bytes()
    device = _device(tmp_path / "flash", old, pty=True)
    exe = [str(Path(sys.executable).with_name("mcuforge"))]
    try:
        def run(*args):
            return subprocess.run(exe + ["ota", *args, "--port", device.port], capture_output=True, text=True,
                                  timeout=120)
        r = run("push", str(FIXTURES / "v1_v2.mfu"))
        assert r.returncode == 0, r.stderr + r.stdout
        assert "installed" in r.stdout
        r = run("status", "--json")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["version"] == 2 and json.loads(r.stdout)["phase"] == "trial"
        r = run("push", str(FIXTURES / "v1_v2_unsigned.mfu"))
        assert r.returncode == 1 and "bad signature" in r.stderr and "Traceback" not in r.stderr
        r = run("rollback")
        assert r.returncode == 0 and "rolled back" in r.stdout, r.stderr
    finally:
        device.stop()
    assert (tmp_path / "flash" / "model.mfm").read_bytes() == old
    assert (tmp_path / "flash" / "ota" / "prev.model").exists() is False


@needs_wasm
def test_push_through_the_virtual_board(tmp_path):
    """The same push, to a virtual board (real MicroPython behind a pty) whose main.py serves
    OTA on its UART, which is linked to a pseudo-terminal of its own."""
    try:
        from mcuforge.host_tools.virtual_board import UartPty, VirtualBoard
    except ImportError as exc:
        pytest.skip(f"the virtual board is not available: {exc}")
    from mcuforge.host_tools.micropython_wasm import runtime_module_files

    flash = tmp_path / "board"
    (flash / "lib").mkdir(parents=True)
    for module in runtime_module_files():
        shutil.copy(module, flash / "lib" / module.name)
    old = (FIXTURES / "v1.mfm").read_bytes()
    (flash / "model.mfm").write_bytes(old)
    (flash / "main.py").write_text(
        "import time, machine, mf_hal, mf_ota, mf_ota_link\n"
        f"KEY = {KEY_RAW!r}\n"
        f"up = mf_ota.Updater(mf_hal.HAL(), {PRODUCT!r}, [KEY], {{'model': 'model.mfm'}})\n"
        "if up.slot_info('model')['v'] is None:\n"
        "    up.provision('model', 1)\n"
        "up.boot()\n"
        "rx = mf_ota_link.Receiver(up, mf_ota_link.UartStream(machine.UART(1, 115200)))\n"
        "rx.serve(idle=lambda: time.sleep_ms(2))\n")
    uart = UartPty()
    board = VirtualBoard(flash, uart=uart).start()
    exe = str(Path(sys.executable).with_name("mcuforge"))
    try:
        time.sleep(1.0)
        r = subprocess.run([exe, "ota", "push", str(FIXTURES / "v1_v2.mfu"), "--port", uart.port, "--timeout", "2"],
                           capture_output=True, text=True, timeout=180)
        assert r.returncode == 0, r.stderr + r.stdout
        r = subprocess.run([exe, "ota", "status", "--json", "--port", uart.port], capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["version"] == 2
    finally:
        board.stop()
    assert (flash / "model.mfm").read_bytes() == (FIXTURES / "v2.mfm").read_bytes()
