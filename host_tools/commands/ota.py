"""`mcuforge ota keygen|diff|make|verify|push|status|rollback`: signed, differential updates.

    mcuforge ota keygen --out keys/acme
    mcuforge ota make v2.mfm --old v1.mfm --from-version 1 --to-version 2 --product acme-vib \\
        --key keys/acme.key -o v2.mfu
    mcuforge ota push v2.mfu --port /dev/ttyUSB1                     # serial
    mcuforge ota push v2.mfu --port /dev/ttyUSB1 --lora-sf 9 --duty 0.01 --parity 4
    mcuforge ota status --port /dev/ttyUSB1
    mcuforge ota rollback --port /dev/ttyUSB1

docs/ota.md describes the package, the link and the device side.
"""
from __future__ import annotations

import json
from pathlib import Path

import click

from mcuforge.codegen.errors import McuforgeError


@click.group(name="ota")
def command() -> None:
    """Over-the-air updates: keys, deltas, signed packages, and pushing them to a device."""


@command.command()
@click.option("--out", "out", type=click.Path(path_type=Path), required=True,
              help="Path stem: writes STEM.key (private), STEM.pub and STEM_pub.py (for the device).")
@click.option("--force", is_flag=True, help="Replace an existing key pair.")
def keygen(out: Path, force: bool) -> None:
    """Make an Ed25519 signing key pair."""
    from mcuforge.host_tools.ota.package import generate_keys

    made = generate_keys(out, force=force)
    click.echo(f"key id {made['key_id']}")
    click.echo(f"  private: {made['private']} (keep it secret: whoever has it can update your devices)")
    click.echo(f"  public:  {made['public']}")
    click.echo(f"  device:  {made['device']} (copy to the device; pass PUBLIC_KEY to mf_ota.Updater)")


