"""Boards are data: one TOML file per board in this folder, validated by schema.json.

Adding a board means adding a file. Code reads boards only through `load_board` and
`all_boards`, which turn every file into a validated `Board`.
"""
from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import jsonschema

from mcuforge.codegen.errors import McuforgeError

BOARDS_DIR = Path(__file__).resolve().parent
SCHEMA_PATH = BOARDS_DIR / "schema.json"


@dataclass(frozen=True)
class Memory:
    name: str
    origin: int
    length: int
    holds: tuple[str, ...]


@dataclass(frozen=True)
class Board:
    name: str
    description: str
    cpu: dict
    memories: tuple[Memory, ...]
    npu: str
    rtos: tuple[str, ...]
    engines: tuple[str, ...]
    flash: dict
    console: dict
    path: Path
    emulated: bool = False
    qemu: dict | None = None
    npu_config: dict = field(default_factory=dict)
    zephyr_board: str | None = None
    idf_target: str | None = None
    vendor: str = ""

    @property
    def core(self) -> str:
        return self.cpu["core"]

    @property
    def clock_hz(self) -> int:
        return self.cpu["clock_hz"]

    @property
    def extensions(self) -> tuple[str, ...]:
        return tuple(self.cpu["extensions"])

    @property
    def is_arm(self) -> bool:
        return self.core.startswith("cortex-m")

    def memory_for(self, kind: str) -> Memory:
        """The memory that holds `kind` (code, rodata, weights, data, bss, stack, heap, arena)."""
        for memory in self.memories:
            if kind in memory.holds:
                return memory
        raise McuforgeError(f"board {self.name} declares no memory that holds {kind!r}",
                            where=f"{self.path}: memory[].holds",
                            fix=f"add {kind!r} to the holds list of one memory")


def _schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text())


def _field_path(error: jsonschema.ValidationError) -> str:
    parts = []
    for part in error.absolute_path:
        parts.append(f"[{part}]" if isinstance(part, int) else (f".{part}" if parts else str(part)))
    return "".join(parts) or "(top level)"


def parse_board_file(path: Path) -> Board:
    """Read and validate one board file. Errors name the file and the field."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise McuforgeError(f"board file not found: {path}", fix="run `mcuforge boards` to list the boards") from None
    except tomllib.TOMLDecodeError as exc:
        raise McuforgeError(f"board file is not valid TOML: {exc}", where=str(path),
                            fix="fix the TOML syntax at the line shown") from None
    validator = jsonschema.Draft202012Validator(_schema())
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        raise McuforgeError(f"invalid board file: field {_field_path(first)}: {first.message}",
                            where=f"{path}: {_field_path(first)}",
                            fix="correct the field to match boards/schema.json"
                                + (f" ({len(errors) - 1} more problem(s) after this one)" if len(errors) > 1 else ""))
    if data["name"] != path.stem:
        raise McuforgeError(f"board name {data['name']!r} does not match its file name",
                            where=f"{path}: name", fix=f"name the file {data['name']}.toml or set name = {path.stem!r}")
    memories = tuple(Memory(m["name"], m["origin"], m["length"], tuple(m["holds"])) for m in data["memory"])
    return Board(
        name=data["name"], description=data["description"], cpu=data["cpu"], memories=memories,
        npu=data["npu"], rtos=tuple(data["rtos"]), engines=tuple(data["engines"]),
        flash=data["flash"], console=data["console"], path=path,
        emulated=data.get("emulated", False), qemu=data.get("qemu"),
        npu_config=data.get("npu_config", {}), zephyr_board=data.get("zephyr_board"),
        idf_target=data.get("idf_target"), vendor=data.get("vendor", ""),
    )


def board_files(directory: Path = BOARDS_DIR) -> list[Path]:
    return sorted(Path(directory).glob("*.toml"))


def all_boards(directory: Path = BOARDS_DIR) -> list[Board]:
    return [parse_board_file(p) for p in board_files(directory)]


def load_board(name_or_path: str) -> Board:
    """A board by name (a file in boards/) or by the path of a board file."""
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml" and candidate.exists():
        return parse_board_file(candidate)
    path = BOARDS_DIR / f"{name_or_path}.toml"
    if not path.exists():
        known = ", ".join(p.stem for p in board_files())
        raise McuforgeError(f"unknown board {name_or_path!r}", where="--board",
                            fix=f"use one of: {known}, or the path of a board .toml file")
    return parse_board_file(path)
