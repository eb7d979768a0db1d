"""Notebook 02's sampling and evaluation, from its trained networks: fp32 against :class:`hwlib.train.SamplingNet`.

Loads the two EMA U-Nets notebook 02 trained (``<HWLIB_RUNS>/02_diffusion_mnist/<profile>/{baseline,lin}``: run the
notebook first) and runs, for each way of calling them, every sampling the notebook does after training, with its
sizes and seeds: the reverse-process trajectory, the guided and unconditional grids, the §9 ablation (both models,
``n_eval`` samples, ``metrics.evaluate`` and the brightness error), the step-count table and the baseline's
``T``-step ancestral chain. For each it records the seconds per section and every headline number, so one run shows
what each way costs and whether it changes a result:
- ``fp32``: the EMA network as it is (the notebook before 2026-12-06);
- ``bf16``: ``SamplingNet(net)``, the notebook's way (bf16 autocast where the hardware computes it faster than fp32);
- ``bf16, compiled``: ``SamplingNet(net, compile=True)``, one graph per batch size (``--compiled``; set
  ``TORCHINDUCTOR_CACHE_DIR`` to an empty folder to price the compilation a first run pays).
Every way samples with freed memory kept for the next call (:func:`hwlib.train.keep_freed_memory`, set first): the
notebook samples so, since ``SamplingNet`` sets it, and the setting is process-wide, so a row timed before the first
``SamplingNet`` would otherwise run under glibc's defaults and the rows after it not.
Writes ``benchmarks/results/sampling_02_<device>[_<tag>].json``.
Usage: ``python benchmarks/bench_sampling_02.py [--profile quick] [--compiled] [--tag intel_xeon]``.
"""
from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

import hwlib
from hwlib import metrics
from hwlib.bench import write_result
from hwlib.checkpoints import Checkpointer
from hwlib.data import load_mnist
from hwlib.diffusion import Diffusion
from hwlib.models.unet import build
from hwlib.train import SamplingNet, get_device, keep_freed_memory

NB = "02_diffusion_mnist"


def load(cfg, name: str, device: torch.device) -> tuple[torch.nn.Module, Diffusion]:
    """Configuration ``name``'s EMA U-Net (eval mode) and its Diffusion, as notebook 02's ``train`` restores them."""
    run_dir = hwlib.runs_dir(f"{NB}/{cfg.profile}/{name}")
    state = Checkpointer(run_dir).load_latest()
    if state is None:
        raise SystemExit(f"no trained network under {run_dir}: run notebook 02 with profile {cfg.profile!r} first")
    net = build(cfg.unet, num_classes=10).to(device)
    net.load_state_dict(state["emas"]["ema"]["module"])
    diffusion = Diffusion(T=cfg.T, beta_start=cfg.beta_start, beta_end=cfg.beta_end, sampler="ddim",
                          guidance=cfg.guidance, **cfg.configs[name]).to(device)
    return net.eval(), diffusion


