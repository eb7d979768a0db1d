"""Text-image consistency of StackGAN Stage-I on SynthBirds: a ladder of conditions, recipes and seeds.

Trains Stage-I at a profile's settings (default ``quick``) for ``--steps`` steps and, every ``--every`` steps,
scores 64x64 images with notebook 01's attribute classifier (body / wing / crown / belly colour, chance 1/10):

- ``--condition caption`` (the task): images from the first caption of ``n_eval`` birds of *unseen* test
  species (targets: what the caption names) and of *seen* training species;
- ``--condition species``: G and D get a one-hot species code instead of the caption (10 copies of it); scored
  on seen species against the species' attributes (unseen species have no code);
- ``--condition attributes``: G and D get a perfect text encoder, the one-hot code of the attributes each
  caption names (:func:`hwlib.data.synthbirds.caption_codes`), scored like ``caption``: it separates what the
  sentence encoder loses from what the GAN cannot learn;
- ``--condition none``: every caption embedding is zero and there are no wrong pairs: an unconditional GAN.

Every row also gives the attribute-feature FID against real crops of the evaluated split (lower is better),
which asks "does G draw birds at all?" whatever the condition. ``--recipe paper|stable`` picks the training
recipe (:data:`hwlib.models.stackgan.RECIPES`); ``--set field=value`` overrides one field of it (repeatable,
e.g. ``--set loss=hinge --set ema=0.999``); ``--gf``/``--df`` override the widths; ``--train-seed`` changes only
the networks and batches (data, classifier and evaluation keep ``--seed``). Writes
``benchmarks/results/stackgan_ladder/<profile>_<condition>_<recipe>[_<overrides>]_train<seed>.json``.
Usage: ``python benchmarks/bench_stackgan_consistency.py [--profile quick] [--condition caption] [--recipe paper]
[--steps 896] [--every 448] [--train-seed 0] [--halving]``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time

import numpy as np
import torch

import hwlib
from hwlib.bench import write_result
from hwlib.data import cub, synthbirds
from hwlib.metrics.attributes import consistency
from hwlib.metrics.evaluation import within_class_spread
from hwlib.models import attributes, stackgan
from hwlib.train import EMA, get_device, seed_everything

COLOURS = synthbirds.COLOUR_PARTS
LADDER_BATCH = 16  # the Stage-I batch of every result named without "bs<B>" (quick's): names stay put if the profile changes
EARLIER_ENCODER = "all-MiniLM-L6-v2"  # the caption encoder of every result before bag-of-ngrams: not in their names


def encoder_tag(embedding: str) -> list[str]:
    """The part of a result's name that says which caption encoder it ran with (none for :data:`EARLIER_ENCODER`)."""
    return [] if embedding == EARLIER_ENCODER else [embedding]


def _override(recipe: stackgan.Recipe, pairs: list[str]) -> stackgan.Recipe:
    fields = dataclasses.asdict(recipe)
    for pair in pairs:
        key, value = pair.split("=", 1)
        if key not in fields:
            raise SystemExit(f"--set {pair}: Recipe has no field {key!r}; fields: {sorted(fields)}")
        try:
            fields[key] = json.loads(value)  # numbers, true/false, null
        except json.JSONDecodeError:
            fields[key] = value  # a plain string, e.g. translation,cutout
    return stackgan.Recipe(**fields)


def recipe_name(recipe: stackgan.Recipe) -> str:
    """The recipe's name in RECIPES when its Stage-I fields are one of them, else ``paper_<field>-<value>_...`` for
    the Stage-I fields that differ from the paper's. A name always means today's recipe: results of an earlier
    ``stable`` carry its fields in their names."""
    stage1 = recipe.stage1_dict()
    for name, known in stackgan.RECIPES.items():
        if stage1 == known.stage1_dict():
            return name
    paper = dataclasses.asdict(stackgan.RECIPES["paper"])
    diff = [f"{k}-{v}".replace(",", "+") for k, v in stage1.items() if v != paper[k]]
    return "_".join(["paper"] + diff)


def attribute_classifier(cfg, seed: int, device) -> attributes.AttributeNet:
    """Notebook 01's attribute classifier at the profile's settings (trained once, then restored from its run)."""
    attr_images, attr_labels = synthbirds.attribute_birds(cfg.attr_n, seed=seed)
    clf, _ = attributes.train_attribute_net(torch.from_numpy(attr_images), attr_labels, width=cfg.attr_width,
                                            epochs=cfg.attr_epochs, run_dir=hwlib.runs_dir("bench/stackgan_ladder/attributes"),
                                            seed=seed, device=device)
    return clf


