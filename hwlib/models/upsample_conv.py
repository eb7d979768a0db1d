"""Nearest-neighbour ×2 up-sampling then a 3×3 convolution (stride 1, padding 1), computed as one stride-2 transposed
convolution whose 4×4 kernel is folded from the 3×3 one: (B, C_in, H, W) -> (B, C_out, 2H, 2W), the same function.

In one dimension, with u = up2(x) (u[2i] = u[2i + 1] = x[i], zero outside) and taps w[-1], w[0], w[1]:

    y[2i]     = w[-1]·x[i-1] + (w[0] + w[1])·x[i]
    y[2i + 1] = (w[-1] + w[0])·x[i] + w[1]·x[i+1]

which is ``conv_transpose1d(x, k, stride=2, padding=1)`` with k = (w[1], w[0] + w[1], w[-1] + w[0], w[-1]): the rows of
:data:`FOLD` applied to (w[-1], w[0], w[1]); in two dimensions the fold acts on both axes. Every output pixel then
costs 4 multiply-adds per channel pair instead of 9, and the up-sampled tensor (4x the input) is never written or
read back: forward and backward of StackGAN's up-blocks on a 2-core CPU (float32, channels-last) 1.5-2.2x faster at
64-256 px, e.g. (8, 8, 128, 128) -> 8 channels at 256 px 19.5 against 12.9 ms; the sums differ from the two-step
computation only by float rounding (relative differences about 1e-6). The 3×3 weight stays the parameter (the fold
is differentiable), so modules, state dicts and printouts are those of ``nn.Upsample`` + ``nn.Conv2d``.

:func:`available` says where it is used: float32 on a CPU outside autocast, where it was measured (bf16 training and
CUDA keep the two-step computation and their results).
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F

FOLD = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 1.0], [1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
"""(4, 3): row p gives tap p of the transposed kernel as a sum of the 3×3 kernel's taps (-1, 0, 1) along one axis."""

enabled = os.environ.get("HWLIB_FOLDED_UPCONV", "1") != "0"
"""Use the folded form where it applies (``HWLIB_FOLDED_UPCONV=0`` at import, or setting this to False, turns it off)."""


def available(x: torch.Tensor) -> bool:
    """Whether :func:`upsample_conv` computes conv3x3(up2(x)) for ``x`` (B, C, H, W): float32 on a CPU, autocast off,
    :data:`enabled`."""
    return (enabled and x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() == 4
            and not torch.is_autocast_enabled("cpu"))


def fold_kernel(weight: torch.Tensor) -> torch.Tensor:
    """A 3×3 convolution's weight (C_out, C_in, 3, 3) -> the transposed convolution's (C_in, C_out, 4, 4)."""
    fold = FOLD.to(weight.device, weight.dtype)
    return torch.einsum("pu,qv,oiuv->iopq", fold, fold, weight)


def upsample_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.conv2d(F.interpolate(x, scale_factor=2, mode="nearest"), weight, bias, padding=1)`` for a 3×3 ``weight``
    (C_out, C_in, 3, 3): (B, C_in, H, W) -> (B, C_out, 2H, 2W), channels-last where x or the weight is, as
    ``F.conv2d`` lays it out."""
    if weight.shape[-2:] != (3, 3):
        raise ValueError(f"upsample_conv folds a 3x3 kernel, not {tuple(weight.shape[-2:])}")
    kernel = fold_kernel(weight)
    if not (x.is_contiguous() and weight.is_contiguous()):  # conv2d's output is channels-last where x or w is
        kernel = kernel.contiguous(memory_format=torch.channels_last)
    return _UpConv.apply(x, kernel, bias)


class _UpConv(torch.autograd.Function):
    """``F.conv_transpose2d(x, kernel, bias, stride=2, padding=1)`` whose backward takes the gradients of x and of the
    kernel as those of the stride-2 convolution it transposes: dL/dx = conv2d(dL/dy, kernel, stride 2, padding 1), and
    dL/dkernel that convolution's weight gradient with x as its output gradient. oneDNN computes both bit for bit as
    its transposed-convolution backward does, faster (its transposed weight gradient is the slow part): at 2 threads
    on the Intel Xeon without AMX, channels-last, (64, 32, 14, 14) -> 32 channels at 28 px 5.4 against 3.2 ms, the
    U-Net's up-sampling; (8, 8, 128, 128) -> 8 at 256 px 8.3 against 6.2 ms, Stage-II's. The bias gradient is the sum
    of dL/dy over batch and pixels, as inductor's decomposition takes it: compiled training is bitwise as before
    (notebooks 02 and 04's U-Nets, checked on whole steps); in eager mode oneDNN's own sum, which comes only with its
    slow weight gradient, differs from it by float rounding. Notebook 02's compiled quick step 1.017x and 1.051x, 04's
    1.012x (A/B probes of alternating rounds in one process); StackGAN's bias-free up-blocks bitwise the same, Stage-II
    0.998x (within the noise of its 250 ms steps)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, kernel: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x, kernel)
        return F.conv_transpose2d(x, kernel, bias, stride=2, padding=1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, kernel = ctx.saved_tensors
        gx = gk = gb = None
        if ctx.needs_input_grad[0]:
            gx = F.conv2d(grad, kernel, None, stride=2, padding=1)
        if ctx.needs_input_grad[1]:
            gk = torch.ops.aten.convolution_backward(x, grad, kernel, None, [2, 2], [1, 1], [1, 1], False, [0, 0], 1,
                                                     [False, True, False])[1]
        if ctx.needs_input_grad[2]:  # False where there is no bias
            gb = grad.sum((0, 2, 3))
        return gx, gk, gb
