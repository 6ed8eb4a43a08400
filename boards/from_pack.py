"""Make a board file from a CMSIS device pack description (.pdsc).

`board_from_pdsc` reads one device of a pack and returns the board as a dict in the shape of
boards/schema.json; `board_toml` writes that dict as a board file.

The .pdsc is read with the standard library's xml.etree, not with cmsis-pack-manager.
cmsis-pack-manager 0.6.0 can parse a local .pdsc (`Cache.add_pack_from_path`, which writes an
index.json into a cache folder), but its index keeps only the core, the FPU and the MPU of each
processor: no Dclock, no Ddsp, no Dmve, no descriptions, and it does not index a device that has
variants under its own name. It also got Dfpu="NO_FPU" on a sub-family wrong (it kept the
family's SP_FPU). Those are exactly the fields a board needs, so the pack is read directly.
"""
from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema

from mcuforge.codegen.errors import McuforgeError

from . import _field_path, _schema

# Dcore -> (schema core, arch)
CORES = {
    "Cortex-M0+": ("cortex-m0plus", "armv6-m"),
    "Cortex-M3": ("cortex-m3", "armv7-m"),
    "Cortex-M4": ("cortex-m4", "armv7e-m"),
    "Cortex-M7": ("cortex-m7", "armv7e-m"),
    "Cortex-M33": ("cortex-m33", "armv8-m.main"),
    "Cortex-M55": ("cortex-m55", "armv8.1-m.main"),
    "Cortex-M85": ("cortex-m85", "armv8.1-m.main"),
}
# (core, single or double precision) -> schema fpu; cores without an FPU option are absent.
FPUS = {
    ("cortex-m4", "sp"): "fpv4-sp-d16", ("cortex-m4", "dp"): "fpv4-sp-d16",
    ("cortex-m7", "sp"): "fpv5-sp-d16", ("cortex-m7", "dp"): "fpv5-d16",
    ("cortex-m33", "sp"): "fpv5-sp-d16", ("cortex-m33", "dp"): "fpv5-sp-d16",
    ("cortex-m55", "sp"): "fpv5-sp-d16", ("cortex-m55", "dp"): "fpv5-d16",
    ("cortex-m85", "sp"): "fpv5-sp-d16", ("cortex-m85", "dp"): "fpv5-d16",
}
ROM_HOLDS = ["code", "rodata", "weights"]
RAM_HOLDS = ["data", "bss", "stack", "heap", "arena"]
DEVICE_LEVELS = ("family", "subFamily", "device", "variant")


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _children(element: ET.Element, tag: str) -> list[ET.Element]:
    return [child for child in element if _local(child.tag) == tag]


def _int(text: str, where: str) -> int:
    try:
        return int(text.strip(), 0)
    except ValueError:
        try:
            return int(text.strip(), 10)
        except ValueError:
            raise McuforgeError(f"not a number: {text!r}", where=where,
                                fix="numbers in a .pdsc are decimal or 0x-hex") from None


def _read_pdsc(pdsc_path: Path) -> ET.Element:
    if not pdsc_path.is_file():
        raise McuforgeError(f"pack description not found: {pdsc_path}", where=str(pdsc_path),
                            fix="pass the path of a .pdsc file (it is inside every .pack, which is a zip)")
    try:
        root = ET.parse(pdsc_path).getroot()
    except ET.ParseError as exc:
        raise McuforgeError(f"not a CMSIS pack description: the file is not valid XML ({exc})", where=str(pdsc_path),
                            fix="pass a .pdsc file (the XML description inside a CMSIS .pack)") from None
    if _local(root.tag) != "package" or not _children(root, "devices"):
        raise McuforgeError("not a CMSIS device pack description: no <package> with <devices>", where=str(pdsc_path),
                            fix="pass the .pdsc of a device family pack (DFP); board and software packs describe no devices")
    return root


