"""StackGAN training throughput and peak memory per stage at the paper's widths (gf 128, df 64, 4 res blocks).

On a GPU: batch 64, fp32 vs bf16 autocast + channels_last. On a CPU (no GPU here): batch 2, fp32 only,
a handful of steps -- only to show the scale of the cost. Writes ``benchmarks/results/stackgan.json``.
Usage: ``python benchmarks/bench_stackgan.py [--batch N] [--steps N]``.
"""
from __future__ import annotations

import argparse
import resource

import torch

from hwlib.bench import write_result
from hwlib.data.cub import index_loader
from hwlib.models import stackgan
from hwlib.train import count_parameters, get_device, seed_everything, timer


def measure(stage: int, device: torch.device, batch: int, steps: int, amp: bool, channels_last: bool) -> dict:
    seed_everything(0, deterministic=False)
    nets = stackgan.build(t_dim=1024)  # paper configuration, char-CNN-RNN width
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    for net in nets.values():
        net.to(device, memory_format=fmt)
    g, d = (nets["G1"], nets["D1"]) if stage == 1 else (nets["G2"], nets["D2"])
    load, size = (76, 64) if stage == 1 else (304, 256)
    n = batch * 2
    images = torch.randint(0, 256, (n, 3, load, load), dtype=torch.uint8, device=device).contiguous(memory_format=fmt)
    data = dict(images=images, embeddings=torch.randn(n, 10, 1024, device=device),
                class_ids=torch.arange(n, device=device) % 4)
    opt_g = torch.optim.Adam(g.parameters(), 2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), 2e-4, betas=(0.5, 0.999))
    step = stackgan.make_stackgan_step(g, d, opt_g, opt_d, out_size=size, amp=amp,
                                       G1=nets["G1"].eval() if stage == 2 else None, **data)
    batches = list(index_loader(n, batch, device=device).epoch(0))
    step(batches[0], 0)  # warm-up
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with timer() as t:
        for i in range(steps):
            logs = step(batches[i % len(batches)], i)
        float(logs["loss_d"])
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return {"stage": stage, "amp_bf16": amp, "channels_last": channels_last, "batch": batch, "steps": steps,
            "images_per_s": round(batch * steps / t["seconds"], 2), "s_per_step": round(t["seconds"] / steps, 3),
            "peak_memory_gib": round(peak, 2), "memory_kind": "cuda allocated" if device.type == "cuda" else "process max RSS",
            "params_G": count_parameters(g), "params_D": count_parameters(d)}


def main() -> None:
    device = get_device()
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=64 if device.type == "cuda" else 2)
    parser.add_argument("--steps", type=int, default=20 if device.type == "cuda" else 2)
    args = parser.parse_args()
    modes = [(False, False), (True, True)] if device.type == "cuda" else [(False, False)]
    rows = [measure(stage, device, args.batch, args.steps, amp, cl) for stage in (1, 2) for amp, cl in modes]
    for r in rows:
        print(f"Stage-{r['stage']} bf16={r['amp_bf16']} channels_last={r['channels_last']}: {r['images_per_s']} img/s, "
              f"{r['peak_memory_gib']} GiB")
    write_result("stackgan", {"rows": rows, "note": "paper widths; one step = 1 D update + 1 G update"}, device)


if __name__ == "__main__":
    main()
