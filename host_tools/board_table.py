"""Board summaries for `mcuforge boards`: rows for JSON and a fixed-width table."""
from __future__ import annotations


def _kib(n: int) -> str:
    return f"{n // 1024} KiB" if n < 1 << 20 else f"{n / (1 << 20):g} MiB"


def board_rows(boards) -> list[dict]:
    rows = []
    for b in boards:
        rows.append({
            "name": b.name,
            "core": b.core,
            "clock_mhz": b.clock_hz / 1e6,
            "extensions": list(b.extensions),
            "npu": b.npu,
            "rtos": list(b.rtos),
            "engines": list(b.engines),
            "flash_tool": b.flash["tool"],
            "console": f"{b.console['kind']} {b.console['baud']}",
            "emulated": b.emulated,
            "qemu_machine": b.qemu["machine"] if b.qemu else None,
            "memory": [{"name": m.name, "origin": m.origin, "length": m.length, "holds": list(m.holds)} for m in b.memories],
            "description": b.description,
            "file": str(b.path.name),
        })
    return rows


def format_board_table(rows: list[dict]) -> str:
    headers = ["board", "core", "MHz", "ext", "npu", "memory", "rtos", "engines", "flash", "emulated"]
    table = [[r["name"], r["core"], f"{r['clock_mhz']:g}", ",".join(r["extensions"]) or "-", r["npu"],
              " ".join(f"{m['name']}:{_kib(m['length'])}" for m in r["memory"]),
              ",".join(r["rtos"]), ",".join(r["engines"]), r["flash_tool"],
              f"qemu {r['qemu_machine']}" if r["emulated"] else "-"] for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *table)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*headers), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*row) for row in table]
    return "\n".join(line.rstrip() for line in lines)
