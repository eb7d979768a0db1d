"""GAN losses on logits, shared by every GAN in the course (CGAN, DCGAN, StackGAN).

All losses take discriminator *logits* (pre-sigmoid) and use ``binary_cross_entropy_with_logits``,
which is numerically safe and allowed under bf16 autocast (``BCELoss`` on probabilities is not).
:func:`make_gan_step` is the alternating D/G update every GAN notebook trains with.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    """Mean BCE of ``logits`` against the constant label ``target``, computed in float32."""
    logits = logits.float()
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, real_label: float = 1.0) -> torch.Tensor:
    """Discriminator loss ``-log D(x) - log(1 - D(G(z)))``; ``real_label`` < 1 gives one-sided label smoothing."""
    return _bce(real_logits, real_label) + _bce(fake_logits, 0.0)


def g_loss(fake_logits: torch.Tensor, saturating: bool = False) -> torch.Tensor:
    """Generator loss. Non-saturating (default): ``-log D(G(z))``. Saturating: ``log(1 - D(G(z)))``.

    The saturating form is the minimax game's; its gradient vanishes when D confidently rejects fakes
    (D(G(z)) -> 0), which is why GANs train with the non-saturating one.
    """
    return -_bce(fake_logits, 0.0) if saturating else _bce(fake_logits, 1.0)


def matching_aware_d_loss(real_logits: torch.Tensor, wrong_logits: torch.Tensor, fake_logits: torch.Tensor,
                          real_label: float = 1.0) -> torch.Tensor:
    """Matching-aware discriminator loss (GAN-CLS, used by StackGAN).

    ``real``: real image with its caption (label 1); ``wrong``: real image with a mismatched caption
    (label 0); ``fake``: generated image with its caption (label 0). As in StackGAN, the two negative
    terms are averaged: ``L = BCE(real, 1) + (BCE(wrong, 0) + BCE(fake, 0)) / 2``.
    """
    return _bce(real_logits, real_label) + 0.5 * (_bce(wrong_logits, 0.0) + _bce(fake_logits, 0.0))


def make_gan_step(G: nn.Module, D: nn.Module, opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer, *,
                  z_dim: int, n_critic: int = 5, conditional: bool = True, num_classes: int = 10,
                  saturating: bool = False, real_label: float = 1.0, ema: Any = None,
                  device: torch.device | str | None = None) -> Callable[[tuple[torch.Tensor, ...], int], dict[str, torch.Tensor]]:
    """The alternating GAN update as a ``step_fn`` for :func:`hwlib.train.fit`.

    One call, on one batch of real data ``(x,)`` or ``(x, y)`` (images (B, C, H, W) in [-1, 1],
    labels (B,) int64), makes ``n_critic`` discriminator updates followed by one generator update:

    1. ``n_critic`` times: draw fresh ``z ~ N(0, I)`` (and, if ``conditional``, fake labels uniform in
       ``[0, num_classes)``), generate without gradient, and take one ``opt_d`` step on
       :func:`d_loss` of D on the real batch (with its labels) and on the fakes (with theirs).
    2. Once: fresh ``z`` and labels, one ``opt_g`` step on :func:`g_loss` (non-saturating unless
       ``saturating``) with D's weights frozen; then ``ema.update(G)`` if an EMA is given.

    So an epoch over N images is ``N // B`` generator updates and ``n_critic * N // B`` discriminator
    updates, each discriminator update seeing the real batch with a new batch of fakes. Returned
    (detached): ``loss_d`` (mean over the critic updates), ``loss_g``, ``d_real`` = mean D(x) and
    ``d_fake`` = mean D(G(z)) as probabilities (at the last critic update and before the G update).
    """
    from hwlib.train import autocast

    device = torch.device(device) if device is not None else next(G.parameters()).device

    def sample(batch_size: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        z = torch.randn(batch_size, z_dim, device=device)
        y = torch.randint(0, num_classes, (batch_size,), device=device) if conditional else None
        return z, y

    def call(net: nn.Module, inp: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        return net(inp, y) if conditional else net(inp)

    def step(batch: tuple[torch.Tensor, ...], step_index: int) -> dict[str, torch.Tensor]:
        x = batch[0]
        y_real = batch[1] if conditional else None
        n = x.shape[0]
        D.requires_grad_(True)
        loss_d_sum = torch.zeros((), device=device)
        for _ in range(n_critic):
            z, y_fake = sample(n)
            with torch.no_grad(), autocast(device):
                fake = call(G, z, y_fake)
            with autocast(device):
                real_logits = call(D, x, y_real)
                fake_logits = call(D, fake, y_fake)
            loss_d = d_loss(real_logits, fake_logits, real_label)
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
            loss_d_sum += loss_d.detach()
        D.requires_grad_(False)  # G's update needs gradients through D, not for D's weights
        z, y_fake = sample(n)
        with autocast(device):
            gen_logits = call(D, call(G, z, y_fake), y_fake)
        loss_g = g_loss(gen_logits, saturating=saturating)
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        D.requires_grad_(True)
        if ema is not None:
            ema.update(G)
        return {
            "loss_d": loss_d_sum / n_critic,
            "loss_g": loss_g.detach(),
            "d_real": torch.sigmoid(real_logits.detach().float()).mean(),
            "d_fake": torch.sigmoid(gen_logits.detach().float()).mean(),
        }

    return step
