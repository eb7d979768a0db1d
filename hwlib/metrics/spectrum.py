"""Detail measured in the frequency domain: how much of an image's energy lies at high spatial frequencies.

Used by notebook 01 to ask whether Stage-II adds detail to Stage-I's 64x64 image or only enlarges it: an
up-sampled image has (almost) no energy above the Nyquist frequency of its source.
"""
from __future__ import annotations

import torch


@torch.no_grad()
def high_frequency_energy(images: torch.Tensor, cutoff: float = 0.25) -> float:
    """Mean share of spectral energy above ``cutoff`` (cycles per pixel, 0.5 is Nyquist) of images (N, C, H, W).

    Each image is turned to grey (channel mean), its mean removed, and its 2-D power spectrum split at radial
    frequency ``cutoff``; returns the energy above it over the total, averaged over images, in [0, 1].
    A 64-px image up-sampled to 256 px holds its content below 0.125 cycles/pixel, so with the default
    ``cutoff = 0.25`` what is measured is detail it did not have.
    """
    grey = images.float().mean(1)
    grey = grey - grey.mean((1, 2), keepdim=True)
    power = torch.fft.fft2(grey).abs().pow(2)
    h, w = grey.shape[-2:]
    fy, fx = torch.fft.fftfreq(h).abs()[:, None], torch.fft.fftfreq(w).abs()[None, :]
    high = (fy.pow(2) + fx.pow(2)).sqrt() > cutoff
    total = power.sum((1, 2)).clamp_min(1e-12)
    return float((power[:, high].sum(1) / total).mean())
