"""Atomic outputs: results are written to a temporary sibling and moved into place when complete, so a
crash or a bad input never leaves a half-written file or directory behind."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from obliviate.errors import OutputExistsError


def check_output_dir(path: str | os.PathLike[str], overwrite: bool) -> Path:
    """Refuse an existing, non-empty output directory unless `overwrite`; call before any work is done."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise OutputExistsError(f"{p} exists and is not a directory; choose another --out")
    if p.exists() and any(p.iterdir()) and not overwrite:
        raise OutputExistsError(f"{p} already exists; pass --overwrite to replace it, or choose another --out")
    return p


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str], overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory next to `path`; on success it replaces `path`, on error it is removed."""
    final = check_output_dir(path, overwrite)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        trash = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, trash)
        os.replace(tmp, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, final)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", dir=p.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, (set, tuple)):
        return list(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_json(path: str | os.PathLike[str]) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def cache_root() -> Path:
    """Where built models and cached model passes live (`OBLIVIATE_CACHE`, default ~/.cache/obliviate)."""
    root = os.environ.get("OBLIVIATE_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "obliviate"
