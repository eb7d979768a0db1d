"""Streaming feature statistics (mean, covariance) in float64, merged batch by batch.

Batches are combined with Chan et al.'s parallel update of the mean and the scatter matrix
``M2 = sum (x - mean)(x - mean)^T``, which avoids the cancellation of ``E[xx^T] - mu mu^T``; only one
batch of features ever sits in memory, so statistics of 50,000 images cost O(D^2) memory.
"""
from __future__ import annotations

import numpy as np
import torch


class FeatureStats:
    """Running mean (D,) and unbiased covariance (D, D) of feature vectors, accumulated in float64.

    >>> stats = FeatureStats()
    >>> for feats in batches:   # each (B, D)
    ...     stats.update(feats)
    >>> stats.mean, stats.cov, stats.n
    """

    def __init__(self, device: torch.device | str | None = None) -> None:
        self.device = torch.device(device) if device is not None else None
        self.n = 0
        self._mean: torch.Tensor | None = None
        self._m2: torch.Tensor | None = None

    def update(self, feats: torch.Tensor | np.ndarray) -> FeatureStats:
        """Add a batch of features (B, D) (any float dtype, any device)."""
        x = torch.as_tensor(feats)
        if x.ndim != 2:
            raise ValueError(f"features must be (B, D), got shape {tuple(x.shape)}")
        x = x.to(device=self.device or x.device, dtype=torch.float64)
        b = x.shape[0]
        if b == 0:
            return self
        mean_b = x.mean(0)
        centred = x - mean_b
        m2_b = centred.T @ centred
        if self._mean is None:
            self._mean, self._m2, self.n = mean_b, m2_b, b
            return self
        if x.shape[1] != self._mean.numel():
            raise ValueError(f"feature dimension changed from {self._mean.numel()} to {x.shape[1]}")
        n = self.n + b
        delta = mean_b - self._mean
        self._mean = self._mean + delta * (b / n)
        self._m2 = self._m2 + m2_b + torch.outer(delta, delta) * (self.n * b / n)
        self.n = n
        return self

    @property
    def mean(self) -> np.ndarray:
        """float64 (D,)."""
        if self._mean is None:
            raise ValueError("FeatureStats is empty: call update() first")
        return self._mean.cpu().numpy()

    @property
    def cov(self) -> np.ndarray:
        """Unbiased covariance, float64 (D, D) (as ``np.cov(feats, rowvar=False)``); needs n >= 2."""
        if self._m2 is None or self.n < 2:
            raise ValueError(f"the covariance needs at least 2 samples, have {self.n}")
        return (self._m2 / (self.n - 1)).cpu().numpy()

    @classmethod
    def from_features(cls, feats: torch.Tensor | np.ndarray, batch_size: int = 10_000) -> FeatureStats:
        """Statistics of a whole (N, D) array, added in chunks."""
        stats = cls()
        for i in range(0, len(feats), batch_size):
            stats.update(feats[i:i + batch_size])
        return stats
