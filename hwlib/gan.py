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

from hwlib.layout import is_channels_last, memory_format
from hwlib.models import shift_cutout


def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    """Mean BCE of ``logits`` against the constant label ``target``, computed in float32."""
    logits = logits.float()
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, real_label: float = 1.0) -> torch.Tensor:
    """Discriminator loss ``-log D(x) - log(1 - D(G(z)))``; ``real_label`` < 1 gives one-sided label smoothing."""
    return _bce(real_logits, real_label) + _bce(fake_logits, 0.0)


def g_loss(fake_logits: torch.Tensor, saturating: bool = False, loss: str = "bce") -> torch.Tensor:
    """Generator loss. Non-saturating (default): ``-log D(G(z))``. Saturating: ``log(1 - D(G(z)))``.
    ``loss="hinge"``: ``-mean(D(G(z)))`` on logits (Lim & Ye 2017).

    The saturating form is the minimax game's; its gradient vanishes when D confidently rejects fakes
    (D(G(z)) -> 0), which is why GANs train with the non-saturating one.
    """
    if loss == "hinge":
        return -fake_logits.float().mean()
    return -_bce(fake_logits, 0.0) if saturating else _bce(fake_logits, 1.0)


def _real_term(logits: torch.Tensor, loss: str, real_label: float = 1.0) -> torch.Tensor:
    return F.relu(1 - logits.float()).mean() if loss == "hinge" else _bce(logits, real_label)


def fake_term(logits: torch.Tensor, loss: str = "bce") -> torch.Tensor:
    """D's loss on logits it should call fake: BCE against 0, or the hinge ``relu(1 + l)``; mean, float32."""
    return F.relu(1 + logits.float()).mean() if loss == "hinge" else _bce(logits, 0.0)


def matching_aware_d_loss(real_logits: torch.Tensor, wrong_logits: torch.Tensor | None, fake_logits: torch.Tensor,
                          real_label: float = 1.0, *, real_uncond: torch.Tensor | None = None,
                          fake_uncond: torch.Tensor | None = None, loss: str = "bce") -> torch.Tensor:
    """Matching-aware discriminator loss (GAN-CLS, used by StackGAN), as the official StackGAN code.

    ``real``: real image with its caption (target real); ``wrong``: real image with a mismatched caption
    (target fake); ``fake``: generated image with its caption (target fake). Conditional head only:
    ``L = real + (wrong + fake) / 2``. With an unconditional head (``real_uncond``/``fake_uncond``, Stage-II):
    ``L = (real + real_u) / 2 + (wrong + fake + fake_u) / 3``. ``wrong_logits=None`` drops the wrong term.
    Each term is BCE (``loss="bce"``) or the hinge ``relu(1 - l)`` / ``relu(1 + l)`` (``loss="hinge"``).
    """
    real = _real_term(real_logits, loss, real_label)
    fakes = [fake_term(fake_logits, loss)] + ([] if wrong_logits is None else [fake_term(wrong_logits, loss)])
    if real_uncond is not None:
        real = (real + _real_term(real_uncond, loss, real_label)) / 2
        fakes.append(fake_term(fake_uncond, loss))
    return real + sum(fakes) / len(fakes)


def contrastive_loss(logits: torch.Tensor) -> torch.Tensor:
    """Image-to-caption contrastive loss (InfoNCE; the sentence-image term of XMC-GAN, Zhang et al. 2021).

    ``logits`` (B, B): entry (i, j) scores image i against caption j; caption i is image i's. Extra columns
    (B, B + K) are more wrong captions per image (the matcher's near misses, :mod:`hwlib.models.matching`). The cross-entropy of
    picking the right caption in each row, in float32: ``log B`` when the scores are all equal, 0 when each image
    scores its own caption infinitely above the rest.
    """
    logits = logits.float()
    return F.cross_entropy(logits, torch.arange(len(logits), device=logits.device))


