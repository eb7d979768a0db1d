"""How StackGAN Stage-I is sampled, measured on generators already trained by ``bench_stackgan_consistency.py``.

Restores the last checkpoint of each named ladder run (``benchmarks/results/stackgan_ladder/<run>.json`` and its
run folder) and scores the generator it samples from (the EMA copy where the recipe keeps one) on the unseen test
species, as the ladder does, under each sampling option:

- ``ca_noise``: the conditioning augmentation's noise, ``c = mu + ca_noise * sigma * eps`` (1: the paper's sample;
  0: its mean, a truncation of the caption's noise);
- ``spread``: the pixel spread among 8 noise vectors of each of the first 50 captions (as the ladder's), how much G
  uses its noise;
- ``bn``: ``copied``, the BatchNorm statistics the EMA copied from the live generator (what training leaves), or
  ``standing``, re-estimated on training captions for the averaged weights (:func:`hwlib.models.stackgan.standing_stats`);
- ``rerank`` (``--rerank K ...``, with ``bn=copied`` and ``ca_noise=1`` or ``--rerank-ca-noise``): the best of K
  candidates per caption by a judge (:func:`hwlib.models.stackgan.generate`), with the seconds it costs: the run's
  own discriminator's part head (``--judge D``) or, with ``--judge classifier`` (``judge=classifier`` in the row's
  name), a classifier of the training birds' part colours that G never trained against
  (:func:`hwlib.models.attributes.train_part_judge`, at the attribute classifier's width and epochs, trained once),
  or with ``--judge reader`` the part reader of ``Recipe.part_teacher`` (:class:`hwlib.models.attributes.PartReader`).
  Each re-ranked row also scores notebook 01's "type a caption" demo (``demo``: :data:`synthbirds.DEMO_CAPTIONS`,
  eight noise vectors each, the fraction of birds with the asked body and wing colour, :func:`metrics.both_asked`),
  and ``demo64`` the same score over 64 noise vectors per caption (128 birds instead of 16: steps of 1/128, not 1/16);
  ``demo_real_birds`` is that score for 100 real birds drawn to each caption (:func:`metrics.real_both_asked`), the
  most the classifier lets a generator reach.
- ``pairs`` (``--pairs``): notebook 01's section 10a on each run's generator, one draw per noise vector at the trained
  CA noise: every body colour beside every belly colour (:func:`synthbirds.pair_captions`, 16 birds each), how often
  the body is drawn as asked with no belly named, with a belly of another colour, and beside a belly colour some
  training species pairs with it or none does (:func:`metrics.pair_composition`).
- ``demo_anatomy`` (``--demo-anatomy N``): why the demo scores what it does. N one-draw birds of each demo caption
  that names a body and a wing colour, in groups of the largest K: how often one draw, the judge's pick of K and any
  of the K (a perfect judge) have the body and wing asked (what the demo scores) and every part asked.

No training: the options change only how images are drawn from the same weights. Writes
``benchmarks/results/stackgan_sampling/<tag>.json``.
Usage: ``python benchmarks/bench_stackgan_sampling.py --runs quick_caption_stable_halving32_epyc_train{0,1,2} --tag stable
[--rerank 4 16 [--only-rerank]] [--judge classifier]``. ``--merge TAG [TAG ...] --tag T`` writes ``T`` as the union of
results of other runs sampled with the same settings (one call per training seed, run side by side on two cores).
"""
from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import torch

import hwlib
from bench_stackgan_consistency import (COLOURS, EARLIER_ENCODER, attribute_classifier, attribute_embeddings, caption_evals,
                                       noise_spread, part_teacher, text_parts)
from hwlib.bench import write_result
from hwlib.data import cub, synthbirds
from hwlib.metrics.attributes import (asked_hits, attribute_accuracy, both_asked, consistency, features, pair_composition,
                                     real_both_asked)
from hwlib.models import attributes, stackgan
from hwlib.train import get_device

RESULTS = Path(__file__).parent / "results" / "stackgan_ladder"
SAMPLING = Path(__file__).parent / "results" / "stackgan_sampling"
PAIR_KEYS = ("no_part", "other_colour", "seen_pair", "unseen_pair")


