"""Shared fixtures. Keep this small: only what several test files need."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def tofu_dir() -> Path:
    """The real TOFU files ($OBLIVIATE_TOFU_DIR, else <repo>/../shared/data/tofu); skips when absent."""
    d = Path(os.environ.get("OBLIVIATE_TOFU_DIR", REPO.parent / "shared" / "data" / "tofu"))
    if not (d / "full.json").is_file():
        pytest.skip(f"real TOFU data not found at {d} (set OBLIVIATE_TOFU_DIR to the folder holding full.json)")
    return d