def trained_matcher(cfg, train, seed: int, device, epochs: int = 60):
    """The frozen image-caption matcher of ``Recipe.matcher`` for ``train`` (a BirdSplit), trained once on its real
    birds, captions and near misses (:func:`hwlib.models.matching.train_matcher`), then restored from its run."""
    from hwlib.models import matching

    return matching.train_matcher(train.images(76), torch.from_numpy(train.embeddings),
                                  torch.from_numpy(train.swapped_embeddings()), epochs=epochs, seed=seed, device=device,
                                  run_dir=hwlib.runs_dir(f"bench/stackgan_ladder/matcher_n{len(train)}_e{epochs}"))[0]


def part_teacher(cfg, train, seed: int, device):
    """The frozen part reader of ``Recipe.part_teacher`` for ``train`` (a BirdSplit): a
    :class:`hwlib.models.attributes.PartReader` at its default width, trained once on the real training birds and the
    part colours their captions name, for the attribute classifier's epochs, then restored from its run."""
    return attributes.train_part_judge(train.images(76), train.image_part_labels(), width=attributes.READER_WIDTH,
                                       epochs=cfg.attr_epochs, seed=seed, device=device, arch="local",
                                       run_dir=hwlib.runs_dir(f"bench/stackgan_ladder/part_teacher_n{len(train)}_e{cfg.attr_epochs}"))


def noise_spread(G: torch.nn.Module, text: torch.Tensor, z_dim: int, seed: int, ca_noise: float = 1.0,
                 n: int = 50, k: int = 8, rerank: int = 1, judge: torch.nn.Module | None = None,
                 labels: torch.Tensor | None = None, rerank_score: str = "joint") -> float:
    """How much G uses its noise: the pixel spread among ``k`` noise vectors (drawn with ``seed + 3``) of each of the
    first ``n`` captions ``text`` (N, t_dim) (:func:`hwlib.metrics.evaluation.within_class_spread`; real birds of
    one species: 0.29); ``rerank``, ``judge``, ``labels`` (N, 4) and ``rerank_score`` sample as :func:`stackgan.generate`
    does."""
    text = text[:n]
    z = torch.randn(k * len(text), z_dim, generator=torch.Generator().manual_seed(seed + 3))
    lab = labels[:n].repeat_interleave(k, 0) if labels is not None else None
    images = stackgan.generate(G, text.repeat_interleave(k, 0), z=z, ca_noise=ca_noise, rerank=rerank, judge=judge,
                               labels=lab, rerank_score=rerank_score)[0]
    return within_class_spread(images, torch.arange(len(text)).repeat_interleave(k), len(text))


def attribute_embeddings(train) -> torch.Tensor:
    """``--condition attributes``' training condition: the perfect code of each of the split's ten captions per bird
    (:func:`synthbirds.caption_codes`), float32 (N, 10, 46), in the place of ``train.embeddings``."""
    codes = synthbirds.caption_codes([c for i in range(len(train)) for c in train.captions(i)])
    return torch.from_numpy(codes).view(len(train), -1, codes.shape[1])


def text_parts(train, condition: str) -> tuple[int, int]:
    """The part slots G attends over (``Recipe.g_part_attention``) in a run of ``condition``: the caption encoder's
    (``BirdSplit.text_parts``) for captions, none for the other conditions' codes."""
    return train.text_parts if condition == "caption" else (0, 0)


