"""BatchNorm in training, optionally followed by a (leaky) ReLU, as one CPU kernel each way for float32 or bfloat16
(bf16 autocast) channels-last tensors: ``act(batch_norm(x))``, x (B, C, H, W) -> (B, C, H, W), with gradients and the
running statistics updated as ``nn.BatchNorm2d`` updates them.

StackGAN trains channels-last on a CPU, where PyTorch's batch norm for that layout is slow, worst for few channels
(forward and backward of (16, 8, 64, 64): 4.4 ms, 3.9 ms through the contiguous layout, 0.37 ms here; (8, 8, 256,
256): 46 ms against 3.2 ms; 2-4x at 16-128 channels; 2 threads, Intel Xeon without AMX).
:file:`hwlib/csrc/batch_norm_act.c` reads x twice forward (statistics, output) and x and dL/dout twice backward, one
sample per task with the partial sums added in sample order, so its results do not depend on the thread count.
Built and loaded by :mod:`hwlib.models.c_kernels`; an ``autograd.Function`` for eager training (StackGAN is not
compiled). In bf16 the kernel reads x and dL/dout as bf16 and writes the output and dx rounded to bf16, with every
sum and statistic as in float32 (PyTorch's bf16 batch norm computes in float32 too, then rounds the norm's output once
more before the activation); it is off by default (:data:`bf16`). :func:`available` says whether it applies; where
it does not (no compiler, eval mode, no gradient, another dtype or layout), :class:`hwlib.models.stackgan.BatchNorm2d`
is ``nn.BatchNorm2d``.
"""
from __future__ import annotations

import ctypes
import os
from typing import Any

import torch

from hwlib.layout import is_channels_last
from hwlib.models import c_kernels

_P, _I64, _F32 = ctypes.c_void_p, ctypes.c_long, ctypes.c_float
_FORWARD = ([_P] * 10 + [_I64] * 3 + [_F32, _F32, _F32, ctypes.c_int], ctypes.c_int)
_BACKWARD = ([_P] * 13 + [_I64] * 3 + [_F32, ctypes.c_int], ctypes.c_int)
SIGNATURES = {"bn_act_forward_cl": _FORWARD, "bn_act_backward_cl": _BACKWARD,
              "bn_act_forward_cl_bf16": _FORWARD, "bn_act_backward_cl_bf16": _BACKWARD}
_SUFFIX = {torch.float32: "", torch.bfloat16: "_bf16"}  # the kernels for each dtype of x

enabled = os.environ.get("HWLIB_FUSED_NORM", "1") != "0"
"""Use the kernel where it applies (``HWLIB_FUSED_NORM=0`` at import, or setting this to False, turns it off)."""

bf16 = os.environ.get("HWLIB_BF16_NORM", "0") == "1"
"""Train bf16 inputs (autocast) on the kernel too (``HWLIB_BF16_NORM=1`` at import, or setting this to True): Stage-I
1.07x and Stage-II 1.18x faster on an AMD EPYC with AVX512-BF16 (``--ablate fused_bn``, 2 threads). Off by default:
it moves notebook 01's bf16 training off its published run at bf16 rounding (one run with it, 2 threads: best of 16
body 0.77, wing 0.84, crown 0.59, belly 0.75 against 0.74, 0.79, 0.54, 0.79, FID 89 against 93.5, and two of its 65
printed checks turned), so it waits for 01's quality over training seeds with it
(``benchmarks/bench_stackgan_consistency.py``)."""


def _library() -> ctypes.CDLL | None:
    return c_kernels.library("batch_norm_act", SIGNATURES)


def available(x: torch.Tensor) -> bool:
    """Whether :func:`batch_norm_act` runs the kernel for ``x``: a float32 (with :data:`bf16`, also bfloat16) CPU
    tensor (B, C, H, W) in the channels-last layout (and not also contiguous), gradients on, not inside
    ``torch.compile``, :data:`enabled`, the library built."""
    dtype_ok = x.dtype == torch.float32 or (bf16 and x.dtype == torch.bfloat16)
    return (enabled and torch.is_grad_enabled() and x.device.type == "cpu" and dtype_ok and x.dim() == 4
            and is_channels_last(x) and not torch.compiler.is_compiling() and _library() is not None)


