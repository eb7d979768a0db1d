"""How much of real birds' 256-px detail can be learnt from their 64-px averages? The super-resolution ceiling for Stage-II.

Trains Stage-II's super-resolution branch (``Recipe.stage2_sr_branch``: :func:`hwlib.models.stackgan.espcn` at the
64-px input, its output added to bicubic up-sampling) *alone*, as plain paired super-resolution: each step takes
``--batch`` real training birds (random ``stage2_size`` crops and flips of notebook 01's Stage-II birds, as Stage-II
trains on them), average-pools them to 64 px and pays the L1 (or L2) distance to the bird; Adam at a constant
``--lr``. No GAN, no text, no Stage-I image: what the data let a network of this shape learn in this budget. Every
``--every`` steps it scores the first ``--n-eval`` real test birds as notebook 01 does (:func:`stackgan.refine_real`,
projected with ``keep_low`` as the notebook samples: the error of the high band against the real bird; bicubic 0.876
on quick's test birds) and the plain L1 distance. Writes ``benchmarks/results/stackgan_stage2/sr_alone_<...>.json``.
Usage: ``python benchmarks/bench_stackgan_sr.py [--loss l1|l2] [--width 32] [--lr 1e-3] [--steps 720] [--batch 16]
[--n-birds N]`` (defaults: the profile's Stage-II birds; no notebook run needed).
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import hwlib
from hwlib.bench import write_result
from hwlib.data import cub, synthbirds
from hwlib.metrics import high_frequency_error
from hwlib.models import stackgan
from hwlib.train import adam, get_device, seed_everything

NB = "01_stackgan_cub"


class Alone(nn.Module):
    """(64-px image (B, 3, 64, 64), text) -> (bicubic up-sampling + ESPCN residual, clamped to [-1, 1],): the
    branch as :func:`stackgan.refine_real` calls a Stage-II G (the text is ignored)."""

    def __init__(self, width: int, size: int) -> None:
        super().__init__()
        self.size, self.net = size, stackgan.espcn(width, size // 64)

    def forward(self, low: torch.Tensor, text: torch.Tensor | None = None) -> tuple[torch.Tensor]:
        up = F.interpolate(low, size=self.size, mode="bicubic", align_corners=False)
        return ((up + self.net(low)).clamp(-1, 1),)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--loss", choices=("l1", "l2"), default="l1")
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--steps", type=int, default=720)
    parser.add_argument("--batch", type=int, default=None, help="birds per step (default: the profile's Stage-II batch)")
    parser.add_argument("--n-birds", type=int, default=None, help="training birds (default: the profile's Stage-II birds)")
    parser.add_argument("--every", type=int, default=120)
    parser.add_argument("--n-eval", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    cfg, device = hwlib.get_profile(NB, args.profile, verbose=False), get_device()
    batch, size = args.batch or cfg.batch_size2, cfg.stage2_size
    root = synthbirds.make_synthbirds(cfg.n_train, cfg.n_test, seed=0)
    train = cub.open_birds(root, "train", embedding=cfg.embedding)
    test = cub.open_birds(root, "test", embedding=cfg.embedding)
    n_birds = min(args.n_birds or cfg.stage2_n, len(train))
    images = train.images(size * 76 // 64, np.arange(n_birds)).to(device)
    real = cub.center_crop(test.images(size * 76 // 64, np.arange(min(args.n_eval, len(test)))), size)

    seed_everything(args.seed)
    model = Alone(args.width, size).to(device)
    opt = adam(model.parameters(), lr=args.lr)
    loader = cub.index_loader(n_birds, batch, seed=args.seed, device=images.device)
    curve, seconds, step = [], 0.0, 0

    def score() -> None:  # one pass over the test birds: the L1 of the raw output, the detail error projected
        torch.manual_seed(0)  # (re-seeds the crops of the steps that follow, as the committed results were made)
        out, up = stackgan.refine_real(model, real, torch.zeros(len(real), 1))
        projected = stackgan.keep_low(out, F.adaptive_avg_pool2d(real, 64))
        curve.append({"step": step, "seconds": round(seconds, 1), "hf_error": round(high_frequency_error(projected, real), 4),
                      "hf_error_bicubic": round(high_frequency_error(up, real), 4), "l1": round(float((out - real).abs().mean()), 5)})
        print(curve[-1], flush=True)

    score()
    while step < args.steps:
        for (idx,) in loader:
            t0 = time.perf_counter()
            hi = cub.augment(images, size, index=idx)
            out = model(F.adaptive_avg_pool2d(hi, 64))[0]
            loss = (out - hi).abs().mean() if args.loss == "l1" else (out - hi).pow(2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            seconds += time.perf_counter() - t0
            step += 1
            if step % args.every == 0 or step == args.steps:
                score()
            if step == args.steps:
                break
    name = f"sr_alone_{args.profile}_{args.loss}_w{args.width}_lr{args.lr:g}_b{batch}_n{n_birds}_steps{args.steps}"
    write_result(f"stackgan_stage2/{name}", {
        "profile": args.profile, "loss": args.loss, "width": args.width, "lr": args.lr, "batch": batch,
        "n_birds": n_birds, "steps": args.steps, "seed": args.seed, "n_eval": len(real), "threads": torch.get_num_threads(),
        "parameters": sum(p.numel() for p in model.parameters()), "train_seconds": round(seconds, 1),
        "final": curve[-1], "curve": curve}, device)


if __name__ == "__main__":
    main()
