"""FID speed and agreement: hwlib.metrics against scipy / pytorch-fid.

1. ``frechet_distance`` at 2048-d (the Inception feature size) against pytorch-fid's computation
   (``scipy.linalg.sqrtm(S1 @ S2)``) on one random SPD pair: time and relative difference.
2. End-to-end FID of n MNIST test vs n MNIST train images with the *same* random-init FID
   Inception-v3 (the real weights cannot be downloaded here): hwlib's pipeline (tensors in memory,
   streaming float64 statistics, eigh/Cholesky Fréchet) against pytorch-fid's own (PNG files,
   ``calculate_fid_given_paths``, sqrtm). The Inception network costs ~6 GFLOP per image, so on a
   CPU n defaults to a few hundred; on a GPU to 10,000.

    python benchmarks/bench_fid.py [--n N] [--skip-e2e] [--reuse-frechet]
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import warnings
from pathlib import Path
from unittest import mock

import numpy as np
import scipy.linalg
import torch

from hwlib.bench import write_result
from hwlib.metrics import frechet_distance


def scipy_frechet(mu1, s1, mu2, s2) -> float:
    """pytorch-fid's ``calculate_frechet_distance`` without its eps retry: sqrtm of S1 S2, real part."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        covmean, _ = scipy.linalg.sqrtm(s1.dot(s2), disp=False)
    diff = mu1 - mu2
    return float(diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean.real))


def bench_frechet(d: int = 2048, repeats: int = 3) -> dict:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((2 * d, d)) @ (rng.standard_normal((d, d)) / np.sqrt(d))
    b = rng.standard_normal((2 * d, d)) @ (rng.standard_normal((d, d)) / np.sqrt(d)) + 0.05
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    mu1, mu2 = a.mean(0), b.mean(0)
    out: dict = {"dim": d}
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        ours = frechet_distance(mu1, s1, mu2, s2, device="cpu")
        times.append(time.perf_counter() - t)
    t = time.perf_counter()
    ref = scipy_frechet(mu1, s1, mu2, s2)
    out["scipy_sqrtm_s"] = round(time.perf_counter() - t, 3)
    out["hwlib_cpu_s"] = round(min(times), 3)
    out["speedup_cpu"] = round(out["scipy_sqrtm_s"] / out["hwlib_cpu_s"], 1)
    out["fid_hwlib"], out["fid_scipy"] = ours, ref
    out["relative_difference"] = abs(ours - ref) / abs(ref)
    if torch.cuda.is_available():
        frechet_distance(mu1, s1, mu2, s2, device="cuda")  # warm-up (cuSOLVER handles)
        times = []
        for _ in range(repeats):
            torch.cuda.synchronize()
            t = time.perf_counter()
            gpu = frechet_distance(mu1, s1, mu2, s2, device="cuda")
            times.append(time.perf_counter() - t)
        out["hwlib_gpu_s"] = round(min(times), 4)
        out["speedup_gpu"] = round(out["scipy_sqrtm_s"] / out["hwlib_gpu_s"], 1)
        out["relative_difference_gpu"] = abs(gpu - ref) / abs(ref)
    print("frechet", out, flush=True)
    return out


def bench_end_to_end(n: int, batch_size: int) -> dict:
    from PIL import Image
    from pytorch_fid import fid_score
    from pytorch_fid import inception as pfi

    from hwlib.data import load_mnist
    from hwlib.metrics.features import feature_stats
    from hwlib.metrics.inception import InceptionFeatures, build_pytorch_fid_inception, he_init_

    device = "cuda" if torch.cuda.is_available() else "cpu"
    x_test, _ = load_mnist("test")
    x_train, _ = load_mnist("train")
    sets = {"test": x_test[:n], "train": x_train[:n]}
    torch.manual_seed(0)
    _, net = build_pytorch_fid_inception(None)
    state = he_init_(net).state_dict()  # the same random weights for both pipelines

    out: dict = {"n": n, "weights": "random He-normal init (seed 0), same state_dict in both pipelines"}
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "pt_inception-random.pth"
        torch.save(state, weights)
        ours_net = InceptionFeatures(weights, device=device)
        t = time.perf_counter()
        stats = {k: feature_stats(ours_net, v, batch_size=batch_size) for k, v in sets.items()}
        fid_ours = frechet_distance(stats["test"].mean, stats["test"].cov, stats["train"].mean, stats["train"].cov)
        out["hwlib_s"] = round(time.perf_counter() - t, 2)

        paths = []
        for name, images in sets.items():  # pytorch-fid reads image files: 8-bit PNGs of the same digits
            folder = Path(tmp) / name
            folder.mkdir()
            pixels = ((images[:, 0] + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
            for i, p in enumerate(pixels):
                Image.fromarray(p, mode="L").save(folder / f"{i:05d}.png")
            paths.append(str(folder))
        t = time.perf_counter()
        with mock.patch.object(pfi, "load_state_dict_from_url", lambda *a, **k: state):
            try:
                fid_theirs = fid_score.calculate_fid_given_paths(paths, min(batch_size, 50), device, 2048,
                                                                 num_workers=0)
            except ValueError as err:  # sqrtm's imaginary component on rank-deficient covariances
                fid_theirs, out["pytorch_fid_error"] = float("nan"), str(err)
        out["pytorch_fid_s"] = round(time.perf_counter() - t, 2)
    out["fid_hwlib"], out["fid_pytorch_fid"] = fid_ours, fid_theirs
    out["relative_difference"] = abs(fid_ours - fid_theirs) / abs(fid_theirs)
    out["images_per_s_hwlib"] = round(2 * n / out["hwlib_s"], 2)
    out["images_per_s_pytorch_fid"] = round(2 * n / out["pytorch_fid_s"], 2)
    if n < 2048:
        out["note"] = (f"n={n} < 2048 features: both covariances are rank-deficient (the regime where "
                       "sqrtm is least reliable); the full 10k comparison needs a GPU")
    print("end-to-end", out, flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=10_000 if torch.cuda.is_available() else 200)
    parser.add_argument("--batch-size", type=int, default=500 if torch.cuda.is_available() else 50)
    parser.add_argument("--skip-e2e", action="store_true")
    parser.add_argument("--reuse-frechet", action="store_true",
                        help="keep frechet_2048 from the existing results/fid.json (sqrtm takes minutes on a CPU)")
    args = parser.parse_args()
    previous = Path(__file__).parent / "results" / "fid.json"
    if args.reuse_frechet and previous.is_file():
        old = json.loads(previous.read_text())
        result = {"frechet_2048": {**old["frechet_2048"], "measured": old["date"],
                                   "load_average_1min": old.get("load_average_1min")}}
    else:
        result = {"frechet_2048": bench_frechet()}
    if not args.skip_e2e:
        result["end_to_end"] = bench_end_to_end(args.n, args.batch_size)
    result["load_average_1min"] = os.getloadavg()[0]
    result["torch_threads"] = torch.get_num_threads()
    write_result("fid", result)


if __name__ == "__main__":
    main()
