import shutil
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
