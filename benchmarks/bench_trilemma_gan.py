"""Notebook 04's DCGAN recipe: FID-MNIST, precision and recall over training seeds, for profile overrides.

Trains notebook 04's unconditional DCGAN exactly as the notebook does (``dcgan.build``, ``make_gan_step``,
``hwlib.train.fit`` on the same ``n_train`` digits, epochs and batch) and scores it with
``hwlib.metrics.evaluate`` on ``--n`` samples against the MNIST test set, the way notebook 03 scores its conv
CGAN (5,000 samples in ``quick``), so the two are comparable at the same sample count. ``--set key=value``
overrides one profile field (repeatable, e.g. ``--set gan_ch=32``); ``--set gan_ema=0.999``, which is not a
profile field (the notebook has no EMA of G), samples from an EMA of G instead. Writes
``benchmarks/results/trilemma_gan/<profile>[_<overrides>].json`` with one row per seed.
Usage: ``python benchmarks/bench_trilemma_gan.py [--profile quick] [--seeds 0 1 2] [--n 5000] [--set k=v ...]``.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

import hwlib
import hwlib.profiles
from hwlib.bench import write_result
from hwlib.data.mnist import load_mnist
from hwlib.data.resident import ResidentLoader
from hwlib.gan import make_gan_step
from hwlib.metrics import evaluate
from hwlib.models import dcgan
from hwlib.train import EMA, fit, get_device

NB = "04_vae_gan_ddpm"


def train_and_score(cfg, name: str, seed: int, n: int, device: torch.device) -> dict:
    x_train, y_train = load_mnist("train")
    subset = torch.randperm(x_train.shape[0], generator=torch.Generator().manual_seed(seed))[: cfg.n_train]
    torch.manual_seed(seed)
    G, D = (net.to(device) for net in dcgan.build(cfg))
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.gan_lr, betas=tuple(cfg.gan_betas))
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.gan_lr, betas=tuple(cfg.gan_betas))
    ema = EMA(G, cfg.gan_ema) if cfg.get("gan_ema") else None
    step = make_gan_step(G, D, opt_g, opt_d, z_dim=cfg.z_dim, n_critic=cfg.n_critic, conditional=False, ema=ema)
    loader = ResidentLoader(x_train[subset], y_train[subset], batch_size=cfg.batch_size, seed=seed, device=device)
    t0 = time.perf_counter()
    history = fit(step, loader, epochs=cfg.epochs, run_dir=hwlib.runs_dir(f"bench/trilemma_gan/{name}/seed{seed}"),
                  modules={"G": G, "D": D}, optimizers={"G": opt_g, "D": opt_d}, emas={"G": ema} if ema else None,
                  seed=seed, resume=False, progress=False, desc="dcgan")
    train_s = time.perf_counter() - t0
    sampler = (ema.module if ema else G).eval()
    m = evaluate(lambda k: sampler(torch.randn(k, cfg.z_dim, device=device)), real="mnist-test", n=n,
                 batch_size=cfg.eval_batch, device=device, seed=seed)
    loss_d = np.array(history["loss_d"], dtype=float)
    late = loss_d[len(loss_d) // 2:]
    return {"seed": seed, "fid": round(m["fid"], 2), "precision": round(m["precision"], 3),
            "recall": round(m["recall"], 3), "is_mnist": round(float(m["is_mnist"]), 2),
            "steps": len(history), "train_s": round(train_s, 1),
            "loss_d_second_half": round(float(late.mean()), 3), "share_loss_d_below_0.1": round(float((late < 0.1).mean()), 3)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--n", type=int, default=5000, help="samples scored per seed")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one profile field")
    args = parser.parse_args()
    overrides = {}
    for pair in args.set:
        key, value = pair.split("=", 1)
        overrides[key] = json.loads(value)
    cfg = hwlib.profiles.Config({**hwlib.get_profile(NB, args.profile, verbose=False), **overrides})
    device = get_device()
    name = "_".join([args.profile] + [f"{k}{v}" for k, v in overrides.items()])
    rows = []
    for seed in args.seeds:
        rows.append(train_and_score(cfg, name, seed, args.n, device))
        print(json.dumps(rows[-1]), flush=True)
    fids = [r["fid"] for r in rows]
    write_result(f"trilemma_gan/{name}", {
        "profile": args.profile, "overrides": overrides, "n": args.n, "threads": torch.get_num_threads(),
        "gan_ch": cfg.gan_ch, "gan_ema": cfg.get("gan_ema"), "fid_mean": round(float(np.mean(fids)), 2),
        "fid_min": min(fids), "fid_max": max(fids), "rows": rows}, device)


if __name__ == "__main__":
    main()
