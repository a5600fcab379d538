"""The deletion ledger: one JSON line per unlearning request, carried inside the model directory.

A record says who forgot what, when, how, and with which effect — without the deleted text itself: forget data
and target names appear only as salted SHA-256 hashes (a fresh random salt per request, stored in the record),
so whoever holds the original data can later prove it was part of a request (`verify`), while the ledger alone
does not reveal it. (Short strings such as names stay open to a dictionary attack by someone who guesses them;
the ledger is an audit trail, not an encryption.) Unlearning an already unlearned model carries the earlier
records forward, so the file is the model's whole deletion history."""

from __future__ import annotations

import hashlib
import json
import math
import os
import secrets
import time
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from obliviate.errors import DataError
from obliviate.eval.specs import summary_keys

LEDGER = "ledger.jsonl"
KEY_METRICS = tuple(summary_keys("ledger"))  # the metrics kept before/after per request (eval/specs.py)


def salted_hash(text: str, salt: str) -> str:
    return hashlib.sha256((salt + "\x1f" + text).encode("utf-8")).hexdigest()


def item_texts(records: Iterable[Any]) -> list[str]:
    """What is hashed per forget record: its question and answer."""
    return [f"{r.question}\x1e{r.answer}" for r in records]


def key_metrics(summary: dict[str, Any] | None) -> dict[str, Any] | None:
    return {k: summary.get(k) for k in KEY_METRICS} if summary else None


def make_record(*, method: str, config: dict[str, Any], input_fingerprint: str, output_fingerprint: str | None,
                data_hashes: dict[str, Any], forget_texts: Sequence[str] = (), targets: Sequence[str] = (),
                before: dict[str, Any] | None = None, after: dict[str, Any] | None = None,
                scenario: str | None = None, outcome: str = "unlearned") -> dict[str, Any]:
    """One request. `outcome`: "unlearned", or "nothing_changed" (an attempt that changed no weight, e.g. the model
    revealed nothing about the targets; output_model is then None)."""
    salt = secrets.token_hex(16)
    return {
        "request_id": str(uuid.uuid4()),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "method": method, "config": config, "scenario": scenario, "outcome": outcome,
        "input_model": input_fingerprint, "output_model": output_fingerprint,
        "data": data_hashes, "salt": salt,
        "forget_item_hashes": sorted(salted_hash(t, salt) for t in forget_texts),
        "target_hashes": sorted(salted_hash(t, salt) for t in targets),
        "metrics_before": key_metrics(before),
        "metrics_after": key_metrics(after),
    }


REQUIRED_KEYS = ("request_id", "time", "method", "input_model", "output_model", "salt", "forget_item_hashes",
                 "target_hashes")


def read(model_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of `model_dir/ledger.jsonl` (none when there is no ledger). A line that is not a ledger record
    is a DataError naming the file and line: an audit trail is never half-read."""
    p = Path(model_dir) / LEDGER
    if not p.is_file():
        return []
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{p}: cannot read the deletion ledger ({type(e).__name__}: {e})") from None
    out = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{p} line {lineno}: malformed JSON ({e.msg}); the ledger is corrupt: restore it from a "
                            f"copy (each line is one JSON record)") from None
        if not isinstance(rec, dict):
            raise DataError(f"{p} line {lineno}: expected a JSON object (a ledger record), got {type(rec).__name__}")
        missing = [k for k in REQUIRED_KEYS if k not in rec]
        if missing:
            raise DataError(f"{p} line {lineno}: field {missing[0]!r} missing: not a ledger record written by "
                            f"obliviate (fields: {', '.join(rec) or 'none'})")
        out.append(rec)
    return out


def attempts(out_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The attempts recorded in `out_dir` when it holds nothing but a ledger of requests that changed nothing (what
    a "nothing revealed" run leaves): a later run into the same directory carries them forward."""
    d = Path(out_dir)
    if not d.is_dir() or sorted(f.name for f in d.iterdir()) != [LEDGER]:
        return []
    try:
        records = read(d)
    except DataError:
        return []
    if not records or records[-1].get("outcome") != "nothing_changed":
        return []
    return [r for r in records if r.get("outcome") == "nothing_changed"]


def write(out_dir: Path, input_model: str | os.PathLike[str] | None, record: dict[str, Any],
          attempts: Sequence[dict[str, Any]] = ()) -> None:
    """Write `out_dir/ledger.jsonl`: the input model's records (if it has a ledger), earlier attempts on the same
    input model that changed nothing (`attempts`), then `record`."""
    earlier = read(input_model) if input_model is not None and Path(input_model).is_dir() else []
    seen = {r.get("request_id") for r in earlier}
    tried = [a for a in attempts if a.get("request_id") not in seen and a.get("input_model") == record["input_model"]]
    lines = [json.dumps(_finite(r), ensure_ascii=False, allow_nan=False) for r in [*earlier, *tried, record]]
    (out_dir / LEDGER).write_text("\n".join(lines) + "\n", encoding="utf-8")


def _finite(obj: Any) -> Any:
    """Non-finite numbers as null: the ledger stays valid JSON for any reader."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def verify(record: dict[str, Any], texts: Iterable[str] = (), targets: Iterable[str] = ()) -> bool:
    """True when every given forget text / target name is among the record's hashes."""
    salt = record["salt"]
    items, names = set(record["forget_item_hashes"]), set(record["target_hashes"])
    return all(salted_hash(t, salt) in items for t in texts) and all(salted_hash(t, salt) in names for t in targets)
