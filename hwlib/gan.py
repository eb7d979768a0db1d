"""GAN losses on logits, shared by every GAN in the course (CGAN, DCGAN, StackGAN).

All losses take discriminator *logits* (pre-sigmoid) and use ``binary_cross_entropy_with_logits``,
which is numerically safe and allowed under bf16 autocast (``BCELoss`` on probabilities is not).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, real_label: float = 1.0) -> torch.Tensor:
    """Discriminator loss ``-log D(x) - log(1 - D(G(z)))``; ``real_label`` < 1 gives one-sided label smoothing."""
    real = F.binary_cross_entropy_with_logits(real_logits.float(), torch.full_like(real_logits, real_label, dtype=torch.float32))
    fake = F.binary_cross_entropy_with_logits(fake_logits.float(), torch.zeros_like(fake_logits, dtype=torch.float32))
    return real + fake


def g_loss(fake_logits: torch.Tensor, saturating: bool = False) -> torch.Tensor:
    """Generator loss. Non-saturating (default): ``-log D(G(z))``. Saturating: ``log(1 - D(G(z)))``.

    The saturating form is the minimax game's; its gradient vanishes when D confidently rejects fakes
    (D(G(z)) -> 0), which is why GANs train with the non-saturating one.
    """
    fake_logits = fake_logits.float()
    if saturating:
        return -F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


def matching_aware_d_loss(real_logits: torch.Tensor, wrong_logits: torch.Tensor, fake_logits: torch.Tensor,
                          real_label: float = 1.0) -> torch.Tensor:
    """Matching-aware discriminator loss (GAN-CLS, used by StackGAN).

    ``real``: real image with its caption (label 1); ``wrong``: real image with a mismatched caption
    (label 0); ``fake``: generated image with its caption (label 0). As in StackGAN, the two negative
    terms are averaged: ``L = BCE(real, 1) + (BCE(wrong, 0) + BCE(fake, 0)) / 2``.
    """
    real = F.binary_cross_entropy_with_logits(real_logits.float(), torch.full_like(real_logits, real_label, dtype=torch.float32))
    wrong = F.binary_cross_entropy_with_logits(wrong_logits.float(), torch.zeros_like(wrong_logits, dtype=torch.float32))
    fake = F.binary_cross_entropy_with_logits(fake_logits.float(), torch.zeros_like(fake_logits, dtype=torch.float32))
    return real + 0.5 * (wrong + fake)
