"""Improved precision and recall (Kynkäänniemi et al., 2019) with k-NN manifolds.

Each sample of a set is the centre of a ball reaching its k-th nearest neighbour in the same set;
the union of the balls estimates that set's manifold. Precision is the share of generated samples
inside the real manifold (quality), recall the share of real samples inside the generated manifold
(coverage / diversity). Distances are computed in row chunks, so 10k x 10k never sits in memory at once.
"""
from __future__ import annotations

import numpy as np
import torch


def _as_tensor(x: torch.Tensor | np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(x).to(device=device, dtype=torch.float32)


def _sq_dists(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances (A, B) between rows of a (A, D) and b (B, D)."""
    d = (a * a).sum(1, keepdim=True) - 2 * a @ b.T + (b * b).sum(1)[None]
    return d.clamp_min_(0)


def knn_radii(feats: torch.Tensor, k: int = 3, chunk: int = 1000) -> torch.Tensor:
    """Squared distance (N,) from each row of feats (N, D) to its k-th nearest other row."""
    if len(feats) <= k:
        raise ValueError(f"need more than k={k} samples, got {len(feats)}")
    # the (k+1)-th smallest distance: the smallest is the sample itself (distance 0)
    return torch.cat([_sq_dists(feats[i:i + chunk], feats).kthvalue(k + 1, dim=1).values
                      for i in range(0, len(feats), chunk)])


def coverage(queries: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, chunk: int = 1000) -> float:
    """Share of queries (Q, D) inside at least one ball (centres (N, D), squared radii (N,))."""
    inside = [(_sq_dists(queries[i:i + chunk], centres) <= radii[None]).any(1)
              for i in range(0, len(queries), chunk)]
    return float(torch.cat(inside).float().mean())


def precision_recall(real_feats: torch.Tensor | np.ndarray, fake_feats: torch.Tensor | np.ndarray, k: int = 3,
                     chunk: int = 1000, device: torch.device | str | None = None) -> tuple[float, float]:
    """(precision, recall) of fake (M, D) features against real (N, D) features, both in [0, 1]."""
    dev = torch.device(device) if device is not None else (
        torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu"))
    real, fake = _as_tensor(real_feats, dev), _as_tensor(fake_feats, dev)
    with torch.inference_mode():
        precision = coverage(fake, real, knn_radii(real, k, chunk), chunk)
        recall = coverage(real, fake, knn_radii(fake, k, chunk), chunk)
    return precision, recall
