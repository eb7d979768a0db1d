"""DDPM sampling on this machine: samples/s of notebook 04's U-Net by batch size and precision, and what bf16 costs
in quality.

Loads the EMA U-Net that notebook 04 trained (``<HWLIB_RUNS>/04_vae_gan_ddpm/<profile>/ddpm``: run the notebook
first) and measures
- speed: one ancestral step (a U-Net call and the update) timed at batch 500 and 100 in fp32 and at batch 100 under
  :func:`hwlib.train.autocast` (bf16 where the CPU or GPU computes it faster than fp32), as samples/s of the full
  T-step chain (T steps per sample);
- ``before``: the first setting with the self-attention as it was before ``hwlib.models.unet.AttnBlock`` wrote it
  out (``scaled_dot_product_attention`` on strided queries, keys and values, which PyTorch computes by its unfused
  fallback) and glibc's default allocator: today's code against the code the speed issue measured. It runs first;
  every row after it samples with freed memory kept for the next step (``hwlib.train.keep_freed_memory``, which
  ``SamplingNet`` sets; process-wide, so it cannot be undone for a later row);
- ``attention written out``: autocast at batch 100 with the attention weights written out as training computes them
  (``AttnBlock.written``), against today's fused attention at sampling (``AttnBlock.fused``);
- ``compiled``: autocast at batch 100 with the network compiled as notebook 04 samples it
  (:class:`hwlib.train.SamplingNet` with ``compile``, a graph for batch 100), with its compilation
  seconds and the number of samples after which it pays them back; and ``compiled, inductor's group norm``: the same
  with ``nn.GroupNorm``'s own forward in place of :func:`hwlib.models.unet.channelwise_group_norm` (``--eager-only``
  skips both);
- ``ceiling``: the share of the eager autocast step spent in convolutions and matrix products (``torch.profiler``,
  their operators' own time); if everything else were free, samples/s could rise by at most step / dense time.
- quality (``--n``, default 1,000; 0 skips it): FID-MNIST, precision, recall and IS-MNIST of ``n`` ancestral
  samples drawn from the same noise in fp32, under autocast, and under autocast compiled (``hwlib.metrics.evaluate``).
- ``interleaved`` (``--rounds N``): ``before`` against the compiled row, each in a process of its own (``before``
  with glibc's default allocator, the compiled sampler keeping freed memory), timed in turns for N rounds: the median
  of the per-round ratios with their range. The single pass above times each row once, minutes apart, and the
  shared CPU's speed moves in between (three runs in one hour at 2 threads: 4.06x, 4.82x, 5.00x).
Writes ``benchmarks/results/sampling_<device>[_<tag>].json``.
Usage: ``python benchmarks/bench_sampling.py [--profile quick] [--n 1000] [--repeats 5] [--rounds 8] [--eager-only]
[--tag intel_xeon]``.
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable
from unittest import mock

import torch
import torch.nn.functional as F
from torch import nn

import hwlib
from hwlib.bench import Worker, is_dense, ratio_summary, write_result
from hwlib.checkpoints import Checkpointer
from hwlib.diffusion import Diffusion
from hwlib.metrics import evaluate
from hwlib.models import upsample_conv
from hwlib.models.unet import AttnBlock, GroupNorm, build
from hwlib.train import SamplingNet, autocast, get_device, keep_freed_memory

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


def compiled_speed(diffusion: Diffusion, compiled: torch.nn.Module, precision: contextlib.AbstractContextManager,
                   repeats: int, device: torch.device) -> dict:
    """Compilation seconds (the first call) and speed at batch 100 of a ``torch.compile``-d network."""
    start = time.perf_counter()
    with torch.no_grad(), precision:  # the first call compiles
        diffusion.predict(compiled, torch.randn(100, 1, 28, 28, device=device), diffusion.T // 2, None, None)
    compile_s = time.perf_counter() - start
    seconds = step_seconds(diffusion, compiled, 100, precision, repeats, device)
    rate = 100 / (seconds * diffusion.T)
    print(f"compiled: {seconds:.3f} s per step -> {rate:.2f} samples/s after {compile_s:.0f} s of compilation", flush=True)
    return {"step_s": round(seconds, 4), "samples_per_s": round(rate, 3), "compile_s": round(compile_s, 1)}


def strided_attention(self: AttnBlock, x: torch.Tensor) -> torch.Tensor:
    """``AttnBlock.forward`` as it was: q, k, v with stride H·W in the channel dimension (PyTorch's unfused path)."""
    b, c, h, w = x.shape
    q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).transpose(-1, -2).unbind(1)
    out = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]
    return x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))


