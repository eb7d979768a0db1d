"""How notebook 03's CGANs score after every epoch: the evidence for the `quick` profile's epoch count.

Trains the profile's CGANs (``--models``, default conv and mlp) for ``--epochs`` epochs per training seed, exactly as
the notebook trains them (the same builders, :func:`hwlib.models.cgan.training`, loader and ``fit``), and scores the
EMA generator after every epoch with :func:`hwlib.metrics.evaluate` (conditional accuracy, FID-MNIST, precision,
recall, within-class spread; ``n_eval`` samples from :func:`hwlib.models.cgan.sampler`, as the notebook).
``evaluate`` seeds its own sampling and leaves torch's RNG state as it was (building its feature network included),
so the training after it is bitwise the notebook's run of that many epochs (at the same thread count): epoch ``e``'s
row is what the notebook would print trained for ``e`` epochs.

Each seed writes ``benchmarks/results/cgan_epochs/<profile>_seed<k>[_<tag>].json`` as it goes (rerun one seed per
process to use both cores: ``OMP_NUM_THREADS=1``); ``--summary`` runs nothing and gathers the recorded seeds into
``benchmarks/results/cgan_epochs_<profile>[_<tag>].json``: every number's mean (min–max) per epoch over the seeds.

Usage: ``OMP_NUM_THREADS=1 python benchmarks/bench_cgan_epochs.py --seeds 0 --epochs 10 [--tag xeon_noamx]``, then
``python benchmarks/bench_cgan_epochs.py --summary [--tag xeon_noamx]``.
"""
from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch

import hwlib
from hwlib import metrics
from hwlib.bench import read_results, write_result
from hwlib.data import ResidentLoader, load_mnist
from hwlib.models.cgan import build, sampler, training
from hwlib.train import fit, get_device

NB = "03_cgan_mnist"
KEYS = ("accuracy", "fid", "precision", "recall", "spread")


def run_seed(profile: str, seed: int, epochs: int, names: list[str], tag: str) -> None:
    """Train ``names`` for ``epochs`` epochs at ``seed``, scoring after each; write the seed's record as it goes."""
    cfg = hwlib.get_profile(NB, profile)
    device = get_device()
    images, labels = load_mnist("train")
    if cfg.train_subset:
        images, labels = images[: cfg.train_subset], labels[: cfg.train_subset]
    loader = ResidentLoader(images, labels, batch_size=cfg.batch_size, seed=seed, device=device)
    torch.manual_seed(seed)  # as the notebook, before it builds both CGANs
    settings = {"mlp": cfg.mlp, "conv": cfg.conv}
    models = {name: (G.to(device), D.to(device)) for name, (G, D) in build(cfg).items()}
    record: dict[str, list[dict[str, float]]] = {}
    for name in names:
        G, D = models[name]
        step, optimizers, ema = training(G, D, settings[name], cfg, device)
        net = ema.module if ema else G
        rows = record.setdefault(name, [])

        def score(epoch: int) -> None:
            r = metrics.evaluate(sampler(net.eval(), cfg.z_dim, device), n=cfg.n_eval, batch_size=cfg.eval_batch,
                                 device=device)  # leaves torch's RNG state as it was: the training goes on unshifted
            rows.append({"epoch": epoch, **{k: round(float(r[k]), 4) for k in KEYS}})
            print(name, rows[-1], flush=True)
            write_result(f"cgan_epochs/{profile}_seed{seed}", {"seed": seed, "epochs": epochs, "runs": record},
                         device=device, echo=False, tag=tag)

        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as run_dir:
            fit(step, loader, epochs=epochs, run_dir=run_dir, modules={"G": G, "D": D}, optimizers=optimizers,
                emas={"G": ema} if ema else None, seed=seed, resume=False, on_epoch_end=score, progress=False,
                desc=name)
        print(f"{name}: {epochs} epochs and their scoring in {time.perf_counter() - start:.0f} s", flush=True)


def summary(profile: str, tag: str) -> None:
    """Mean (min–max) of every number per model and epoch over the recorded seeds."""
    suffix = f"_{tag}" if tag else ""
    seeds = [r for r in read_results(f"cgan_epochs/{profile}_seed*{suffix}")
             if tag or r["benchmark"].rsplit("_seed", 1)[1].isdigit()]  # untagged: not another machine's seeds
    if not seeds:
        raise SystemExit(f"no seeds under benchmarks/results/cgan_epochs/ for {profile}{suffix}: run --seeds first")
    out: dict[str, dict[str, dict[str, list[float]]]] = {}
    for name in seeds[0]["runs"]:
        epochs = min(len(r["runs"].get(name, [])) for r in seeds)
        out[name] = {}
        for e in range(epochs):
            values = {k: [r["runs"][name][e][k] for r in seeds] for k in KEYS}
            out[name][str(e + 1)] = {k: [round(float(np.mean(v)), 4), min(v), max(v)] for k, v in values.items()}
            print(f"{name} epoch {e + 1:2d}: " + ", ".join(f"{k} {np.mean(v):.3f} ({min(v):.3f}–{max(v):.3f})"
                                                       for k, v in values.items() if k != "recall"))
    write_result(f"cgan_epochs_{profile}", {"seeds": sorted(r["seed"] for r in seeds), "mean_min_max": out},
                 echo=False, tag=tag)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--models", nargs="+", default=["conv", "mlp"], choices=["conv", "mlp"])
    parser.add_argument("--tag", default="", help="e.g. the machine: cgan_epochs/<profile>_seed<k>_<tag>.json")
    parser.add_argument("--summary", action="store_true", help="gather the recorded seeds; train nothing")
    args = parser.parse_args()
    if args.summary:
        summary(args.profile, args.tag)
        return
    for seed in args.seeds:
        run_seed(args.profile, seed, args.epochs, args.models, args.tag)


if __name__ == "__main__":
    main()