def _device_chains(element: ET.Element, chain: list[ET.Element], found: dict[str, list[ET.Element]]) -> None:
    """Every device and variant under `element`, each with its enclosing elements, outermost first."""
    for child in element:
        tag = _local(child.tag)
        if tag not in DEVICE_LEVELS:
            continue
        here = chain + [child]
        if tag == "device" and child.get("Dname"):
            found.setdefault(child.get("Dname"), here)
        elif tag == "variant" and child.get("Dvariant"):
            found.setdefault(child.get("Dvariant"), here)
        _device_chains(child, here, found)


def list_devices(pdsc_path: str | Path) -> list[str]:
    """The names of the devices and variants the pack describes."""
    root = _read_pdsc(Path(pdsc_path))
    found: dict[str, list[ET.Element]] = {}
    for devices in _children(root, "devices"):
        _device_chains(devices, [], found)
    return sorted(found)


def _processor(chain: list[ET.Element]) -> dict[str, str]:
    """The processor attributes, inner elements overriding outer ones attribute by attribute.
    On a multi-core device, only the first processor named (Pname) is taken."""
    merged: dict[str, str] = {}
    pname = None
    for element in chain:
        for processor in _children(element, "processor"):
            name = processor.get("Pname")
            if name and pname is None:
                pname = name
            if name and name != pname:
                continue
            merged.update(processor.attrib)
    return merged


def _access(memory: ET.Element) -> str:
    if memory.get("access"):
        return memory.get("access")
    ident = memory.get("id", "")
    # The deprecated id form: IROMn/XROMn are read-only code memories, IRAMn/XRAMn read-write.
    return "rx" if "ROM" in ident.upper() else "rwx"


def _memories(chain: list[ET.Element], where: str) -> list[dict]:
    """The memories, inherited from the enclosing elements; an inner one of the same name replaces an outer one."""
    by_name: dict[str, dict] = {}
    for element in chain:
        for memory in _children(element, "memory"):
            name = memory.get("name") or memory.get("id")
            if not name or memory.get("start") is None or memory.get("size") is None:
                continue
            access = _access(memory)
            if "p" in access:  # peripheral space, not memory
                continue
            by_name[name] = {
                "pdsc_name": name, "origin": _int(memory.get("start"), f"{where}: memory {name} start"),
                "length": _int(memory.get("size"), f"{where}: memory {name} size"),
                "writable": "w" in access, "startup": memory.get("startup") == "1",
                "default": memory.get("default") == "1",
            }
    return [m for m in by_name.values() if m["length"] > 0]


def _assign_holds(memories: list[dict], device: str, where: str) -> list[dict]:
    """Code memory: the startup memory, else the largest read-only one. It holds code, rodata and weights.
    RAMs: the largest holds the arena and the heap; data, bss and stack go to the default RAM if that is
    another one, else to the second largest. With one RAM it holds everything. Other RAMs are left out."""
    if not memories:
        raise McuforgeError(f"device {device} declares no memory in the pack", where=where,
                            fix="pick a device (or variant) whose pack entry has <memory> elements, "
                                "or write the board file by hand from an existing one in boards/")
    startup = [m for m in memories if m["startup"]]
    read_only = sorted((m for m in memories if not m["writable"]), key=lambda m: -m["length"])
    code = (startup or read_only or [None])[0]
    rams = sorted((m for m in memories if m["writable"] and m is not code), key=lambda m: -m["length"])
    if code is None or not rams:
        missing = "a code memory (read-only, or marked startup)" if code is None else "a writable RAM"
        raise McuforgeError(f"device {device} declares no {missing} in the pack", where=where,
                            fix="pick another device, or write the board file by hand from an existing one in boards/")
    chosen = [(code, list(ROM_HOLDS))]
    largest = rams[0]
    others = rams[1:]
    if not others:
        chosen.append((largest, list(RAM_HOLDS)))
    else:
        small = next((m for m in others if m["default"]), others[0])
        chosen.append((small, ["data", "bss", "stack"]))
        chosen.append((largest, ["heap", "arena"]))
    result, used = [], set()
    for memory, holds in sorted(chosen, key=lambda c: c[0]["origin"]):
        name = re.sub(r"[^A-Za-z0-9_]", "_", memory["pdsc_name"])
        if not re.match(r"[A-Za-z_]", name):
            name = "m_" + name
        while name in used:
            name += "_"
        used.add(name)
        result.append({"name": name, "origin": memory["origin"], "length": memory["length"], "holds": holds})
    return result


