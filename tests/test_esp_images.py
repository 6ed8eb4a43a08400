"""esptool's image tools (used as a library) on ELF files made by the test for the ESP32-S3.

No Xtensa toolchain is installed here, so the ELFs are written byte by byte: an application with
the sections an ESP-IDF app has (IRAM, DRAM, flash-mapped code and rodata with the app
description first) and a RAM-only second-stage bootloader. elf2image turns them into ESP32-S3
images, which esptool's own loader reads back and checks; merge_bin, through mcuforge's
`merge_esp_image` and the flasher_args.json an ESP-IDF build leaves, puts bootloader, partition
table and app into one flash image. What is not exercised is the code in the images: nothing
here can run Xtensa code."""
import contextlib
import hashlib
import io
import json
import struct

import pytest

from mcuforge.host_tools.flash import esp_flash_plan, merge_esp_image

esptool = pytest.importorskip("esptool")
from esptool.bin_image import LoadFirmwareImage  # noqa: E402
from esptool.cmds import elf2image  # noqa: E402
from esptool.targets import ESP32S3ROM  # noqa: E402

EM_XTENSA = 0x5E
ET_EXEC = 2
PT_LOAD = 1
SHT_PROGBITS, SHT_STRTAB = 1, 3
SHF_WRITE, SHF_ALLOC, SHF_EXECINSTR = 0x1, 0x2, 0x4
APP_DESC_MAGIC = 0xABCD5432
ESP32S3_CHIP_ID = 9
FLASH_MODES = {"qio": 0, "qout": 1, "dio": 2, "dout": 3}
MMU_PAGE = 0x10000

# Addresses in the ESP32-S3's memory map (ESP-IDF's linker scripts put an app's sections there).
APP_SECTIONS = [
    (".flash.appdesc", 0x3C000020, None, SHF_ALLOC),                       # DROM, filled in below
    (".flash.rodata", 0x3C000120, bytes(range(64)), SHF_ALLOC),
    (".flash.text", 0x42000020, b"\x36\x41\x00\x1d\xf0\x00" * 16, SHF_ALLOC | SHF_EXECINSTR),  # IROM
    (".iram0.text", 0x40378000, b"\x36\x41\x00\x1d\xf0\x00\x00\x00" * 4, SHF_ALLOC | SHF_EXECINSTR),
    (".dram0.data", 0x3FC88000, b"mcuforge-dram!!\x00", SHF_ALLOC | SHF_WRITE),
]
BOOTLOADER_SECTIONS = [
    (".iram_loader.text", 0x403CC710, b"\x36\x41\x00\x1d\xf0\x00\x00\x00" * 8, SHF_ALLOC | SHF_EXECINSTR),
    (".dram0.rodata", 0x3FCD5710, b"bootloader data\x00", SHF_ALLOC),
]


def app_description(project: str, version: str, mmu_page_size: int = MMU_PAGE) -> bytes:
    """ESP-IDF's esp_app_desc_t (256 bytes), as the app's first DROM bytes carry it."""
    return struct.pack("<II8s32s32s16s16s32s32sHHB3s72s", APP_DESC_MAGIC, 0, b"", version.encode(),
                       project.encode(), b"00:00:00", b"Jan  1 2026", b"v5.3", bytes(32), 0, 0,
                       mmu_page_size.bit_length() - 1, b"", b"")


def xtensa_elf(sections: list[tuple[str, int, bytes, int]], entry: int) -> bytes:
    """A little-endian ELF32 executable for Xtensa: one PT_LOAD segment and one PROGBITS section
    per (name, address, data, flags), and the section-name table."""
    header_size, ph_size, sh_size = 52, 32, 40
    names = b"\0" + b"".join(name.encode() + b"\0" for name, *_ in sections) + b".shstrtab\0"
    offset = header_size + ph_size * len(sections)
    body, placed = b"", []
    for name, address, data, flags in sections:
        padding = (-(offset + len(body))) % 4
        body += bytes(padding)
        placed.append((name, address, data, flags, offset + len(body)))
        body += data
    names_offset = offset + len(body)
    sh_offset = names_offset + len(names) + (-(names_offset + len(names))) % 4
    program_headers = b"".join(struct.pack("<IIIIIIII", PT_LOAD, at, address, address, len(data), len(data),
                                           5 if flags & SHF_EXECINSTR else 6, 4)
                               for _, address, data, flags, at in placed)
    section_headers = bytes(sh_size)
    name_at = 1
    for name, address, data, flags, at in placed:
        section_headers += struct.pack("<IIIIIIIIII", name_at, SHT_PROGBITS, flags, address, at, len(data), 0, 0, 4, 0)
        name_at += len(name) + 1
    section_headers += struct.pack("<IIIIIIIIII", name_at, SHT_STRTAB, 0, 0, names_offset, len(names), 0, 0, 1, 0)
    ident = b"\x7fELF" + bytes([1, 1, 1]) + bytes(9)
    header = ident + struct.pack("<HHIIIIIHHHHHH", ET_EXEC, EM_XTENSA, 1, entry, header_size, sh_offset, 0,
                                 header_size, ph_size, len(sections), sh_size, len(sections) + 2, len(sections) + 1)
    image = header + program_headers + body + names
    return image + bytes(sh_offset - len(image)) + section_headers


def app_elf() -> bytes:
    sections = [(name, address, app_description("bench_app", "1.2.3") if data is None else data, flags)
                for name, address, data, flags in APP_SECTIONS]
    return xtensa_elf(sections, entry=0x40378000)


