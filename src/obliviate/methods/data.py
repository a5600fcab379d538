"""The data an unlearning run trains on, as named views, and the field's forget/retain pairing.

Views: `forget` (question, true answer), `retain` (question, answer) and `forget_idk` (question, a refusal
written for this project). Each optimiser step takes a forget batch and a retain batch of the same size drawn at
random from the retain set (OpenUnlearning's pairing). The batch order is a pure function of (seed, epoch), so a
resumed run sees exactly the batches an uninterrupted run would."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from obliviate.data.records import QA
from obliviate.data.refusals import GENERIC_REFUSALS, REFUSALS
from obliviate.data.templates import Encoded, Formatter
from obliviate.utils.tensors import pad_batch


def idk_answer(record: QA, index: int) -> str:
    """A refusal for a forget question, naming the subject when it is known (deterministic per item)."""
    if record.subject:
        return REFUSALS[index % len(REFUSALS)].format(name=record.subject)
    return GENERIC_REFUSALS[index % len(GENERIC_REFUSALS)]


@dataclass
class Views:
    """Encoded sequences of every view a method asked for."""

    encoded: dict[str, list[Encoded]]
    pad_id: int

    @classmethod
    def build(cls, views: Sequence[str], forget: Sequence[QA], retain: Sequence[QA], fmt: Formatter,
              aligned: dict[str, Sequence[QA]] | None = None) -> Views:
        """Encode each view; `aligned` views are given as records aligned with the forget set."""
        enc: dict[str, list[Encoded]] = {}
        for v in views:
            if aligned and v in aligned:
                enc[v] = fmt.encode_qa(list(aligned[v]))
            elif v == "forget":
                enc[v] = fmt.encode_qa(list(forget))
            elif v == "retain":
                enc[v] = fmt.encode_qa(list(retain))
            elif v == "forget_idk":
                enc[v] = fmt.encode_many([(r.id, r.question, idk_answer(r, i)) for i, r in enumerate(forget)])
            else:
                raise ValueError(f"unknown data view {v!r}")
        return cls(enc, fmt.tok.pad_token_id)

    def n_answer_tokens(self, view: str, indices: Sequence[int]) -> int:
        """Answer (label) tokens of these items, as the losses count them (positions 1.. whose label is kept)."""
        return sum(sum(lab != -100 for lab in self.encoded[view][i].labels[1:]) for i in indices)

    def collate(self, view: str, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        seqs = [self.encoded[view][i] for i in indices]
        ids, mask, labels = pad_batch([e.input_ids for e in seqs], self.pad_id, labels=[e.labels for e in seqs])
        return {"input_ids": ids, "attention_mask": mask, "labels": labels, "index": torch.tensor(list(indices))}


def epoch_plan(n_forget: int, n_retain: int, batch_size: int, seed: int, epoch: int,
               paired_views: Sequence[str], active: Sequence[int] | None = None,
               lengths: Sequence[int] | None = None, retain_size: int | None = None) -> list[dict[str, list[int]]]:
    """The batches of one epoch: the forget set (or its `active` subset) shuffled and cut into batches; for each,
    a retain batch of the same size (or of `retain_size`) drawn at random (without replacement within the batch).
    Forget-side views share the forget indices. With `lengths` (TrainConfig.batching = length_grouped) the shuffled
    order is cut into chunks of 32 batches, each sorted by length, and the batches are shuffled: as random, with far
    less padding. Deterministic in (seed, epoch, active)."""
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    pool = list(range(n_forget)) if active is None else list(active)
    order = [pool[i] for i in torch.randperm(len(pool), generator=g).tolist()]
    batches = [order[s:s + batch_size] for s in range(0, len(order), batch_size)]
    if lengths is not None:
        chunk = batch_size * 32
        batches = []
        for s in range(0, len(order), chunk):
            part = sorted(order[s:s + chunk], key=lambda i: lengths[i])
            batches += [part[j:j + batch_size] for j in range(0, len(part), batch_size)]
        batches = [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]
    plan = []
    for idx in batches:
        step: dict[str, list[int]] = {v: idx for v in paired_views if v != "retain"}
        if "retain" in paired_views:
            n = len(idx) if retain_size is None else retain_size
            step["retain"] = torch.randperm(n_retain, generator=g)[:n].tolist() if n_retain >= n \
                else torch.randint(n_retain, (n,), generator=g).tolist()
        plan.append(step)
    return plan


def rank_share(batch: dict[str, list[int]], rank: int, world: int) -> dict[str, list[int]]:
    """This rank's contiguous share of a (micro-)batch under `world` processes (the same cut for views of the same
    size, each view cut in proportion to its own size); empty where the batch has fewer items than processes. The
    shares of all ranks make up the batch exactly."""
    def cut(idx: list[int]) -> list[int]:
        return idx[round(rank * len(idx) / world):round((rank + 1) * len(idx) / world)]

    return {v: cut(idx) for v, idx in batch.items()}


def split_step(step: dict[str, list[int]], k: int) -> list[dict[str, list[int]]]:
    """Cut one optimiser step's batch into k micro-batches of near-equal size (the same cut for every view; the
    cut `rank_share` makes, the empty parts of a batch smaller than k left out)."""
    parts = (rank_share(step, i, k) for i in range(k))
    return [part for part in parts if next(iter(part.values()))]