def _gcc_flags(core: str, fpu: str, extensions: list[str]) -> list[str]:
    mcpu = core
    if core == "cortex-m33" and "dsp" not in extensions:
        mcpu += "+nodsp"
    if core in ("cortex-m55", "cortex-m85"):
        if "mve" not in extensions:
            mcpu += "+nomve"
        elif "mve.fp" not in extensions:
            mcpu += "+nomve.fp"
        if fpu == "none":
            mcpu += "+nofp"
    flags = [f"-mcpu={mcpu}", "-mthumb"]
    if fpu == "none":
        return flags + ["-mfloat-abi=soft"]
    if core in ("cortex-m55", "cortex-m85"):  # -mcpu implies the FPU, as in the existing board files
        return flags + ["-mfloat-abi=hard"]
    return flags + [f"-mfpu={fpu}", "-mfloat-abi=hard"]


def _board_name(device: str) -> str:
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9]", "-", device.lower())).strip("-")


def _size_text(n: int) -> str:
    return f"{n // (1 << 20)} MB" if n % (1 << 20) == 0 else f"{n // 1024} KB" if n % 1024 == 0 else f"{n} B"


def validate_board(data: dict, where: str) -> None:
    """Check a board dict against boards/schema.json; the error names the field."""
    errors = sorted(jsonschema.Draft202012Validator(_schema()).iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        raise McuforgeError(f"the board made from the pack is invalid: field {_field_path(first)}: {first.message}",
                            where=f"{where}: {_field_path(first)}",
                            fix="pass --name with lowercase letters, digits and dashes, or fix the pack entry")


def board_from_pdsc(pdsc_path: str | Path, device: str, name: str | None = None) -> dict:
    """The board for `device` (a Dname or Dvariant of the pack), as a dict that validates against boards/schema.json."""
    pdsc_path = Path(pdsc_path)
    root = _read_pdsc(pdsc_path)
    found: dict[str, list[ET.Element]] = {}
    for devices in _children(root, "devices"):
        _device_chains(devices, [], found)
    if device not in found:
        exact = {d.lower(): d for d in found}
        if device.lower() not in exact:
            known = ", ".join(sorted(found)) or "(none)"
            raise McuforgeError(f"device {device!r} is not in the pack", where=str(pdsc_path),
                                fix=f"use one of the devices it describes: {known}")
        device = exact[device.lower()]
    chain = found[device]
    where = f"{pdsc_path}: device {device}"

    processor = _processor(chain)
    dcore = processor.get("Dcore")
    if dcore not in CORES:
        raise McuforgeError(f"device {device} has core {dcore!r}, which mcuforge does not support",
                            where=f"{where}: processor Dcore",
                            fix=f"supported cores: {', '.join(CORES)}")
    core, arch = CORES[dcore]
    dfpu = processor.get("Dfpu", "NO_FPU")
    precision = {"SP_FPU": "sp", "FPU": "sp", "1": "sp", "DP_FPU": "dp"}.get(dfpu)
    fpu = FPUS.get((core, precision), "none") if precision else "none"
    extensions = []
    if processor.get("Ddsp") in ("DSP", "1"):
        extensions.append("dsp")
    dmve = processor.get("Dmve", "NO_MVE")
    if dmve in ("MVE", "FP_MVE"):
        if "dsp" not in extensions:  # MVE implies the DSP extension
            extensions.append("dsp")
        extensions.append("mve")
        if dmve == "FP_MVE":
            extensions.append("mve.fp")
    if not processor.get("Dclock"):
        raise McuforgeError(f"the pack gives no clock for device {device}", where=f"{where}: processor Dclock",
                            fix="add Dclock to the device's <processor> in a copy of the .pdsc, "
                                "or write the board file by hand")
    clock_hz = _int(processor["Dclock"], f"{where}: processor Dclock")

    memories = _assign_holds(_memories(chain, where), device, where)

    pack_vendor = (_children(root, "vendor") or [None])[0]
    pack_name = (_children(root, "name") or [None])[0]
    releases = [r for rs in _children(root, "releases") for r in _children(rs, "release")]
    dvendor = next((e.get("Dvendor") for e in reversed(chain) if e.get("Dvendor")), None)
    vendor = (dvendor.split(":")[0] if dvendor else (pack_vendor.text if pack_vendor is not None else "")).strip()
    blurb = next((" ".join(d.text.split()) for e in reversed(chain) for d in _children(e, "description")
                  if d.text and d.text.strip()), "")
    rom = memories and next(m for m in memories if "code" in m["holds"])
    ram_total = sum(m["length"] for m in memories if "code" not in m["holds"])
    pack = " ".join(t for t in ((pack_vendor.text if pack_vendor is not None else None),
                                (pack_name.text if pack_name is not None else None),
                                (releases[0].get("version") if releases else None)) if t)
    description = (f"{device} ({dcore}{'F' if fpu != 'none' else ''} at {clock_hz / 1e6:g} MHz, "
                   f"{_size_text(rom['length'])} {rom['name']}, {_size_text(ram_total)} RAM), "
                   f"made from the {pack} pack." + (f" {blurb}" if blurb else ""))

    board = {
        "name": name or _board_name(device),
        "description": description,
        "vendor": vendor,
        "rtos": ["baremetal", "zephyr", "freertos"],
        "engines": ["aot", "tflm"],
        "npu": "none",
        "cpu": {"core": core, "arch": arch, "clock_hz": clock_hz, "fpu": fpu, "extensions": extensions,
                "gcc_flags": _gcc_flags(core, fpu, extensions)},
        "memory": memories,
        "flash": {"tool": "pyocd", "args": ["--target", device.lower()], "alternatives": ["openocd"]},
        "console": {"kind": "uart", "baud": 115200},
    }
    validate_board(board, where)
    return board


# ---- a TOML writer for the flat shape of a board file (tomllib only reads) ----

def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        # A JSON string with \u escapes is a valid TOML basic string; TOML also forbids a raw DEL.
        return json.dumps(value).replace("\x7f", "\\u007f")
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def _address(value: int) -> str:
    digits = f"{value:08X}"
    return "0x" + "_".join(digits[max(0, i - 4):i] for i in range(len(digits), 0, -4)[::-1])


def board_toml(board: dict, header: str = "") -> str:
    """The board as a board file: scalars and arrays first, then [table]s and [[array of tables]]."""
    lines = [f"# {line}" for line in header.splitlines()]
    tables = {k: v for k, v in board.items() if isinstance(v, dict)}
    arrays = {k: v for k, v in board.items() if isinstance(v, list) and v and all(isinstance(i, dict) for i in v)}
    for key, value in board.items():
        if key not in tables and key not in arrays:
            lines.append(f"{key} = {_toml_value(value)}")

    def body(table: dict) -> list[str]:
        return [f"{k} = {_address(v) if k in ('origin', 'length', 'uart_base') else _toml_value(v)}"
                for k, v in table.items()]

    for key, value in board.items():
        if key in tables:
            lines += ["", f"[{key}]", *body(value)]
        elif key in arrays:
            for item in value:
                lines += ["", f"[[{key}]]", *body(item)]
    return "\n".join(lines) + "\n"
