"""Read what Vela says about a compilation: its summary CSV, its per-layer CSV and its log.

Vela (ethos-u-vela) writes, next to the compiled model:
- `<network>_summary_<system config>.csv`: one row of figures for the whole network (memory
  used per memory area in KiB, cycle estimates, inference time, MACs);
- `<network>_per-layer.csv` (with --verbose-performance): one row per operator after Vela's
  lowering ("NNG operator"), naming the TFLite operator it came from and its output tensor.
It logs every operator it leaves to the CPU, with the constraint that failed. Vela's C++ core
(the default since 4.x) writes

    Warning (supported operators) operator: CONV_2D, ofm: 'conv1'
    Reason: Unsupported kernel stride: 4, 4
    Stride>3 is only supported IF (dilation = 1 AND padding = VALID)

to stderr, and its legacy Python core writes

    Warning: CONV_2D 'conv1' is not supported on the NPU. Placing on CPU instead
     - Stride values for both width and height must be in the range [1, 3]
       Op has stride WxH as: 4x4

to stdout. Both are understood here. Nothing in this module runs Vela.
"""
from __future__ import annotations

import csv
import io
import re

from .errors import McuforgeError

KIB = 1024

# Memory areas of the summary CSV: column prefix -> name in mcuforge's report.
MEMORY_AREAS = {"sram": "sram", "dram": "dram", "on_chip_flash": "on_chip_flash", "off_chip_flash": "off_chip_flash"}

_REGOR_WARNING = re.compile(r"^Warning \((?P<kind>[^)]*)\) operator: (?P<op>[^,]+), ofm: '(?P<tensor>.*)'\s*$")
_LEGACY_NOT_SUPPORTED = re.compile(r"^Warning: (?P<op>\S+) '(?P<tensor>.*)' is not supported on the NPU\. Placing on CPU instead\s*$")
_LEGACY_SEMANTICS = re.compile(
    r"^Warning: Unsupported TensorFlow Lite semantics for (?P<op>\S+) '(?P<tensor>.*)'\. Placing on CPU instead\s*$")
_LEGACY_CPU_ONLY = re.compile(r"^Info: (?P<op>\S+) '(?P<tensor>.*)' is a CPU only op\s*$")
_OPERATOR_COUNT = re.compile(r"^(?P<target>CPU|NPU) operators = (?P<count>\d+)")


def _number(text: str) -> int | float | str:
    try:
        value = float(text)
    except ValueError:
        return text
    return int(value) if value.is_integer() and "." not in text and "e" not in text.lower() else value


def _rows(text: str, what: str, where: str) -> list[dict]:
    rows = list(csv.DictReader(io.StringIO(text)))
    if not rows:
        raise McuforgeError(f"Vela's {what} has no rows", where=where,
                            fix="run Vela again; if it keeps happening, report the Vela version and the model")
    return rows


def parse_summary_csv(text: str, where: str = "Vela summary CSV") -> dict:
    """The network figures of Vela's summary CSV, in bytes, cycles, seconds and hertz.

    Returns memory (bytes used per memory area, and flash_bytes for both flash areas together)
    and performance (cycle estimates, inference time, MACs), plus the configuration names."""
    row = {key: _number(value) for key, value in _rows(text, "summary CSV", where)[0].items()}
    try:
        memory = {f"{name}_bytes": round(float(row[f"{column}_memory_used"]) * KIB)
                  for column, name in MEMORY_AREAS.items()}
        memory["flash_bytes"] = memory["on_chip_flash_bytes"] + memory["off_chip_flash_bytes"]
        performance = {
            "npu_clock_hz": int(float(row["core_clock"])),
            "npu_cycles": int(row["cycles_npu"]),
            "total_cycles": int(row["cycles_total"]),
            "memory_access_cycles": {name: int(row[f"cycles_{column}_access"]) for column, name in MEMORY_AREAS.items()},
            "inference_time_s": float(row["inference_time"]),
            "inferences_per_second": float(row["inferences_per_second"]),
            "macs": int(row["nn_macs"]),
            "batch_size": int(row["batch_size"]),
        }
        config = {"accelerator": row["accelerator_configuration"], "system_config": row["system_config"],
                  "memory_mode": row["memory_mode"],
                  "weights_area": row["weights_storage_area"], "feature_maps_area": row["feature_map_storage_area"]}
        weights = {"original_bytes": int(row["total_original_weights"]),
                   "npu_encoded_bytes": int(row["total_npu_encoded_weights"])}
    except (KeyError, ValueError, TypeError) as exc:
        raise McuforgeError(f"Vela's summary CSV lacks a figure mcuforge reads: {exc}", where=where,
                            fix="use the Vela version pinned in pyproject.toml (ethos-u-vela)") from None
    return {"memory": memory, "performance": performance, "config": config, "weights": weights}


def parse_per_layer_csv(text: str, where: str = "Vela per-layer CSV") -> list[dict]:
    """One entry per operator after Vela's lowering, in execution order."""
    layers = []
    for row in _rows(text, "per-layer CSV", where):
        try:
            layers.append({
                "original_op": row["Original Operator"],
                "vela_op": row["NNG Operator"],
                "target": row["Target"],
                "name": row["Name"],
                "cycles": int(float(row["Op Cycles"])),
                "npu_cycles": int(float(row["NPU"])),
                "macs": int(float(row["MAC Count"])),
                "staging_bytes": int(float(row["Staging Usage"])),
            })
        except (KeyError, ValueError) as exc:
            raise McuforgeError(f"Vela's per-layer CSV lacks a column mcuforge reads: {exc}", where=where,
                                fix="use the Vela version pinned in pyproject.toml (ethos-u-vela)") from None
    return layers


def parse_cpu_fallbacks(log: str) -> list[dict]:
    """Every operator Vela placed on the CPU, with the reason it gave: [{op, tensor, reason}].

    `tensor` is the operator's output tensor, which names the operator in the source model."""
    fallbacks: list[dict] = []
    current: dict | None = None
    for raw in log.splitlines():
        line = raw.rstrip()
        match = (_REGOR_WARNING.match(line) or _LEGACY_NOT_SUPPORTED.match(line)
                 or _LEGACY_SEMANTICS.match(line) or _LEGACY_CPU_ONLY.match(line))
        if match:
            current = {"op": match["op"].strip(), "tensor": match["tensor"], "reasons": []}
            if line.startswith("Info:"):
                current["reasons"].append("the operator type is CPU only")
            fallbacks.append(current)
            continue
        if current is None:
            continue
        text = line.strip()
        if not text or line.startswith(("Warning", "Info", "Network summary")):
            current = None  # a blank line or the next message ends the reason
            continue
        if text.startswith("Reason:"):
            text = text[len("Reason:"):].strip()
        elif text.startswith("- "):
            text = text[2:].strip()
        current["reasons"].append(text)
    return [{"op": f["op"], "tensor": f["tensor"],
             "reason": "; ".join(f["reasons"]) or "Vela gave no reason"} for f in fallbacks]


def parse_operator_counts(stdout: str) -> dict[str, int]:
    """Vela's own NPU/CPU operator counts, which count operators after its lowering (a softmax
    becomes many NPU operations), so they are not the source model's operator counts."""
    counts = {}
    for line in stdout.splitlines():
        match = _OPERATOR_COUNT.match(line.strip())
        if match:
            counts[match["target"].lower()] = int(match["count"])
    return counts
