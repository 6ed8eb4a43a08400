"""Short human-readable summaries of stage reports, for the terminal (full reports stay JSON)."""
from __future__ import annotations


def _ops(ops: dict) -> str:
    return ", ".join(f"{name} x{count}" for name, count in ops.items())


def _io(entries: list[dict]) -> str:
    return "; ".join(f"{e['dtype']}{e['shape']} scale {e['scale']:.6g} zp {e['zero_point']}"
                     if isinstance(e.get("scale"), float) else f"{e['dtype']}{e['shape']}" for e in entries)


def convert_summary(report: dict) -> str:
    lines = [f"wrote {report['target']} ({report['model_bytes']} B)"
             + (" — already full int8, passed through" if report.get("passthrough") else ""),
             f"  ops:     {_ops(report['ops'])}",
             f"  input:   {_io(report['input'])}",
             f"  output:  {_io(report['output'])}"]
    if report.get("calibration"):
        lines.append(f"  calibration: {report['calibration']['samples']} samples from {report['calibration']['file']}")
    evaluation = report.get("evaluation")
    if evaluation:
        parts = [f"{key} {value:.4g}" for key, value in evaluation.items()
                 if isinstance(value, (int, float)) and not isinstance(value, bool)]
        lines.append(f"  float vs int8 ({evaluation.get('task', '')}): " + ", ".join(parts))
    for note in report.get("notes") or []:
        lines.append(f"  note: {note}")
    return "\n".join(lines)


def compile_summary(report: dict, out_dir, action: str = "wrote") -> str:
    """The terminal summary of a compile report; `action` starts the first line ("wrote" right
    after compiling, something else when `mcuforge report` shows it again)."""
    readers = "report.json has the details" + (", report.md the overview" if "report.md" in report.get("report_files", []) else "")
    lines = [f"{action} {out_dir}/ ({report.get('engine', '?')} engine; {readers})"]
    if report.get("engine") == "ethos-u":
        return "\n".join(lines + _ethosu_lines(report) + _fit_lines(report))
    for model in report.get("models") or []:
        lines.append(f"  {model['role']:<9} {model['name']}: arena {model['arena_bytes']} B, "
                     f"weights {model['weights_bytes']} B, {model['macs']} MACs ({model['model']['path']})")
    if report.get("models"):
        lines.append(f"  shared arena: {report['arena_bytes']} B "
                     f"(separate arenas would take {report['arena_bytes_if_separate']} B)")
    lines += [f"  ops:      {_ops(report['ops'])}",
              f"  arena:    {report['arena_bytes']} B"
              + (f" (largest set of live tensors {report['largest_live_set_bytes']} B)" if "largest_live_set_bytes" in report else "")]
    if "weights_bytes" in report:
        lines.append(f"  weights:  {report['weights_bytes']} B, {report.get('macs', 0)} MACs"
                     + (f", kernels {report['kernels']}" if report.get("kernels") else ""))
    if "flash_bytes" in report:
        lines.append(f"  flash:    {report['flash_bytes']} B on {report['board']} (code and weights, arm-none-eabi-size)")
    if "model_bytes" in report:
        lines.append(f"  model:    {report['model_bytes']} B C array")
    return "\n".join(lines + _fit_lines(report))


def _fit_lines(report: dict) -> list[str]:
    """Use of each memory region of the board the model was checked against."""
    return [f"  fits {region['memory']}: {region['used']} of {region['length']} B "
            f"({100 * region['used'] / region['length']:.0f}%)" for region in report.get("board_fit") or []]


def _kib(count: int) -> str:
    return f"{count} B ({count / 1024:.1f} KiB)" if count >= 1024 else f"{count} B"


def _ethosu_lines(report: dict) -> list[str]:
    from .report_render import human_hz, human_time

    split = report.get("op_split") or {}
    npu = report.get("npu") or {}
    lines = []
    if npu:
        vela = report.get("vela") or {}
        lines.append(f"  npu:      {npu.get('accelerator')}" + (f" on {report['board']}" if report.get("board") else "")
                     + f" ({npu.get('system_config')}, {npu.get('memory_mode')})"
                     + (f", Vela {vela['version']}" if vela.get("version") else ""))
    if report.get("already_compiled"):
        lines.append(f"  ops:      {split.get('npu', 0)} ethos-u operator(s), {split.get('cpu', 0)} on the CPU; "
                     "already compiled by Vela, embedded as it is")
    else:
        lines.append(f"  ops:      {split.get('npu', 0)} of {split.get('total', 0)} on the NPU, {split.get('cpu', 0)} on the CPU"
                     f" ({_ops(report.get('source_ops') or {})})")
    for fallback in report.get("cpu_fallbacks") or []:
        lines.append(f"  cpu:      {fallback['op']} at node {fallback['index']} ({fallback['name']}): {fallback['reason']}")
    memory = report.get("memory") or {}
    if "sram_bytes" in memory:
        lines.append(f"  sram:     {_kib(memory['sram_bytes'])}")
    if "flash_bytes" in memory:
        lines.append(f"  flash:    {_kib(memory['flash_bytes'])} (weights and NPU data; from {memory.get('source', '?')})")
    perf = report.get("performance")
    if perf:
        lines.append(f"  cycles:   {perf['total_cycles']} estimated ({perf['npu_cycles']} NPU compute), "
                     f"{human_time(perf['inference_time_s'])} per inference at {human_hz(perf['npu_clock_hz'])}"
                     + (" (NPU part only)" if split.get("cpu") else ""))
    lines.append(f"  arena:    {report['arena_bytes']} B (estimated: Vela's scratch area and the other tensors, "
                 "plus TFLM's bookkeeping)")
    lines.append(f"  model:    {report['model_bytes']} B C array ({report.get('compiled_model')}), "
                 f"op resolver {_ops(report.get('ops') or {})}")
    return lines
