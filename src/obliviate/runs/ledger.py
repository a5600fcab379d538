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
import os
import secrets
import time
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from obliviate.eval.specs import summary_keys

LEDGER = "ledger.jsonl"
KEY_METRICS = tuple(summary_keys("ledger"))  # the metrics kept before/after per request (eval/specs.py)


def salted_hash(text: str, salt: str) -> str:
    return hashlib.sha256((salt + "\x1f" + text).encode("utf-8")).hexdigest()


def item_texts(records: Iterable[Any]) -> list[str]:
    """What is hashed per forget record: its question and answer."""
    return [f"{r.question}\x1e{r.answer}" for r in records]


def make_record(*, method: str, config: dict[str, Any], input_fingerprint: str, output_fingerprint: str,
                data_hashes: dict[str, Any], forget_texts: Sequence[str] = (), targets: Sequence[str] = (),
                before: dict[str, Any] | None = None, after: dict[str, Any] | None = None,
                scenario: str | None = None) -> dict[str, Any]:
    salt = secrets.token_hex(16)
    return {
        "request_id": str(uuid.uuid4()),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "method": method, "config": config, "scenario": scenario,
        "input_model": input_fingerprint, "output_model": output_fingerprint,
        "data": data_hashes, "salt": salt,
        "forget_item_hashes": sorted(salted_hash(t, salt) for t in forget_texts),
        "target_hashes": sorted(salted_hash(t, salt) for t in targets),
        "metrics_before": {k: (before or {}).get(k) for k in KEY_METRICS} if before else None,
        "metrics_after": {k: (after or {}).get(k) for k in KEY_METRICS} if after else None,
    }


def read(model_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    p = Path(model_dir) / LEDGER
    if not p.is_file():
        return []
    return [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]


def write(out_dir: Path, input_model: str | os.PathLike[str] | None, record: dict[str, Any]) -> None:
    """Write `out_dir/ledger.jsonl`: the input model's records (if it has a ledger) followed by `record`."""
    earlier = read(input_model) if input_model is not None and Path(input_model).is_dir() else []
    lines = [json.dumps(r, ensure_ascii=False) for r in [*earlier, record]]
    (out_dir / LEDGER).write_text("\n".join(lines) + "\n", encoding="utf-8")


def verify(record: dict[str, Any], texts: Iterable[str] = (), targets: Iterable[str] = ()) -> bool:
    """True when every given forget text / target name is among the record's hashes."""
    salt = record["salt"]
    items, names = set(record["forget_item_hashes"]), set(record["target_hashes"])
    return all(salted_hash(t, salt) in items for t in texts) and all(salted_hash(t, salt) in names for t in targets)
