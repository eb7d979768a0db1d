"""Does StackGAN's Stage-II refine notebook 01's Stage-I, or repaint it? Colours kept and detail added, per recipe.

Loads the Stage-I generator notebook 01 trained in ``--profile`` (its EMA copy, the one the notebook samples from,
from the newest checkpoint of ``<HWLIB_RUNS>/01_stackgan_cub/<profile>/stage1_stable``), trains a Stage-II on it
exactly as the notebook does (its widths, birds, batch, epochs and halving) with the ``stable`` recipe less or
plus ``--set field=value`` overrides, and scores the first ``--n-eval`` evaluation captions of the unseen test
species: the colour accuracy of Stage-II's images and of Stage-I's on the same captions (notebook 01's attribute
classifier, chance 0.10), and the high-frequency energy of Stage-II against Stage-I up-sampled (bicubic). With
``--keep-low`` Stage-II's images are sampled as notebook 01 samples them, projected onto the images whose 64-px average
is their Stage-I image (``stackgan.generate(keep_low=True)``; ``_keep_low_sampling`` in the name).
``--train-seed`` changes only Stage-II's networks and batches. Writes
``benchmarks/results/stackgan_stage2/<profile>_<overrides>_train<seed>.json``.
Usage: ``python benchmarks/bench_stackgan_stage2.py [--set stage2_consistency=0] [--train-seed 0]
[--gf2 W] [--epochs2 E --lr-decay-epochs2 H]`` after notebook 01
has run in that profile (``make run``, or papermill with ``-p profile quick``).
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

import hwlib
from bench_stackgan_consistency import COLOURS, _override, encoder_tag
from hwlib.bench import write_result
from hwlib.checkpoints import Checkpointer
from hwlib.data import cub, synthbirds
from hwlib.metrics import consistency, high_frequency_energy, high_frequency_error
from hwlib.models import attributes, stackgan
from hwlib.train import get_device, seed_everything

NB = "01_stackgan_cub"
# the Stage-II sizes of the results named without them (quick's when they ran), so that names stay put if a profile changes
NAMED_AGAINST = {"quick": {"gf2": 16, "df2": 8, "epochs2": 18, "lr_decay_epochs2": 8}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="override one Recipe field")
    parser.add_argument("--train-seed", type=int, default=0)
    parser.add_argument("--n-eval", type=int, default=150, help="evaluation captions (the notebook's Stage-II count)")
    parser.add_argument("--resume", action="store_true", help="restore this run's finished Stage-II instead of retraining it")
    parser.add_argument("--keep-low", action="store_true",
                        help="score Stage-II's images projected onto Stage-I's 64-px average (generate(keep_low=True))")
    parser.add_argument("--gf2", type=int, default=None, help="Stage-II G's width (default: the profile's)")
    parser.add_argument("--df2", type=int, default=None, help="Stage-II D's width (default: the profile's)")
    parser.add_argument("--epochs2", type=int, default=None, help="Stage-II epochs (default: the profile's)")
    parser.add_argument("--lr-decay-epochs2", type=int, default=None,
                        help="halve Stage-II's learning rate every this many epochs (default: the profile's)")
    args = parser.parse_args()
    cfg, device, seed = hwlib.get_profile(NB, args.profile, verbose=False), get_device(), 0
    named_against = NAMED_AGAINST.get(cfg.profile, {k: cfg[k] for k in ("gf2", "df2", "epochs2", "lr_decay_epochs2")})
    cfg.gf2, cfg.df2, cfg.epochs2 = args.gf2 or cfg.gf2, args.df2 or cfg.df2, args.epochs2 or cfg.epochs2
    cfg.lr_decay_epochs2 = args.lr_decay_epochs2 or cfg.lr_decay_epochs2
    sizes = "".join(f"_{tag}{cfg[k]}" for k, tag in (("gf2", "gf2"), ("df2", "df2"), ("epochs2", "epochs2"),
                                                     ("lr_decay_epochs2", "halving2_")) if cfg[k] != named_against[k])
    recipe = _override(stackgan.get_recipe("stable"), args.set)
    stage1_dir = hwlib.runs_dir(f"{NB}/{cfg.profile}/stage1_stable")
    state = Checkpointer(stage1_dir).load_latest()
    if state is None:
        raise SystemExit(f"no Stage-I checkpoint in {stage1_dir}: run notebook 01 in the {cfg.profile!r} profile first "
                         f"(papermill notebooks/01_stackgan_cub.ipynb out.ipynb -p profile {cfg.profile})")
    root = synthbirds.make_synthbirds(cfg.n_train, cfg.n_test, seed=seed)
    train = cub.open_birds(root, "train", embedding=cfg.embedding)
    test = cub.open_birds(root, "test", embedding=cfg.embedding)
    t_dim = train.embeddings.shape[-1]

    seed_everything(args.train_seed)
    nets = stackgan.build(t_dim=t_dim, c_dim=cfg.c_dim, z_dim=cfg.z_dim, gf=cfg.gf, df=cfg.df, n_res=cfg.n_res,
                          stage2_size=cfg.stage2_size, upsample=cfg.upsample, gf2=cfg.gf2, df2=cfg.df2, recipe=recipe,
                          text_parts=train.text_parts)
    G1, G2, D2 = (nets[k].to(device) for k in ("G1", "G2", "D2"))
    G1.load_state_dict(state["emas"]["G"]["module"])
    G1.eval().requires_grad_(False)
    n2 = min(cfg.stage2_n, len(train))
    images = train.images(cfg.stage2_size * 76 // 64, np.arange(n2)).to(device)
    overrides = "_".join(p.replace("=", "-").replace(",", "+") for p in args.set) or "stable"
    encoder = "".join(f"_{e}" for e in encoder_tag(cfg.embedding))
    name = f"{cfg.profile}_{overrides}{encoder}{sizes}{'_keep_low_sampling' if args.keep_low else ''}_train{args.train_seed}"
    hist = stackgan.train_stage(G2, D2, images=images, embeddings=torch.from_numpy(train.embeddings[:n2]).to(device),
                                class_ids=torch.from_numpy(train.class_ids[:n2]).to(device), out_size=cfg.stage2_size,
                                labels=torch.from_numpy(train.caption_labels()[:n2]).to(device),
                                epochs=cfg.epochs2, batch_size=cfg.batch_size2, run_dir=hwlib.runs_dir(f"bench/stackgan_stage2/{name}"),
                                lr=cfg.lr, betas=cfg.betas, kl_coef=cfg.kl_coef, z_dim=cfg.z_dim,
                                lr_decay_epochs=cfg.lr_decay_epochs2, G1=G1, seed=args.train_seed, resume=args.resume,
                                recipe=recipe, desc="Stage-II", progress=False)

    attr_images, attr_labels = synthbirds.attribute_birds(cfg.attr_n, seed=seed)
    clf, _ = attributes.train_attribute_net(torch.from_numpy(attr_images), attr_labels, width=cfg.attr_width,
                                            epochs=cfg.attr_epochs, run_dir=hwlib.runs_dir(f"{NB}/{cfg.profile}/attributes"),
                                            seed=seed, device=device)
    text, z, targets, _ = synthbirds.consistency_set(test, min(cfg.n_eval, len(test)), cfg.z_dim, seed)
    n = min(args.n_eval, len(text))
    low, high = stackgan.generate(G1, text[:n], G2, z=z[:n], keep_low=args.keep_low)
    targets = {k: targets[k][:n] for k in COLOURS}
    up = torch.nn.functional.interpolate(low, size=cfg.stage2_size, mode="bicubic", align_corners=False).clamp(-1, 1)
    s1, s2 = consistency(clf, low, targets), consistency(clf, high, targets)
    sr = stackgan.real_detail(G2, test, cfg.stage2_size, n=n, keep_low_=args.keep_low)
    row = {"stage2": {k: round(s2[k], 3) for k in COLOURS}, "stage1_same_captions": {k: round(s1[k], 3) for k in COLOURS},
           "hf_stage2": round(high_frequency_energy(high), 4), "hf_stage1_bicubic": round(high_frequency_energy(up), 4),
           **{k: round(v, 4) for k, v in sr.items()}}
    print(f"{name}: Stage-II " + ", ".join(f"{k} {row['stage2'][k]:.2f} (S-I {row['stage1_same_captions'][k]:.2f})"
                                           for k in COLOURS)
          + f"; high-frequency energy {row['hf_stage2']:.4f} (S-I bicubic {row['hf_stage1_bicubic']:.4f}); "
            f"real birds' detail recovered: error {row['hf_error_stage2']:.3f} (bicubic {row['hf_error_bicubic']:.3f})", flush=True)
    write_result(f"stackgan_stage2/{name}", {
        "profile": cfg.profile, "embedding": cfg.embedding, "recipe_fields": recipe.as_dict(), "overrides": args.set, "keep_low": args.keep_low, "gf2": cfg.gf2, "df2": cfg.df2, "epochs2": cfg.epochs2, "lr_decay_epochs2": cfg.lr_decay_epochs2,
        "train_seed": args.train_seed,
        "stage1_checkpoint_step": state["step"], "steps": len(hist), "train_seconds": round(hist.seconds, 1), "n_eval": n,
        "threads": torch.get_num_threads(), **row}, device)


if __name__ == "__main__":
    main()
