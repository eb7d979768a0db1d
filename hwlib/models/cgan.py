"""The seed's conditional GAN (Mirza & Osindero, 2014) for MNIST: multilayer perceptrons.

Both networks embed the class label with ``nn.Embedding`` and concatenate the embedding to their
input: to the noise vector in the generator, to the flattened 784-pixel image in the
discriminator. Hidden layers use LeakyReLU(0.2); the discriminator adds dropout after each
hidden layer; the generator ends in tanh (pixels in [-1, 1]), the discriminator in one logit.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from hwlib.models.dropout import Dropout

if TYPE_CHECKING:
    from hwlib.train import EMA


def _mlp(sizes: Sequence[int], dropout: float = 0.0, batchnorm: bool = False) -> nn.Sequential:
    """Linear [-> BatchNorm1d] -> LeakyReLU(0.2) [-> Dropout] for each consecutive pair in ``sizes``."""
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), *([nn.BatchNorm1d(b)] if batchnorm else []), nn.LeakyReLU(0.2, True)]
        if dropout > 0:
            layers.append(Dropout(dropout))
    return nn.Sequential(*layers)


class MLPGenerator(nn.Module):
    """z (B, z_dim) and labels y (B,) int64 in [0, num_classes) -> images (B, 1, 28, 28) in [-1, 1].

    ``batchnorm=True`` puts BatchNorm1d after every hidden linear layer, DCGAN's recipe for the
    generator; the seed's generator has none.
    """

    def __init__(self, z_dim: int = 100, num_classes: int = 10, embed_dim: int = 10,
                 hidden: Sequence[int] = (256, 512, 1024), batchnorm: bool = False) -> None:
        super().__init__()
        self.z_dim, self.num_classes = z_dim, num_classes
        self.embed = nn.Embedding(num_classes, embed_dim)
        self.body = _mlp([z_dim + embed_dim, *hidden], batchnorm=batchnorm)
        self.out = nn.Sequential(nn.Linear(hidden[-1], 28 * 28), nn.Tanh())

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.body(torch.cat([z, self.embed(y)], dim=1))
        return self.out(h).view(-1, 1, 28, 28)


class MLPDiscriminator(nn.Module):
    """images (B, 1, 28, 28) in [-1, 1] and labels y (B,) -> real/fake logits (B,)."""

    def __init__(self, num_classes: int = 10, embed_dim: int = 10, hidden: Sequence[int] = (1024, 512, 256),
                 dropout: float = 0.3) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.embed = nn.Embedding(num_classes, embed_dim)
        self.body = _mlp([28 * 28 + embed_dim, *hidden], dropout=dropout)
        self.out = nn.Linear(hidden[-1], 1)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.body(torch.cat([x.flatten(1), self.embed(y)], dim=1))
        return self.out(h).flatten()


def build_mlp(m: Mapping[str, Any], z_dim: int) -> tuple[MLPGenerator, MLPDiscriminator]:
    """The MLP CGAN of the settings ``m`` (a notebook-03 profile's ``mlp`` entry): (G, D)."""
    return (MLPGenerator(z_dim, 10, m["embed_dim"], m["g_hidden"], batchnorm=m["batchnorm"]),
            MLPDiscriminator(10, m["embed_dim"], m["d_hidden"], m["dropout"]))


def build(cfg: Mapping[str, Any]) -> dict[str, tuple[nn.Module, nn.Module]]:
    """Notebook 03's two conditional GANs from a profile: {"mlp": (G, D), "conv": (G, D)} (the conv pair is the
    DCGAN-style CGAN of :mod:`hwlib.models.dcgan`, with the profile's label mode)."""
    from hwlib.models.dcgan import DCGANDiscriminator, DCGANGenerator

    c = cfg["conv"]  # built first: the order the networks draw their initial weights from the RNG
    conv = (DCGANGenerator(cfg["z_dim"], 10, c["ch"], c["embed_dim"]), DCGANDiscriminator(10, c["ch"], c["label_mode"]))
    return {"mlp": build_mlp(cfg["mlp"], cfg["z_dim"]), "conv": conv}


def sampler(G: nn.Module, z_dim: int, device: torch.device | str) -> Callable[[int], tuple[torch.Tensor, torch.Tensor]]:
    """``sample(m)`` -> (images (m, 1, 28, 28) in [-1, 1], labels (m,)): ``G`` at labels 0, 1, ..., 9, 0, ... and
    z ~ N(0, I) from torch's RNG, the sampler :func:`hwlib.metrics.evaluate` scores (notebook 03 and
    ``benchmarks/bench_cgan_epochs.py``). Pass ``G`` in eval mode."""
    def sample(m: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(m, device=device) % 10
        return G(torch.randn(m, z_dim, device=device), y), y
    return sample


StepFn = Callable[[tuple[torch.Tensor, ...], int], dict[str, torch.Tensor]]


def training(G: nn.Module, D: nn.Module, settings: Mapping[str, Any], cfg: Mapping[str, Any],
             device: torch.device | str) -> tuple[StepFn, dict[str, torch.optim.Optimizer], EMA | None]:
    """How notebook 03 trains one CGAN (also ``benchmarks/bench_cgan_epochs.py``): ``(step, optimizers, ema)``.

    ``settings`` is the model's entry of the profile (``cfg.mlp``, ``cfg.conv`` or the ablation's): fused Adam for G
    and D with its ``lr`` and ``betas``; ``torch.compile`` of both and bf16 autocast (where the CPU computes it faster)
    as its ``compile`` and ``bf16`` say; an :class:`~hwlib.train.EMA` of G when the profile sets ``ema_decay`` (else
    ``ema`` is None); :func:`hwlib.gan.make_gan_step` with the profile's ``z_dim`` and ``n_critic``. Pass the three
    to :func:`hwlib.train.fit` (``optimizers=optimizers``, ``emas={"G": ema}``) and sample from ``ema.module``.
    """
    from hwlib.gan import make_gan_step
    from hwlib.train import EMA, adam, maybe_compile

    opt_g = adam(G.parameters(), lr=settings["lr"], betas=settings["betas"])
    opt_d = adam(D.parameters(), lr=settings["lr"], betas=settings["betas"])
    ema = EMA(G, cfg["ema_decay"]) if cfg.get("ema_decay") else None
    fast = settings.get("compile", False)  # the profile says which model torch.compile speeds up
    step = make_gan_step(maybe_compile(G, fast), maybe_compile(D, fast), opt_g, opt_d, z_dim=cfg["z_dim"],
                         n_critic=cfg["n_critic"], num_classes=10, ema=ema, amp=settings.get("bf16", True),
                         device=device)
    return step, {"G": opt_g, "D": opt_d}, ema
