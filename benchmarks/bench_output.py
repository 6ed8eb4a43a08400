"""The closing lines every benchmark script prints: where the JSON went, and any failed runs."""
from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def finish(output: Path, total_seconds: float, failures: list[str]) -> int:
    """Print the output path (relative to the repository when inside it) and the failures;
    the exit status: 1 when any run failed or was not bit-exact, else 0."""
    try:
        shown = output.resolve().relative_to(REPO_ROOT)
    except ValueError:
        shown = output
    print(f"wrote {shown} in {total_seconds:.0f} s")
    if failures:
        print(f"\nFAILED: {len(failures)} run(s) did not complete or were not bit-exact with TFLM:", file=sys.stderr)
        for failure in failures:
            print(f"  {failure}", file=sys.stderr)
        return 1
    return 0
