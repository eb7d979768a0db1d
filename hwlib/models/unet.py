"""The DDPM U-Net (Ho et al. 2020, appendix B; a PixelCNN++-style backbone), sized for 28×28 MNIST.

- sinusoidal timestep embedding (Transformer-style) -> MLP (Linear, SiLU, Linear) to 4·ch
- ResNet blocks: GroupNorm, SiLU, 3×3 conv, + projected time(/class) embedding, GroupNorm, SiLU, dropout, 3×3 conv,
  1×1 skip when the width changes
- ``num_res_blocks`` blocks per resolution; down-sampling by a stride-2 3×3 conv, up-sampling by nearest ×2 + 3×3 conv;
  skip connections from every down-path block concatenated into the up path (``num_res_blocks + 1`` blocks each)
- single-head self-attention at the resolutions in ``attn_resolutions`` and in the middle (Res, Attn, Res)
- optional class embedding (``num_classes``), with one extra "null" class (index ``num_classes``) for
  classifier-free guidance; it is added to the time embedding.

For 28×28 and ``channel_mult=(1, 2, 2)`` the resolutions are 28, 14, 7.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hwlib.models import group_norm_silu, upsample_conv
from hwlib.models.dropout import Dropout


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding of timesteps ``t`` (B,) -> (B, dim): [sin(t·ω_k), cos(t·ω_k)], ω_k = max_period^(-k/(dim/2))."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    return F.pad(emb, (0, dim % 2))


def _group_pool(channels: int, groups: int, device: torch.device) -> torch.Tensor:
    """(C, C) averaging matrix: ``stats_c @ pool`` replaces each channel's statistic by its group's mean."""
    size = channels // groups
    return torch.block_diag(*[torch.full((size, size), 1.0 / size, device=device)] * groups)


def _group_stats(mean_c: torch.Tensor, var_c: torch.Tensor, pool: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and variance (B, C) -> each channel's group mean and variance (B, C): pooled variance = mean
    of the variances + variance of the means."""
    mean_g = mean_c @ pool
    return mean_g, (var_c + (mean_c - mean_g).square()) @ pool


def channelwise_group_norm(x: torch.Tensor, groups: int, weight: torch.Tensor, bias: torch.Tensor, eps: float
                           ) -> torch.Tensor:
    """``F.group_norm`` written from per-channel statistics, for ``torch.compile``: (B, C, H, W) -> the same, dtype of x.

    Each channel's mean and variance over H·W (float32) are pooled into its group's by a (C, C) averaging matrix
    (pooled variance = mean of the variances + variance of the means), and the affine map is applied as one scale and
    shift per (sample, channel). Inductor lays the U-Net out channels-last for its convolutions; reducing a group of
    C/G neighbouring channels there is a strided loop that it does not vectorise, while these reductions run along
    whole rows of C channels and the matrix products are realised once per call instead of per pixel.

    Without a gradient (sampling) the channel statistics are taken of x minus the channel's first pixel, against
    cancellation, and the scale through a matrix product. With one (training) :class:`_ChannelwiseGroupNorm` takes
    them with ``torch.var_mean`` and has a hand-written backward: two reductions (Σ dy, Σ dy·x per channel), one
    matrix product and one pass over the pixels (three matrix products per call in all, where autograd through the
    formula above takes seven).
    """
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad or bias.requires_grad):
        with torch.autocast(x.device.type, enabled=False):
            return _ChannelwiseGroupNorm.apply(x, weight, bias, groups, eps)
    b, c = x.shape[:2]
    with torch.autocast(x.device.type, enabled=False):
        pool = _group_pool(c, groups, x.device)
        xf = x.float()
        pilot = xf[:, :, :1, :1]
        d = xf - pilot
        mean_d = d.mean((2, 3))  # (B, C)
        var_c = d.square().mean((2, 3)) - mean_d.square()
        mean_c = mean_d + pilot.view(b, c)
        mean_g, var_g = _group_stats(mean_c, var_c, pool)
        scale = torch.rsqrt(var_g + eps) @ torch.diag(weight)  # a matrix product: realised, not recomputed per pixel
        shift = bias - mean_g * scale
        return (xf * scale[:, :, None, None] + shift[:, :, None, None]).to(x.dtype)


