"""obliviate: machine unlearning for large language models."""

from __future__ import annotations

__version__ = "0.1.0"

from obliviate.api import build, evaluate, load_scenario  # noqa: E402

__all__ = ["__version__", "build", "evaluate", "load_scenario"]
