"""DCGAN (Radford et al., 2016) for 28x28 images, unconditional or class-conditional.

The DCGAN recipe: no pooling or fully connected hidden layers; the generator upsamples with
strided transposed convolutions, the discriminator downsamples with strided convolutions;
batch norm in both (not on the generator output nor the discriminator input); ReLU in the
generator with a tanh output, LeakyReLU(0.2) in the discriminator. At 28x28 the spatial path is
1 -> 7 -> 14 -> 28 in G (2ch, ch, 1 channels) and 28 -> 14 -> 7 -> 1 in D (ch, 2ch, 1),
the layout of the MNIST networks in InfoGAN (Chen et al., 2016).

With ``num_classes > 0`` the networks become a conditional GAN (Mirza & Osindero, 2014):
the generator concatenates a learned label embedding to the noise; the discriminator either
receives the label as an extra 28x28 input channel (``label_mode="channel"``, a learned map per
class) or through a projection (``label_mode="projection"``, Miyato & Koyama, 2018):
``logit = w . h + embed(y) . h`` on the pooled features ``h``.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from hwlib.models.matmul_conv import ConvTranspose2d


class DCGANGenerator(nn.Module):
    """z (B, z_dim) [+ labels y (B,) int64 in [0, num_classes)] -> images (B, img_channels, 28, 28) in [-1, 1]."""

    def __init__(self, z_dim: int = 100, num_classes: int = 0, ch: int = 64, embed_dim: int = 50,
                 img_channels: int = 1) -> None:
        super().__init__()
        self.z_dim, self.num_classes = z_dim, num_classes
        self.embed = nn.Embedding(num_classes, embed_dim) if num_classes > 0 else None
        in_dim = z_dim + (embed_dim if num_classes > 0 else 0)
        self.net = nn.Sequential(
            ConvTranspose2d(in_dim, ch * 2, 7, 1, 0, bias=False),  # 1x1 -> 7x7 (project and reshape; a matrix product)
            nn.BatchNorm2d(ch * 2), nn.ReLU(True),
            nn.ConvTranspose2d(ch * 2, ch, 4, 2, 1, bias=False),  # 7 -> 14
            nn.BatchNorm2d(ch), nn.ReLU(True),
            nn.ConvTranspose2d(ch, img_channels, 4, 2, 1),  # 14 -> 28, to pixels
            nn.Tanh(),
        )
        init_dcgan(self)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.embed is not None:
            if y is None:
                raise ValueError("a conditional generator needs labels y")
            z = torch.cat([z, self.embed(y)], dim=1)
        return self.net(z[:, :, None, None])


class DCGANDiscriminator(nn.Module):
    """images (B, img_channels, 28, 28) in [-1, 1] [+ labels y (B,)] -> real/fake logits (B,)."""

    def __init__(self, num_classes: int = 0, ch: int = 64, label_mode: str = "channel",
                 img_channels: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        if label_mode not in ("channel", "projection"):
            raise ValueError(f"label_mode must be 'channel' or 'projection', not {label_mode!r}")
        self.num_classes, self.label_mode = num_classes, label_mode
        channel = num_classes > 0 and label_mode == "channel"
        self.label_map = nn.Embedding(num_classes, 28 * 28) if channel else None
        self.features = nn.Sequential(
            nn.Conv2d(img_channels + int(channel), ch, 4, 2, 1),  # 28 -> 14 (no BN on the input layer)
            nn.LeakyReLU(0.2, True), nn.Dropout2d(dropout),
            nn.Conv2d(ch, ch * 2, 4, 2, 1, bias=False),  # 14 -> 7
            nn.BatchNorm2d(ch * 2), nn.LeakyReLU(0.2, True), nn.Dropout2d(dropout),
        )
        self.out = nn.Conv2d(ch * 2, 1, 7, 1, 0)  # 7 -> 1: the logit
        self.proj = nn.Embedding(num_classes, ch * 2) if num_classes > 0 and label_mode == "projection" else None
        init_dcgan(self)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.num_classes > 0 and y is None:
            raise ValueError("a conditional discriminator needs labels y")
        if self.label_map is not None:
            x = torch.cat([x, self.label_map(y).view(-1, 1, 28, 28)], dim=1)
        h = self.features(x)
        logit = self.out(h).flatten()
        if self.proj is not None:
            logit = logit + (self.proj(y) * h.sum(dim=(2, 3))).sum(dim=1)
        return logit


def init_dcgan(module: nn.Module) -> None:
    """DCGAN initialisation: conv weights ~ N(0, 0.02), batch-norm scales ~ N(1, 0.02), biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def transposed_conv2d_reference(x: torch.Tensor, weight: torch.Tensor, stride: int = 1, padding: int = 0) -> torch.Tensor:
    """A transposed convolution written as what it is: every input pixel scatters a scaled kernel.

    ``x`` (C_in, H, W), ``weight`` (C_in, C_out, k, k) (PyTorch's ``ConvTranspose2d`` layout) ->
    (C_out, (H - 1) * stride - 2 * padding + k, same for W). Input pixel (i, j) adds
    ``x[:, i, j] * weight`` to the output window whose top-left corner is (i * stride, j * stride);
    overlapping windows sum; ``padding`` then crops that many pixels from each border.
    Equal to ``F.conv_transpose2d`` (slow: for worked examples and tests only).
    """
    c_in, h, w = x.shape
    k = weight.shape[-1]
    out = x.new_zeros(weight.shape[1], (h - 1) * stride + k, (w - 1) * stride + k)
    for i in range(h):
        for j in range(w):
            window = torch.einsum("c,cokl->okl", x[:, i, j], weight)
            out[:, i * stride: i * stride + k, j * stride: j * stride + k] += window
    return out[:, padding: out.shape[1] - padding, padding: out.shape[2] - padding]


def build(cfg: Mapping[str, Any]) -> tuple[DCGANGenerator, DCGANDiscriminator]:
    """Notebook 04's unconditional DCGAN from a profile (``z_dim``, ``gan_ch``): (G, D), G built first (the order
    they draw their initial weights from the RNG)."""
    return DCGANGenerator(z_dim=cfg["z_dim"], ch=cfg["gan_ch"]), DCGANDiscriminator(ch=cfg["gan_ch"])
