"""Reference (real-data) features and statistics, cached as ``.npz`` under ``hwlib.data_dir()/fid_stats``.

The cache key names the dataset, the split, the feature network (with a hash of its whole weights
file), the image count and a hash of the images themselves, e.g.
``fid_stats/mnist-test_mnist-1a2b3c4d_n10000_0123456789ab.npz``: replaced data files get new statistics.
The next call with the same key reads the file instead of running the network. The file (written
atomically) holds ``mu`` (D,), ``sigma`` (D, D) in float64 and the features themselves, ``feats`` (n, D)
float32, for precision/recall; an unreadable one is computed again, with a warning naming it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from hwlib.files import array_digest, read_arrays, warn_unreadable, write_arrays
from hwlib.metrics.features import batches_of, feature_net, iter_features
from hwlib.metrics.stats import FeatureStats

DATASETS = ("mnist-train", "mnist-test")
KEYS = ("mu", "sigma", "feats")


def real_images(real: str, n: int) -> torch.Tensor:
    """The first ``n`` images (n, 1, 28, 28) in [-1, 1] of a named real set, e.g. ``"mnist-test"``."""
    if real not in DATASETS:
        raise ValueError(f"unknown real set {real!r}; choose one of {DATASETS} or pass images")
    from hwlib.data import load_mnist

    images, _ = load_mnist(real.split("-", 1)[1], verbose=False)
    if n > len(images):
        raise ValueError(f"{real} has {len(images):,} images, fewer than n={n:,}")
    return images[:n]


def cache_path(real: str, tag: str, n: int, content: str) -> Path:
    """Where the reference statistics of ``real`` under feature network ``tag`` with ``n`` images whose
    :func:`~hwlib.files.array_digest` is ``content`` live."""
    from hwlib.paths import data_dir

    return data_dir() / "fid_stats" / f"{real}_{tag}_n{n}_{content[:12]}.npz"


def read_reference(path: Path, n: int) -> dict[str, np.ndarray] | None:
    """The cached ``mu`` (D,), ``sigma`` (D, D), ``feats`` (n, D) at ``path``; None when missing or unreadable (warned)."""
    ref = read_arrays(path, KEYS)
    if ref is None:
        return None
    d = ref["mu"].shape[0] if ref["mu"].ndim == 1 else -1
    if d < 0 or ref["sigma"].shape != (d, d) or ref["feats"].shape != (n, d):
        warn_unreadable(path, f"shapes {[tuple(v.shape) for v in ref.values()]} are not (D,), (D, D), ({n}, D)")
        return None
    return ref


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
    images = real_images(real, n)
    path = cache_path(real, net.tag, n, array_digest(images.detach().cpu().numpy()))
    ref = read_reference(path, len(images)) if cache else None
    if ref is None:
        ref = compute_reference(images, net, batch_size)
        if cache:
            write_arrays(path, ref)  # atomic: a concurrent reader sees the old state or the whole file
    return ref
