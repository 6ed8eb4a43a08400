"""Reports people can look at: report.md and a per-layer chart (PNG), made from a compile report.

report.json stays the complete record for tools; these two are read by people, in a browser,
an editor preview or a pull request. Everything here is computed from the report alone, so a
report.json from any earlier compile renders the same way.
"""
from __future__ import annotations

import io
from pathlib import Path

MARKDOWN_FILE = "report.md"
CHART_FILE = "layers.png"
CHART_DPI = 100
CHART_PANEL_HEIGHT_IN = 2.6
CHART_EXTRA_HEIGHT_IN = 1.4     # title and the rotated layer labels
CHART_MIN_WIDTH_IN = 6.4
CHART_WIDTH_PER_LAYER_IN = 0.32
CHART_MAX_WIDTH_IN = 48.0

NPU_COLOR, CPU_COLOR = "#1f77b4", "#d62728"
ARENA_COLOR, MACS_COLOR = "#2ca02c", "#9467bd"


# --- formatting ------------------------------------------------------------------------------

def human_bytes(count: int | None) -> str:
    if count is None:
        return "n/a"
    if count < 1024:
        return f"{count} B"
    if count < 1024 * 1024:
        return f"{count} B ({count / 1024:.1f} KiB)"
    return f"{count} B ({count / (1024 * 1024):.2f} MiB)"


def human_time(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.3f} s"


def human_hz(hz: int | float | None) -> str:
    if not hz:
        return "n/a"
    return f"{hz / 1e6:g} MHz" if hz >= 1e6 else f"{hz / 1e3:g} kHz"


def ops_text(ops: dict | None) -> str:
    return ", ".join(f"{name} x{count}" for name, count in (ops or {}).items()) or "none"


def model_name(report: dict) -> str:
    model = report.get("model")
    if isinstance(model, dict):  # the aot report keeps the path and its hash together
        model = model.get("path")
    return Path(str(model)).name if model else "?"


def _cell(value) -> str:
    text = "" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return lines + [""]


def _short_op(op: str) -> str:
    return op.split(":", 1)[1] if op.startswith("CUSTOM:") else op


def _vela_ops_text(names: list[str]) -> str:
    if len(names) <= 4:
        return ", ".join(names)
    return f"{', '.join(names[:3])}, … ({len(names)} in all)"


# --- per-layer chart -------------------------------------------------------------------------

def chart_panels(report: dict) -> list[dict]:
    """The panels of the per-layer chart: [{title, ylabel, values, colors}], or [] for none."""
    layers = report.get("layers") or []
    if not layers:
        return []
    if report.get("engine") == "aot":
        return [
            {"title": "arena bytes of each layer's output", "ylabel": "bytes",
             "values": [layer.get("output_bytes") or 0 for layer in layers], "colors": [ARENA_COLOR] * len(layers)},
            {"title": "MACs per layer", "ylabel": "MACs",
             "values": [layer.get("macs") or 0 for layer in layers], "colors": [MACS_COLOR] * len(layers)},
        ]
    if report.get("engine") == "ethos-u":
        if all(layer.get("cycles") is None for layer in layers):
            return []  # an already-compiled model: Vela's per-layer figures are not known
        return [{"title": "estimated cycles per layer (Vela; CPU layers have no estimate)", "ylabel": "cycles",
                 "values": [layer.get("cycles") or 0 for layer in layers],
                 "colors": [CPU_COLOR if layer.get("target") == "CPU" else NPU_COLOR for layer in layers],
                 "cpu": [layer.get("target") == "CPU" for layer in layers]}]
    return []


def chart_size_px(report: dict) -> tuple[int, int] | None:
    """Width and height in pixels of the chart that `layer_chart_png` draws, or None."""
    panels = chart_panels(report)
    if not panels:
        return None
    width, height = _chart_size_in(len(report["layers"]), len(panels))
    return round(width * CHART_DPI), round(height * CHART_DPI)


def _chart_size_in(layer_count: int, panel_count: int) -> tuple[float, float]:
    width = min(max(CHART_MIN_WIDTH_IN, CHART_WIDTH_PER_LAYER_IN * layer_count + 1.5), CHART_MAX_WIDTH_IN)
    return width, CHART_PANEL_HEIGHT_IN * panel_count + CHART_EXTRA_HEIGHT_IN


