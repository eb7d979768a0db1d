"""GroupNorm followed by SiLU as one CPU kernel in float32 (compiled training and sampling):
``silu(group_norm(x + shift))``, x (B, C, H, W) and an optional per-channel shift (B, C) (the U-Net's time embedding)
-> (B, C, H, W), with gradients.

Inductor, which compiles the U-Net's training step on a CPU, writes every value it reuses that holds an exponential
to memory (``should_realize_on_reuse``), so the backward of a GroupNorm → SiLU pair recomputes the norm's output and
its sigmoid, stores both and reads them back: about twelve passes over the tensor. :file:`hwlib/csrc/group_norm_silu.c`
does it in two passes per direction (forward: statistics, then the output; backward: the per-channel sums of the
gradient, then dx and the shift's gradient), one sample per thread, so its results do not depend on the thread count.
The C file is compiled on first use with the machine's C compiler and loaded with :mod:`ctypes`
(:mod:`hwlib.models.c_kernels`); it is registered as the custom op
``hwlib::group_norm_silu`` with a fake implementation, so ``torch.compile`` calls it as one opaque kernel.
:func:`available` says whether it loaded; where it did not (no compiler, not a CPU, not float32),
:meth:`hwlib.models.unet.GroupNorm.silu` computes the pair as before.
"""
from __future__ import annotations

import ctypes
import os
from typing import Any

import torch

from hwlib.models import c_kernels

_F32P, _I64 = ctypes.c_void_p, ctypes.c_long
_FORWARD = [_F32P] * 7 + [_I64] * 4 + [ctypes.c_float, ctypes.c_int]
_BACKWARD = [_F32P] * 11 + [_I64] * 4 + [ctypes.c_int]
SIGNATURES = {"gn_silu_forward": (_FORWARD, None), "gn_silu_backward": (_BACKWARD, None),
              "gn_silu_forward_cl": (_FORWARD, None), "gn_silu_backward_cl": (_BACKWARD, None)}


def _library() -> ctypes.CDLL | None:
    """The compiled :file:`hwlib/csrc/group_norm_silu.c` (:func:`hwlib.models.c_kernels.library`), or None."""
    return c_kernels.library("group_norm_silu", SIGNATURES)


enabled = os.environ.get("HWLIB_FUSED_NORM", "1") != "0"
"""Use the kernel where it applies (``HWLIB_FUSED_NORM=0`` at import, or setting this to False, turns it off;
``torch.compile`` guards on it)."""


@torch.compiler.assume_constant_result
def _built() -> bool:
    """The library built and loaded (once per process); a constant to ``torch.compile``."""
    return _library() is not None


def available(x: torch.Tensor) -> bool:
    """Whether :func:`group_norm_silu` runs the fused kernel for ``x``: a float32 CPU tensor of 4 dimensions,
    :data:`enabled`, the library built."""
    return enabled and x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() == 4 and _built()


