"""Notebook 03 throughput: training steps/s (k D updates + 1 G update) and samples/s of both CGANs.

For each profile's settings (quick, full) builds the MLP and conv CGAN, times ``make_gan_step`` on
random batches and sampling, and writes ``benchmarks/results/cgan_<device>.json``.
Usage: ``python benchmarks/bench_cgan.py [steps]``.
"""
import sys
import time

import torch

from hwlib.bench import write_result
from hwlib.gan import make_gan_step
from hwlib.models.cgan import build
from hwlib.profiles import Config
from hwlib.profiles.cgan_mnist import PROFILES
from hwlib.train import get_device


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench(cfg, name, device, steps):
    G, D = (net.to(device) for net in build(cfg)[name])
    opt_g, opt_d = torch.optim.Adam(G.parameters(), 2e-4), torch.optim.Adam(D.parameters(), 2e-4)
    step = make_gan_step(G, D, opt_g, opt_d, z_dim=cfg.z_dim, n_critic=cfg.n_critic, device=device)
    x = torch.rand(cfg.batch_size, 1, 28, 28, device=device) * 2 - 1
    y = torch.randint(0, 10, (cfg.batch_size,), device=device)
    for i in range(3):
        step((x, y), i)
    sync(device)
    t0 = time.perf_counter()
    for i in range(steps):
        logs = step((x, y), i)
    float(logs["loss_g"])
    sync(device)
    train = steps / (time.perf_counter() - t0)
    G.eval()
    with torch.no_grad():
        z, yy = torch.randn(1000, cfg.z_dim, device=device), torch.arange(1000, device=device) % 10
        G(z, yy)
        sync(device)
        t0 = time.perf_counter()
        for _ in range(5):
            G(z, yy)
        sync(device)
    return {"steps_per_s": round(train, 2), "images_per_s": round(train * cfg.batch_size, 1),
            "samples_per_s": round(5000 / (time.perf_counter() - t0), 1),
            "epoch_60k_s": round(60_000 / cfg.batch_size / train, 1)}


if __name__ == "__main__":
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    device = get_device()
    result = {}
    for profile in ("quick", "full"):
        cfg = Config(PROFILES[profile])
        for name in ("mlp", "conv"):
            result[f"{profile}/{name}"] = bench(cfg, name, device, steps)
            print(profile, name, result[f"{profile}/{name}"], flush=True)
    write_result(f"cgan_{device.type}", {"steps_timed": steps, "torch_threads": torch.get_num_threads(), **result},
                 device=device)
