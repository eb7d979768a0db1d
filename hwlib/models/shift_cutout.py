"""DiffAugment's translation and cutout (:func:`hwlib.gan.diff_augment`, policy ``"translation,cutout"`` or either
alone) as one CPU kernel each way for float32 images (B, C, H, W), contiguous or channels-last.

With PyTorch's operators a call is a zero-padded copy, one window view per image, a stack, four comparisons and three
``&`` for the cutout square, a cast and a broadcast product (and their backwards): 0.51 ms forward and 0.99 ms with
the backward for StackGAN's (16, 3, 64, 64) channels-last batches on a 2-core CPU, five to seven calls a Stage-I
step. :file:`hwlib/csrc/shift_cutout.c` reads each value once and writes it once, one task per image row (0.06 ms
forward, 0.17 ms with the backward there): the same values and gradients bit for bit (each output element is one
input element times a 0/1 mask value, as there).
Built and loaded by :mod:`hwlib.models.c_kernels`; an ``autograd.Function`` for eager training. :func:`available`
says whether it applies; elsewhere (CUDA, bf16, no compiler, other policies) diff_augment uses PyTorch's operators.
"""
from __future__ import annotations

import ctypes
import os
from typing import Any

import torch

from hwlib.layout import memory_format
from hwlib.models import c_kernels

_P, _I64 = ctypes.c_void_p, ctypes.c_long
SIGNATURES = {"shift_cutout": ([_P, _P, _I64, _I64, _I64, _I64, ctypes.c_int, ctypes.c_int, _P, _P, _P, _P, _I64, _I64,
                                ctypes.c_int], None)}

enabled = os.environ.get("HWLIB_SHIFT_CUTOUT", "1") != "0"
"""Use the kernel where it applies (``HWLIB_SHIFT_CUTOUT=0`` at import, or setting this to False, turns it off)."""


def _library() -> ctypes.CDLL | None:
    return c_kernels.library("shift_cutout", SIGNATURES)


def available(x: torch.Tensor) -> bool:
    """Whether :func:`shift_cutout` runs the kernel for ``x``: a float32 CPU tensor (B, C, H, W), contiguous or
    channels-last, not inside ``torch.compile``, :data:`enabled`, the library built."""
    return (enabled and x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() == 4
            and (x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last))
            and not torch.compiler.is_compiling() and _library() is not None)


def _run(src: torch.Tensor, direction: int, draws: tuple[torch.Tensor, ...], square: tuple[int, int]) -> torch.Tensor:
    layout = memory_format(src)
    src = src.contiguous(memory_format=layout)  # a strided gradient: a contiguous copy
    dst = torch.empty_like(src)
    b, c, h, w = src.shape
    ty, tx, oy, ox = draws
    _library().shift_cutout(src.data_ptr(), dst.data_ptr(), b, c, h, w, int(layout == torch.channels_last), direction,
                            ty.data_ptr(), tx.data_ptr(), None if oy is None else oy.data_ptr(),
                            None if ox is None else ox.data_ptr(), square[0], square[1], torch.get_num_threads())
    return dst


class _ShiftCutout(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, draws: tuple[torch.Tensor, ...], square: tuple[int, int]) -> torch.Tensor:
        ctx.draws, ctx.square = draws, square
        return _run(x.detach(), 1, draws, square)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        return _run(grad, -1, ctx.draws, ctx.square), None, None


def shift_cutout(x: torch.Tensor, shift: tuple[torch.Tensor, torch.Tensor] | None,
                 cutout: tuple[torch.Tensor, torch.Tensor, int, int] | None) -> torch.Tensor:
    """x (B, C, H, W) float32 as :func:`available` accepts, shifted by ``shift`` = (ty, tx) (int64, B values each:
    ``out[i, :, y, x] = x[i, :, y + ty[i], x + tx[i]]``, zeros where nothing moves in), then zeroed inside the
    ``cutout`` = (oy, ox, ch, cw) square ``[oy[i], oy[i] + ch) x [ox[i], ox[i] + cw)`` (a product with a 0/1 mask);
    either may be None. Differentiable; the result (and x's gradient) in x's layout (channels-last or contiguous)."""
    b = x.shape[0]
    zero = torch.zeros(b, dtype=torch.int64)
    ty, tx = (zero, zero) if shift is None else (t.reshape(b).to("cpu", torch.int64).contiguous() for t in shift)
    oy = ox = None
    square = (0, 0)
    if cutout is not None:
        oy, ox = (t.reshape(b).to("cpu", torch.int64).contiguous() for t in cutout[:2])
        square = (int(cutout[2]), int(cutout[3]))
    return _ShiftCutout.apply(x, (ty, tx, oy, ox), square)