def _call(direction: str, dtype: torch.dtype, *args: Any) -> None:
    """Run ``bn_act_<direction>_cl`` (forward or backward) for x of ``dtype`` on ``args`` and the thread count."""
    kernel = getattr(_library(), f"bn_act_{direction}_cl{_SUFFIX[dtype]}")
    if kernel(*args, torch.get_num_threads()) != 0:
        raise MemoryError(f"hwlib's batch-norm kernel ({c_kernels.source('batch_norm_act')}) could not allocate its "
                          "work memory; free memory or set HWLIB_FUSED_NORM=0")


class _BatchNormAct(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, scale: torch.Tensor | None,
                shift: torch.Tensor | None, running: tuple[torch.Tensor, torch.Tensor] | None, momentum: float,
                eps: float, slope: float) -> torch.Tensor:
        b, c, h, w = x.shape
        weight, bias = weight.detach().contiguous(), bias.detach().contiguous()
        film = None if scale is None else (scale.detach().contiguous(), shift.detach().contiguous())
        out = torch.empty_like(x, memory_format=torch.channels_last)
        mean, rstd = weight.new_empty(c), weight.new_empty(c)  # float32
        rm, rv = (None, None) if running is None else (running[0].data_ptr(), running[1].data_ptr())
        fs, fb = (None, None) if film is None else (film[0].data_ptr(), film[1].data_ptr())
        _call("forward", x.dtype, x.data_ptr(), weight.data_ptr(), bias.data_ptr(), fs, fb, out.data_ptr(),
              mean.data_ptr(), rstd.data_ptr(), rm, rv, b, h * w, c, eps, momentum, slope)
        ctx.save_for_backward(x, weight, bias, *(film or ()))
        ctx.mean, ctx.rstd, ctx.slope = mean, rstd, slope
        return out

    @staticmethod
    def backward(ctx: Any, dout: torch.Tensor) -> tuple:
        x, weight, bias, *film = ctx.saved_tensors
        b, c, h, w = x.shape
        dout = dout.to(x.dtype).contiguous(memory_format=torch.channels_last)
        dx = torch.empty_like(x, memory_format=torch.channels_last)
        dw, db = weight.new_empty(c), weight.new_empty(c)
        dfilm = [weight.new_empty(b, c) for _ in film]
        ptrs = [t.data_ptr() for t in film] or [None, None]
        dptrs = [t.data_ptr() for t in dfilm] or [None, None]
        _call("backward", x.dtype, dout.data_ptr(), x.data_ptr(), weight.data_ptr(), bias.data_ptr(), *ptrs,
              ctx.mean.data_ptr(), ctx.rstd.data_ptr(), dx.data_ptr(), dw.data_ptr(), db.data_ptr(), *dptrs, b, h * w,
              c, ctx.slope)
        return dx, dw, db, *(dfilm or (None, None)), None, None, None, None


def batch_norm_act(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, running_mean: torch.Tensor | None,
                   running_var: torch.Tensor | None, momentum: float, eps: float, slope: float = 1.0,
                   film: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """``act(F.batch_norm(x, running_mean, running_var, weight, bias, training=True, momentum, eps))`` with
    act(z) = z for z > 0, else ``slope`` z (1: none, 0: ReLU), for x as :func:`available` accepts (B > 1 or H W > 1);
    the running statistics (if given) move by ``momentum`` towards the batch's mean and unbiased variance, in place.
    ``film``: (scale, shift), each (B, C) (taken in float32), applied per sample between the norm and the activation,
    ``act(bn(x) * scale[:, :, None, None] + shift[:, :, None, None])`` (a conditional batch norm), with their
    gradients. The result is channels-last, of x's dtype."""
    if x.shape[0] * x.shape[2] * x.shape[3] < 2:
        raise ValueError(f"batch_norm_act: expected more than 1 value per channel when training, got {tuple(x.shape)}")
    if running_mean is not None and running_var is not None:
        if not (running_mean.is_contiguous() and running_var.is_contiguous()
                and running_mean.dtype == running_var.dtype == torch.float32):
            raise ValueError("batch_norm_act: the running statistics must be contiguous float32 (C,) tensors")
        running = (running_mean, running_var)
    else:
        running = None
    scale, shift = film if film is not None else (None, None)
    if film is not None:
        if not scale.shape == shift.shape == x.shape[:2]:
            raise ValueError(f"batch_norm_act: film's scale and shift must be {tuple(x.shape[:2])} tensors, got "
                             f"{tuple(scale.shape)} and {tuple(shift.shape)}")
        scale, shift = scale.float(), shift.float()  # bf16 under autocast; their gradients come back in their dtype
    return _BatchNormAct.apply(x, weight, bias, scale, shift, running, momentum, eps, slope)
