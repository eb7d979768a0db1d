"""DDPM sampling on this machine: samples/s of notebook 04's U-Net by batch size and precision, and what bf16 costs
in quality.

Loads the EMA U-Net that notebook 04 trained (``<HWLIB_RUNS>/04_vae_gan_ddpm/<profile>/ddpm``: run the notebook
first) and measures
- speed: one ancestral step (a U-Net call and the update) timed at batch 500 and 100 in fp32 and at batch 100 under
  :func:`hwlib.train.autocast` (bf16 where the CPU or GPU computes it natively), as samples/s of the full
  T-step chain (T steps per sample);
- quality (``--n``, default 1,000; 0 skips it): FID-MNIST, precision, recall and IS-MNIST of ``n`` ancestral samples
  drawn from the same noise in fp32 and under ``autocast``, with ``hwlib.metrics.evaluate``.
Writes ``benchmarks/results/sampling_<device>.json``.
Usage: ``python benchmarks/bench_sampling.py [--profile quick] [--n 1000] [--repeats 5]``.
"""
from __future__ import annotations

import argparse
import contextlib
import time

import torch

import hwlib
from hwlib.bench import write_result
from hwlib.checkpoints import Checkpointer
from hwlib.diffusion import Diffusion
from hwlib.metrics import evaluate
from hwlib.models.unet import build
from hwlib.train import autocast, get_device

NB = "04_vae_gan_ddpm"


def step_seconds(diffusion: Diffusion, model: torch.nn.Module, batch: int, precision: contextlib.AbstractContextManager,
                 repeats: int, device: torch.device) -> float:
    """Seconds of one ancestral step at ``batch`` (median of ``repeats``, after one warm-up)."""
    x = torch.randn(batch, 1, 28, 28, device=device)
    t = diffusion.T // 2
    times = []
    with torch.no_grad():
        for i in range(repeats + 1):
            start = time.perf_counter()
            with precision:
                x0, _ = diffusion.predict(model, x, t, None, None)
            diffusion.ddpm_step(x0, x, t, t - 1, torch.randn_like(x))
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i:
                times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--n", type=int, default=1000, help="samples per precision for the quality check (0: skip)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    cfg, device = hwlib.get_profile(NB, args.profile, verbose=False), get_device()
    state = Checkpointer(hwlib.runs_dir(f"{NB}/{cfg.profile}/ddpm")).load_latest()
    if state is None:
        raise SystemExit(f"no trained DDPM under {hwlib.runs_dir(f'{NB}/{cfg.profile}/ddpm')}: run notebook 04 "
                         f"with profile {cfg.profile!r} first")
    model = build(cfg.unet).to(device).eval()
    model.load_state_dict(state["emas"]["unet"]["module"])
    scale = 1000 / cfg.T
    diffusion = Diffusion(T=cfg.T, schedule=cfg.schedule, beta_start=1e-4 * scale, beta_end=0.02 * scale).to(device)
    bf16 = autocast(device)
    speed = {}
    for label, batch, precision in (("fp32, batch 500", 500, contextlib.nullcontext()),
                                    ("fp32, batch 100", 100, contextlib.nullcontext()),
                                    ("autocast, batch 100", 100, bf16)):
        seconds = step_seconds(diffusion, model, batch, precision, args.repeats, device)
        speed[label] = {"step_s": round(seconds, 4), "samples_per_s": round(batch / (seconds * cfg.T), 3)}
        print(f"{label:30s} {seconds:.3f} s per step -> {speed[label]['samples_per_s']:.2f} samples/s (T = {cfg.T})",
              flush=True)
    base = speed["fp32, batch 500"]["samples_per_s"]
    result = {"profile": cfg.profile, "T": cfg.T, "threads": torch.get_num_threads(),
              "autocast": str(bf16.fast_dtype) if isinstance(bf16, torch.autocast) else "fp32",
              "speed": speed, "speedup_vs_fp32_batch500": {k: round(v["samples_per_s"] / base, 2) for k, v in speed.items()}}
    if args.n:
        quality = {}
        for label, precision in (("fp32", contextlib.nullcontext), ("autocast", lambda: autocast(device))):
            def draw(k: int, precision=precision) -> torch.Tensor:
                with precision():
                    return diffusion.sample(model, k, sampler="ddpm")
            m = evaluate(draw, real="mnist-test", n=args.n, batch_size=100, device=device, seed=0)
            quality[label] = {k: round(float(m[k]), 3) for k in ("fid", "precision", "recall", "is_mnist", "samples_per_s")}
            print(label, quality[label], flush=True)
        result.update(n=args.n, quality=quality)
    write_result(f"sampling_{device.type}", result, device)


if __name__ == "__main__":
    main()
