"""Text-image consistency of StackGAN Stage-I on SynthBirds as a function of training steps.

Trains Stage-I at a profile's settings (default ``quick``: gf = df = 16, batch 16, 1,800 birds) at a constant
learning rate (``--halving``: halved as the profile does) for ``--steps`` steps and, every ``--every`` steps,
scores 64x64 images generated from the first caption of ``n_eval`` test birds (unseen species) with notebook
01's attribute classifier: body / wing / crown / belly colour accuracy against chance (1/10). Answers "would
`quick` reach the goal (>= 2x chance on body and wing colour) if it trained longer?" and, with ``--train-seed``
(networks and batches only; data, classifier and evaluation set keep ``--seed``), how much the answer moves
from one training run to the next. Writes
``benchmarks/results/stackgan_consistency_<profile>[_n<n_train>][_train<seed>][_halving].json``.
Usage: ``python benchmarks/bench_stackgan_consistency.py [--profile quick] [--steps 6000] [--every 1000]
[--n-train N] [--train-seed S] [--halving]``.
"""
from __future__ import annotations

import argparse
import math
import time

import torch

import hwlib
from hwlib.bench import write_result
from hwlib.data import cub, synthbirds
from hwlib.models import attributes, stackgan
from hwlib.train import get_device, seed_everything


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--every", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-train", type=int, default=None, help="training birds (default: the profile's n_train)")
    parser.add_argument("--train-seed", type=int, default=None,
                        help="seed of the networks and batches only (default: --seed); data, classifier and evaluation keep --seed")
    parser.add_argument("--halving", action="store_true", help="halve the learning rate as the profile does (default: constant)")
    args = parser.parse_args()
    cfg, device, seed = hwlib.get_profile("01_stackgan_cub", args.profile, verbose=False), get_device(), args.seed
    n_train = args.n_train or cfg.n_train
    root = synthbirds.make_synthbirds(n_train, cfg.n_test, seed=seed)
    train = cub.open_birds(root, "train", embedding=cfg.embedding)
    test = cub.open_birds(root, "test", embedding=cfg.embedding)
    train_seed = seed if args.train_seed is None else args.train_seed
    tag = (cfg.profile + ("" if n_train == cfg.n_train else f"_n{n_train}")
           + ("" if train_seed == seed else f"_train{train_seed}") + ("_halving" if args.halving else ""))
    runs = hwlib.runs_dir(f"bench/stackgan_consistency/{tag}")

    attr_images, attr_labels = synthbirds.attribute_birds(cfg.attr_n, seed=seed)
    clf, _ = attributes.train_attribute_net(torch.from_numpy(attr_images), attr_labels, width=cfg.attr_width,
                                            epochs=cfg.attr_epochs, run_dir=runs / "attributes", seed=seed, device=device)
    n_eval = min(cfg.n_eval, len(test))
    eval_text, eval_z, targets = synthbirds.consistency_set(test, n_eval, cfg.z_dim, seed)

    seed_everything(train_seed)
    G = stackgan.Stage1G(train.embeddings.shape[-1], cfg.c_dim, cfg.z_dim, cfg.gf, upsample=cfg.upsample).to(device)
    D = stackgan.StageD(64, cfg.c_dim, cfg.df).to(device)
    n_batches = len(train) // cfg.batch_size
    every_epochs = max(1, round(args.every / n_batches))
    epochs = math.ceil(args.steps / (every_epochs * n_batches)) * every_epochs
    curve: list[dict] = []
    t0 = time.perf_counter()

    def score(epoch: int) -> None:
        if epoch % every_epochs:
            return
        low = stackgan.generate(G, eval_text, z=eval_z)[0]
        acc = attributes.attribute_accuracy(attributes.predict(clf, low), targets)
        row = {"step": epoch * n_batches, "epoch": epoch, "seconds": round(time.perf_counter() - t0, 1),
               **{k: round(acc[k], 3) for k in ("body", "wing", "crown", "belly")}}
        curve.append(row)
        G.train()
        print(f"step {row['step']:6d} ({row['seconds']:.0f} s): body {row['body']:.3f} ({row['body'] / 0.1:.1f}x chance), "
              f"wing {row['wing']:.3f} ({row['wing'] / 0.1:.1f}x), crown {row['crown']:.3f}, belly {row['belly']:.3f}", flush=True)

    stackgan.train_stage(G, D, images=train.images(76).to(device), embeddings=torch.from_numpy(train.embeddings).to(device),
                         class_ids=torch.from_numpy(train.class_ids).to(device), out_size=64, epochs=epochs,
                         batch_size=cfg.batch_size, run_dir=runs / "stage1", lr=cfg.lr, betas=cfg.betas, kl_coef=cfg.kl_coef,
                         z_dim=cfg.z_dim, lr_decay_epochs=cfg.lr_decay_epochs if args.halving else None, seed=train_seed,
                         resume=False, on_epoch_end=score,
                         config={"profile": cfg.profile, "epochs": epochs}, desc="Stage-I", progress=False)
    write_result(f"stackgan_consistency_{tag}", {
        "profile": cfg.profile, "gf": cfg.gf, "df": cfg.df, "batch_size": cfg.batch_size, "n_train": len(train),
        "train_seed": train_seed, "lr": cfg.lr, "kl_coef": cfg.kl_coef, "n_eval": n_eval, "chance": 0.1,
        "lr_schedule": f"halved every {cfg.lr_decay_epochs} epochs" if args.halving else "constant",
        "profile_steps": cfg.epochs1 * n_batches, "curve": curve}, device)


if __name__ == "__main__":
    main()
