"""obliviate: machine unlearning for large language models.

The public API is imported lazily so that `import obliviate` (and the CLI's --help) does not pay for torch."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
_API = ("build", "evaluate", "forget", "load_scenario", "unlearn")
__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        from obliviate import api

        return getattr(api, name)
    raise AttributeError(f"module 'obliviate' has no attribute {name!r}")