def _read(path: Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise McuforgeError(f"cannot read the {what}: {exc.strerror}", where=str(path),
                            fix=f"give the path of the {what}") from None


@command.command()
@click.argument("old", type=click.Path(path_type=Path))
@click.argument("new", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Write the compressed patch here.")
@click.option("--window-bits", type=int, default=12, show_default=True,
              help="Deflate window 2**N bytes (9..13); the device needs that much RAM to inflate.")
@click.option("--json", "as_json", is_flag=True, help="Print the sizes as JSON.")
def diff(old: Path, new: Path, output: Path | None, window_bits: int, as_json: bool) -> None:
    """Make the patch from OLD to NEW (mfdiff1, raw deflate) and compare it with the full file."""
    from mcuforge.host_tools.ota.delta import apply_patch, decompress, delta

    old_bytes, new_bytes = _read(old, "old file"), _read(new, "new file")
    packed, report = delta(old_bytes, new_bytes, window_bits)
    if apply_patch(old_bytes, decompress(packed, window_bits)) != new_bytes:
        raise AssertionError("internal error: the patch does not reproduce the new file")
    if output:
        output.write_bytes(packed)
    figures = {"old_bytes": report.old_bytes, "new_bytes": report.new_bytes, "patch_bytes": report.patch_bytes,
               "compressed_patch_bytes": report.compressed_bytes,
               "full_compressed_bytes": report.full_compressed_bytes,
               "ratio_to_full": round(report.ratio_to_full, 4)}
    if as_json:
        click.echo(json.dumps(figures, indent=2))
        return
    click.echo(f"patch {report.compressed_bytes} bytes ({report.patch_bytes} before deflate) for a "
               f"{report.new_bytes}-byte file; the full file deflated is {report.full_compressed_bytes} bytes: "
               f"{100 * report.ratio_to_full:.1f} %")
    if output:
        click.echo(f"  written to {output}")


@command.command()
@click.argument("new", type=click.Path(path_type=Path))
@click.option("--key", type=click.Path(path_type=Path), required=True, help="The signing key (.key from keygen).")
@click.option("--product", required=True, help="The product id the devices were set up with.")
@click.option("--to-version", type=int, required=True, help="The version NEW becomes (higher than any before).")
@click.option("--old", type=click.Path(path_type=Path), help="The version the devices run (for a delta).")
@click.option("--from-version", type=int, help="Its version number.")
@click.option("--component", type=click.Choice(["model", "app", "firmware"]), default="model", show_default=True)
@click.option("--slot", help="The device slot to update (default: the component's name).")
@click.option("--mode", type=click.Choice(["auto", "delta", "full"]), default="auto", show_default=True,
              help="auto: the smaller of the delta and the full file.")
@click.option("--window-bits", type=int, default=12, show_default=True, help="Deflate window 2**N bytes (9..13).")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="The package (.mfu) to write.")
def make(new: Path, key: Path, product: str, to_version: int, old: Path | None, from_version: int | None,
         component: str, slot: str | None, mode: str, window_bits: int, output: Path) -> None:
    """Make a signed update package taking devices to NEW."""
    from mcuforge.host_tools.ota.package import describe, load_private_key, make_package

    if old is not None and from_version is None:
        raise McuforgeError("--old needs --from-version (the version number the devices run)", where="--from-version",
                            fix="give the number the old file was released as")
    package, report = make_package(_read(new, "new file"), key=load_private_key(key), product=product,
                                   to_version=to_version, component=component, slot=slot,
                                   old=_read(old, "old file") if old else None, from_version=from_version,
                                   window_bits=window_bits, mode=mode)
    tmp = output.with_name(output.name + ".tmp")
    tmp.write_bytes(package.to_bytes())
    tmp.replace(output)
    for line in describe(package):
        click.echo(line)
    if "delta_compressed_bytes" in report:
        click.echo(f"delta {report['delta_compressed_bytes']} bytes against the full file's "
                   f"{report['full_compressed_bytes']} ({100 * report['delta_compressed_bytes'] / max(1, report['full_compressed_bytes']):.1f} %)")
    click.echo(f"written to {output}")


@command.command()
@click.argument("package", type=click.Path(path_type=Path))
@click.option("--pub", "pubs", type=click.Path(path_type=Path), multiple=True, required=True,
              help="A trusted public key (.pub); repeat for several.")
@click.option("--old", type=click.Path(path_type=Path), help="Also unpack a delta against this old file.")
def verify(package: Path, pubs: tuple[Path, ...], old: Path | None) -> None:
    """Check a package as a device would: signature, payload hash, and (with --old) the result."""
    from mcuforge.host_tools.ota.package import describe, load_public_key, open_package, unpack_new, verify_package

    pkg = open_package(package)
    verify_package(pkg, [load_public_key(p) for p in pubs], str(package))
    for line in describe(pkg):
        click.echo(line)
    if old is not None or pkg.manifest.get("delta") == "none":
        new = unpack_new(pkg, _read(old, "old file") if old else None)
        click.echo(f"unpacks to {len(new)} bytes with the signed sha256")
    click.echo("signature and payload check")


def _link_options(f):
    options = [
        click.option("--port", required=True, help="The device's port (serial, pseudo-terminal, or a LoRa modem's)."),
        click.option("--baud", type=int, default=115200, show_default=True),
        click.option("--lora-sf", type=click.IntRange(7, 12), help="A LoRa link at this spreading factor: frames "
                     "fit its MTU and are paced to the duty cycle."),
        click.option("--bw", type=int, default=125000, show_default=True, help="LoRa bandwidth, Hz."),
        click.option("--duty", type=float, default=0.01, show_default=True, help="LoRa duty cycle (0.01 = 1 %)."),
        click.option("--mtu", type=int, help="LoRa MTU in bytes (default: EU868's for the spreading factor)."),
        click.option("--timeout", "rto", type=float, default=1.0, show_default=True,
                     help="First retransmission timeout, seconds (it adapts to the measured round trip)."),
        click.option("--retries", type=int, default=8, show_default=True,
                     help="Timeouts in a row before the link counts as down."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _client(port: str, baud: int, lora_sf: int | None, bw: int, duty: float, mtu: int | None, rto: float,
            retries: int, **kwargs):
    from mcuforge.host_tools.ota.link import OtaClient, TransportChannel
    from mcuforge.host_tools.ota.lora import LoraParams
    from mcuforge.host_tools.transport import PortGone, open_transport, port_problem_fix

    try:
        transport = open_transport(port, baud)
    except PortGone as exc:
        raise McuforgeError(f"cannot open {port}: {exc.cause}", where=port, fix=port_problem_fix(exc.cause)) from None
    lora = LoraParams(sf=lora_sf, bw_hz=bw, duty=duty, mtu=mtu) if lora_sf else None
    return OtaClient(TransportChannel(transport, lora=lora), rto=rto, max_timeouts=retries, **kwargs)


@command.command()
@click.argument("package", type=click.Path(path_type=Path))
@_link_options
@click.option("--window", type=click.IntRange(1, 32), default=8, show_default=True, help="Frames in flight.")
@click.option("--chunk", type=int, help="Payload bytes per frame (default: 256 on serial, the MTU on LoRa).")
@click.option("--parity", type=click.IntRange(0, 16), default=0, show_default=True,
              help="Send an XOR parity frame after every N data frames (0: none).")
@click.option("--resume-attempts", type=int, default=3, show_default=True,
              help="When the link drops, start again this many times (each resumes where the device stopped).")
@click.option("--json", "as_json", is_flag=True, help="Print the transfer's figures as JSON.")
def push(package: Path, port: str, baud: int, lora_sf: int | None, bw: int, duty: float, mtu: int | None,
         rto: float, retries: int, window: int, chunk: int | None, parity: int, resume_attempts: int,
         as_json: bool) -> None:
    """Send a package to a device and install it (resumes an interrupted transfer)."""
    import sys

    from mcuforge.host_tools.ota.package import describe, open_package

    pkg = open_package(package)
    bar = None
    progress = None
    if sys.stderr.isatty() and not as_json:
        bar = click.progressbar(length=len(pkg.to_bytes()), label="sending", file=sys.stderr, width=30)
        bar.__enter__()

        def progress(done: int, total: int) -> None:
            bar.update(done - bar.pos)
    client = _client(port, baud, lora_sf, bw, duty, mtu, rto, retries, window=window, chunk=chunk,
                     parity_group=parity, progress=progress)
    try:
        result = client.push(pkg, resume_attempts=resume_attempts)
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
        client.channel.close()
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
        return
    for line in describe(pkg):
        click.echo(line)
    resumed = f", resumed at byte {result.resumed_from}" if result.resumed_from else ""
    click.echo(f"sent in {result.elapsed_s:.1f} s: {result.data_frames} data frames ({result.retransmissions} again), "
               f"{result.acks} ACKs{resumed}")
    if result.airtime_s:
        click.echo(f"time on air {result.airtime_s:.1f} s")
    click.echo(f"device: {result.message}")


@command.command()
@_link_options
@click.option("--slot", help="The slot to report (default: the one on trial, else the first).")
@click.option("--json", "as_json", is_flag=True)
def status(port: str, baud: int, lora_sf: int | None, bw: int, duty: float, mtu: int | None, rto: float,
           retries: int, slot: str | None, as_json: bool) -> None:
    """Show a device's versions, update phase and transfer in progress."""
    from mcuforge.host_tools.ota.link import describe_status

    client = _client(port, baud, lora_sf, bw, duty, mtu, rto, retries)
    try:
        st = client.status(slot)
    finally:
        client.channel.close()
    if as_json:
        click.echo(json.dumps(st.__dict__, indent=2))
        return
    for line in describe_status(st):
        click.echo(line)


@command.command()
@_link_options
@click.option("--slot", help="The slot to roll back (default: the one on trial).")
def rollback(port: str, baud: int, lora_sf: int | None, bw: int, duty: float, mtu: int | None, rto: float,
             retries: int, slot: str | None) -> None:
    """Put the previous version back on a device."""
    client = _client(port, baud, lora_sf, bw, duty, mtu, rto, retries)
    try:
        _, message = client.rollback(slot)
    finally:
        client.channel.close()
    click.echo(f"device: {message}")
