"""One epoch of the seed's CGAN setting: torchvision DataLoader pipeline vs hwlib's resident iterator.

Same model (MLP G/D of notebook 03), batch 128, 5 D steps per G step, same device, one run.
The DataLoader pipeline is what a course notebook usually does: ``torchvision.datasets.MNIST`` with
``ToTensor`` + ``Normalize(0.5, 0.5)``, ``DataLoader(shuffle=True, num_workers=2, pin_memory)``,
each batch copied to the device. The resident pipeline keeps all 60k images on the device.

    python benchmarks/bench_loader.py            # full epoch on a GPU, first 60 batches on a CPU
    python benchmarks/bench_loader.py --steps 0  # always the full epoch

Writes ``benchmarks/results/loader_<cpu|cuda>.json``.
"""
from __future__ import annotations

import argparse
import gzip
import shutil
import time
from pathlib import Path

import torch

from hwlib import data_dir
from hwlib.bench import write_result
from hwlib.data import ResidentLoader, load_mnist
from hwlib.gan import make_gan_step
from hwlib.models.cgan import MLPDiscriminator, MLPGenerator
from hwlib.train import get_device, seed_everything


def torchvision_root() -> Path:
    """torchvision's ``MNIST/raw`` layout (uncompressed IDX), made from hwlib's cached files."""
    load_mnist("train", verbose=False)  # make sure the files are cached
    root = data_dir() / "torchvision"
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for src in sorted((data_dir() / "mnist").glob("*-ubyte.gz")):
        dst = raw / src.name[:-3]
        if not dst.exists():
            with gzip.open(src, "rb") as fin, open(dst, "wb") as fout:
                shutil.copyfileobj(fin, fout)
    return root


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_epoch(batches, step_fn, device: torch.device, max_steps: int) -> tuple[float, int]:
    """Seconds and steps for one pass of ``batches`` (stopping after ``max_steps`` if > 0)."""
    sync(device)
    start, n = time.perf_counter(), 0
    for batch in batches:
        step_fn(batch, n)
        n += 1
        if max_steps and n >= max_steps:
            break
    sync(device)
    return time.perf_counter() - start, n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=None, help="batches per pipeline (0 = full epoch)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    device = get_device()
    steps = args.steps if args.steps is not None else (0 if device.type == "cuda" else 60)

    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))])
    dataset = datasets.MNIST(str(torchvision_root()), train=True, download=False, transform=tf)
    dl = DataLoader(dataset, batch_size=128, shuffle=True, num_workers=args.workers, drop_last=True,
                    pin_memory=device.type == "cuda", persistent_workers=False)
    x, y = load_mnist("train", verbose=False)
    resident = ResidentLoader(x, y, batch_size=128, seed=0, device=device)

    def fresh_step():
        seed_everything(0, deterministic=False)
        G, D = MLPGenerator().to(device), MLPDiscriminator().to(device)
        opt_g = torch.optim.Adam(G.parameters(), lr=1e-4, betas=(0.5, 0.999))
        opt_d = torch.optim.Adam(D.parameters(), lr=1e-4, betas=(0.5, 0.999))
        return make_gan_step(G, D, opt_g, opt_d, z_dim=100, n_critic=5, device=device)

    def to_device(batches):
        for xb, yb in batches:
            yield xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)

    results = {}
    for name, batches in (("dataloader", lambda: to_device(dl)), ("resident", lambda: resident.epoch(0))):
        time_epoch(batches(), fresh_step(), device, 3)  # warm-up (workers, allocator, kernels)
        seconds, n = time_epoch(batches(), fresh_step(), device, steps)
        data_only, _ = time_epoch(batches(), lambda b, i: None, device, steps)
        results[name] = {"seconds": round(seconds, 3), "batches": n, "images_per_s": round(n * 128 / seconds, 1),
                         "data_only_seconds": round(data_only, 3),
                         "epoch_seconds_estimate": round(seconds * len(resident) / n, 2)}
        print(f"{name:>10}: {n} batches in {seconds:.2f} s ({n * 128 / seconds:,.0f} img/s); "
              f"data alone {data_only:.2f} s")
    ratio = results["dataloader"]["seconds"] / results["resident"]["seconds"]
    print(f"speed-up of the resident iterator: {ratio:.2f}x")
    write_result(f"loader_{device.type}", {
        "setting": "seed CGAN: MLP G/D, batch 128, 5 D steps per G step, Adam 1e-4",
        "batches_timed": steps or len(resident), "dataloader_workers": args.workers,
        "dataloader": results["dataloader"], "resident": results["resident"], "speedup": round(ratio, 2),
        "command": "python benchmarks/bench_loader.py" + (f" --steps {args.steps}" if args.steps is not None else ""),
    }, device)


if __name__ == "__main__":
    main()