def restore(run: str, cfg, t_dim: int, text_parts: tuple[int, int] = (0, 0)) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(the generator run ``run`` samples from -- its EMA copy where it keeps one --, its discriminator) at the run's
    last checkpoint, eval mode, on the CPU. ``text_parts``: the embedding's part slots (``BirdSplit.text_parts``)."""
    meta = json.loads((RESULTS / f"{run}.json").read_text())
    recipe = stackgan.Recipe(**meta["recipe_fields"])
    G, D = stackgan.build_stage1(t_dim, cfg.c_dim, cfg.z_dim, meta["gf"], meta["df"], upsample=cfg.upsample, recipe=recipe,
                                 text_parts=text_parts)
    ckpts = sorted(hwlib.runs_dir(f"bench/stackgan_ladder/{run}").glob("ckpt_*.pt"))
    if not ckpts:
        raise SystemExit(f"{run}: no checkpoint under {hwlib.runs_dir(f'bench/stackgan_ladder/{run}')}; "
                         "train it with bench_stackgan_consistency.py first")
    state = torch.load(ckpts[-1], map_location="cpu", weights_only=False)
    G.load_state_dict(state["emas"]["G"]["module"] if state["emas"] else state["modules"]["G"])
    D.load_state_dict(state["modules"]["D"])
    return G.eval(), D.eval()