def layer_chart_png(report: dict) -> bytes | None:
    """A bar chart of the report's per-layer figures as PNG bytes, or None if it has none."""
    panels = chart_panels(report)
    if not panels:
        return None
    # The object-oriented API only: no pyplot, so no global state and no display backend.
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    layers = report["layers"]
    positions = list(range(len(layers)))
    figure = Figure(figsize=_chart_size_in(len(layers), len(panels)), dpi=CHART_DPI, layout="constrained")
    axes = figure.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    for ax, panel in zip(axes, panels):
        ax.bar(positions, panel["values"], color=panel["colors"], width=0.75)
        ax.set_title(panel["title"], fontsize=9, loc="left")
        ax.set_ylabel(panel["ylabel"], fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
        for position, on_cpu in zip(positions, panel.get("cpu", [])):
            if on_cpu:
                ax.annotate("CPU", (position, 0), xytext=(0, 2), textcoords="offset points", ha="center",
                            va="bottom", fontsize=6, color=CPU_COLOR, rotation=90)
        if "cpu" in panel:
            ax.legend(handles=[Patch(color=NPU_COLOR, label="NPU"), Patch(color=CPU_COLOR, label="CPU")],
                      fontsize=7, loc="upper right")
    axes[-1].set_xticks(positions, [f"{layer['index']} {_short_op(layer['op'])}" for layer in layers],
                        rotation=60, ha="right", fontsize=6)
    for label, layer in zip(axes[-1].get_xticklabels(), layers):
        if layer.get("target") == "CPU":
            label.set_color(CPU_COLOR)
    axes[-1].set_xlim(-0.6, len(layers) - 0.4)
    figure.suptitle(f"{model_name(report)}, {report.get('engine')} engine: per-layer figures", fontsize=10)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})  # no version stamp: same input, same bytes
    return buffer.getvalue()


# --- report.md -------------------------------------------------------------------------------

def _summary_rows(report: dict) -> list[list]:
    engine = report.get("engine")
    rows = [["model", model_name(report)]]
    if report.get("name"):
        rows.append(["C names", f"`{report['name']}_…`"])
    if report.get("board"):
        rows.append(["board", report["board"]])
    if engine == "aot":
        rows += [["arena", f"{human_bytes(report.get('arena_bytes'))}, {report.get('arena_strategy', '')} plan"],
                 ["largest set of live tensors", human_bytes(report.get("largest_live_set_bytes"))],
                 ["weights", human_bytes(report.get("weights_bytes"))],
                 ["MACs", report.get("macs")],
                 ["kernels", report.get("kernels")]]
        if "flash_bytes" in report:
            rows.append(["flash on the board", f"{human_bytes(report['flash_bytes'])} (code and weights, arm-none-eabi-size)"])
    elif engine == "tflm":
        rows += [["model (C array)", human_bytes(report.get("model_bytes"))],
                 ["arena", f"{human_bytes(report.get('arena_bytes'))} ({report.get('arena_source', '')})"],
                 ["op resolver", (report.get("op_resolver") or {}).get("type")]]
    elif engine == "ethos-u":
        npu = report.get("npu") or {}
        if npu:
            rows.append(["NPU", f"{npu.get('accelerator')}, system config {npu.get('system_config')}, "
                                f"memory mode {npu.get('memory_mode')}"])
        vela = report.get("vela")
        if vela:
            rows.append(["Vela", f"{vela.get('version')}: `{vela.get('command')}`"])
        if report.get("already_compiled"):
            rows.append(["compiled by", "Vela, before mcuforge saw it (embedded as it is)"])
        split = report.get("op_split") or {}
        rows.append(["operators", _split_text(report)])
        memory = report.get("memory") or {}
        rows.append(["SRAM used", human_bytes(memory.get("sram_bytes"))])
        rows.append(["flash used", human_bytes(memory.get("flash_bytes"))
                     + (f" (off-chip {memory['off_chip_flash_bytes']} B, on-chip {memory['on_chip_flash_bytes']} B)"
                        if "off_chip_flash_bytes" in memory else "")])
        if memory.get("dram_bytes"):
            rows.append(["DRAM used", human_bytes(memory["dram_bytes"])])
        perf = report.get("performance")
        if perf:
            rows += [["cycles (estimated)", f"{perf['total_cycles']} in all, {perf['npu_cycles']} NPU compute"],
                     ["inference time (estimated)", f"{human_time(perf['inference_time_s'])} at "
                                                    f"{human_hz(perf['npu_clock_hz'])} "
                                                    f"({perf['inferences_per_second']:.0f} inferences/s)"
                                                    + (", NPU part only" if split.get("cpu") else "")],
                     ["MACs", perf.get("macs")]]
        rows += [["model (C array)", f"{human_bytes(report.get('model_bytes'))} ({report.get('compiled_model')})"],
                 ["arena", f"{human_bytes(report.get('arena_bytes'))} ({report.get('arena_source', '')})"],
                 ["op resolver", (report.get("op_resolver") or {}).get("type")]]
    return rows