def partition_table(entries: list[tuple[str, int, int, int, int]]) -> bytes:
    """ESP-IDF's binary partition table: 32-byte entries (magic 0xAA50), then an MD5 entry."""
    rows = b"".join(struct.pack("<2sBBII16sI", b"\xaa\x50", kind, subtype, offset, size, label.encode(), 0)
                    for label, kind, subtype, offset, size in entries)
    return (rows + b"\xeb\xeb" + b"\xff" * 14 + hashlib.md5(rows).digest()).ljust(0xC00, b"\xff")


def quietly(function, *args, **kwargs):
    with contextlib.redirect_stdout(io.StringIO()):
        return function(*args, **kwargs)


def test_elf2image_turns_a_hand_built_esp32s3_elf_into_a_valid_app_image():
    elf = app_elf()
    data = quietly(elf2image, elf, "esp32s3", flash_mode="dio", flash_size="8MB", flash_freq="80m")
    image = LoadFirmwareImage("esp32s3", data)

    assert data[0] == 0xE9 and data[2] == FLASH_MODES["dio"]
    assert data[3] == ESP32S3ROM.parse_flash_size_arg("8MB") + ESP32S3ROM.parse_flash_freq_arg("80m")
    assert image.entrypoint == 0x40378000 and image.chip_id == ESP32S3_CHIP_ID
    assert image.checksum == image.calculate_checksum()
    assert image.append_digest and image.stored_digest == image.calc_digest

    def holding(address):
        return next(s for s in image.segments if s.addr <= address < s.addr + len(s.data))

    for name, address, payload, _ in APP_SECTIONS:
        segment = holding(address)  # esptool merges adjacent sections (appdesc + rodata) into one segment
        if payload is not None:
            at = address - segment.addr
            assert segment.data[at:at + len(payload)] == payload, name
    # The app description leads the image (after the 24-byte header and 8-byte segment header),
    # and esptool writes the ELF's sha256 into it at 0xB0, as ESP-IDF's tools do.
    assert struct.unpack_from("<I", data, 0x20)[0] == APP_DESC_MAGIC
    assert data[0xB0:0xB0 + 32] == hashlib.sha256(elf).digest()
    # Flash-mapped segments sit where the MMU can map them: file offset = address, modulo a page.
    for address in (0x3C000020, 0x42000020):
        segment = holding(address)
        assert segment.addr == address and (segment.file_offs + 8) % MMU_PAGE == address % MMU_PAGE


def test_merge_bin_puts_bootloader_partition_table_and_app_into_one_flash_image(tmp_path):
    bootloader = quietly(elf2image, xtensa_elf(BOOTLOADER_SECTIONS, entry=0x403CC710), "esp32s3",
                         flash_mode="qio", flash_size="2MB", flash_freq="40m")
    app = quietly(elf2image, app_elf(), "esp32s3", flash_mode="dio", flash_size="8MB", flash_freq="80m")
    table = partition_table([("nvs", 1, 0x02, 0x9000, 0x6000), ("phy_init", 1, 0x01, 0xF000, 0x1000),
                             ("factory", 0, 0x00, 0x10000, 0x100000)])
    build = tmp_path / "project" / "build"
    (build / "bootloader").mkdir(parents=True)
    (build / "partition_table").mkdir()
    (build / "bootloader" / "bootloader.bin").write_bytes(bootloader)
    (build / "partition_table" / "partition-table.bin").write_bytes(table)
    (build / "bench_app.bin").write_bytes(app)
    (build / "flasher_args.json").write_text(json.dumps({
        "flash_settings": {"flash_mode": "dio", "flash_size": "8MB", "flash_freq": "80m"},
        "flash_files": {"0x0": "bootloader/bootloader.bin", "0x8000": "partition_table/partition-table.bin",
                        "0x10000": "bench_app.bin"},
        "extra_esptool_args": {"after": "hard_reset", "before": "default_reset", "stub": True, "chip": "esp32s3"}}))
    (tmp_path / "project" / "mcuforge_project.json").write_text('{"kind": "esp-idf", "board": "esp32-s3-devkitc"}')

    plan = esp_flash_plan(tmp_path / "project", "esp32-s3-devkitc")
    merged = merge_esp_image(plan, tmp_path / "merged.bin").read_bytes()

    assert len(merged) == 0x10000 + len(app)
    assert merged[0x8000:0x8000 + len(table)] == table and merged[0x10000:] == app
    assert set(merged[len(bootloader):0x8000]) == {0xFF} and set(merged[0x8000 + len(table):0x10000]) == {0xFF}
    # The bootloader's header now carries the build's flash settings, and its digest still holds.
    assert merged[2] == FLASH_MODES["dio"] and bootloader[2] == FLASH_MODES["qio"]
    assert merged[3] == ESP32S3ROM.parse_flash_size_arg("8MB") + ESP32S3ROM.parse_flash_freq_arg("80m")
    booted = LoadFirmwareImage("esp32s3", merged[:len(bootloader)])
    assert booted.entrypoint == 0x403CC710 and booted.stored_digest == booted.calc_digest
    assert booted.checksum == booted.calculate_checksum()
    assert all(not booted.is_flash_addr(segment.addr) for segment in booted.segments)  # RAM only: a bootloader
    assert LoadFirmwareImage("esp32s3", merged[0x10000:]).stored_digest == hashlib.sha256(app[:-32]).digest()


def test_elf2image_refuses_an_arm_elf():
    """What a Cortex-M build would give it: esptool's own clear refusal."""
    elf = bytearray(app_elf())
    struct.pack_into("<H", elf, 18, 0x28)  # EM_ARM
    with pytest.raises(esptool.util.FatalError, match="Xtensa or an RISCV"):
        quietly(elf2image, bytes(elf), "esp32s3")
