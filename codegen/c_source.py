"""Helpers that turn Python values into C source text. Used by every emitter."""
from __future__ import annotations

import re

import numpy as np

C_TYPES = {
    np.dtype(np.int8): "int8_t", np.dtype(np.uint8): "uint8_t", np.dtype(np.int16): "int16_t",
    np.dtype(np.int32): "int32_t", np.dtype(np.int64): "int64_t", np.dtype(np.float32): "float",
}


def c_identifier(text: str) -> str:
    """A valid C identifier made from any text (file names, tensor names)."""
    ident = re.sub(r"[^0-9A-Za-z_]", "_", text)
    if not ident or ident[0].isdigit():
        ident = "_" + ident
    return ident


def c_literal_list(values, per_line: int = 16, indent: str = "    ") -> str:
    items = [str(int(v)) for v in values]
    lines = [", ".join(items[i:i + per_line]) for i in range(0, len(items), per_line)]
    return (",\n" + indent).join(lines) if lines else "0"


def c_hex_bytes(data: bytes, per_line: int = 16, indent: str = "    ") -> str:
    lines = [", ".join(f"0x{b:02x}" for b in data[i:i + per_line]) for i in range(0, len(data), per_line)]
    return (",\n" + indent).join(lines) if lines else "0"


def c_const_array(name: str, values: np.ndarray, align: int = 4, static: bool = True,
                  section: str | None = None) -> str:
    """`const` array definition of a numpy array (flattened), aligned for word or vector loads.

    `section` lets a linker script place the array in a chosen memory (e.g. weights in flash)."""
    values = np.asarray(values)
    ctype = C_TYPES[values.dtype]
    storage = "static " if static else ""
    attributes = f"aligned({align})" + (f", section(\"{section}\")" if section else "")
    body = c_literal_list(values.ravel())
    return (f"{storage}const {ctype} {name}[{max(values.size, 1)}] __attribute__(({attributes})) = {{\n"
            f"    {body}\n}};\n")