def workload(cfg, models: dict, device: torch.device, brightness: torch.Tensor, seed: int = 0) -> dict:
    """Every sampling of notebook 02 after training; returns its seconds per section and its numbers."""
    gen = lambda: torch.Generator(device).manual_seed(seed)
    seconds, numbers = {}, {}

    def timed(section: str, fn: Callable[[], None]) -> None:
        start = time.perf_counter()
        fn()
        seconds[section] = round(time.perf_counter() - start, 1)

    net, diff = models["lin"]
    timed("reverse process", lambda: diff.trajectory(net, 10, steps=cfg.traj_steps, sampler="ddpm",
                                                     labels=torch.arange(10, device=device), generator=gen()))

    def grids() -> None:
        guided = diff.sample(net, 100, steps=cfg.sample_steps, labels=torch.arange(10, device=device).repeat_interleave(10),
                             generator=gen(), batch_size=cfg.eval_batch)
        uncond = diff.sample(net, 100, steps=cfg.sample_steps, labels=torch.full((100,), 10, device=device),
                             guidance=1.0, generator=gen(), batch_size=cfg.eval_batch)
        numbers["IS-MNIST guided grid"], numbers["IS-MNIST unconditional grid"] = (
            round(float(metrics.is_mnist(guided)), 2), round(float(metrics.is_mnist(uncond)), 2))
    timed("grids", grids)

    def ablation() -> None:
        for name, (net_, diff_) in models.items():
            store = []

            def sampler(m: int, net_=net_, diff_=diff_, store=store):
                labels = torch.arange(m, device=device) % 10
                x = diff_.sample(net_, m, steps=cfg.eval_steps, labels=labels)
                store.append((x.cpu(), labels.cpu()))
                return x, labels
            r = metrics.evaluate(sampler, n=cfg.n_eval, batch_size=cfg.eval_batch, device=device)
            err = metrics.brightness_error(torch.cat([s[0] for s in store]), torch.cat([s[1] for s in store]), brightness)
            numbers[name] = {"FID-MNIST": round(float(r["fid"]), 2), "cond. accuracy": round(float(r["accuracy"]), 4),
                             "IS-MNIST": round(float(r["is_mnist"]), 2), "precision": round(float(r["precision"]), 3),
                             "recall": round(float(r["recall"]), 3), "brightness error": round(float(err), 4)}
    timed("ablation (section 9)", ablation)

    def step_table() -> None:
        for steps in cfg.step_counts:
            def sampler(m: int, steps=steps):
                labels = torch.arange(m, device=device) % 10
                return diff.sample(net, m, steps=steps, labels=labels), labels
            r = metrics.evaluate(sampler, n=cfg.n_eval, batch_size=cfg.eval_batch, device=device)
            numbers[f"lin, {steps} steps"] = {"FID-MNIST": round(float(r["fid"]), 2),
                                             "cond. accuracy": round(float(r["accuracy"]), 4)}
    timed("step table", step_table)

    def ancestral() -> None:
        net_b, diff_b = models["baseline"]
        labels = torch.arange(cfg.ancestral_n, device=device) % 10
        x = diff_b.sample(net_b, cfg.ancestral_n, steps=cfg.T, sampler="ddpm", labels=labels, generator=gen(),
                          batch_size=cfg.eval_batch)
        numbers["baseline ancestral"] = {"cond. accuracy": round(float(metrics.conditional_accuracy(x, labels)), 4),
                                         "IS-MNIST": round(float(metrics.is_mnist(x)), 2)}
    timed("ancestral baseline", ancestral)
    return {"seconds": seconds, "total_seconds": round(sum(seconds.values()), 1), "numbers": numbers}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--compiled", action="store_true", help="also SamplingNet(compile=True)")
    parser.add_argument("--tag", default="")
    args = parser.parse_args()
    keep_freed_memory()  # as the notebook samples; before the first row, so that every row runs under it
    cfg, device = hwlib.get_profile(NB, args.profile, verbose=False), get_device()
    x_test, y_test = load_mnist("test")
    brightness = metrics.class_brightness(x_test, y_test)
    ways = {"fp32": lambda net: net, "bf16": lambda net: SamplingNet(net)}
    if args.compiled:
        ways["bf16, compiled"] = lambda net: SamplingNet(net, compile=True)
    result = {"profile": cfg.profile, "threads": torch.get_num_threads(), "ways": {}}
    for way, wrap in ways.items():
        torch._dynamo.reset()
        models = {name: (wrap(net), diff) for name, (net, diff) in
                  ((name, load(cfg, name, device)) for name in cfg.configs)}
        result["ways"][way] = workload(cfg, models, device, brightness)
        print(way, result["ways"][way], flush=True)
    fp32 = result["ways"]["fp32"]["total_seconds"]
    result["speedup_vs_fp32"] = {w: round(fp32 / r["total_seconds"], 2) for w, r in result["ways"].items()}
    write_result(f"sampling_02_{device.type}", result, device, tag=args.tag)


if __name__ == "__main__":
    main()
