"""The device runtime (pure MicroPython). This file only lets host tools locate it; it is not deployed."""
from pathlib import Path

MODULES_DIR = Path(__file__).resolve().parent
