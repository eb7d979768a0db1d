"""Calibration of FID-MNIST (the shipped classifier's 128-d features), precision/recall and accuracy.

- the floor: real test (10k) vs real train (first 10k) -- two independent real samples;
- real test vs the same test images degraded by Gaussian noise and by Gaussian blur at 3 strengths
  each: FID must rise monotonically with the strength;
- precision / recall (k=3) of real vs real, and the classifier's accuracy on every set.

    python benchmarks/bench_fid_calibration.py [--n 10000]
"""
from __future__ import annotations

import argparse
import os
import time

import torch
from torchvision.transforms.functional import gaussian_blur

from hwlib.bench import write_result
from hwlib.data import load_mnist
from hwlib.metrics import evaluate

NOISE = (0.1, 0.25, 0.5)  # std of additive Gaussian noise, in units of the [-1, 1] pixel range
BLUR = (0.5, 1.0, 1.5)    # std (pixels) of the Gaussian blur kernel


def replay(images: torch.Tensor, labels: torch.Tensor):
    """A sampler that hands out ``images`` (and their labels) in order, as a generator would."""
    position = 0

    def sampler(m: int):
        nonlocal position
        x, y = images[position:position + m], labels[position:position + m]
        position += m
        return x, y

    return sampler


def score(images: torch.Tensor, labels: torch.Tensor, n: int) -> dict[str, float]:
    r = evaluate(replay(images, labels), real="mnist-test", n=n, features="mnist")
    return {k: round(float(r[k]), 4) for k in ("fid", "precision", "recall", "accuracy")}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=10_000)
    args = parser.parse_args()
    n, t0 = args.n, time.perf_counter()
    gen = torch.Generator().manual_seed(0)
    x_test, y_test = load_mnist("test")
    x_train, y_train = load_mnist("train")
    x_test, y_test = x_test[:n], y_test[:n]

    result: dict = {"n": n, "features": "mnist (128-d penultimate layer of hwlib/assets/mnist_cnn.pt)", "k": 3}
    result["test_vs_test"] = score(x_test, y_test, n)  # sanity: FID 0, precision = recall = 1
    result["floor_test_vs_train"] = score(x_train[:n], y_train[:n], n)
    result["noise"] = {}
    for std in NOISE:
        noisy = (x_test + std * torch.randn(x_test.shape, generator=gen)).clamp(-1, 1)
        result["noise"][str(std)] = score(noisy, y_test, n)
        print("noise", std, result["noise"][str(std)], flush=True)
    result["blur"] = {}
    for sigma in BLUR:
        blurred = gaussian_blur(x_test, kernel_size=2 * int(3 * sigma + 0.5) + 1, sigma=sigma)
        result["blur"][str(sigma)] = score(blurred, y_test, n)
        print("blur", sigma, result["blur"][str(sigma)], flush=True)
    for kind in ("noise", "blur"):
        fids = [v["fid"] for v in result[kind].values()]
        result[f"{kind}_monotone"] = all(a < b for a, b in zip(fids, fids[1:]))
    result["load_average_1min"] = os.getloadavg()[0]
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    write_result("fid_calibration", result)


if __name__ == "__main__":
    main()