class _ChannelwiseGroupNorm(torch.autograd.Function):
    """:func:`channelwise_group_norm` with a gradient: y = (x - μ_g) σ_g⁻¹ w + b per (sample, channel), and

    dx = σ⁻¹ (w dy - mean_g(w dy) - x̂ mean_g(w dy x̂)), x̂ = (x - μ_g) σ_g⁻¹, the group means taken over the group's
    channels and pixels from the per-channel sums Σ dy and Σ dy·x. Notebook 02's compiled quick U-Net trains
    1.06-1.11x faster with it in bf16 at 2 threads (two probes, each the median of ten alternating rounds in one
    process), 1.07x in bf16 and 1.03x in fp32 at 1 thread (two such probes side by side).
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, groups: int, eps: float
                ) -> torch.Tensor:
        pool = _group_pool(x.shape[1], groups, x.device)
        xf = x.float()
        var_c, mean_c = torch.var_mean(xf, (2, 3), correction=0)  # (B, C) each
        mean_g, var_g = _group_stats(mean_c, var_c, pool)
        rstd = torch.rsqrt(var_g + eps)
        scale = rstd * weight
        ctx.save_for_backward(x, weight, mean_g, rstd)
        ctx.groups = groups
        return (xf * scale[:, :, None, None] + (bias - mean_g * scale)[:, :, None, None]).to(x.dtype)

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight, mean_g, rstd = ctx.saved_tensors
        b, c, h, w = x.shape
        with torch.autocast(x.device.type, enabled=False):
            pool = _group_pool(c, ctx.groups, x.device)
            xf, dyf = x.float(), dy.float()
            s1 = dyf.sum((2, 3))  # (B, C): Σ dy
            t = rstd * ((dyf * xf).sum((2, 3)) - mean_g * s1)  # (B, C): Σ dy·x̂
            # the group means of w·dy and w·dy·x̂, in one matrix product
            m1, m2 = (torch.cat([weight * s1, weight * t]) @ pool / (h * w)).split(b)
            dx = (dyf * (rstd * weight)[:, :, None, None] - xf * (rstd * rstd * m2)[:, :, None, None]
                  + (rstd * (rstd * mean_g * m2 - m1))[:, :, None, None])
        return dx.to(x.dtype), t.sum(0), s1.sum(0), None, None


def fused_norms(x: torch.Tensor) -> bool:
    """Whether compiled code on ``x`` (training, and sampling without a gradient) runs the GroupNorm → SiLU pairs as
    :mod:`hwlib.models.group_norm_silu`'s kernel (float32 on a CPU), and so the U-Net channels-last, the layout that
    kernel and inductor's convolutions share.

    In sampling the kernel is as fast as inductor's own pair (notebook 04's quick sampler at batch 100, 2 threads, Xeon
    without AMX: 0.97-1.01x in A/B probes) but leaves inductor a third of the kernels to generate: each sampling graph
    compiles in 11 s instead of 31 s from an empty cache (inductor compiles every kernel with the C++ compiler, about
    0.8 s each)."""
    return torch.compiler.is_compiling() and group_norm_silu.available(x)


class GroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` (same parameters and state dict) that :func:`channelwise_group_norm` computes under
    ``torch.compile``; in eager mode PyTorch's own kernel, the faster one there.

    On the Intel Xeon with AMX (notebook 04's quick U-Net in bf16) the compiled network samples 1.47x faster than with
    inductor's own group norm at 1 thread and 1.52x at 2 (``benchmarks/bench_sampling.py``); notebook 02's trains
    1.09-1.15x faster at 1 thread (batch 128, fp32 and bf16) and as fast at 2 threads and batch 64 (probes of
    ``benchmarks/bench_diffusion.py``'s hwlib loop) with autograd through the no-gradient form, and a little faster
    again with the hand-written backward of :class:`_ChannelwiseGroupNorm` (since 2026-12-06).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_compiling() and x.dim() == 4 and self.affine:
            return channelwise_group_norm(x, self.num_groups, self.weight, self.bias, self.eps)
        return super().forward(x)

    def silu(self, x: torch.Tensor, shift: torch.Tensor | None = None) -> torch.Tensor:
        """``F.silu(self(x + shift[:, :, None, None]))``, x (B, C, H, W), shift (B, C) or None; compiled in float32 on
        a CPU (training and sampling) one fused kernel each way (:mod:`hwlib.models.group_norm_silu`), x + shift never
        stored."""
        if self.affine and fused_norms(x) and (shift is None or shift.dtype == x.dtype):
            return group_norm_silu.group_norm_silu(x, self.weight, self.bias, self.num_groups, self.eps, shift)
        return F.silu(self(x if shift is None else x + shift[:, :, None, None]))


def norm(channels: int, groups: int = 32) -> GroupNorm:
    """GroupNorm with at most ``groups`` groups (DDPM: 32) and at least 4 channels per group.

    With one channel per group the norm would subtract the per-channel constant that carries the time and class
    embedding in :class:`TimeResBlock`, i.e. erase the conditioning; narrow networks therefore use fewer groups.
    """
    return GroupNorm(math.gcd(channels, min(groups, max(1, channels // 4))), channels)


class TimeResBlock(nn.Module):
    """(B, C_in, H, W), emb (B, E) -> (B, C_out, H, W)."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1, self.conv1 = norm(c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, c_out)
        self.norm2, self.drop, self.conv2 = norm(c_out), Dropout(dropout), nn.Conv2d(c_out, c_out, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # each block starts as the identity (as in the DDPM code)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(self.norm1.silu(x))
        h = self.conv2(self.drop(self.norm2.silu(h, shift=self.emb(F.silu(emb)))))  # norm2(h + the time embedding)
        return self.skip(x) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over the H·W positions, with a residual: (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm, self.qkv, self.proj = norm(channels), nn.Conv2d(channels, 3 * channels, 1), nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, c, h * w)  # q, k, v: each (B, C, HW)
        attend = self.written if torch.is_grad_enabled() else self.fused
        return x + self.proj(attend(qkv).reshape(b, c, h, w))

    @staticmethod
    def fused(qkv: torch.Tensor) -> torch.Tensor:
        """Sampling's attention, (B, 3, C, HW) -> (B, C, HW): PyTorch's fused attention on contiguous (B, 1, HW, C)
        queries, keys and values, which keeps the (HW, HW) weights out of memory: notebook 04's quick DDPM samples
        1.09x faster in bf16 on an Intel Xeon with AMX than with :meth:`written` (``benchmarks/bench_sampling.py``)."""
        q, k, v = qkv.transpose(-1, -2).contiguous()[:, :, None].unbind(1)
        return F.scaled_dot_product_attention(q, k, v)[:, 0].transpose(-1, -2)

    @staticmethod
    def written(qkv: torch.Tensor) -> torch.Tensor:
        """Training's attention, (B, 3, C, HW) -> (B, C, HW): written out, as in the DDPM code, with the softmax in
        float32. On a CPU PyTorch's fused attention has a slow bf16 backward (notebook 02's compiled quick U-Net: 4.9
        against 5.8 steps/s), and its unfused fallback for strided q, k, v is slower still."""
        q, k, v = qkv.unbind(1)
        attn = torch.bmm(q.transpose(1, 2), k) * q.shape[1] ** -0.5  # (B, HW, HW): query i, key j
        attn = attn.float().softmax(dim=-1).to(v.dtype)
        return torch.bmm(v, attn.transpose(1, 2))


class Downsample(nn.Module):
    """Stride-2 3×3 conv: (B, C, H, W) -> (B, C, ceil(H/2), ceil(W/2))."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def nearest_up2(x: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour ×2, (B, C, H, W) -> (B, C, 2H, 2W), as ``F.interpolate(x, scale_factor=2, mode="nearest")``
    computes it, written as a broadcast for ``torch.compile``: its gradient is then a sum over each 2×2 block, a
    reduction inductor runs in parallel, where the interpolation's backward is a scatter-add (``index_put``) that ran
    3x slower with two threads than with one (1.6 -> 4.9 ms per step of notebook 02's U-Net in bf16). Values and
    gradients are bitwise those of ``F.interpolate`` (``tests/test_unet.py``)."""
    b, c, h, w = x.shape
    return x[:, :, :, None, :, None].expand(b, c, h, 2, w, 2).reshape(b, c, 2 * h, 2 * w)


class Upsample(nn.Module):
    """Nearest-neighbour ×2 then 3×3 conv: (B, C, H, W) -> (B, C, 2H, 2W). In float32 on a CPU both as one transposed
    convolution (:mod:`hwlib.models.upsample_conv`). Otherwise, in training under ``torch.compile``, the ×2 is
    :func:`nearest_up2` (notebook 02's compiled quick U-Net trains 1.02-1.03x faster in bf16 at 2 threads, as fast in
    fp32 at 1; medians of ten alternating rounds in one process, on the Intel Xeon with AMX); in eager mode and without
    a gradient (sampling, where the broadcast was 0.98x in a probe) PyTorch's interpolation."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if upsample_conv.available(x):
            return upsample_conv.upsample_conv(x, self.conv.weight, self.conv.bias)
        if torch.compiler.is_compiling() and torch.is_grad_enabled():
            up = nearest_up2(x)  # channels-last where the fused norms keep the U-Net so
            return self.conv(up.contiguous(memory_format=torch.channels_last) if fused_norms(x) else up)
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class UNet(nn.Module):
    """ε/v/x_0-prediction network: ``model(x_t (B, C, H, W), t (B,) int64, labels (B,) int64 | None) -> (B, C, H, W)``.

    Args:
        in_channels, image_size: the image shape (1, 28 for MNIST); ``image_size`` must be divisible by
            2^(len(channel_mult) - 1).
        ch: base width; level i has ``ch * channel_mult[i]`` channels.
        num_res_blocks: ResNet blocks per resolution on the way down (one more on the way up).
        attn_resolutions: resolutions (side lengths) that get self-attention after each ResNet block.
        num_classes: for a class-conditional model; label ``num_classes`` is the null class (unconditional);
            ``labels=None`` also means unconditional.
    """

    def __init__(self, in_channels: int = 1, image_size: int = 28, ch: int = 64, channel_mult: tuple[int, ...] = (1, 2, 2),
                 num_res_blocks: int = 2, attn_resolutions: tuple[int, ...] = (7,), dropout: float = 0.1,
                 num_classes: int | None = None) -> None:
        super().__init__()
        if image_size % 2 ** (len(channel_mult) - 1):
            raise ValueError(f"image_size {image_size} is not divisible by 2^{len(channel_mult) - 1}")
        self.in_channels, self.image_size, self.ch, self.num_classes = in_channels, image_size, ch, num_classes
        emb_dim = 4 * ch
        self.time_mlp = nn.Sequential(nn.Linear(ch, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.class_emb = nn.Embedding(num_classes + 1, emb_dim) if num_classes is not None else None
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)

        self.down = nn.ModuleList()
        widths, c, res = [ch], ch, image_size  # widths: channels of every skip connection
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                self.down.append(nn.ModuleList([TimeResBlock(c, ch * mult, emb_dim, dropout),
                                                AttnBlock(ch * mult) if res in attn_resolutions else nn.Identity()]))
                c = ch * mult
                widths.append(c)
            if level < len(channel_mult) - 1:
                self.down.append(Downsample(c))
                widths.append(c)
                res //= 2
        self.mid = nn.ModuleList([TimeResBlock(c, c, emb_dim, dropout), AttnBlock(c),
                                  TimeResBlock(c, c, emb_dim, dropout)])

        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for _ in range(num_res_blocks + 1):
                self.up.append(nn.ModuleList([TimeResBlock(c + widths.pop(), ch * mult, emb_dim, dropout),
                                              AttnBlock(ch * mult) if res in attn_resolutions else nn.Identity()]))
                c = ch * mult
            if level > 0:
                self.up.append(Upsample(c))
                res *= 2
        self.out = nn.Sequential(norm(c), nn.SiLU(), nn.Conv2d(c, in_channels, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.time_mlp(timestep_embedding(t, self.ch))
        if self.class_emb is not None:
            if labels is None:
                labels = torch.full((x.shape[0],), self.num_classes, device=x.device, dtype=torch.long)
            emb = emb + self.class_emb(labels)
        h = self.conv_in(x)
        if fused_norms(h):
            h = h.contiguous(memory_format=torch.channels_last)  # the layout the fused norms and convolutions share
        skips = [h]
        for block in self.down:
            if isinstance(block, Downsample):
                h = block(h)
            else:
                h = block[1](block[0](h, emb))
            skips.append(h)
        h = self.mid[2](self.mid[1](self.mid[0](h, emb)), emb)
        for block in self.up:
            if isinstance(block, Upsample):
                h = block(h)
            else:
                h = block[1](block[0](torch.cat([h, skips.pop()], dim=1), emb))
        return self.out[2](self.out[0].silu(h))  # self.out: norm, SiLU, conv


def build(cfg: Mapping[str, Any], num_classes: int | None = None) -> UNet:
    """The U-Net a profile describes: ``cfg`` = ``{"ch", "channel_mult", "num_res_blocks", "attn_resolutions",
    "dropout"}`` (the ``unet`` entry of notebooks 02 and 04); ``num_classes`` for a class-conditional model."""
    return UNet(ch=cfg["ch"], channel_mult=tuple(cfg["channel_mult"]), num_res_blocks=cfg["num_res_blocks"],
                attn_resolutions=tuple(cfg["attn_resolutions"]), dropout=cfg.get("dropout", 0.0), num_classes=num_classes)
