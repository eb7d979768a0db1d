"""Which parts StackGAN's Stage-I discriminator checks: the generator can only learn what D rewards.

Restores the last checkpoint of each named ladder run (as ``bench_stackgan_sampling.py``) and asks its D, for
real test birds (unseen species, centre 64 px crops), to rank the true caption above a near miss that differs in one
part. The caption names all four colour parts ("a {body} bird with {wing} wings, a {crown} crown and a {belly}
belly", true species attributes); the near miss changes one part's colour to another of the ten. Per part, the
fraction of birds whose matching-aware logit is higher for the true caption (0.5: D ignores that part; D conditions
on the caption's ``mu`` from G's conditioning augmentation, and normalises a batch of real or of fake images alone,
as in training). The same for G's own images of the true
caption, scored as real: does D, at the end of training, still hold G's birds to the caption's parts? Rows
``*_classifier`` ask the attribute classifier the same question on the same images (its logit for the true colour
above the near miss's; :func:`hwlib.metrics.attributes.classifier_ranking`), so judge and classifier share one scale.

With ``--matcher``, the frozen image-caption matcher of ``Recipe.matcher`` (trained once for ``--matcher-epochs``)
is scored on the same real birds. Writes ``benchmarks/results/stackgan_critic/<tag>_<split>.json``.
Usage: ``python benchmarks/bench_stackgan_critic.py --runs quick_caption_stable_halving32_epyc_train{0,1,2} --tag stable``.
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

import hwlib
from bench_stackgan_consistency import attribute_classifier, trained_matcher
from bench_stackgan_sampling import restore
from hwlib import text as captions_text
from hwlib.bench import write_result
from hwlib.data import cub, synthbirds
from hwlib.metrics.attributes import classifier_ranking, near_miss_ranking
from hwlib.models import stackgan
from hwlib.train import get_device


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", nargs="*", default=[])
    parser.add_argument("--matcher", action="store_true", help="also score the frozen matcher (Recipe.matcher)")
    parser.add_argument("--matcher-epochs", type=int, default=60)
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
    truth, near = synthbirds.near_miss_captions(labels, rng)
    parts = synthbirds.COLOUR_PARTS
    near_idx = {p: synthbirds.caption_targets(near[p])[p] for p in parts}  # the near miss's colour per bird
    clf = attribute_classifier(cfg, seed, device)  # the same question asked of the attribute classifier
    emb_true = torch.from_numpy(captions_text.encode(truth))
    emb_near = {p: torch.from_numpy(captions_text.encode(v)) for p, v in near.items()}
    real = cub.center_crop(test.images(76, idx), 64)
    z = torch.randn(len(idx), cfg.z_dim, generator=torch.Generator().manual_seed(seed + 1))
    rows: dict[str, dict] = {}
    if args.matcher:  # the frozen matcher of Recipe.matcher, on the same real birds
        train = cub.open_birds(root, "train", embedding=cfg.embedding)
        m = trained_matcher(cfg, train, seed, device, epochs=args.matcher_epochs)
        with torch.no_grad():
            rank = near_miss_ranking(lambda t: m.score(real, t), emb_true, emb_near)
            retrieval = float((m.logits(real, emb_true).argmax(1) == torch.arange(len(real))).float().mean())
        rows[f"matcher_e{args.matcher_epochs}"] = {"real": {p: round(v, 3) for p, v in rank.items()}, "retrieval_top1": round(retrieval, 3)}
        print("matcher real: " + " ".join(f"{p} {v:.3f}" for p, v in rank.items()) + f"; top-1 retrieval {retrieval:.3f}")
    for run in args.runs:
        G, D = restore(run, cfg, emb_true.shape[1])
        torch.manual_seed(seed + 2)  # the CA noise of every run's samples
        fake = stackgan.generate(G, emb_true, z=z)[0]
        row = {}
        for kind, images in (("real", real), ("fake", fake)):
            rank = classifier_ranking(clf, images, {p: labels[p] for p in parts}, near_idx)
            row[f"{kind}_classifier"] = {p: round(v, 3) for p, v in rank.items()}
            for head, rank in stackgan.critic_ranking(G, D, images, emb_true, emb_near).items():
                row[kind if head == "cond" else f"{kind}_{head}"] = {p: round(v, 3) for p, v in rank.items()}
            if args.matcher:  # does G's image satisfy the frozen matcher as a real bird does?
                with torch.no_grad():
                    rank = near_miss_ranking(lambda t: m.score(images, t), emb_true, emb_near)
                row[f"{kind}_matcher"] = {p: round(v, 3) for p, v in rank.items()}
        rows[run] = row
        print(f"{run[-45:]:>45} " + "; ".join(f"{kind}: " + " ".join(f"{p} {v:.3f}" for p, v in r.items())
                                              for kind, r in row.items()), flush=True)
    runs = [rows[run] for run in args.runs]
    summary = {kind: {p: {"mean": round(float(np.mean([r[kind][p] for r in runs])), 3),
                          "std": round(float(np.std([r[kind][p] for r in runs])), 3)} for p in runs[0][kind]}
               for kind in (runs[0] if runs else ())}
    for kind, s in summary.items():
        print(f"{kind:5} " + " ".join(f"{p} {v['mean']:.3f}±{v['std']:.3f}" for p, v in s.items()))
    write_result(f"stackgan_critic/{args.tag}_{args.split}", {"profile": cfg.profile, "runs": args.runs, "n": len(idx),
                                                 "split": args.split,
                                                 "template": synthbirds.PART_TEMPLATE, "rows": rows, "summary": summary}, device)


if __name__ == "__main__":
    main()