def caption_evals(cfg, splits: dict, seed: int) -> dict[str, tuple]:
    """{split name: (caption embeddings (n, t_dim), z (n, z_dim), colour targets, real 76 px images)} for
    ``splits`` {name: (BirdSplit, its 76 px images)}: :func:`synthbirds.consistency_set` of each."""
    evals = {}
    for split_name, (split, real) in splits.items():
        text, z, targets, captions = synthbirds.consistency_set(split, min(cfg.n_eval, len(split)), cfg.z_dim, seed)
        evals[split_name] = (text, z, {k: targets[k] for k in COLOURS}, real, captions)
    return evals


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--condition", choices=("caption", "attributes", "species", "none"), default="caption")
    parser.add_argument("--recipe", default="paper", choices=sorted(stackgan.RECIPES))
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="override one Recipe field")
    parser.add_argument("--gf", type=int, default=None)
    parser.add_argument("--df", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None, help="G's learning rate (default: the profile's)")
    parser.add_argument("--kl-coef", type=float, default=None, help="weight of the CA's KL term (default: the profile's)")
    parser.add_argument("--batch-size", type=int, default=None, help="Stage-I batch size (default: the profile's)")
    parser.add_argument("--steps", type=int, default=896)
    parser.add_argument("--every", type=int, default=448)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-train", type=int, default=None, help="training birds (default: the profile's n_train)")
    parser.add_argument("--train-seed", type=int, default=0, help="seed of the networks and batches only")
    parser.add_argument("--halving", action="store_true", help="halve the learning rate as the profile does (default: constant)")
    parser.add_argument("--lr-decay-epochs", type=int, default=None, help="with --halving: halve every this many epochs "
                        "(default: the profile's lr_decay_epochs)")
    parser.add_argument("--standing-stats", action="store_true", help="re-estimate the EMA generator's BatchNorm "
                        "statistics on training captions before each evaluation (stackgan.standing_stats)")
    parser.add_argument("--embedding", default=None, choices=sorted(cub.EMBEDDINGS),
                        help="the caption encoder (default: the profile's)")
    parser.add_argument("--tag", default="", help="extra name for the result file")
    args = parser.parse_args()
    cfg, device, seed = hwlib.get_profile("01_stackgan_cub", args.profile, verbose=False), get_device(), args.seed
    recipe = _override(stackgan.get_recipe(args.recipe), args.set)
    gf, df, lr = args.gf or cfg.gf, args.df or cfg.df, args.lr or cfg.lr
    n_train = args.n_train or cfg.n_train
    kl_coef = cfg.kl_coef if args.kl_coef is None else args.kl_coef
    batch_size = args.batch_size or cfg.batch_size
    root = synthbirds.make_synthbirds(n_train, cfg.n_test, seed=seed)
    embedding = args.embedding or cfg.embedding
    train = cub.open_birds(root, "train", embedding=embedding)
    test = cub.open_birds(root, "test", embedding=embedding)
    rname = recipe_name(recipe)
    parts = [cfg.profile, args.condition, rname]
    parts += encoder_tag(embedding)
    parts += [f"gf{gf}"] if gf != cfg.gf else []
    parts += [f"df{df}"] if df != cfg.df else []
    parts += [f"lr{lr:g}"] if lr != cfg.lr else []
    parts += [f"n{n_train}"] if n_train != cfg.n_train else []
    parts += [f"kl{kl_coef:g}"] if kl_coef != cfg.kl_coef else []
    parts += [f"bs{batch_size}"] if batch_size != LADDER_BATCH else []
    decay = args.lr_decay_epochs or cfg.lr_decay_epochs
    parts += [f"halving{decay}"] if args.halving else []  # results named plain "halving" were halved every 8 epochs
    parts += ["standing"] if args.standing_stats else []
    parts += [args.tag] if args.tag else []
    name = "_".join(parts + [f"train{args.train_seed}"])
    runs = hwlib.runs_dir(f"bench/stackgan_ladder/{name}")

    clf = attribute_classifier(cfg, seed, device)
    train_76, test_76 = train.images(76), test.images(76)

    # conditions and evaluation sets: {name: (text (n, t_dim), z (n, z_dim), targets, real 64 px crops)}
    n_eval = min(cfg.n_eval, len(test))
    embeddings = torch.from_numpy(train.embeddings)
    evals: dict[str, tuple] = {}
    if args.condition == "species":
        eye = torch.eye(synthbirds.N_CLASSES)
        embeddings = eye[torch.from_numpy(train.class_ids) - 1][:, None].expand(-1, 10, -1).contiguous()
        idx = np.random.default_rng(seed + 11).choice(len(train), n_eval, replace=False)
        labels = synthbirds.attribute_labels(root, train.class_ids[idx])
        z = torch.randn(n_eval, cfg.z_dim, generator=torch.Generator().manual_seed(seed + 1))
        evals["seen"] = (eye[torch.from_numpy(train.class_ids[idx]) - 1], z, {k: labels[k] for k in COLOURS}, train_76)
    else:
        for split_name, (text, z, targets, real, captions) in caption_evals(
                cfg, {"unseen": (test, test_76), "seen": (train, train_76)}, seed).items():
            if args.condition == "none":
                text = torch.zeros_like(text)
            elif args.condition == "attributes":
                text = torch.from_numpy(synthbirds.caption_codes(captions))
            evals[split_name] = (text, z, targets, real)
        if args.condition == "attributes":
            embeddings = attribute_embeddings(train)
        if args.condition == "none":
            embeddings = torch.zeros_like(embeddings)
            recipe = stackgan.Recipe(**{**recipe.as_dict(), "wrong": "none"})
    real_feats = {k: attributes.features(clf, cub.center_crop(v[3][:n_eval], 64)) for k, v in evals.items()}

    seed_everything(args.train_seed)
    G, D = (net.to(device) for net in stackgan.build_stage1(embeddings.shape[-1], cfg.c_dim, cfg.z_dim, gf, df,
                                                             upsample=cfg.upsample, recipe=recipe,
                                                             text_parts=text_parts(train, args.condition)))
    ema = EMA(G, recipe.ema) if recipe.ema else None
    n_batches = len(train) // batch_size
    every_epochs = max(1, round(args.every / n_batches))
    epochs = math.ceil(args.steps / (every_epochs * n_batches)) * every_epochs
    curve: list[dict] = []
    t0 = time.perf_counter()

    def score(epoch: int) -> None:
        if epoch % every_epochs:
            return
        sampler = ema.module if ema is not None else G
        if args.standing_stats:
            stackgan.standing_stats(sampler, embeddings, seed=seed)
        row: dict = {"step": epoch * n_batches, "epoch": epoch, "seconds": round(time.perf_counter() - t0, 1)}
        for split_name, (text, z, targets, _) in evals.items():
            low = stackgan.generate(sampler, text, z=z)[0]
            res = consistency(clf, low, targets, real_feats[split_name])
            row[split_name] = {**{k: round(res[k], 3) for k in COLOURS}, "fid": round(res["fid"], 2)}
            row[split_name]["spread"] = round(noise_spread(sampler, text, cfg.z_dim, seed), 4)
        curve.append(row)  # fit puts G back in training mode after this callback
        print(f"step {row['step']:6d} ({row['seconds']:.0f} s): " + "; ".join(
            f"{s} body {r['body']:.3f} wing {r['wing']:.3f} crown {r['crown']:.3f} belly {r['belly']:.3f} FID {r['fid']:.1f}"
            for s, r in ((s, row[s]) for s in evals)), flush=True)

    stackgan.train_stage(G, D, images=train_76.to(device), embeddings=embeddings.to(device),
                         class_ids=torch.from_numpy(train.class_ids).to(device), out_size=64, epochs=epochs,
                         batch_size=batch_size, run_dir=runs, lr=lr, betas=cfg.betas, kl_coef=kl_coef,
                         z_dim=cfg.z_dim, lr_decay_epochs=decay if args.halving else None,
                         seed=args.train_seed, resume=False, recipe=recipe, ema=ema, on_epoch_end=score,
                         config={"name": name, "epochs": epochs}, desc="Stage-I", progress=False,
                         swapped=torch.from_numpy(train.swapped_embeddings()).to(device)
                         if recipe.wrong == "swap" or recipe.matcher else None,
                         matcher=trained_matcher(cfg, train, seed, device) if recipe.matcher else None,
                         labels=torch.from_numpy(train.caption_labels()).to(device) if recipe.parts else None,
                         novel=tuple(t.to(device) for t in synthbirds.novel_set(
                             train, seed=seed, unseen_pairs=recipe.novel_pairs,
                             encode=synthbirds.caption_codes if args.condition == "attributes" else None))
                         if recipe.novel else None,
                         teacher=part_teacher(cfg, train, seed, device) if recipe.part_teacher else None)
    write_result(f"stackgan_ladder/{name}", {
        "profile": cfg.profile, "condition": args.condition, "embedding": embedding, "recipe": rname, "recipe_fields": recipe.as_dict(),
        "gf": gf, "df": df, "batch_size": batch_size, "n_train": len(train), "train_seed": args.train_seed,
        "lr": lr, "kl_coef": kl_coef, "n_eval": n_eval, "chance": 0.1,
        "lr_schedule": f"halved every {decay} epochs" if args.halving else "constant", "lr_decay_epochs": decay,
        "profile_steps": cfg.epochs1 * n_batches, "standing_stats": args.standing_stats, "threads": torch.get_num_threads(), "curve": curve}, device)


if __name__ == "__main__":
    main()
