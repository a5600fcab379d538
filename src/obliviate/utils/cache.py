"""One on-disk cache for everything computed from a model: model passes, edit statistics, builds.

A `Cache` is a keyed store under `cache_root()/<namespace>/`. Every entry's key is made by `cache_key` from
(kind, model fingerprint, inputs, params), so a result can never be served for another model, other inputs or other
settings. Entries are written to a temporary sibling and moved into place (a crash or two processes filling the
cache at once never leave a half-written entry), and an entry that cannot be read is recomputed, never trusted.

    cache = Cache("passes")
    key = cache_key("logprob", fingerprint(model), token_ids, {"v": 1})
    stats = cache.get(key, NPZ, lambda: compute(...))

Files live at `<root>/<namespace>/<model fingerprint>/<kind>-<hash><suffix>`: one folder per model, so the
entries of a model no longer needed can be deleted together."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np
import torch

from obliviate.utils.hashing import stable_hash
from obliviate.utils.io import atomic_dir, cache_root

log = logging.getLogger(__name__)
T = TypeVar("T")
_SAFE = re.compile(r"[A-Za-z0-9_.=+-]+")
NO_MODEL = "_"  # the folder of entries that depend on no model


def cache_key(kind: str, model_fp: str | None, inputs: Any = None, params: Any = None, length: int = 20) -> str:
    """`<model_fp>/<kind>-<stable hash of (kind, inputs, params)>`. `inputs` and `params` must be
    JSON-serialisable (token ids, settings); pass a digest of large inputs (e.g. `stable_hash(ids)`)."""
    fp = model_fp or NO_MODEL
    for what, s in (("kind", kind), ("model fingerprint", fp)):
        if not _SAFE.fullmatch(s):
            raise ValueError(f"cache {what} {s!r} must be letters, digits and _.=+- only (it names a file)")
    return f"{fp}/{kind}-{stable_hash([kind, inputs, params], length)}"


@dataclass(frozen=True)
class Codec(Generic[T]):
    """How a value goes to and comes from one file. `read` raises on a corrupt or foreign file."""

    suffix: str
    write: Callable[[Path, T], None]
    read: Callable[[Path], T]


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as f:  # a file object: np.savez would append ".npz" to a path without it
        np.savez(f, **arrays)


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


NPZ: Codec[dict[str, np.ndarray]] = Codec(".npz", _write_npz, _read_npz)
TORCH: Codec[Any] = Codec(".pt", lambda p, v: torch.save(v, p),
                          lambda p: torch.load(p, map_location="cpu", weights_only=True))
JSON: Codec[Any] = Codec(".json", lambda p, v: p.write_text(json.dumps(v), encoding="utf-8"), _read_json)


class Cache:
    """A keyed store of files (and directories) under `<root>/<namespace>/`; `enabled=False` stores nothing and
    finds nothing, so callers need no second code path."""

    def __init__(self, namespace: str, root: str | os.PathLike[str] | None = None, enabled: bool = True) -> None:
        if not _SAFE.fullmatch(namespace):
            raise ValueError(f"cache namespace {namespace!r} must be letters, digits and _.=+- only")
        self.namespace = namespace
        self._root = Path(root) if root is not None else None
        self.enabled = enabled

    @property
    def root(self) -> Path:
        """Resolved on use, so OBLIVIATE_CACHE set after construction (tests, subprocesses) is honoured."""
        return self._root if self._root is not None else cache_root() / self.namespace

    def path(self, key: str, codec: Codec[Any]) -> Path:
        return self.root / f"{key}{codec.suffix}"

    def load(self, key: str, codec: Codec[T]) -> T | None:
        """The stored value, or None when there is none (or the cache is disabled, or the entry is unreadable)."""
        p = self.path(key, codec)
        if not (self.enabled and p.is_file()):
            return None
        try:
            return codec.read(p)
        except Exception as e:  # a corrupt entry is recomputed, never trusted
            log.warning("ignoring unreadable cache entry %s (%s)", p, type(e).__name__)
            return None

    def save(self, key: str, value: T, codec: Codec[T]) -> None:
        if not self.enabled:
            return
        final = self.path(key, codec)
        final.parent.mkdir(parents=True, exist_ok=True)
        # A unique temporary name: two processes may fill the same entry at once; the last move wins, whole.
        fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=f".tmp{codec.suffix}", dir=final.parent)
        os.close(fd)
        try:
            codec.write(Path(tmp), value)
            os.replace(tmp, final)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def get(self, key: str, codec: Codec[T], compute: Callable[[], T]) -> T:
        """The stored value, else `compute()` stored and returned."""
        value = self.load(key, codec)
        if value is None:
            value = compute()
            self.save(key, value, codec)
        return value

    # ---------------------------------------------------------------------------------------- directory entries

    def dir_path(self, key: str) -> Path:
        return self.root / key

    def has_dir(self, key: str, marker: str) -> bool:
        """A directory entry is complete when its `marker` file exists (written last, inside `write_dir`)."""
        return self.enabled and (self.dir_path(key) / marker).is_file()

    @contextlib.contextmanager
    def write_dir(self, key: str) -> Iterator[Path]:
        """A temporary directory that becomes the entry when the body succeeds (and is removed when it fails)."""
        with atomic_dir(self.dir_path(key), overwrite=True) as tmp:
            yield tmp

    @contextlib.contextmanager
    def computing(self, key: str) -> Iterator[None]:
        """Hold the entry's lock while checking for it and computing it, so two processes asking for the same
        costly entry (a model build, a base conversion) compute it once: the second waits, then finds it."""
        with exclusive(self.dir_path(key)):
            yield


@contextlib.contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """A blocking exclusive lock (fcntl.flock) on `.NAME.lock` beside `path`; released on exit or process death."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# ---------------------------------------------------------------------------------------------- purge

