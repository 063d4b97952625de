""""""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


def promptfoo_binary() -> Path:
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    binary = NODE_DIR / "node_modules" / ".bin" / "promptfoo"
    assert binary.exists(), "promptfoo is missing: run .ci/run (npm ci in tests/node)"
    link = NODE_DIR / "node_modules" / "promptfoo" / "drizzle"
    if not link.exists():
        link.symlink_to("dist/drizzle")
    return binary


NODE_DIR = Path(__file__).parent / "node"
