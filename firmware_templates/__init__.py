"""Jinja templates for firmware projects, one folder per RTOS (and the host harness)."""
from pathlib import Path

TEMPLATES_DIR = Path(__file__).resolve().parent
