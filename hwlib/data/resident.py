"""A batch iterator over tensors that live on the training device: no DataLoader, no workers.

The whole dataset is one tensor on the device; each epoch draws a permutation from a CPU
generator seeded with ``seed + epoch`` (so the order is the same on every device and after a
resume) and slices batches with index tensors.
"""
from __future__ import annotations

from collections.abc import Iterator

import torch


class ResidentLoader:
    """Shuffled batches of ``tensors`` (all with the same first dimension), resident on ``device``.

    ``loader.epoch(e)`` yields the batches of epoch ``e``; ``start`` skips the first batches, for a
    resume in the middle of an epoch. Iterating the loader itself runs epoch 0, 1, 2, ... in turn.
    """

    def __init__(
        self,
        *tensors: torch.Tensor,
        batch_size: int,
        shuffle: bool = True,
        drop_last: bool = True,
        seed: int = 0,
        device: torch.device | str | None = None,
    ) -> None:
        if not tensors:
            raise ValueError("ResidentLoader needs at least one tensor")
        n = tensors[0].shape[0]
        if any(t.shape[0] != n for t in tensors):
            raise ValueError(f"tensors differ in length: {[t.shape[0] for t in tensors]}")
        if batch_size < 1 or (drop_last and batch_size > n):
            raise ValueError(f"batch_size {batch_size} does not fit a dataset of {n}")
        self.device = torch.device(device) if device is not None else tensors[0].device
        self.tensors = tuple(t.to(self.device) for t in tensors)
        self.n, self.batch_size, self.shuffle, self.drop_last, self.seed = n, batch_size, shuffle, drop_last, seed
        self._next_epoch = 0

    def __len__(self) -> int:
        return self.n // self.batch_size if self.drop_last else -(-self.n // self.batch_size)

    def order(self, epoch: int) -> torch.Tensor:
        """The sample order of ``epoch`` as an int64 CPU tensor of length N."""
        if not self.shuffle:
            return torch.arange(self.n)
        gen = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        return torch.randperm(self.n, generator=gen)

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, ...]]:
        idx = self.order(epoch).to(self.device)
        for b in range(start, len(self)):
            sel = idx[b * self.batch_size: (b + 1) * self.batch_size]
            yield tuple(t[sel] for t in self.tensors)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        epoch, self._next_epoch = self._next_epoch, self._next_epoch + 1
        return self.epoch(epoch)
