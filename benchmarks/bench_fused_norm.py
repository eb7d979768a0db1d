"""The fused GroupNorm + SiLU CPU kernel against inductor's compiled pair: notebook 02's compiled quick training step.

Two copies of bench_diffusion's hwlib side (the quick U-Net, ``make_diffusion_step``, fused Adam, EMA,
``torch.compile``; batch 64) are built in this process, one compiled with :data:`hwlib.models.group_norm_silu.enabled`
off and one with it on (``torch.compile`` guards on the flag, so each keeps its own graphs). Both first train the same
5 batches from the same weights, and the largest weight difference is recorded (float32 rounding: the kernel sums in
another order). Then ``--rounds`` rounds of ``--steps`` steps, the two taking turns and the order swapped every
round; the result is the median of the per-round ratios (unfused time / fused time) with its range. fp32 only (the
kernel's precision; bf16 autocast keeps the compiled pair).

    OMP_NUM_THREADS=2 python benchmarks/bench_fused_norm.py --tag intel_xeon_2threads
    OMP_NUM_THREADS=1 python benchmarks/bench_fused_norm.py --tag intel_xeon
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from bench_diffusion import HwlibSide

from hwlib.bench import ratio_summary, write_result
from hwlib.data import load_mnist
from hwlib.models import group_norm_silu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=15, help="timed steps per side and round")
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--tag", default="", help="write fused_norm_cpu_<tag>.json")
    args = parser.parse_args()
    if not group_norm_silu.available(torch.zeros(1, 4, 1, 1)):
        raise SystemExit("the fused GroupNorm + SiLU kernel could not be built here (see the warning above)")
    os.environ["HWLIB_CPU_BF16"] = "0"  # fp32: the kernel's precision
    device = torch.device("cpu")
    x, y = load_mnist("train")
    b = args.batch
    batches = [(x[i * b:(i + 1) * b], y[i * b:(i + 1) * b]) for i in range(5 + args.steps)]
    sides = {}
    for fused in (False, True):
        group_norm_silu.enabled = fused
        torch.manual_seed(0)
        sides[fused] = HwlibSide(x, y, b, args.steps, "quick", device, bf16=False)
    for fused in (False, True):  # the same 5 steps from the same weights
        group_norm_silu.enabled = fused
        torch.manual_seed(1)
        for i in range(5):
            sides[fused].flop_step(batches[i], 100 + i)
    max_diff = max((p - q).abs().max().item()
                   for p, q in zip(sides[False].model.parameters(), sides[True].model.parameters()))
    ms = {False: [], True: []}
    for r in range(args.rounds):
        for fused in ((False, True) if r % 2 == 0 else (True, False)):
            group_norm_silu.enabled = fused
            start = time.perf_counter()
            for i in range(args.steps):
                sides[fused].flop_step(batches[5 + i], 200 + i)
            ms[fused].append((time.perf_counter() - start) / args.steps * 1e3)
        print(f"round {r + 1}: compiled pair {ms[False][-1]:.1f} ms, fused kernel {ms[True][-1]:.1f} ms a step",
              flush=True)
    group_norm_silu.enabled = True
    write_result("fused_norm_cpu", {
        "network": "quick", "precision": "fp32", "batch": b, "timed_steps": args.steps, "rounds": args.rounds,
        "torch_threads": torch.get_num_threads(),
        "max_weight_difference_after_5_steps": max_diff,
        "pair_ms_per_step": round(statistics.median(ms[False]), 2),
        "fused_ms_per_step": round(statistics.median(ms[True]), 2),
        **ratio_summary([a / f for a, f in zip(ms[False], ms[True])]),
        "what": "notebook 02's compiled quick training step (bench_diffusion's hwlib side), inductor's GroupNorm + "
                "SiLU pairs against hwlib.models.group_norm_silu, in one process, in turns",
    }, device, tag=args.tag)


if __name__ == "__main__":
    main()
