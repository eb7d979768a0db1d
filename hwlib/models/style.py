"""StyleGAN's style operations, small enough to compute by hand (notebook 04, section 7).

- :func:`adain`: adaptive instance normalisation (Huang & Belongie 2017; StyleGAN's style input):
  each channel of ``content`` normalised to zero mean and unit std over its spatial positions, then given the
  ``style``'s per-channel scale and bias.
- :func:`modulated_conv_weight`: StyleGAN2's replacement for AdaIN: the style scales the convolution's input
  channels (modulation) and each output filter is renormalised to unit norm (demodulation), which removes the
  "water droplet" artefacts AdaIN's explicit normalisation caused.
"""
from __future__ import annotations

import torch


def channel_stats(x: torch.Tensor, eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample, per-channel mean and std over space: (B, C, H, W) -> two (B, C, 1, 1)."""
    mean = x.mean(dim=(2, 3), keepdim=True)
    std = (x.var(dim=(2, 3), keepdim=True, unbiased=False) + eps).sqrt()
    return mean, std


def adain(content: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """AdaIN(x, y) = y_s (x - mu(x)) / sigma(x) + y_b: ``content`` (B, C, H, W), ``scale``/``bias`` (B, C).

    In StyleGAN, (y_s, y_b) is an affine map of the intermediate latent w; in style transfer they are the std and
    mean of another image's features (:func:`channel_stats`)."""
    mean, std = channel_stats(content, eps)
    return scale[..., None, None] * (content - mean) / std + bias[..., None, None]


def modulated_conv_weight(weight: torch.Tensor, style: torch.Tensor, demodulate: bool = True,
                          eps: float = 1e-8) -> torch.Tensor:
    """StyleGAN2's per-sample weights: (C_out, C_in, k, k) and style (B, C_in) -> (B, C_out, C_in, k, k)."""
    w = weight[None] * style[:, None, :, None, None]
    if demodulate:
        w = w * torch.rsqrt(w.pow(2).sum(dim=(2, 3, 4), keepdim=True) + eps)
    return w
