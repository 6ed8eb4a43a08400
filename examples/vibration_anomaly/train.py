"""Train the bundled example: a tiny vibration-anomaly classifier for an accelerometer.

Synthetic data stands in for a 3-axis accelerometer on a rotating machine. A healthy machine
shakes at its shaft frequency and a few harmonics. Three faults add what vibration analysts
look for: a bearing tone well above the shaft frequency, impacts (short spikes), and broadband
rubbing noise. The model sees raw windows, as the device would, and outputs two logits
(normal, anomalous); there is no softmax because the device only needs the larger logit.

Usage:  python examples/vibration_anomaly/train.py OUT_DIR
Writes model.keras, calib.npy (calibration windows) and eval.npz (held-out x, y) to OUT_DIR.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

SAMPLE_RATE_HZ = 800
WINDOW = 64                 # samples per window: 80 ms at 800 Hz
AXES = 3
CLASSES = ("normal", "anomaly")

TRAIN_WINDOWS = 2400
EVAL_WINDOWS = 400
CALIB_WINDOWS = 300
EPOCHS = 40


def make_windows(count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """`count` windows of shape (WINDOW, AXES) in g, and labels (0 normal, 1 anomaly), half each."""
    t = np.arange(WINDOW) / SAMPLE_RATE_HZ
    x = np.empty((count, WINDOW, AXES), dtype=np.float32)
    y = np.zeros(count, dtype=np.int64)
    y[count // 2:] = 1
    rng.shuffle(y)
    for i in range(count):
        shaft_hz = rng.uniform(20.0, 60.0)
        level = rng.uniform(0.3, 1.0)
        window = np.zeros((WINDOW, AXES))
        for axis in range(AXES):
            for harmonic, weight in ((1, 1.0), (2, 0.4), (3, 0.15)):
                amplitude = level * weight * rng.uniform(0.5, 1.0)
                window[:, axis] += amplitude * np.sin(2 * np.pi * harmonic * shaft_hz * t + rng.uniform(0, 2 * np.pi))
        window += rng.normal(0.0, 0.03, size=window.shape)
        if y[i]:
            _add_fault(window, t, shaft_hz, rng)
        window[:, 2] += 1.0  # gravity on the z axis
        x[i] = window
    return x, y


def _add_fault(window: np.ndarray, t: np.ndarray, shaft_hz: float, rng: np.random.Generator) -> None:
    kind = rng.integers(3)
    if kind == 0:    # bearing defect: a high tone, amplitude-modulated by the shaft rotation
        tone_hz = rng.uniform(150.0, 350.0)
        envelope = 1.0 + 0.5 * np.sin(2 * np.pi * shaft_hz * t)
        for axis in range(AXES):
            amplitude = rng.uniform(0.15, 0.4)
            window[:, axis] += amplitude * envelope * np.sin(2 * np.pi * tone_hz * t + rng.uniform(0, 2 * np.pi))
    elif kind == 1:  # impacts: a few short, decaying spikes
        for _ in range(rng.integers(1, 4)):
            start = rng.integers(0, WINDOW - 3)
            height = rng.uniform(1.0, 2.5) * rng.choice((-1.0, 1.0))
            axis = rng.integers(AXES)
            window[start:start + 3, axis] += height * np.array([1.0, -0.6, 0.3])
    else:            # rubbing: broadband noise
        window += rng.normal(0.0, rng.uniform(0.15, 0.3), size=window.shape)


def build_model():
    import keras
    return keras.Sequential([
        keras.Input((WINDOW, AXES), name="accel"),
        keras.layers.Flatten(),
        keras.layers.Dense(32, activation="relu"),
        keras.layers.Dense(16, activation="relu"),
        keras.layers.Dense(len(CLASSES), name="logits"),
    ], name="vibration_anomaly")


def train_example(out_dir: str | Path, seed: int = 0) -> dict[str, Path]:
    """Make the data, train, and save model.keras, calib.npy and eval.npz. Same seed, same files."""
    import keras
    import tensorflow as tf

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    x_train, y_train = make_windows(TRAIN_WINDOWS, rng)
    x_eval, y_eval = make_windows(EVAL_WINDOWS, rng)

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    model = build_model()
    model.compile(optimizer=keras.optimizers.Adam(3e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=EPOCHS, batch_size=64, shuffle=True, verbose=0)

    paths = {"model": out_dir / "model.keras", "calib": out_dir / "calib.npy", "eval": out_dir / "eval.npz"}
    model.save(paths["model"])
    # Calibration windows come from the training distribution, healthy and faulty alike,
    # so the int8 ranges cover what the device will see.
    np.save(paths["calib"], x_train[:CALIB_WINDOWS])
    np.savez(paths["eval"], x=x_eval, y=y_eval)
    return paths


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python examples/vibration_anomaly/train.py OUT_DIR", file=sys.stderr)
        return 2
    paths = train_example(argv[0])
    for kind, path in paths.items():
        print(f"{kind:6s} {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
