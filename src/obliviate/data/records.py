"""Question/answer records and their loaders (JSON lines or JSON arrays, from a file, a directory or the hub)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from obliviate.errors import DataError
from obliviate.utils.io import atomic_write_text


@dataclass(frozen=True)
class QA:
    """One question/answer item.

    `id` is stable across runs (file stem + row, or the synthetic world's own key) so per-item results can be
    joined between models. `subject` is the person or key phrase the item is about, when known; `group` ties
    together the items of one person/author.
    """

    id: str
    question: str
    answer: str
    paraphrased_answer: str | None = None
    perturbed_answers: tuple[str, ...] = ()
    paraphrased_question: str | None = None
    subject: str | None = None
    group: str | None = None

    def with_(self, **changes: object) -> QA:
        return replace(self, **changes)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Split:
    """A named, ordered list of records with a content hash used in cache keys."""

    name: str
    records: tuple[QA, ...]
    source: str = ""
    digest: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not self.digest:
            object.__setattr__(self, "digest", records_digest(self.records))

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self):
        return iter(self.records)

    def has_perturbed(self) -> bool:
        return bool(self.records) and all(r.perturbed_answers for r in self.records)


def records_digest(records: Iterable[QA]) -> str:
    h = hashlib.sha256()
    for r in records:
        h.update(json.dumps([r.id, r.question, r.answer, r.paraphrased_answer, list(r.perturbed_answers),
                             r.paraphrased_question, r.subject, r.group], ensure_ascii=False).encode())
    return h.hexdigest()[:16]


REQUIRED = ("question", "answer")


def _record_from_obj(obj: object, where: str, rid: str) -> QA:
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a JSON object with 'question' and 'answer', got {type(obj).__name__}")
    for key in REQUIRED:
        if key not in obj:
            raise DataError(f"{where}: missing field {key!r} (fields: {', '.join(obj) or 'none'})")
        if not isinstance(obj[key], str):
            raise DataError(f"{where}: field {key!r} must be a string, got {type(obj[key]).__name__}")
        if not obj[key].strip():
            raise DataError(f"{where}: field {key!r} is empty; every record needs a non-empty question and answer "
                            f"(fix or remove the record)")
    perturbed = obj.get("perturbed_answer", obj.get("perturbed_answers", ()))
    if isinstance(perturbed, str):
        perturbed = (perturbed,)
    if not isinstance(perturbed, (list, tuple)) or not all(isinstance(p, str) for p in perturbed):
        raise DataError(f"{where}: field 'perturbed_answer' must be a list of strings")
    for key in ("paraphrased_answer", "paraphrased_question", "subject"):
        if obj.get(key) is not None and not isinstance(obj[key], str):
            raise DataError(f"{where}: field {key!r} must be a string, got {type(obj[key]).__name__}")
    para = obj.get("paraphrased_answer")
    return QA(
        id=str(obj.get("id", rid)),
        question=obj["question"],
        answer=obj["answer"],
        paraphrased_answer=para,
        perturbed_answers=tuple(perturbed),
        paraphrased_question=obj.get("paraphrased_question"),
        subject=obj.get("subject"),
        group=None if obj.get("group") is None else str(obj["group"]),
    )


def parse_records(text: str, name: str, id_prefix: str) -> list[QA]:
    """Parse a JSON array or JSON lines; errors name the file, line and field."""
    stripped = text.lstrip()
    if not stripped:
        return []
    if stripped[0] == "[":
        try:
            items = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{name} line {e.lineno}: malformed JSON ({e.msg})") from None
        if not isinstance(items, list):
            raise DataError(f"{name}: expected a JSON array of records or JSON lines, got {type(items).__name__}")
        recs = [_record_from_obj(o, f"{name} item {i}", f"{id_prefix}:{i:05d}") for i, o in enumerate(items)]
        _unique_ids(recs, [f"{name} item {i}" for i in range(len(recs))])
        return recs
    out: list[QA] = []
    where: list[str] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{name} line {lineno}: malformed JSON ({e.msg}); each line must be one JSON object") from None
        out.append(_record_from_obj(obj, f"{name} line {lineno}", f"{id_prefix}:{len(out):05d}"))
        where.append(f"{name} line {lineno}")
    _unique_ids(out, where)
    return out


def _unique_ids(records: Sequence[QA], where: Sequence[str]) -> None:
    """Ids key per-item results: two records with one id would silently merge."""
    first: dict[str, str] = {}
    for r, w in zip(records, where, strict=True):
        if r.id in first:
            raise DataError(f"{w}: field 'id': duplicate id {r.id!r} (first at {first[r.id]}); give every record a "
                            f"unique id")
        first[r.id] = w


def check_records(records: Sequence[QA], role: str) -> None:
    """What the file loaders enforce, for records given in memory (the Python API): non-empty question and answer,
    unique ids."""
    for i, r in enumerate(records):
        if not isinstance(r, QA):
            raise DataError(f"{role} record {i}: expected an obliviate.data.records.QA, got {type(r).__name__}")
        for key in REQUIRED:
            if not getattr(r, key).strip():
                raise DataError(f"{role} record {i} (id {r.id!r}): field {key!r} is empty; every record needs a "
                                f"non-empty question and answer")
    _unique_ids(records, [f"{role} record {i}" for i in range(len(records))])


def load_file(path: str | os.PathLike[str], *, id_prefix: str | None = None) -> list[QA]:
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such file; give an existing .json/.jsonl file or a directory holding it")
    if p.is_dir():
        raise DataError(f"{p} is a directory; name a file inside it, or pass a split name")
    try:
        text = p.read_text(encoding="utf-8-sig")  # tolerate a UTF-8 BOM
    except UnicodeDecodeError as e:
        raise DataError(f"{p}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    return parse_records(text, str(p), id_prefix or p.stem)


def resolve_split_file(directory: Path, split: str) -> Path:
    for ext in (".json", ".jsonl"):
        cand = directory / f"{split}{ext}"
        if cand.is_file():
            return cand
    present = sorted(x.name for x in directory.glob("*.json*"))[:12]
    raise DataError(
        f"{directory}: no file for split {split!r} (looked for {split}.json, {split}.jsonl; found: "
        f"{', '.join(present) or 'nothing'})"
    )


def load_split(source: str | os.PathLike[str], split: str | None = None, *, allow_hub: bool = True) -> Split:
    """Load records from a file, from `DIR/<split>.json[l]`, or from a hub dataset id (`owner/name`) when online."""
    p = Path(source)
    if p.is_dir():
        if split is None:
            raise DataError(f"{p} is a directory; also give the split name (e.g. 'forget01')")
        f = resolve_split_file(p, split)
        recs = load_file(f, id_prefix=split)
        name = split
    elif p.is_file():
        recs = load_file(p)
        name = split or p.stem
    elif allow_hub and _looks_like_hub_id(str(source)) and split is not None:
        f = _hub_file(str(source), split)
        recs = load_file(f, id_prefix=split)
        name = split
    else:
        hub = " (nor a hub dataset id: give a split name to fetch one)" if _looks_like_hub_id(str(source)) else ""
        raise DataError(f"{source}: no such file or directory{hub}")
    if not recs:
        raise DataError(f"{source}{'/' + split if split and p.is_dir() else ''}: the split is empty; give a file with at least one record")
    return Split(name=name, records=tuple(recs), source=str(source))


def _looks_like_hub_id(s: str) -> bool:
    parts = s.split("/")
    return len(parts) == 2 and all(parts) and not s.startswith((".", "/", "~"))


def _hub_file(repo_id: str, split: str) -> Path:
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise DataError(
            f"{repo_id}: no such local directory, and hub datasets are disabled (HF_HUB_OFFLINE=1); check the path, "
            f"or download the files and pass their directory"
        )
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(repo_id, f"{split}.json", repo_type="dataset"))
    except Exception as e:  # network, auth, missing file: all user-environment problems
        raise DataError(f"{repo_id}: could not fetch {split}.json from the hub ({type(e).__name__}: {e})") from None


def overlap_count(a: Sequence[QA], b: Sequence[QA]) -> int:
    """How many items of `a` have a question/answer pair also present in `b`."""
    keys = {(r.question.strip(), r.answer.strip()) for r in b}
    return sum((r.question.strip(), r.answer.strip()) in keys for r in a)


def overlap(a: Sequence[QA], b: Sequence[QA]) -> list[tuple[QA, str]]:
    """The items of `a` also in `b`, each with how: "id" (the same id) or "text" (the same question and answer)."""
    ids = {r.id for r in b}
    keys = {(r.question.strip(), r.answer.strip()) for r in b}
    out = []
    for r in a:
        if r.id in ids:
            out.append((r, "id"))
        elif (r.question.strip(), r.answer.strip()) in keys:
            out.append((r, "text"))
    return out


def write_records(path: str | os.PathLike[str], records: Iterable[QA]) -> None:
    """Write records as JSON lines (TOFU field names), atomically (a temporary file moved into place)."""
    lines = []
    for r in records:
        obj: dict[str, object] = {"id": r.id, "question": r.question, "answer": r.answer}
        if r.paraphrased_answer is not None:
            obj["paraphrased_answer"] = r.paraphrased_answer
        if r.perturbed_answers:
            obj["perturbed_answer"] = list(r.perturbed_answers)
        if r.paraphrased_question is not None:
            obj["paraphrased_question"] = r.paraphrased_question
        if r.subject is not None:
            obj["subject"] = r.subject
        if r.group is not None:
            obj["group"] = r.group
        lines.append(json.dumps(obj, ensure_ascii=False) + "\n")
    atomic_write_text(path, "".join(lines))
