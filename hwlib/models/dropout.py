"""Dropout on a CPU with PyTorch's own random mask, drawn faster.

PyTorch's CPU dropout is ``x * empty_like(x).bernoulli_(1 - p).div_(1 - p)``, and its ``bernoulli_`` draws each
element in a generic serial loop from the default generator (MT19937, two 32-bit words per element): about 11 ns an
element on the 2-core Intel Xeon, 0.7 ms for a (128, 512) batch, 12–15 % of notebook 03's MLP CGAN step with its
three dropout layers. :file:`hwlib/csrc/bernoulli_noise.c` draws the same words from the same generator state
(read with ``torch.get_rng_state`` and written back advanced as ``bernoulli_`` advances it) and writes the noise in one
pass: the same mask, output, gradient and generator state bit for bit (``tests/test_dropout.py``). Reading and writing
the state is not one atomic step: another thread drawing from the default generator at that moment would see the
draws twice (hwlib's loaders draw in the training thread).

:class:`Dropout` is ``nn.Dropout`` (same arguments, repr and state dict) that takes this path for contiguous float32
CPU tensors in eager training, built and loaded by :mod:`hwlib.models.c_kernels`; elsewhere (CUDA, other dtypes,
``torch.compile``, ``inplace``, no compiler, ``HWLIB_FAST_DROPOUT=0``) it is ``nn.Dropout``.
"""
from __future__ import annotations

import ctypes
import os

import torch
from torch import nn

from hwlib.models import c_kernels

SIGNATURES = {"bernoulli_noise": ([ctypes.c_void_p, ctypes.c_void_p, ctypes.c_long, ctypes.c_double, ctypes.c_float],
                                  None)}

enabled = os.environ.get("HWLIB_FAST_DROPOUT", "1") != "0"
"""Use the kernel where it applies (``HWLIB_FAST_DROPOUT=0`` at import, or setting this to False, turns it off)."""

_STATE_BYTES = 5056  # torch.get_rng_state()'s size for the CPU generator (the legacy layout the kernel reads)


def _library() -> ctypes.CDLL | None:
    return c_kernels.library("bernoulli_noise", SIGNATURES)


def available(x: torch.Tensor) -> bool:
    """Whether :func:`bernoulli_noise` serves ``x``: a contiguous float32 CPU tensor, not inside ``torch.compile``,
    :data:`enabled`, the library built."""
    return (enabled and not torch.compiler.is_compiling() and x.device.type == "cpu" and x.dtype == torch.float32
            and x.is_contiguous() and _library() is not None)


def bernoulli_noise(like: torch.Tensor, keep: float) -> torch.Tensor:
    """PyTorch's dropout noise for ``like`` (its shape, float32, contiguous): ``1 / keep`` (rounded to float32 as
    ``div_`` rounds it) with probability ``keep``, else 0, drawn from the default CPU generator, which it advances as
    ``empty_like(like).bernoulli_(keep)`` does."""
    state = torch.get_rng_state()
    if state.numel() != _STATE_BYTES:
        raise RuntimeError(f"hwlib.models.dropout: torch.get_rng_state() has {state.numel()} bytes, not the "
                           f"{_STATE_BYTES} of the layout the kernel reads; set HWLIB_FAST_DROPOUT=0")
    noise = torch.empty_like(like, memory_format=torch.contiguous_format)
    scale = float(torch.ones((), dtype=torch.float32).div_(keep))  # as PyTorch's noise.div_(1 - p) rounds it
    _library().bernoulli_noise(state.data_ptr(), noise.data_ptr(), noise.numel(), keep, scale)
    torch.set_rng_state(state)
    return noise


class Dropout(nn.Dropout):
    """``nn.Dropout(p, inplace)``: in eager float32 training on a CPU its noise comes from :func:`bernoulli_noise`
    (bit for bit PyTorch's), elsewhere ``nn.Dropout``'s own. x: any shape, float; the output has x's shape."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and 0.0 < self.p < 1.0 and not self.inplace and available(x):
            return x * bernoulli_noise(x, 1.0 - self.p)
        return super().forward(x)
