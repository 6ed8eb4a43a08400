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


def compile_summary(report: dict, out_dir) -> str:
    lines = [f"wrote {out_dir}/ ({report['engine']} engine; report.json has the details)",
             f"  ops:      {_ops(report['ops'])}",
             f"  arena:    {report['arena_bytes']} B"
             + (f" (largest set of live tensors {report['largest_live_set_bytes']} B)" if "largest_live_set_bytes" in report else "")]
    if "weights_bytes" in report:
        lines.append(f"  weights:  {report['weights_bytes']} B, {report.get('macs', 0)} MACs, kernels {report.get('kernels')}")
    if "flash_bytes" in report:
        lines.append(f"  flash:    {report['flash_bytes']} B on {report['board']} (code and weights, arm-none-eabi-size)")
    if "model_bytes" in report:
        lines.append(f"  model:    {report['model_bytes']} B C array")
    return "\n".join(lines)
