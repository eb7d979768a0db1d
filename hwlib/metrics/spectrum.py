"""Detail measured in the frequency domain: how much of an image's energy lies at high spatial frequencies.

Used by notebook 01 to ask whether Stage-II adds detail to Stage-I's 64x64 image or only enlarges it: an
up-sampled image has (almost) no energy above the Nyquist frequency of its source. :func:`high_frequency_energy`
says how much detail there is; :func:`high_frequency_error` whether it is the right detail, on birds whose true
detail is known.
"""
from __future__ import annotations

import torch


def _spectrum(images: torch.Tensor, cutoff: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(2-D spectra (N, H, W) of the grey, mean-removed images (N, C, H, W), mask (H, W) of radial frequency > cutoff)."""
    grey = images.float().mean(1)
    grey = grey - grey.mean((1, 2), keepdim=True)
    h, w = grey.shape[-2:]
    fy, fx = torch.fft.fftfreq(h).abs()[:, None], torch.fft.fftfreq(w).abs()[None, :]
    return torch.fft.fft2(grey), (fy.pow(2) + fx.pow(2)).sqrt() > cutoff


@torch.no_grad()
def high_frequency_error(images: torch.Tensor, reference: torch.Tensor, cutoff: float = 0.25) -> float:
    """How much of ``reference``'s detail ``images`` recover: the energy of their difference above ``cutoff``
    (cycles per pixel) over the reference's energy there, ``||HF(x) - HF(ref)||^2 / ||HF(ref)||^2`` per pair of
    images (N, C, H, W), averaged. 1: no detail added (an up-sampled image, whose high band is empty); below 1: the
    added detail is the reference's (its edges where they are); above 1: detail the reference does not have
    (stripes, a grid, noise) -- which :func:`high_frequency_energy` alone would count as detail."""
    spec, high = _spectrum(images, cutoff)
    ref = _spectrum(reference, cutoff)[0]
    err = (spec - ref)[:, high].abs().pow(2).sum(1)
    return float((err / ref[:, high].abs().pow(2).sum(1).clamp_min(1e-12)).mean())


@torch.no_grad()
def high_frequency_energy(images: torch.Tensor, cutoff: float = 0.25) -> float:
    """Mean share of spectral energy above ``cutoff`` (cycles per pixel, 0.5 is Nyquist) of images (N, C, H, W).

    Each image is turned to grey (channel mean), its mean removed, and its 2-D power spectrum split at radial
    frequency ``cutoff``; returns the energy above it over the total, averaged over images, in [0, 1].
    A 64-px image up-sampled to 256 px holds its content below 0.125 cycles/pixel, so with the default
    ``cutoff = 0.25`` what is measured is detail it did not have.
    """
    spec, high = _spectrum(images, cutoff)
    power = spec.abs().pow(2)
    total = power.sum((1, 2)).clamp_min(1e-12)
    return float((power[:, high].sum(1) / total).mean())
