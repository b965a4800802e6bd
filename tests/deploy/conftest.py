"""Helpers for the deployment tests: run deploy/validate.py on the tree or on a copy of part of it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VALIDATE = ROOT / "deploy" / "validate.py"
CHECKOV = ROOT / ".venv" / "checkov" / "bin" / "checkov"

needs_kubectl = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
needs_terraform = pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform is not installed")
needs_checkov = pytest.mark.skipif(
    not CHECKOV.exists(), reason="checkov is not installed (`make validate` installs it into .venv/checkov)"
)


def run_validate(*checks: str, root: Path = ROOT) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, str(VALIDATE), "--root", str(root), "--only", ",".join(checks)]
    if CHECKOV.exists():
        cmd += ["--checkov", str(CHECKOV)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=240, check=False)


@pytest.fixture
def tree_copy(tmp_path: Path) -> Callable[..., Path]:
    """Copy the named files/folders of the repository into a fresh root and return that root."""

    def copy(*parts: str) -> Path:
        root = tmp_path / "tree"
        for part in parts:
            source = ROOT / part
            target = root / part
            target.parent.mkdir(parents=True, exist_ok=True)
            if source.is_dir():
                shutil.copytree(source, target)
            else:
                shutil.copy2(source, target)
        return root

    return copy