ATTENTION = {"strided attention": ("forward", strided_attention),  # the attention as the speed issue measured it
             "attention written out": ("fused", staticmethod(AttnBlock.written))}  # as training computes it


BEFORE = "before: fp32, batch 500, strided attention"


def network_as(label: str) -> contextlib.ExitStack:
    """``AttnBlock`` patched as the end of a row's ``label`` names it (a key of ``ATTENTION``), else unchanged; for
    the ``before`` row also the up-sampling as it was then (interpolation, then the convolution: no
    :mod:`hwlib.models.upsample_conv`)."""
    stack = contextlib.ExitStack()
    patch = next((p for k, p in ATTENTION.items() if label.endswith(k)), None)
    if patch:
        stack.enter_context(mock.patch.object(AttnBlock, *patch))
    if label == BEFORE:
        stack.enter_context(mock.patch.object(upsample_conv, "enabled", False))
    return stack


def dense_share(diffusion: Diffusion, model: torch.nn.Module, batch: int, precision: Callable, device: torch.device
                ) -> float:
    """Fraction of one network call's CPU time spent in convolutions and matrix products (their own time)."""
    x = torch.randn(batch, 1, 28, 28, device=device)
    with torch.no_grad(), precision():
        diffusion.predict(model, x, diffusion.T // 2, None, None)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for _ in range(3):
                diffusion.predict(model, x, diffusion.T // 2, None, None)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    return sum(e.self_cpu_time_total for e in events if is_dense(e.key)) / total


def load_ddpm(cfg, device: torch.device) -> tuple[nn.Module, Diffusion]:
    """Notebook 04's EMA U-Net (eval mode) and its Diffusion, from the notebook's checkpoints."""
    state = Checkpointer(hwlib.runs_dir(f"{NB}/{cfg.profile}/ddpm")).load_latest()
    if state is None:
        raise SystemExit(f"no trained DDPM under {hwlib.runs_dir(f'{NB}/{cfg.profile}/ddpm')}: run notebook 04 "
                         f"with profile {cfg.profile!r} first")
    model = build(cfg.unet).to(device).eval()
    model.load_state_dict(state["emas"]["unet"]["module"])
    scale = 1000 / cfg.T
    return model, Diffusion(T=cfg.T, schedule=cfg.schedule, beta_start=1e-4 * scale, beta_end=0.02 * scale).to(device)


class Sampler:
    """One side of the interleaved comparison, in a process of its own (``hwlib.bench.Worker``): ``"before"`` samples
    as the speed issue measured (fp32, batch 500, the strided attention; the parent gives it glibc's default
    allocator), ``"compiled"`` as notebook 04 samples now (``SamplingNet`` compiled, bf16 where faster, batch 100,
    freed memory kept). :meth:`samples_per_s` times ``repeats`` ancestral steps (median)."""

    def __init__(self, kind: str, profile: str) -> None:
        cfg, self.device = hwlib.get_profile(NB, profile, verbose=False), get_device()
        model, self.diffusion = load_ddpm(cfg, self.device)
        self.before = kind == "before"
        self.batch = 500 if self.before else 100
        self.net = model if self.before else SamplingNet(model, compile=True)
        self.precision = contextlib.nullcontext() if self.before else autocast(self.device)
        self.samples_per_s(1)  # warm-up (compilation)

    def samples_per_s(self, repeats: int) -> float:
        with network_as(BEFORE if self.before else ""):
            seconds = step_seconds(self.diffusion, self.net, self.batch, self.precision, repeats, self.device)
        return self.batch / (seconds * self.diffusion.T)


def interleaved(profile: str, rounds: int, repeats: int) -> dict:
    """``before`` against ``compiled`` (:class:`Sampler`), each in its own process, timed in turns for ``rounds``
    rounds: the median of the per-round ratios with their range, so that drift in the machine's speed moves both."""
    workers = {"before": Worker(Sampler, "the before sampler", env={"HWLIB_KEEP_MEMORY": "0"}, kind="before",
                                profile=profile),
               "compiled": Worker(Sampler, "the compiled sampler", kind="compiled", profile=profile)}
    rates: dict[str, list[float]] = {k: [] for k in workers}
    try:
        for r in range(rounds):
            for kind, worker in workers.items():
                rates[kind].append(worker("samples_per_s", repeats))
            print(f"round {r + 1}: before {rates['before'][-1]:.2f}, compiled {rates['compiled'][-1]:.2f} samples/s",
                  flush=True)
    finally:
        for worker in workers.values():
            worker.close()
    ratios = [a / b for a, b in zip(rates["compiled"], rates["before"])]
    out = {"rounds": rounds, "repeats": repeats,
           "before_samples_per_s": round(statistics.median(rates["before"]), 3),
           "compiled_samples_per_s": round(statistics.median(rates["compiled"]), 3),
           **ratio_summary(ratios, digits=2)}
    print(f"interleaved: compiled / before {out['speedup']:.2f}x (rounds {out['speedup_min']:.2f}-"
          f"{out['speedup_max']:.2f})", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--n", type=int, default=1000, help="samples per precision for the quality check (0: skip)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--eager-only", action="store_true", help="skip the compiled rows")
    parser.add_argument("--tag", default="", help="a run on another machine: write sampling_<device>_<tag>.json")
    parser.add_argument("--rounds", type=int, default=0,
                        help="then time before against compiled in their own processes, in turns, this many rounds")
    args = parser.parse_args()
    cfg, device = hwlib.get_profile(NB, args.profile, verbose=False), get_device()
    model, diffusion = load_ddpm(cfg, device)
    bf16 = autocast(device)
    speed = {}
    for label, batch, precision in ((BEFORE, 500, contextlib.nullcontext()),
                                    ("fp32, batch 500", 500, contextlib.nullcontext()),
                                    ("fp32, batch 100", 100, contextlib.nullcontext()),
                                    ("autocast, batch 100, attention written out", 100, bf16),
                                    ("autocast, batch 100", 100, bf16)):
        with network_as(label):
            seconds = step_seconds(diffusion, model, batch, precision, args.repeats, device)
        speed[label] = {"step_s": round(seconds, 4), "samples_per_s": round(batch / (seconds * cfg.T), 3)}
        print(f"{label:30s} {seconds:.3f} s per step -> {speed[label]['samples_per_s']:.2f} samples/s (T = {cfg.T})",
              flush=True)
        if label.startswith("before"):
            keep_freed_memory()  # every later row samples as hwlib does now
    compiled = None
    if not args.eager_only:  # notebook 04's sampler: the network compiled
        with mock.patch.object(GroupNorm, "forward", nn.GroupNorm.forward):  # inductor's own group norm
            speed["autocast, batch 100, compiled, inductor's group norm"] = compiled_speed(
                diffusion, SamplingNet(model, compile=True), bf16, args.repeats, device)
        torch._dynamo.reset()
        compiled = SamplingNet(model, compile=True)  # autocast inside, as notebook 04 samples
        speed["autocast, batch 100, compiled"] = compiled_speed(diffusion, compiled, bf16, args.repeats, device)
        eager = speed["autocast, batch 100"]["samples_per_s"]
        for row in (v for k, v in speed.items() if "compiled" in k):
            rate = row["samples_per_s"]
            row["pays_back_after_samples"] = round(row["compile_s"] / (1 / eager - 1 / rate)) if rate > eager else None
    base = speed[BEFORE]["samples_per_s"]
    share = dense_share(diffusion, model, 100, lambda: autocast(device), device)
    best = speed["autocast, batch 100"]["samples_per_s"]  # the eager step the dense share is of
    print(f"convolutions and matrix products: {share:.0%} of an eager step at batch 100 under autocast; ceiling "
          f"{best / share:.2f} samples/s ({best / share / base:.1f}x before) if the rest were free", flush=True)
    result = {"profile": cfg.profile, "T": cfg.T, "threads": torch.get_num_threads(),
              "autocast": str(bf16.fast_dtype) if isinstance(bf16, torch.autocast) else "fp32",
              "speed": speed, "speedup_vs_before": {k: round(v["samples_per_s"] / base, 2) for k, v in speed.items()},
              "dense_share": round(share, 3), "ceiling_samples_per_s": round(best / share, 2),
              "ceiling_speedup_vs_before": round(best / share / base, 2)}
    if args.rounds:
        result["interleaved"] = interleaved(cfg.profile, args.rounds, args.repeats)
    if args.n:
        quality = {}
        runs = [("fp32", model, contextlib.nullcontext), ("autocast", model, lambda: autocast(device))]
        runs += [("autocast, compiled", compiled, lambda: autocast(device))] if compiled is not None else []
        for label, net, precision in runs:
            def draw(k: int, net=net, precision=precision) -> torch.Tensor:
                with precision():
                    return diffusion.sample(net, k, sampler="ddpm")
            m = evaluate(draw, real="mnist-test", n=args.n, batch_size=100, device=device, seed=0)
            quality[label] = {k: round(float(m[k]), 3) for k in ("fid", "precision", "recall", "is_mnist", "samples_per_s")}
            print(label, quality[label], flush=True)
        result.update(n=args.n, quality=quality)
    write_result(f"sampling_{device.type}", result, device, tag=args.tag)


if __name__ == "__main__":
    main()
