"""UniErase's Stage II alone: how much of a residual the AlphaEdit update can write into the forget questions' keys,
and whether the edit makes [UNL] the first answer token, with one residual per question (MEMIT's compute_z, the
paper) or one per subject (`unierase.shared_value=subject`).

    python benchmarks/unierase_edit.py                       # the real instrument (SmolLM2-135M tofu-mini target)
    python benchmarks/unierase_edit.py --modes subject --prefixes all --lambdas 10

Part 1, per edit layer and ridge λ: `own` = the mean diagonal of A = Kᵀ P (K Kᵀ P + λ I)⁻¹ K, the share of a
question's own residual the update realises at its key (ΔK = R A); `shared` = the mean column sum of A, the share
of one residual common to every question. Part 2, per mode: [UNL] is added (untrained: Stage I is not run, so this
measures the edit only), the forget questions are edited (AlphaEdit's update, the tiny-scale value settings v_lr
0.5, ‖δ‖ ≤ 4‖h‖), and the share of forget and retain questions whose greedy first answer token is [UNL] is
printed with the retain answers' NLL before and after."""

from __future__ import annotations

import argparse
import copy
import json
import time

import _common  # noqa: F401  (offline; the TOFU data beside the checkout)

import torch

from obliviate import api
from obliviate.data.templates import Formatter
from obliviate.edit import EditConfig, Editor, key_second_moments
from obliviate.edit.anatomy import decoder_layers
from obliviate.eval.passes import answer_nll
from obliviate.methods.unierase import (UniEraseConfig, add_unlearn_token, build_request, default_layers,
                                        first_token_share, key_position_for, resolve_subjects, value_groups)
from obliviate.models.loading import fingerprint, load_model_and_tokenizer
from obliviate.runs.common import load_scenario


def realised_shares(editor: Editor, requests, lambdas: list[float]) -> list[dict]:
    rows = []
    for layer in editor.layers:
        k = editor.keys(requests, layer)  # (d_k, n)
        p = editor.projectors[layer]
        m = k @ k.T
        row = {"layer": layer, "null_dims": editor.null_dims[layer]}
        for lam in lambdas:
            x = torch.linalg.solve(p @ m + lam * torch.eye(k.shape[0], dtype=torch.float64), p @ k)
            a = k.T @ x  # (n, n)
            row[f"own@{lam:g}"] = round(float(torch.diagonal(a).mean()), 3)
            row[f"shared@{lam:g}"] = round(float(a.sum(0).mean()), 3)
        rows.append(row)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", default="tofu-mini")
    ap.add_argument("--base", default="smollm2-135m", help="a pretrained base (obliviate ls bases), or tiny")
    ap.add_argument("--lambdas", default="10,1,0.1", help="ridge values for part 1")
    ap.add_argument("--l2", type=float, default=1.0, help="the ridge λ of part 2's edits")
    ap.add_argument("--modes", default="request,subject", help="part 2's value modes (request, subject)")
    ap.add_argument("--prefixes", choices=["all", "one"], default="one",
                    help="context prefixes of each request: UniErase's five, or the question as asked only")
    ap.add_argument("--key-position", choices=["subject_last", "prompt_last", "auto"], default="subject_last",
                    help="where keys are read (unierase.key_position; auto = prompt_last below 8 layers)")
    ap.add_argument("--n-retain", type=int, default=40)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    target = api.build(args.scenario, base=args.base).target
    model, tok = load_model_and_tokenizer(target)
    model.eval()
    scen = load_scenario(args.scenario)
    cfg = UniEraseConfig()
    fmt = Formatter(tok, cfg.template, max_length=cfg.max_length)
    n_layers = len(decoder_layers(model))
    layers = default_layers(n_layers)
    key_position = key_position_for(args.key_position, n_layers)
    preserved = [e.input_ids for e in fmt.encode_qa(list(scen.retain_train.records))]
    stats = key_second_moments(model, layers, preserved, max_tokens=cfg.edit.cov_tokens,
                               batch_size=cfg.edit.batch_size, pad_id=tok.pad_token_id, model_fp=fingerprint(model))
    forget, retain = list(scen.forget.records), list(scen.retain.records)[:args.n_retain]
    subjects = resolve_subjects(forget, cfg.subject)
    prefixes = cfg.context_prefixes if args.prefixes == "all" else [""]
    print(f"target {target}; layers {layers}, keys at {key_position}; {len(forget)} forget questions about "
          f"{len(set(subjects))} subjects; prefixes: {prefixes}")

    requests = [build_request(fmt, r, s, 0, prefixes, cfg.edit.kl_prompt, key_position)
                for r, s in zip(forget, subjects, strict=True)]
    editor = Editor(model, layers, stats, EditConfig(l2=args.l2), tok.pad_token_id)
    print("\npart 1: share of a residual the update realises (own: each question's; shared: one for all)")
    for row in realised_shares(editor, requests, [float(v) for v in args.lambdas.split(",")]):
        print(json.dumps(row))

    print(f"\npart 2: the edit alone (λ {args.l2:g}, v_lr 0.5, ‖δ‖ ≤ 4‖h‖; [UNL] untrained)")
    enc = fmt.encode_qa(retain)
    nll_before = float(answer_nll(model, enc, "token_mean", pad_id=tok.pad_token_id, batch_size=16))
    for mode in args.modes.split(","):
        m, t = copy.deepcopy(model), copy.deepcopy(tok)
        tid = add_unlearn_token(m, t, cfg.seed)
        f = Formatter(t, cfg.template, max_length=cfg.max_length)
        reqs = [build_request(f, r, s, tid, prefixes, cfg.edit.kl_prompt, key_position)
                for r, s in zip(forget, subjects, strict=True)]
        ed = Editor(m, layers, stats, EditConfig(v_lr=0.5, clamp_norm_factor=4.0, l2=args.l2), t.pad_token_id)
        t0 = time.time()
        res = ed.edit(reqs, groups=value_groups(subjects, mode))
        wall = time.time() - t0
        nll_after = float(answer_nll(m, f.encode_qa(retain), "token_mean", pad_id=t.pad_token_id, batch_size=16))
        reached = sum(r["target_nll"] < 1.0 for r in res)
        print(json.dumps({"mode": mode, "edit_s": round(wall), "value_steps_reached_nll<1": f"{reached}/{len(res)}",
                          "forget_first_token_unl": round(first_token_share(m, f, tid, forget), 3),
                          "retain_first_token_unl": round(first_token_share(m, f, tid, retain), 3),
                          "retain_nll": [round(nll_before, 4), round(nll_after, 4)]}))
        del m
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