def demo_anatomy(G: torch.nn.Module, judge: torch.nn.Module, clf: attributes.AttributeNet, encode, z_dim: int,
                 n: int, k: int, ca_noise: float, seed: int, score: str = "joint") -> dict[str, dict[str, float]]:
    """Why the "type a caption" demo scores what it does: ``n`` one-draw birds of each demo caption that names a body
    and a wing colour, at ``ca_noise``, cut into groups of ``k`` candidates. For the body and wing (``bw``, what the
    demo scores) and for every part the caption names (``all``): how often one draw has them (``one``), the judge's
    pick of each group (``judged``, as ``generate(rerank=k)`` picks) and any candidate of the group (``oracle``, the
    most a perfect judge could pick). {caption: {"one_bw": ..., "judged_all": ...}}."""
    named = synthbirds.caption_targets(list(synthbirds.DEMO_CAPTIONS))
    captions = [c for i, c in enumerate(synthbirds.DEMO_CAPTIONS) if named["body"][i] >= 0 and named["wing"][i] >= 0]
    images = stackgan.caption_samples(G, captions, encode, z_dim, n, seed, noise_seed=seed + 1, ca_noise=ca_noise)
    many = [c for c in captions for _ in range(n)]
    targets, asked = synthbirds.caption_targets(many), torch.from_numpy(synthbirds.part_labels(many))
    with torch.no_grad():
        score = torch.cat([stackgan.part_scores(judge.eval(), images[i:i + 256], asked[i:i + 256], score)
                           for i in range(0, len(images), 256)]).numpy()
    hits = {"bw": asked_hits(clf, images, targets, ("body", "wing")), "all": asked_hits(clf, images, targets, COLOURS)}
    out = {}
    for j, caption in enumerate(captions):
        rows = slice(j * n, (j + 1) * n)
        pick = score[rows].reshape(-1, k).argmax(1) + np.arange(0, n, k)
        out[caption] = {f"{how}_{which}": round(float(v), 3) for which, hit in hits.items() for how, v in (
            ("one", hit[rows].mean()), ("judged", hit[rows][pick].mean()), ("oracle", hit[rows].reshape(-1, k).any(1).mean()))}
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", nargs="+", help="ladder result names (without .json)")
    parser.add_argument("--tag", required=True)
    parser.add_argument("--merge", nargs="+", metavar="TAG", help="instead: write --tag as the union of these results, "
                        "each of other runs sampled with the same settings (e.g. one training seed per call)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rerank", type=int, nargs="*", default=[], metavar="K",
                        help="also sample the best of K candidates by D's part head (recipes with parts)")
    parser.add_argument("--only-rerank", action="store_true", help="skip the bn / ca_noise rows")
    parser.add_argument("--rerank-ca-noise", type=float, default=1.0,
                        help="the CA noise scale the re-ranked candidates are drawn with (default 1, as trained)")
    parser.add_argument("--judges", type=int, default=1, metavar="N",
                        help="with --judge classifier: N part classifiers trained at seeds seed..seed+N-1, their "
                             "probabilities averaged (attributes.JudgeEnsemble)")
    parser.add_argument("--judge-epochs", type=int, default=None, metavar="E",
                        help="with --judge classifier: each part classifier's epochs (default: the profile's attr_epochs)")
    parser.add_argument("--judge-amp", action="store_true",
                        help="with --judge classifier: train the part classifiers in bf16 autocast, channels-last")
    parser.add_argument("--judge", choices=("D", "classifier", "reader"), default="D",
                        help="re-rank by D's part head, by a part classifier G never trained against, or by the part "
                             "reader of Recipe.part_teacher (for generators not trained against it)")
    parser.add_argument("--rerank-score", choices=stackgan.RERANK_SCORES, default="joint",
                        help="how the judge scores a candidate (stackgan.part_scores): joint, the log-probability that "
                             "every asked part is drawn as asked, or expected, the expected number of them")
    parser.add_argument("--pairs", action="store_true", help="add the body/belly composition row (notebook 01, 10a)")
    parser.add_argument("--demo-anatomy", type=int, default=0, metavar="N",
                        help="also N one-draw birds per demo caption, judged in groups of the largest --rerank K "
                             "(demo_anatomy: one draw / the judge's pick / any of K, body+wing and every part asked)")
    args = parser.parse_args()
    if args.merge:
        return merge(args.merge, args.tag)
    if not args.runs:
        parser.error("--runs is required (or --merge)")
    cfg, device, seed = hwlib.get_profile("01_stackgan_cub", "quick", verbose=False), get_device(), args.seed
    root = synthbirds.make_synthbirds(cfg.n_train, cfg.n_test, seed=seed)
    # every run samples with the caption encoder it was trained with (results without the key: EARLIER_ENCODER's)
    embedding = {json.loads((RESULTS / f"{run}.json").read_text()).get("embedding", EARLIER_ENCODER) for run in args.runs}
    if len(embedding) != 1:
        raise SystemExit(f"the runs were trained with different caption encoders ({sorted(embedding)}): compare them in separate calls")
    embedding = embedding.pop()
    condition = {json.loads((RESULTS / f"{run}.json").read_text())["condition"] for run in args.runs}
    if len(condition) != 1 or condition & {"species", "none"}:
        raise SystemExit(f"the runs were trained on {sorted(condition)}: sample caption or attributes runs, one kind per call")
    condition = condition.pop()
    train, test = (cub.open_birds(root, s, embedding=embedding) for s in ("train", "test"))
    # the text encoder the runs were trained with: the caption encoder or, for --condition attributes, the perfect one
    encode = train.encode if condition == "caption" else lambda caps: synthbirds.caption_codes(list(caps))
    clf = attribute_classifier(cfg, seed, device)
    text, z, targets, real, captions = caption_evals(cfg, {"unseen": (test, test.images(76))}, seed)["unseen"]
    asked = torch.from_numpy(synthbirds.part_labels(captions))
    real_feats = features(clf, cub.center_crop(real[:len(text)], 64))
    embeddings = torch.from_numpy(train.embeddings)
    if condition == "attributes":
        text = torch.from_numpy(encode(captions))
        embeddings = attribute_embeddings(train)
    demo = list(np.repeat(synthbirds.DEMO_CAPTIONS, 8))  # notebook 01's demo: eight noise vectors per caption
    demo_text, demo_asked = torch.from_numpy(encode(demo)), torch.from_numpy(synthbirds.part_labels(demo))
    demo_z = torch.randn(len(demo), cfg.z_dim, generator=torch.Generator().manual_seed(seed))
    wide = list(np.repeat(synthbirds.DEMO_CAPTIONS, 64))  # the same captions, 64 noise vectors each (demo64)
    wide_asked = torch.from_numpy(synthbirds.part_labels(wide))
    # what real birds of the captions score: over the captions that name both parts (equal counts: the nanmean)
    demo_real = float(np.nanmean(list(real_both_asked(clf, list(synthbirds.DEMO_CAPTIONS), seed=seed).values())))
    print(f"demo: real birds drawn to the demo captions score {demo_real:.2f}")
    judge_epochs = args.judge_epochs or cfg.attr_epochs
    judge_name = ("" if args.judge == "D" else f",judge={args.judge}") + (f"x{args.judges}" if args.judges > 1 else "") + (
        f",judge_epochs={args.judge_epochs}" if args.judge_epochs else "") + (",judge_amp" if args.judge_amp else "") + (
        "" if args.rerank_score == "joint" else f",score={args.rerank_score}")
    part_judge = None if args.judge == "D" else part_teacher(cfg, train, seed, device) if args.judge == "reader" else \
        attributes.train_part_judges(train.images(76), train.image_part_labels(), args.judges, width=cfg.attr_width,
                                     epochs=judge_epochs, seed=seed, device=device, amp=args.judge_amp, run_dir=hwlib.runs_dir(
                                         f"bench/stackgan_sampling/part_judge_w{cfg.attr_width}_e{judge_epochs}"))
    judge_real = None
    if part_judge is not None:  # how well the judge reads real birds of the unseen species, from their captions' colours
        judge_real = {p: round(v, 3) for p, v in attribute_accuracy(
            attributes.predict_attributes(part_judge, cub.center_crop(test.images(76), 64)),
            {p: test.image_part_labels()[:, j] for j, p in enumerate(COLOURS)}).items()}
        print(f"the judge reads real birds of the unseen species: {judge_real}")
    rows: dict[str, dict] = {}
    if args.pairs:  # notebook 01's section 10a
        seen = synthbirds.training_pairs(root)
    slots = text_parts(train, condition)
    for run in args.runs:
        trained, D = restore(run, cfg, embeddings.shape[-1], slots)
        judge = D if part_judge is None else part_judge

        def record(key: str, low: torch.Tensor, spread: float, seconds: float | None = None,
                   demo_score: tuple[float, float] | None = None) -> None:
            res = consistency(clf, low, targets, real_feats)
            rows.setdefault(key, {})[run] = ({**{k: round(res[k], 3) for k in COLOURS}, "fid": round(res["fid"], 2),
                                              "spread": round(spread, 4)} | ({"seconds": round(seconds, 1)} if seconds else {})
                                             | ({"demo": round(demo_score[0], 3), "demo64": round(demo_score[1], 3)}
                                                if demo_score is not None else {}))
            print(f"{run[-40:]:>40} {key:24} " + " ".join(f"{k} {res[k]:.3f}" for k in COLOURS) + f" FID {res['fid']:.1f}"
                  f" spread {spread:.4f}" + (f" demo {demo_score[0]:.2f} demo64 {demo_score[1]:.3f}" if demo_score else ""),
                  flush=True)

        if args.demo_anatomy:
            k = max(args.rerank or [16])
            anatomy = demo_anatomy(trained, judge, clf, encode, cfg.z_dim, args.demo_anatomy, k,
                                   args.rerank_ca_noise, seed + 31, args.rerank_score)
            rows.setdefault(f"demo_anatomy,ca_noise={args.rerank_ca_noise:g},k={k}{judge_name}", {})[run] = {
                f"{c[:12]}:{m}": v for c, ms in anatomy.items() for m, v in ms.items()}
            for c, ms in anatomy.items():
                print(f"{run[-40:]:>40} demo anatomy '{c[:30]}': " + " ".join(f"{m} {v:.3f}" for m, v in ms.items()), flush=True)
        if args.pairs:
            comp = pair_composition(clf, stackgan.pair_birds(trained, encode, cfg.z_dim, seed + 2), seen)
            rows.setdefault("pairs,ca_noise=1", {})[run] = {k: round(comp[k], 3) for k in PAIR_KEYS}
            print(f"{run[-40:]:>40} body/belly pairs: " + " ".join(f"{k} {comp[k]:.2f}" for k in PAIR_KEYS), flush=True)
        for bn in () if args.only_rerank else ("copied", "standing"):
            G = copy.deepcopy(trained)
            if bn == "standing":
                stackgan.standing_stats(G, embeddings, seed=seed)
            for noise in (1.0, 0.0):
                low = stackgan.generate(G, text, z=z, ca_noise=noise)[0]
                record(f"bn={bn},ca_noise={noise:g}", low, noise_spread(G, text, cfg.z_dim, seed, ca_noise=noise))
        for k in args.rerank:
            torch.manual_seed(seed + 17)  # the candidates' extra noise
            t0 = time.perf_counter()
            noise = args.rerank_ca_noise
            how = {"rerank": k, "judge": judge, "rerank_score": args.rerank_score}
            low = stackgan.generate(trained, text, z=z, ca_noise=noise, labels=asked, **how)[0]
            seconds = time.perf_counter() - t0
            torch.manual_seed(seed + 19)
            demo_low = stackgan.generate(trained, demo_text, z=demo_z, ca_noise=noise, labels=demo_asked, **how)[0]
            wide_low = stackgan.caption_samples(trained, synthbirds.DEMO_CAPTIONS, encode, cfg.z_dim, 64, seed + 23,
                                                noise_seed=seed + 29, ca_noise=noise, labels=wide_asked, **how)
            record(f"bn=copied,ca_noise={noise:g},rerank={k}{judge_name if k > 1 else ''}", low,
                   noise_spread(trained, text, cfg.z_dim, seed, ca_noise=noise, labels=asked, **how), seconds,
                   (both_asked(clf, demo_low, synthbirds.caption_targets(demo)),
                    both_asked(clf, wide_low, synthbirds.caption_targets(wide))))
    write_result(f"stackgan_sampling/{args.tag}", {"profile": cfg.profile, "embedding": embedding, "condition": condition, "runs": args.runs, "n_eval": len(text),
                                                   "judge": args.judge, "demo_real_birds": round(demo_real, 3),
                                                   "judge_reads_real_unseen": judge_real,
                                                   "split": "unseen", "rows": rows, "summary": summarise(rows)}, device)


