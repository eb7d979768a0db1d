"""Memory formats of image batches (B, C, H, W): which one a tensor is in, so that what is computed from it keeps it.

hwlib trains StackGAN channels-last on a CPU; an operator that meets a contiguous tensor beside channels-last weights
converts it first, so the image path (crops, augmentation, joins) keeps its inputs' format.
"""
from __future__ import annotations

import torch


def is_channels_last(x: torch.Tensor) -> bool:
    """Whether x (B, C, H, W) is channels-last and not also contiguous (one channel or 1x1 images are both)."""
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def memory_format(x: torch.Tensor) -> torch.memory_format:
    """``torch.channels_last`` where :func:`is_channels_last`, else ``torch.contiguous_format``: the format to give
    a result computed from x."""
    return torch.channels_last if is_channels_last(x) else torch.contiguous_format
