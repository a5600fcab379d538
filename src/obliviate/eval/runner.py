"""One model's cached passes over the scenario's splits: the only place evaluation touches the model."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cached_property

from obliviate.data.records import QA, Split
from obliviate.data.templates import Encoded, Formatter
from obliviate.eval import metrics as M
from obliviate.eval.passes import (PassCache, Tick, TokenStats, encoded_key, generate_pass, logprob_pass,
                                   prefix_generate_pass)
from obliviate.models.loading import fingerprint


PassProgress = Callable[[str, int, int], None]  # (what the pass does, done, total)


class ModelRunner:
    """Runs and caches the teacher-forced and generation passes of one model.

    Every pass is keyed by (model fingerprint, exact input token ids, parameters), in memory and on disk.
    `progress(description, done, total)`, when set, follows every pass that runs (cached passes run none)."""

    def __init__(self, model, tokenizer, *, template: str = "auto", max_length: int = 512, batch_size: int = 32,
                 gen_batch_size: int = 64, max_new_tokens: int = 200, cache: PassCache | None = None,
                 name: str = "model", progress: PassProgress | None = None, tokenize: str = "separate") -> None:
        self.model = model
        self.tok = tokenizer
        self.fmt = Formatter(tokenizer, template, max_length=max_length, tokenize=tokenize)  # type: ignore[arg-type]
        self.batch_size = batch_size
        self.gen_batch_size = gen_batch_size
        self.max_new_tokens = max_new_tokens
        self.cache = cache or PassCache(enabled=False)
        self.name = name
        self.progress = progress
        self._mem: dict[str, object] = {}

    def _tick(self, what: str, n: int) -> Tick | None:
        if self.progress is None:
            return None
        report, desc = self.progress, f"{self.name}: {what} ({n})"
        return lambda done, total: report(desc, done, total)

    @cached_property
    def fingerprint(self) -> str:
        return fingerprint(self.model)

    @cached_property
    def _pass_id(self) -> str:
        """What pass-cache keys name the model by: its content fingerprint where passes are cached on disk; else
        this runner itself (its in-memory cache lives and dies with it), which spares hashing the weights, e.g. of
        ICU's model mid-training, sharded across processes under FSDP."""
        return self.fingerprint if self.cache.enabled else f"runner-{id(self)}"

    @property
    def pad_id(self) -> int:
        return self.tok.pad_token_id

    # ------------------------------------------------------------------------------------------- encoding

    def encode(self, pairs: Sequence[tuple[str, str, str]]) -> list[Encoded]:
        return self.fmt.encode_many(list(pairs))

    def answer_ids(self, split: Split) -> list[list[int]]:
        """Each record's answer tokens (no EOS) as the model's tokenisation has them: the labelled part of the
        untruncated sequence (`Formatter.split`)."""
        return [ids[b:] for ids, b in self._sequences(split)]

    def _sequences(self, split: Split) -> list[tuple[list[int], int]]:
        """(ids, boundary) of prompt + answer without EOS, untruncated, per record (EL_n's hosts and answers)."""
        return [self.fmt.split(r.question, r.answer, eos=False) for r in split.records]

    def label_texts(self, split: Split) -> list[str]:
        """The labelled tokens of each record's answer (with EOS) decoded, special tokens skipped: the text
        OpenUnlearning's ZLib attack compresses (`extract_target_texts_from_processed_data`)."""
        enc = self.encode([(r.id, r.question, r.answer) for r in split.records])
        return [self.tok.decode(e.input_ids[e.prompt_len:], skip_special_tokens=True) for e in enc]

    # ------------------------------------------------------------------------------------------- passes

    def logprobs(self, pairs: Sequence[tuple[str, str, str]], vocab_stats: bool = False) -> list[TokenStats]:
        """The teacher-forced stats of `pairs`; with `vocab_stats`, also Min-K%++'s μ and σ (a costlier pass). A
        pass that has them serves a request without them."""
        enc = self.encode(pairs)
        inputs = encoded_key(enc)
        full = self.cache.key("logprob", self._pass_id, inputs, {"v": 1})
        keys = [full] if vocab_stats else [full, self.cache.key("logprob", self._pass_id, inputs,
                                                                 {"v": 1, "vocab_stats": False})]
        for key in keys:
            if key in self._mem:
                return self._mem[key]  # type: ignore[return-value]
            stats = self.cache.load_stats(key)
            if stats is not None:
                self._mem[key] = stats
                return stats
        stats = logprob_pass(self.model, enc, self.pad_id, self.batch_size, vocab_stats=vocab_stats,
                             progress=self._tick("scoring answers", len(enc)))
        self.cache.save_stats(keys[-1], stats)
        self._mem[keys[-1]] = stats
        return stats

    def generate_ids(self, prompts: Sequence[Sequence[int]], max_new: int | Sequence[int],
                     persist: bool = True, hosts: Sequence[Sequence[int]] | None = None) -> list[list[int]]:
        """Greedy continuations, cached in memory and (with `persist`) on disk; `persist=False` for private text
        (the forget set's answers), which is then neither stored nor read from the disk cache. With `hosts` (a
        sequence each prompt is a prefix of, and per-prompt limits) the prompts on one host share its prefill
        (`prefix_generate_pass`): the same continuations, under the same cache key."""
        key = self.cache.key("generate", self._pass_id, [list(p) for p in prompts],
                             {"max_new": max_new if isinstance(max_new, int) else list(max_new), "greedy": True})
        if key in self._mem:
            return self._mem[key]  # type: ignore[return-value]
        out = self.cache.load_tokens(key) if persist else None
        if out is None and hosts is not None:
            limits = [max_new] * len(prompts) if isinstance(max_new, int) else list(max_new)
            out = prefix_generate_pass(self.model, prompts, hosts, self.pad_id, self.fmt.eos_id, limits,
                                       self.gen_batch_size, progress=self._tick("generating", len(prompts)))
        if out is None:
            out = generate_pass(self.model, prompts, self.pad_id, self.fmt.eos_id, max_new, self.gen_batch_size,
                                progress=self._tick("generating", len(prompts)))
            if persist:
                self.cache.save_tokens(key, out)
        self._mem[key] = out
        return out

    def split_stats(self, split: Split, vocab_stats: bool = False) -> dict[str, list]:
        """Teacher-forced stats of every answer variant of a split, from ONE batched pass:
        `answer`, `para` (paraphrased answer, or the answer itself where there is none) and `pert` (per item,
        one entry per perturbed answer); Min-K%++'s μ and σ with `vocab_stats`."""
        pairs: list[tuple[str, str, str]] = []
        for r in split.records:
            pairs.append((r.id, r.question, r.answer))
        has_pert = split.has_perturbed()
        if has_pert:
            for r in split.records:
                pairs.append((f"{r.id}#para", r.question, r.paraphrased_answer or r.answer))
                pairs += [(f"{r.id}#pert{k}", r.question, p) for k, p in enumerate(r.perturbed_answers)]
        stats = self.logprobs(pairs, vocab_stats)
        n = len(split)
        out: dict[str, list] = {"answer": stats[:n]}
        if has_pert:
            para, pert, pos = [], [], n
            for r in split.records:
                para.append(stats[pos])
                pert.append(stats[pos + 1: pos + 1 + len(r.perturbed_answers)])
                pos += 1 + len(r.perturbed_answers)
            out["para"], out["pert"] = para, pert
        return out

    def generations(self, split: Split, persist: bool = True) -> list[str]:
        """Greedy answers to the split's questions (stop at EOS, up to max_new_tokens), decoded."""
        prompts = [self.fmt.prompt_ids(r.question) for r in split.records]
        ids = self.generate_ids(prompts, self.max_new_tokens, persist)
        return [self.tok.decode(x, skip_special_tokens=True).strip() for x in ids]

    def _settled_decodes(self, prompts: list[list[int]], limits: list[int], hosts: list[list[int]], cut: list[bool],
                         n: int, persist: bool) -> list[list[int]]:
        """`prefix_generate_pass` with the prompts flagged in `cut` stopped once their OVERLAP_n against the rest of
        their host is settled at 0; cached (memory, and disk with `persist`) under a key of its own, since such
        continuations are not full greedy ones."""
        key = self.cache.key("generate", self._pass_id, prompts,
                             {"max_new": limits, "greedy": True, "el_settled": n, "hosts": hosts, "cut": cut})
        if key in self._mem:
            return self._mem[key]  # type: ignore[return-value]
        out = self.cache.load_tokens(key) if persist else None
        if out is None:
            refs = [h[len(p):] for p, h in zip(prompts, hosts, strict=True)]

            def settled(i: int, toks: list[int]) -> bool:
                return cut[i] and M.overlap_settled(toks, refs[i], n, limits[i])

            out = prefix_generate_pass(self.model, prompts, hosts, self.pad_id, self.fmt.eos_id, limits,
                                       self.gen_batch_size, progress=self._tick("generating", len(prompts)),
                                       settled=settled)
            if persist:
                self.cache.save_tokens(key, out)
        self._mem[key] = out
        return out

    def el_continuations(self, split: Split, n: int, reuse: bool = True, persist: bool = True,
                         share_prefill: bool = True, settle: bool = False) -> list[list[list[int]]]:
        """For EL_n: per item, the greedy continuation from the prompt plus the first t answer tokens, for
        t = 0..T−n−1, each as long as the rest of the answer.

        With `reuse`, continuations share work: where the teacher-forced argmax at answer position t IS the true
        token a_t, greedy decoding from prefix t emits a_t and then sees exactly prefix t+1, so its continuation is
        a_t followed by the continuation from t+1. Only the last prefix and the prefixes whose next token the model
        gets wrong are decoded; for a model that memorised the answer that is one decode instead of T−n.

        With `share_prefill`, the prefixes still decoded (all of them, for a model that does not know the answer)
        are prefixes of one sequence, prompt + answer: it is run through the model once and every prefix decodes
        from that pass (`prefix_generate_pass`) instead of each re-reading its prompt; the continuations are the
        same greedy decodes.

        With `settle` (for EL_n itself), a decode stops as soon as its OVERLAP_n is settled at 0
        (`metrics.overlap_settled`: nothing matched and fewer than n tokens to go, none of which can complete a
        match), so such a continuation may be cut short: EL_n is unchanged, the continuation is not the full one.
        A prefix whose continuation another reuses (the one after a correctly predicted token) is decoded in full,
        since the longer prefix's n-grams reach into it."""
        parts = self._sequences(split)
        answers = [ids[b:] for ids, b in parts]
        correct = [s.correct for s in self.split_stats(split)["answer"]] if reuse else [None] * len(answers)
        prompts, limits, owner, hosts, cut = [], [], [], [], []
        for i, ans in enumerate(answers):
            ids, b = parts[i]
            p = ids[:b]  # the prompt side of the boundary (separate: prompt_ids; joint: the joint string's head)
            last = len(ans) - n - 1
            ok = correct[i] if correct[i] is not None and len(correct[i]) >= len(ans) else None
            for t in range(max(0, len(ans) - n)):
                if ok is None or t == last or not ok[t]:
                    prompts.append(p + ans[:t])
                    limits.append(len(ans) - t)
                    owner.append((i, t))
                    hosts.append(p + ans)
                    cut.append(t == 0 or owner[-2:-1] == [(i, t - 1)])  # prefix t−1 decoded: nothing reuses t
        if not prompts:
            conts = []
        elif settle:
            conts = self._settled_decodes(prompts, limits, hosts, cut, n, persist)
        else:
            conts = self.generate_ids(prompts, limits, persist, hosts=hosts if share_prefill else None)
        decoded = dict(zip(owner, conts, strict=True))
        out: list[list[list[int]]] = []
        for i, ans in enumerate(answers):
            seqs: list[list[int]] = [[] for _ in range(max(0, len(ans) - n))]
            for t in reversed(range(len(seqs))):
                seqs[t] = decoded[(i, t)] if (i, t) in decoded else [ans[t], *seqs[t + 1]]
            out.append(seqs)
        return out


def qa_pairs(records: Sequence[QA]) -> list[tuple[str, str, str]]:
    return [(r.id, r.question, r.answer) for r in records]
