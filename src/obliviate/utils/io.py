"""Output locations and atomic outputs.

Before any work, `check_output_dir` / `claim_output` make sure the output can be written where asked (not a file,
not read-only, not inside an input model, not held by another run), so a long run never fails at its end. Results
are then written to a temporary sibling and moved into place when complete, so a crash or a bad input never leaves
a half-written file or directory behind."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from obliviate.errors import OutputError, OutputExistsError


def check_output_dir(path: str | os.PathLike[str], overwrite: bool, *, inputs: Sequence[Any] = (),
                     reuse: bool = False) -> Path:
    """Refuse an output location that cannot be used, before any work is done: a file in the way, a location that
    cannot be written, a directory inside (or holding) one of the `inputs` (model directories, never modified), or
    an existing non-empty directory without `overwrite` (`reuse`: an existing directory is resumed into, e.g. a
    benchmark's)."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise OutputExistsError(f"--out {p} exists and is a file, not a directory; choose another --out")
    _check_inputs(p, inputs, overwrite)
    if p.exists() and any(p.iterdir()) and not (overwrite or reuse):
        raise OutputExistsError(f"--out {p} already exists; pass --overwrite to replace it, or choose another --out")
    check_writable(p)
    return p


def _check_inputs(out: Path, inputs: Sequence[Any], overwrite: bool) -> None:
    o = out.resolve()
    for inp in inputs:
        if not isinstance(inp, (str, os.PathLike)) or not (Path(inp) / "config.json").is_file():
            continue  # a hub id, an in-memory model, not a model directory: nothing on disk to protect
        i = Path(inp).resolve()
        if o == i or i in o.parents:
            raise OutputError(f"--out {out} is inside the input model {inp}, which is never modified; choose an --out "
                              f"outside it")
        if o in i.parents and overwrite:
            raise OutputError(f"--out {out} holds the input model {inp}; --overwrite would delete it: choose another "
                              f"--out")


def check_writable(path: str | os.PathLike[str]) -> None:
    """The nearest existing ancestor of `path` (or `path` itself) must be a directory this process can create
    entries in: checked with os.access and by creating and removing a probe file (os.access alone is wrong for
    root, ACLs and read-only mounts)."""
    p = Path(path).absolute()
    base = p if p.exists() else next((a for a in p.parents if a.exists()), Path("/"))
    if not base.is_dir():
        raise OutputError(f"--out {path}: {base} is a file, not a directory; choose another --out")
    problem = None if os.access(base, os.W_OK | os.X_OK) else "permission denied"
    if problem is None:
        try:
            fd, probe = tempfile.mkstemp(prefix=".obliviate-probe-", dir=base)
            os.close(fd)
            os.unlink(probe)
        except OSError as e:
            problem = os.strerror(e.errno) if e.errno else str(e)
    if problem is not None:
        where = "" if base == p else f" (its first existing folder, {base})"
        raise OutputError(f"--out {path}: cannot write there{where}: {problem.lower()}; choose a writable --out")


@contextlib.contextmanager
def claim_output(path: str | os.PathLike[str], overwrite: bool = False, *, inputs: Sequence[Any] = (),
                 reuse: bool = False, lock: bool = True) -> Iterator[Path]:
    """`check_output_dir`, then hold an exclusive lock on the output location for the body (`.<name>.lock` beside
    it, fcntl.flock): a second run on the same output fails at once, naming the process that holds it. The lock
    dies with its process (kill -9 included); the file is removed on release. `lock=False` (the non-main
    processes of a multi-process run) only checks."""
    p = check_output_dir(path, overwrite, inputs=inputs, reuse=reuse)
    if not lock:
        yield p
        return
    with output_lock(p):
        yield p


def lock_path(out: Path) -> Path:
    return out.parent / f".{out.name}.lock"


@contextlib.contextmanager
def output_lock(out: Path) -> Iterator[None]:
    import fcntl

    lp = lock_path(out)
    lp.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(lp, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            raise OutputError(f"--out {out} is in use by another run ({_holder(lp)}); wait for it to finish or "
                              f"choose another --out") from None
        try:  # the holder before us may have removed the file after we opened it: lock the file that is there
            same = os.path.samestat(os.fstat(fd), os.stat(lp))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n{_command()}\n".encode())
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lp)  # removed while still locked, so no other process can hold this file's lock
        os.close(fd)


def _command() -> str:
    """The holder's program and subcommand (`obliviate unlearn`); not its arguments, which may name private
    targets."""
    sub = next((a for a in sys.argv[1:] if not a.startswith("-")), "")
    return f"{Path(sys.argv[0]).name} {sub}".strip()


def _holder(lock_file: Path) -> str:
    try:
        pid, _, command = lock_file.read_text(encoding="utf-8", errors="replace").partition("\n")
    except OSError:
        return "unknown process"
    command = command.strip()
    return f"pid {pid.strip() or '?'}" + (f": {command[:120]}" if command else "")


_SWAP_TRIES = 20


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str], overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory next to `path`; on success it replaces `path`, on error it is removed.

    Several processes may finish the same `path` at once (sweep workers filling one cache entry): with `overwrite`
    the last one to arrive wins, and none fails because another's directory appeared or left between its check and
    its rename; without it, a directory that appears meanwhile is refused as an existing output."""
    final = check_output_dir(path, overwrite)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield tmp
        for _ in range(_SWAP_TRIES):
            check_output_dir(final, overwrite)  # without overwrite: one that appeared meanwhile is refused
            try:
                _swap_in(tmp, final)
                return
            except OSError as e:  # another writer moved `final` in or out between the check and the rename
                if e.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT):
                    raise
        raise OutputError(f"{final}: other processes kept replacing it ({_SWAP_TRIES} tries); run again")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _swap_in(tmp: Path, final: Path) -> None:
    """Rename `tmp` to `final`, moving an existing `final` aside first (and deleting it)."""
    if not final.exists():
        os.replace(tmp, final)  # ENOTEMPTY / EEXIST: another writer's directory arrived first
        return
    trash = final.with_name(f".{final.name}.old-{os.getpid()}")
    shutil.rmtree(trash, ignore_errors=True)
    os.replace(final, trash)  # ENOENT: another writer moved it aside first
    try:
        os.replace(tmp, final)
    finally:
        shutil.rmtree(trash, ignore_errors=True)


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
