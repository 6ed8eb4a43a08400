import importlib.util
import os
import shutil
import sys
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_MODELS = REPO_ROOT.parent / "shared" / "models"


def shared_model(name: str) -> Path:
    """A published reference model from ../shared/models; skips when that folder is absent."""
    path = SHARED_MODELS / name
    if not path.exists():
        pytest.skip(f"reference model {name} not found in {SHARED_MODELS} (the shared models folder is absent)")
    return path


def require_tool(tool: str, package: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} not installed (Debian package {package}; run scripts/bootstrap.sh)")


def load_architectures():
    """benchmarks/architectures.py: the Keras architectures shared by tests and benchmarks.
    benchmarks/ is a folder of scripts, not a package, so the module is loaded from its file."""
    name = "mcuforge_benchmark_architectures"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "benchmarks" / "architectures.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
    return sys.modules[name]


def running_children(names=("qemu-system-arm", "node")) -> list[str]:
    """Command lines of this process's live children running one of `names`."""
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
            if int(fields.get("PPid", "0").strip()) != os.getpid() or fields.get("State", "").startswith("Z"):
                continue
            command = [c.decode(errors="replace") for c in (status.parent / "cmdline").read_bytes().split(b"\0") if c]
        except (OSError, ValueError):
            continue
        if command and Path(command[0]).name in names:
            found.append(" ".join(command))
    return found


@pytest.fixture(autouse=True)
def nothing_left_running():
    """Imported by test modules that start QEMU or Node: each test must stop what it started."""
    yield
    deadline = time.monotonic() + 5
    while running_children() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert running_children() == []


def quantize_builders(builders: dict, root: Path, seed: int, calib_seed: int = 0, samples: int = 64) -> dict[str, Path]:
    """Build each Keras architecture (builder(keras) -> (inputs, outputs)) with random weights,
    calibrate on random normal data and convert it to full int8 with mcuforge's converter.
    Returns name -> .tflite path. Bit-exactness tests need no training: any weights will do."""
    import numpy as np
    import tensorflow as tf

    from mcuforge.codegen.quantize import convert

    keras = tf.keras
    keras.utils.set_random_seed(seed)
    models = {}
    for name, build in builders.items():
        inputs, outputs = build(keras)
        keras.Model(inputs, outputs).save(root / f"{name}.keras")
        calib = np.random.default_rng(calib_seed).normal(size=(samples, *inputs.shape[1:])).astype(np.float32)
        np.save(root / f"{name}_calib.npy", calib)
        convert(root / f"{name}.keras", root / f"{name}.tflite", calib=root / f"{name}_calib.npy")
        models[name] = root / f"{name}.tflite"
    return models