# Every namespace this library writes under the cache root, and what it holds. Purging touches only these, so a
# cache root pointed at a shared folder (OBLIVIATE_CACHE=~) never loses anything else.
NAMESPACES: dict[str, str] = {
    "passes": "model passes: per-token log-probs, and greedy generations (as token ids) of the non-forget sets",
    "edit_stats": "key statistics of edited layers (UniErase/AlphaEdit), from general text",
    "builds": "the offline target and retain models, trained on the scenario's data (forget set included)",
    "bases": "base models converted from .gguf files",
    "evals": "reference evaluations (retain and target models) made by `obliviate sweep`, shared by every sweep: "
             "per-item metric values, no generated text",
}
KEYED_BY_MODEL = ("passes", "edit_stats")  # `<namespace>/<model fingerprint>/...`


@dataclass(frozen=True)
class Purged:
    path: Path
    bytes: int


def purge(model_fingerprint: str | None = None, root: str | os.PathLike[str] | None = None) -> list[Purged]:
    """Delete cached data: everything this library stored under the cache root, or, given a model's fingerprint,
    only the entries computed from that model (its folder in each model-keyed namespace). Returns what was
    removed, with sizes."""
    base = Path(root) if root is not None else cache_root()
    if model_fingerprint is not None and not _SAFE.fullmatch(model_fingerprint):
        raise ValueError(f"model fingerprint {model_fingerprint!r} must be letters, digits and _.=+- only")
    targets = ([base / ns / model_fingerprint for ns in KEYED_BY_MODEL] if model_fingerprint is not None
               else [base / ns for ns in NAMESPACES])
    removed = []
    for t in targets:
        if not t.exists():
            continue
        size = sum(f.stat().st_size for f in t.rglob("*") if f.is_file()) if t.is_dir() else t.stat().st_size
        if t.is_dir():
            shutil.rmtree(t)
        else:
            t.unlink()
        removed.append(Purged(t, size))
    return removed
