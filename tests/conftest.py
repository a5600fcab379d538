"""Shared fixtures. Keep this small: only what several test files need."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def tofu_dir_or_none() -> Path | None:
    """The real TOFU files ($OBLIVIATE_TOFU_DIR, else <repo>/../shared/data/tofu), None when absent."""
    d = Path(os.environ.get("OBLIVIATE_TOFU_DIR", REPO.parent / "shared" / "data" / "tofu"))
    return d if (d / "full.json").is_file() else None


@pytest.fixture(scope="session")
def tofu_dir(tofu_dir_or_none) -> Path:
    """The real TOFU files; skips when absent."""
    if tofu_dir_or_none is None:
        pytest.skip("real TOFU data not found (set OBLIVIATE_TOFU_DIR to the folder holding full.json)")
    return tofu_dir_or_none


@pytest.fixture
def cli(monkeypatch, capsys):
    """Run the `obliviate` console entry point in-process: `cli("eval", ...) -> (exit code, stdout, stderr)`."""
    import sys

    from obliviate.cli import run

    def invoke(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["obliviate", *args])
        code = 0
        try:
            run()
        except SystemExit as e:
            code = int(e.code or 0)
        cap = capsys.readouterr()
        return code, cap.out, cap.err

    return invoke
