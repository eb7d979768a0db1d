"""Reference (real-data) features and statistics, cached as ``.npz`` under ``hwlib.data_dir()/fid_stats``.

The cache key names the dataset, the split, the feature network (with a hash of its weights) and the
image count, e.g. ``fid_stats/mnist-test_mnist-1a2b3c4d_n10000.npz``; the next call with the same
key reads the file instead of running the network. The file holds ``mu`` (D,), ``sigma`` (D, D) in
float64 and the features themselves, ``feats`` (n, D) float32, for precision/recall.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hwlib.metrics.features import batches_of, feature_net, iter_features
from hwlib.metrics.stats import FeatureStats

DATASETS = ("mnist-train", "mnist-test")


def real_images(real: str, n: int) -> torch.Tensor:
    """The first ``n`` images (n, 1, 28, 28) in [-1, 1] of a named real set, e.g. ``"mnist-test"``."""
    if real not in DATASETS:
        raise ValueError(f"unknown real set {real!r}; choose one of {DATASETS} or pass images")
    from hwlib.data import load_mnist

    images, _ = load_mnist(real.split("-", 1)[1], verbose=False)
    if n > len(images):
        raise ValueError(f"{real} has {len(images):,} images, fewer than n={n:,}")
    return images[:n]


def cache_path(real: str, tag: str, n: int) -> Path:
    """Where the reference statistics of ``real`` under feature network ``tag`` with ``n`` images live."""
    from hwlib.paths import data_dir

    return data_dir() / "fid_stats" / f"{real}_{tag}_n{n}.npz"


def compute_reference(images: torch.Tensor, net: nn.Module, batch_size: int = 500) -> dict[str, np.ndarray]:
    """``mu``, ``sigma`` (streamed, float64) and ``feats`` (float32) of images (N, C, H, W) in [-1, 1]."""
    stats, feats = FeatureStats(), []
    for f in iter_features(net, batches_of(images, batch_size)):
        stats.update(f)
        feats.append(f.cpu())
    return {"mu": stats.mean, "sigma": stats.cov, "feats": torch.cat(feats).numpy()}


def reference_stats(real: str | torch.Tensor = "mnist-test", n: int = 10_000, features: str | nn.Module = "mnist",
              batch_size: int = 500, device: torch.device | str | None = None,
              cache: bool = True) -> dict[str, np.ndarray]:
    """Reference ``mu``, ``sigma``, ``feats`` of a named real set (cached) or of given images (not cached)."""
    net = feature_net(features, device)
    if torch.is_tensor(real):
        return compute_reference(real[:n], net, batch_size)
    path = cache_path(real, net.tag, n)
    if cache and path.is_file():
        with np.load(path) as data:
            return {k: data[k] for k in ("mu", "sigma", "feats")}
    ref = compute_reference(real_images(real, n), net, batch_size)
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
        np.savez(tmp, **ref)
        os.replace(tmp, path)  # atomic: a concurrent reader sees the old state or the whole file
    return ref
