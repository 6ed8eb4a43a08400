"""The reference: TFLM's own interpreter (tflite-micro Python package), run on the host.

Bit-exactness of every engine is judged against these outputs, and TFLM's arena figure is
measured here rather than guessed.
"""
from __future__ import annotations

import subprocess
import sys

import numpy as np

from .errors import McuforgeError

# The interpreter needs the arena to hold the planned tensors plus its own bookkeeping.
_GENEROUS_ARENA_FACTOR = 4
_MIN_ARENA = 64 * 1024
_MAX_ARENA = 64 * 1024 * 1024  # far beyond any microcontroller: past it, the model cannot allocate at all


def _interpreter(model_bytes: bytes, arena_size: int):
    from tflite_micro.python.tflite_micro import runtime
    return runtime.Interpreter.from_bytes(bytes(model_bytes), arena_size=arena_size)


def generous_arena(model_bytes: bytes) -> int:
    return max(_MIN_ARENA, len(model_bytes) * _GENEROUS_ARENA_FACTOR)


def run_reference(model_bytes: bytes, samples: list[list[np.ndarray]], arena_size: int | None = None) -> list[list[np.ndarray]]:
    """Run the TFLM reference interpreter: one list of input arrays per sample, one list of outputs back."""
    from .tflite_model import parse_tflite
    n_outputs = len(parse_tflite(bytes(model_bytes)).outputs)
    interpreter = _interpreter(model_bytes, arena_size or generous_arena(model_bytes))
    results = []
    for inputs in samples:
        for i, x in enumerate(inputs):
            interpreter.set_input(x, i)
        interpreter.invoke()
        results.append([np.array(interpreter.get_output(i), copy=True) for i in range(n_outputs)])
    return results


_PROBE = """
import sys
from tflite_micro.python.tflite_micro import runtime
data = open(sys.argv[1], 'rb').read()
runtime.Interpreter.from_bytes(data, arena_size=int(sys.argv[2]))
print('ALLOCATED')
"""


def _allocates(model_path: str, arena_size: int) -> bool:
    # A too-small arena makes the interpreter crash (SIGSEGV) rather than raise, so each probe
    # runs in its own process.
    result = subprocess.run([sys.executable, "-c", _PROBE, model_path, str(arena_size)],
                            capture_output=True, text=True, timeout=120)
    return result.returncode == 0 and "ALLOCATED" in result.stdout


def measure_tflm_arena(model_path: str, granularity: int = 1) -> int:
    """The smallest arena (bytes, to within `granularity`) with which TFLM allocates the model."""
    with open(model_path, "rb") as f:
        high = generous_arena(f.read())
    while not _allocates(model_path, high):
        high *= 2
        if high > _MAX_ARENA:
            raise McuforgeError("the TFLM interpreter could not allocate the model with any arena size",
                                where=model_path, fix="check that TFLM supports every operator of the model")
    low = 0  # known not to work (or untested zero)
    while high - low > granularity:
        mid = (low + high) // 2 // granularity * granularity
        if mid <= low:
            break
        if _allocates(model_path, mid):
            high = mid
        else:
            low = mid
    return high