def summarise(rows: dict[str, dict[str, dict]]) -> dict[str, dict]:
    """Mean and std over the runs of every row's numbers (those every run has), printed one row per line."""
    digits = {**{k: 3 for k in (*COLOURS, "fid", "demo", "demo64", *PAIR_KEYS)}, "spread": 4}
    summary = {key: {k: {"mean": round(float(np.mean([r[k] for r in runs.values()])), d),
                         "std": round(float(np.std([r[k] for r in runs.values()])), d)}
                     for k, d in (digits if not key.startswith("demo_anatomy") else dict.fromkeys(next(iter(runs.values())), 3)).items()
                     if all(k in r for r in runs.values())}
               for key, runs in rows.items()}
    for key, s in summary.items():
        print(f"{key:24} " + " ".join(f"{k} {v['mean']:.3f}±{v['std']:.3f}" for k, v in s.items()))
    return summary


def merge(tags: list[str], tag: str) -> None:
    """One result ``tag`` from the results ``tags``, each of other runs sampled with the same settings (e.g. one
    training seed per call, run side by side): every run's numbers depend on its generator and ``--seed`` alone,
    so the union is what one call over all the runs writes. The settings must agree; the device is the first's."""
    parts = [json.loads((SAMPLING / f"{t}.json").read_text()) for t in tags]
    same = ("device", "profile", "embedding", "condition", "n_eval", "judge", "demo_real_birds", "judge_reads_real_unseen",
            "split")
    for t, part in zip(tags[1:], parts[1:]):
        if differ := [k for k in same if part.get(k) != parts[0].get(k)]:
            raise SystemExit(f"{SAMPLING / (t + '.json')} was sampled with other settings than {tags[0]} ({differ}): "
                             "merge only results of one sampling command over different runs")
    if len({frozenset(p["rows"]) for p in parts}) != 1:
        raise SystemExit(f"the results {tags} have different rows: sample every run with the same --rerank, --pairs "
                         "and --demo-anatomy")
    runs = [run for p in parts for run in p["runs"]]
    if len(set(runs)) != len(runs):
        raise SystemExit(f"a run is in more than one of {tags}")
    rows = {key: {run: r for p in parts for run, r in p["rows"][key].items()} for key in parts[0]["rows"]}
    write_result(f"stackgan_sampling/{tag}", {**{k: parts[0][k] for k in same}, "runs": runs, "merged_from": tags,
                                              "rows": rows, "summary": summarise(rows)})  # the parts' device, not this one


if __name__ == "__main__":
    main()
