"""Which parts StackGAN's Stage-I discriminator checks: the generator can only learn what D rewards.

Restores the last checkpoint of each named ladder run (as ``bench_stackgan_sampling.py``) and asks its D, for
real test birds (unseen species, centre 64 px crops), to rank the true caption above a near miss that differs in one
part. The caption names all four colour parts ("a {body} bird with {wing} wings, a {crown} crown and a {belly}
belly", true species attributes); the near miss changes one part's colour to another of the ten. Per part, the
fraction of birds whose matching-aware logit is higher for the true caption (0.5: D ignores that part; D conditions
on the caption's ``mu`` from G's conditioning augmentation, and normalises a batch of real or of fake images alone,
as in training). The same for G's own images of the true
caption, scored as real: does D, at the end of training, still hold G's birds to the caption's parts?

Writes ``benchmarks/results/stackgan_critic/<tag>.json``.
Usage: ``python benchmarks/bench_stackgan_critic.py --runs quick_caption_stable_halving32_epyc_train{0,1,2} --tag stable``.
"""
from __future__ import annotations

import argparse
import json

import numpy as np
import torch

import hwlib
from bench_stackgan_consistency import COLOURS
from bench_stackgan_sampling import RESULTS
from hwlib import text as captions_text
from hwlib.bench import write_result
from hwlib.data import cub, synthbirds
from hwlib.models import stackgan
from hwlib.train import get_device

TEMPLATE = "a {body} bird with {wing} wings, a {crown} crown and a {belly} belly"


def restore_pair(run: str, cfg, t_dim: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(G to sample from, D) of run ``run`` at its last checkpoint, eval mode."""
    meta = json.loads((RESULTS / f"{run}.json").read_text())
    recipe = stackgan.Recipe(**meta["recipe_fields"])
    G, D = stackgan.build_stage1(t_dim, cfg.c_dim, cfg.z_dim, meta["gf"], meta["df"], upsample=cfg.upsample, recipe=recipe)
    ckpt = sorted(hwlib.runs_dir(f"bench/stackgan_ladder/{run}").glob("ckpt_*.pt"))[-1]
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    G.load_state_dict(state["emas"]["G"]["module"] if state["emas"] else state["modules"]["G"])
    D.load_state_dict(state["modules"]["D"])
    return G.eval(), D.eval()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", nargs="+", required=True)
    parser.add_argument("--tag", required=True)
    parser.add_argument("--n", type=int, default=600, help="test birds")
    parser.add_argument("--split", choices=("test", "train"), default="test", help="test: unseen species; train: seen")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    cfg, device, seed = hwlib.get_profile("01_stackgan_cub", "quick", verbose=False), get_device(), args.seed
    root = synthbirds.make_synthbirds(cfg.n_train, cfg.n_test, seed=seed)
    test = cub.open_birds(root, args.split, embedding=cfg.embedding)
    rng = np.random.default_rng(seed + 5)
    idx = rng.choice(len(test), min(args.n, len(test)), replace=False)
    labels = synthbirds.attribute_labels(root, test.class_ids[idx])
    names = synthbirds.ATTRIBUTES["body"]
    truth = [{k: names[labels[k][j]] for k in COLOURS} for j in range(len(idx))]
    near = {part: [{**t, part: names[(names.index(t[part]) + rng.integers(1, len(names))) % len(names)]} for t in truth]
            for part in COLOURS}
    near["all"] = [{p: names[(names.index(t[p]) + rng.integers(1, len(names))) % len(names)] for p in COLOURS} for t in truth]
    emb_true = torch.from_numpy(captions_text.encode([TEMPLATE.format(**t) for t in truth]))
    emb_near = {p: torch.from_numpy(captions_text.encode([TEMPLATE.format(**t) for t in v])) for p, v in near.items()}
    real = cub.center_crop(test.images(76, idx), 64)
    z = torch.randn(len(idx), cfg.z_dim, generator=torch.Generator().manual_seed(seed + 1))
    rows: dict[str, dict] = {}
    for run in args.runs:
        G, D = restore_pair(run, cfg, emb_true.shape[1])
        fake = stackgan.generate(G, emb_true, z=z)[0]
        D.train()  # BatchNorm on batch statistics, of real or of fake images alone, as D sees them in training
        with torch.no_grad():
            mu_true = G.ca(emb_true)[1]
            row = {}
            for kind, images in (("real", real), ("fake", fake)):
                h = D.features(images)
                true_logit = D.cond_logit(h, mu_true)
                row[kind] = {p: round(float((true_logit > D.cond_logit(h, G.ca(emb_near[p])[1])).float().mean()), 3)
                             for p in near}
                if D.match is not None:  # the contrastive head: cosine of image and caption embeddings
                    true_match = D.match_logits(h, mu_true).diagonal()
                    row[f"{kind}_match"] = {p: round(float((true_match > D.match_logits(h, G.ca(emb_near[p])[1]).diagonal())
                                                           .float().mean()), 3) for p in near}
        rows[run] = row
        print(f"{run[-45:]:>45} " + "; ".join(f"{kind}: " + " ".join(f"{p} {v:.3f}" for p, v in r.items())
                                              for kind, r in row.items()), flush=True)
    summary = {kind: {p: {"mean": round(float(np.mean([r[kind][p] for r in rows.values()])), 3),
                          "std": round(float(np.std([r[kind][p] for r in rows.values()])), 3)} for p in near}
               for kind in next(iter(rows.values()))}
    for kind, s in summary.items():
        print(f"{kind:5} " + " ".join(f"{p} {v['mean']:.3f}±{v['std']:.3f}" for p, v in s.items()))
    write_result(f"stackgan_critic/{args.tag}_{args.split}", {"profile": cfg.profile, "runs": args.runs, "n": len(idx),
                                                 "split": args.split,
                                                 "template": TEMPLATE, "rows": rows, "summary": summary}, device)


if __name__ == "__main__":
    main()