def _dense(x: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """x if contiguous or channels-last contiguous, else a contiguous copy; and whether it is channels-last."""
    if x.is_contiguous():
        return x, False
    if x.is_contiguous(memory_format=torch.channels_last):
        return x, True
    return x.contiguous(), False


def _pointer(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()  # None: a NULL pointer (no shift)


@torch.library.custom_op("hwlib::group_norm_silu", mutates_args=())
def _forward(x: torch.Tensor, shift: torch.Tensor | None, weight: torch.Tensor, bias: torch.Tensor, groups: int,
             eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x (B, C, H, W), shift (B, C) or None, float32 -> silu(group_norm(x + shift)) in the layout of x (contiguous or
    channels-last), and the groups' mean and 1/std (B, G)."""
    b, c, h, w = x.shape
    (x, last), weight, bias = _dense(x), weight.contiguous(), bias.contiguous()
    shift = None if shift is None else shift.contiguous()
    out = torch.empty_like(x)
    mean, rstd = x.new_empty(b, groups), x.new_empty(b, groups)
    kernel = getattr(_library(), "gn_silu_forward_cl" if last else "gn_silu_forward")
    kernel(x.data_ptr(), _pointer(shift), weight.data_ptr(), bias.data_ptr(), out.data_ptr(), mean.data_ptr(),
           rstd.data_ptr(), b, h * w, c, groups, eps, torch.get_num_threads())
    return out, mean, rstd


@_forward.register_fake
def _(x, shift, weight, bias, groups, eps):
    b = x.shape[0]
    return torch.empty_like(_dense(x)[0]), x.new_empty(b, groups), x.new_empty(b, groups)


@torch.library.custom_op("hwlib::group_norm_silu_backward", mutates_args=())
def _backward(dout: torch.Tensor, x: torch.Tensor, shift: torch.Tensor | None, weight: torch.Tensor,
              bias: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """dL/d(output) (B, C, H, W) -> dL/dx in the layout of x, dL/dshift (B, C) (Σ of dL/dx over the pixels),
    dL/dweight (C,), dL/dbias (C,)."""
    b, c, h, w = x.shape
    (x, last), weight, bias = _dense(x), weight.contiguous(), bias.contiguous()
    shift = None if shift is None else shift.contiguous()
    dout = dout.contiguous(memory_format=torch.channels_last if last else torch.contiguous_format)
    mean, rstd = mean.contiguous(), rstd.contiguous()
    dx, dshift = torch.empty_like(x), x.new_empty(b, c)
    sum_g, sum_gx = x.new_empty(b, c), x.new_empty(b, c)  # per sample: Σ dL/dy, Σ dL/dy·x̂ over the pixels
    kernel = getattr(_library(), "gn_silu_backward_cl" if last else "gn_silu_backward")
    kernel(dout.data_ptr(), x.data_ptr(), _pointer(shift), weight.data_ptr(), bias.data_ptr(), mean.data_ptr(),
           rstd.data_ptr(), dx.data_ptr(), dshift.data_ptr(), sum_g.data_ptr(), sum_gx.data_ptr(), b, h * w, c,
           mean.shape[1], torch.get_num_threads())
    return dx, dshift, sum_gx.sum(0), sum_g.sum(0)


@_backward.register_fake
def _(dout, x, shift, weight, bias, mean, rstd):
    return (torch.empty_like(_dense(x)[0]), x.new_empty(x.shape[:2]), weight.new_empty(weight.shape),
            bias.new_empty(bias.shape))


def _setup_context(ctx: Any, inputs: tuple, output: tuple) -> None:
    x, shift, weight, bias, _, _ = inputs
    _, mean, rstd = output
    ctx.save_for_backward(x, shift, weight, bias, mean, rstd)


def _autograd_backward(ctx: Any, dout: torch.Tensor, _dmean: Any, _drstd: Any) -> tuple:
    x, shift, weight, bias, mean, rstd = ctx.saved_tensors
    dx, dshift, dweight, dbias = _backward(dout, x, shift, weight, bias, mean, rstd)
    return dx, (None if shift is None else dshift), dweight, dbias, None, None


_forward.register_autograd(_autograd_backward, setup_context=_setup_context)


def group_norm_silu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, groups: int, eps: float,
                    shift: torch.Tensor | None = None) -> torch.Tensor:
    """``F.silu(F.group_norm(x + shift[:, :, None, None], groups, weight, bias, eps))`` for a float32 CPU x
    (B, C, H, W) and shift (B, C) or None (see :func:`available`), as one kernel each way, x + shift never stored;
    the result has the layout of x (contiguous or channels-last)."""
    if x.shape[1] % groups:
        raise ValueError(f"group_norm_silu: {x.shape[1]} channels do not split into {groups} groups")
    if shift is not None and shift.shape != x.shape[:2]:
        raise ValueError(f"group_norm_silu: shift {tuple(shift.shape)} is not (B, C) = {tuple(x.shape[:2])}")
    return _forward(x, shift, weight, bias, groups, eps)[0]