def _translate(x: torch.Tensor, ty: torch.Tensor, tx: torch.Tensor) -> torch.Tensor:
    """Images (B, C, H, W) shifted by (``ty[i]``, ``tx[i]``) pixels each (int64 (B, 1, 1)), zeros where nothing moves
    in: ``out[i, :, y, x] = x[i, :, y + ty[i], x + tx[i]]``. On a CPU each image's window of the zero-padded batch,
    stacked into x's memory format (forward and backward 2.5x faster than copying each image into a zero batch, whose
    backward clones the whole batch's gradient once per image: 1.3 against 3.3 ms for (16, 3, 64, 64), 7.1 against
    16.5 ms for (8, 3, 256, 256), 2 threads), and the gradient the same shift back (:class:`_Windows`); elsewhere one
    gather from the zero-padded batch, a single kernel where the windows would be B launches. The same values and
    gradients, bit for bit."""
    b, _, h, w = x.shape
    if x.device.type != "cpu":
        gy = (torch.arange(h, device=x.device)[None, :, None] + ty + 1).clamp(0, h + 1)
        gx = (torch.arange(w, device=x.device)[None, None, :] + tx + 1).clamp(0, w + 1)
        padded = F.pad(x, [1, 1, 1, 1])
        return padded.permute(0, 2, 3, 1)[torch.arange(b, device=x.device)[:, None, None], gy, gx].permute(0, 3, 1, 2)
    return _Windows.apply(x, ty.flatten().tolist(), tx.flatten().tolist())


def _shift_windows(x: torch.Tensor, ty: list[int], tx: list[int]) -> torch.Tensor:
    """:func:`_translate` on a CPU with the shifts as lists: each image's window of the zero-padded batch, stacked
    into x's memory format."""
    _, _, h, w = x.shape
    sy, sx = max(map(abs, ty)), max(map(abs, tx))
    padded = F.pad(x, [sx, sx, sy, sy])
    if is_channels_last(x):  # stacked as (B, H, W, C): the channels-last batch, no copy after the stack
        images = padded.permute(0, 2, 3, 1).unbind(0)
        windows = [im[sy + dy:sy + dy + h, sx + dx:sx + dx + w] for im, dy, dx in zip(images, ty, tx)]
        return torch.stack(windows).permute(0, 3, 1, 2)
    windows = [im[:, sy + dy:sy + dy + h, sx + dx:sx + dx + w] for im, dy, dx in zip(padded.unbind(0), ty, tx)]
    return torch.stack(windows)


class _Windows(torch.autograd.Function):
    """The shift's gradient is the opposite shift of the output's gradient, in that gradient's memory format: the
    values autograd's pad, unbind and slice backwards give (each input pixel takes one output pixel's gradient, or
    zero), without their zero-filled contiguous copies, so a channels-last generator gets its gradient channels-last
    (StackGAN's 8 -> 3 output convolution and tanh backward 1.7 against 2.7 ms at (16, 3, 64, 64), 2 threads)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, ty: list[int], tx: list[int]) -> torch.Tensor:
        ctx.shifts = ty, tx
        return _shift_windows(x, ty, tx)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        ty, tx = ctx.shifts
        return _shift_windows(grad, [-t for t in ty], [-t for t in tx]), None, None


def diff_augment(x: torch.Tensor, policy: str = "translation,cutout") -> torch.Tensor:
    """DiffAugment (Zhao et al. 2020): differentiable augmentation of images (B, C, H, W), fresh per sample.

    ``translation``: shift by up to 1/8 of the size, zero-padded; ``cutout``: zero a random square of half
    the size. Applied to everything D sees (real and fake, in D's and G's updates), so D cannot memorise a
    small training set while G still receives gradients. ``""`` returns ``x`` unchanged. The result is dense in x's
    memory format (channels-last stays channels-last, as StackGAN trains: no copy into D's first convolution and
    back in its gradient), else contiguous. For float32 batches on a CPU, ``translation`` and/or ``cutout`` (in that
    order) run as one kernel each way (:mod:`hwlib.models.shift_cutout`): the same draws, values and gradients, bit
    for bit.
    """
    layout = memory_format(x) if x.dim() == 4 else torch.contiguous_format
    names = [p.strip() for p in policy.split(",") if p.strip()]
    for name in names:
        if name not in ("translation", "cutout"):
            raise ValueError(f"unknown DiffAugment policy {name!r}; use 'translation' and/or 'cutout'")
    if names in (["translation"], ["cutout"], ["translation", "cutout"]) and shift_cutout.available(x):
        shift = _translation_draws(x) if names[0] == "translation" else None  # one kernel pass: the same draws,
        cut = _cutout_draws(x) if names[-1] == "cutout" else None  # values and gradients
        return shift_cutout.shift_cutout(x, shift, cut)
    for name in names:
        _, _, h, w = x.shape
        if name == "translation":
            x = _translate(x, *_translation_draws(x))
        else:
            oy, ox, ch, cw = _cutout_draws(x)
            ys, xs = torch.arange(h, device=x.device)[None, :, None], torch.arange(w, device=x.device)[None, None, :]
            inside = (ys >= oy) & (ys < oy + ch) & (xs >= ox) & (xs < ox + cw)
            x = x * (~inside)[:, None].to(x.dtype)
    return x.contiguous(memory_format=layout)


def _translation_draws(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The translation's shifts for images x (B, C, H, W): (ty, tx), int64 (B, 1, 1) each, up to 1/8 of the size."""
    b, _, h, w = x.shape
    sy, sx = int(h / 8 + 0.5), int(w / 8 + 0.5)
    return (torch.randint(-sy, sy + 1, (b, 1, 1), device=x.device),
            torch.randint(-sx, sx + 1, (b, 1, 1), device=x.device))


