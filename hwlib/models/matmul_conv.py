"""Convolutions that are matrix products, computed as one in float32 on a CPU.

Two layers of the course's GANs only look like convolutions: the DCGAN generator's first layer, a transposed
convolution of a 1×1 input (noise -> a 7×7 map), and a discriminator's logit layer, a convolution whose kernel covers
its whole input (StackGAN's 4×4 features -> one logit). oneDNN runs both as convolutions, at a few GFLOP/s on a 2-core
CPU: the classes here compute them as the matrix products they are where that was measured faster (float32 on a CPU,
outside autocast), and are PyTorch's layers everywhere else (bf16, CUDA, other shapes), so results made there are
unchanged. Parameters, state-dict keys and printouts are PyTorch's, so checkpoints and architecture summaries do not
see the difference; the sums differ from the convolutions' by float rounding only.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

enabled = True
"""Compute the layers below as matrix products where they can (False: PyTorch's layers always; a module global, so
``torch.compile`` guards on it)."""


def available(x: torch.Tensor) -> bool:
    """Whether ``x`` is where the matrix products were measured faster: float32 on a CPU outside autocast, with
    :data:`enabled`."""
    return (enabled and x.device.type == "cpu" and x.dtype == torch.float32
            and not torch.is_autocast_enabled("cpu"))


class ConvTranspose2d(nn.ConvTranspose2d):
    """``nn.ConvTranspose2d`` for a DCGAN generator's first layer: on a 1×1 input (B, C_in, 1, 1) with stride 1 and no
    padding, ``out[b, o, i, j] = sum_c x[b, c] W[c, o, i, j]`` is a matrix product, computed as one where
    :func:`available` (forward and backward at (32, 100) -> (64, 7, 7): 2.1 against 0.42 ms, 2 threads, Intel Xeon
    without AMX; notebook 04's compiled DCGAN step 1.13×, 03's conv CGAN 1.26×)."""

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        one_by_one = (x.dim() == 4 and x.shape[-2:] == (1, 1) and output_size is None and self.stride == (1, 1)
                      and self.padding == (0, 0) and self.dilation == (1, 1) and self.groups == 1)
        if not (one_by_one and available(x)):
            return super().forward(x, output_size)
        out = (x.flatten(1) @ self.weight.flatten(1)).view(len(x), self.out_channels, *self.kernel_size)
        return out if self.bias is None else out + self.bias[:, None, None]


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` for a logit layer whose kernel covers its whole unpadded input: (B, C_in, k, k) -> (B, C_out, 1, 1),
    ``out[b, o] = sum_{c,i,j} x[b, c, i, j] W[o, c, i, j] + bias[o]``, computed as one matrix product of the flattened
    input and weight (in the input's memory order, channels-last or not, so the input is not copied) where
    :func:`available` and not under ``torch.compile``. StackGAN's D heads (B, 128, 4, 4) -> 1: forward and backward at
    batch 16 took 0.36 ms as oneDNN convolutions, eight calls a Stage-I step; Stage-I's eager step 1.044× (1.01–1.08)
    faster, Stage-II's 1.019× (A/B probes, 2 threads, Intel Xeon without AMX). Compiled graphs keep the convolution:
    the DCGAN discriminators' 7×7 logit layer as a matrix product made notebook 04's compiled DCGAN step 0.84× as fast.
    Weight parametrizations (spectral norm) apply as to ``nn.Conv2d``."""

    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        whole = (x.dim() == 4 and tuple(x.shape[-2:]) == self.kernel_size and self.padding == (0, 0)
                 and self.dilation == (1, 1) and self.groups == 1)
        if not (whole and available(x)) or torch.compiler.is_compiling():
            return super()._conv_forward(x, weight, bias)
        if x.is_contiguous():
            rows, w = x.flatten(1), weight.flatten(1)
        else:  # channels-last: (B, k, k, C_in) rows are contiguous
            rows, w = x.permute(0, 2, 3, 1).flatten(1), weight.permute(0, 2, 3, 1).flatten(1)
        return F.linear(rows, w, bias).view(len(x), self.out_channels, 1, 1)