def _split_text(report: dict) -> str:
    split = report.get("op_split") or {}
    if report.get("already_compiled"):
        return (f"{split.get('npu', 0)} ethos-u operator(s) (compiled NPU subgraphs), "
                f"{split.get('cpu', 0)} on the CPU")
    return f"{split.get('npu', 0)} of {split.get('total', 0)} on the NPU, {split.get('cpu', 0)} on the CPU"


def _io_rows(entries: list[dict]) -> list[list]:
    return [[e.get("name"), e.get("dtype"), e.get("shape"),
             f"{e['scale']:.6g}" if isinstance(e.get("scale"), float) else e.get("scale"), e.get("zero_point")]
            for e in entries]


def report_markdown(report: dict, chart_file: str | None = None) -> str:
    engine = report.get("engine", "?")
    lines = [f"# {model_name(report)}: {engine} engine", "",
             f"mcuforge compiled `{model_name(report)}` for the {engine} engine. "
             "report.json next to this file holds every figure.", ""]
    lines += _table(["", ""], _summary_rows(report))
    for note in report.get("notes") or []:
        lines += [f"> {note}", ""]

    lines += ["## Operators", ""]
    if engine == "ethos-u" and not report.get("already_compiled"):
        split = report.get("op_split") or {}
        names = list(dict.fromkeys([*split.get("npu_ops", {}), *split.get("cpu_ops", {})]))
        lines += _table(["operator", "on the NPU", "on the CPU"],
                        [[n, split.get("npu_ops", {}).get(n, 0), split.get("cpu_ops", {}).get(n, 0)] for n in names])
        lines += [f"The firmware registers: {ops_text(report.get('ops'))}.", ""]
        fallbacks = report.get("cpu_fallbacks") or []
        lines += ["## CPU fallbacks", ""]
        if fallbacks:
            lines += ["Vela left these operators to the CPU, for these reasons:", ""]
            lines += _table(["#", "operator", "output tensor", "reason"],
                            [[f["index"], f["op"], f"`{f['name']}`", f["reason"]] for f in fallbacks])
        else:
            lines += ["None: every operator runs on the NPU.", ""]
    else:
        lines += _table(["operator", "count"], [[name, count] for name, count in (report.get("ops") or {}).items()])

    if report.get("input") or report.get("output"):
        lines += ["## Inputs and outputs", ""]
        lines += _table(["", "tensor", "type", "shape", "scale", "zero point"],
                        [["input", *row] for row in _io_rows(report.get("input") or [])]
                        + [["output", *row] for row in _io_rows(report.get("output") or [])])

    layers = report.get("layers") or []
    if layers:
        lines += ["## Layers", ""]
        if chart_file:
            lines += [f"![per-layer chart]({chart_file})", ""]
        if engine == "aot":
            lines += _table(["#", "operator", "output", "output shape", "MACs", "arena offset", "output bytes"],
                            [[layer["index"], layer["op"], f"`{layer['name']}`", layer.get("output_shape"),
                              layer.get("macs"), layer.get("arena_offset"), layer.get("output_bytes")]
                             for layer in layers])
        else:
            lines += _table(["#", "operator", "runs on", "output shape", "cycles", "NPU cycles", "MACs", "Vela operations"],
                            [[layer["index"], layer["op"], layer.get("target"), layer.get("output_shape"),
                              layer.get("cycles"), layer.get("npu_cycles"), layer.get("macs"),
                              _vela_ops_text(layer.get("vela_ops") or [])] for layer in layers])
    return "\n".join(lines).rstrip() + "\n"


def render_report_files(report: dict) -> dict[str, str | bytes]:
    """report.md, and the chart if the report has per-layer figures: file name -> contents."""
    chart = layer_chart_png(report)
    files: dict[str, str | bytes] = {MARKDOWN_FILE: report_markdown(report, CHART_FILE if chart else None)}
    if chart:
        files[CHART_FILE] = chart
    return files