def _cutout_draws(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """The cutout squares for images x (B, C, H, W): top-left corners (oy, ox), int64 (B, 1, 1) each, and the size
    (ch, cw), half the image's: squares centred anywhere in the image (so partly outside it at the edges)."""
    b, _, h, w = x.shape
    ch, cw = int(h / 2 + 0.5), int(w / 2 + 0.5)
    return (torch.randint(0, h + (1 - ch % 2), (b, 1, 1), device=x.device) - ch // 2,
            torch.randint(0, w + (1 - cw % 2), (b, 1, 1), device=x.device) - cw // 2, ch, cw)


def make_gan_step(G: nn.Module, D: nn.Module, opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer, *,
                  z_dim: int, n_critic: int = 5, conditional: bool = True, num_classes: int = 10,
                  saturating: bool = False, real_label: float = 1.0, ema: Any = None, amp: bool = True,
                  device: torch.device | str | None = None,
                  joint_d: bool = True) -> Callable[[tuple[torch.Tensor, ...], int], dict[str, torch.Tensor]]:
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
    ``amp``: bf16 autocast where the hardware computes it faster than fp32 (:func:`hwlib.train.autocast`).
    ``joint_d``: where D has no batch norm (nothing couples the samples of a batch), a critic update scores the real
    batch and the fakes in one D pass over both, concatenated: the same logits and gradients as two passes, in half
    the calls (a small MLP's step is mostly per-call overhead on a CPU). With batch norm, two passes, as DCGAN's
    statistics are per batch of real or fake images.
    """
    from hwlib.train import autocast

    device = torch.device(device) if device is not None else next(G.parameters()).device
    # D.modules() reaches the wrapped module's layers also when D is torch.compile's wrapper
    joint = joint_d and not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in D.modules())

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
            with torch.no_grad(), autocast(device, amp):
                fake = call(G, z, y_fake)
            with autocast(device, amp):
                if joint:  # one pass over (real; fake), split back: the same logits as two passes
                    logits = call(D, torch.cat([x, fake.to(x.dtype)]),
                                  torch.cat([y_real, y_fake]) if conditional else None)
                    real_logits, fake_logits = logits[:n], logits[n:]
                else:
                    real_logits = call(D, x, y_real)
                    fake_logits = call(D, fake, y_fake)
            loss_d = d_loss(real_logits, fake_logits, real_label)
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
            loss_d_sum += loss_d.detach()
        D.requires_grad_(False)  # G's update needs gradients through D, not for D's weights
        z, y_fake = sample(n)
        with autocast(device, amp):
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


def cycle_consistency_loss(G: Callable[[torch.Tensor], torch.Tensor], F_: Callable[[torch.Tensor], torch.Tensor],
                           x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """CycleGAN's cycle loss (Zhu et al. 2017): E|F(G(x)) - x|_1 + E|G(F(y)) - y|_1, for G: X -> Y and F: Y -> X.

    The adversarial losses only ask G(X) to look like Y; many maps do that. The cycle loss asks G and F to be each
    other's inverse, so a translated image keeps what it was made from. Weighted by 10 in the paper."""
    return (F_(G(x)) - x).abs().mean() + (G(F_(y)) - y).abs().mean()


def identity_loss(G: Callable[[torch.Tensor], torch.Tensor], F_: Callable[[torch.Tensor], torch.Tensor],
                  x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """CycleGAN's identity loss: E|G(y) - y|_1 + E|F(x) - x|_1: a generator fed an image already in its target domain
    should leave it alone (it keeps colours in photo <-> painting; weight half the cycle weight in the paper)."""
    return (G(y) - y).abs().mean() + (F_(x) - x).abs().mean()

