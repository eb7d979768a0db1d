"""The folded up-sampling convolution: conv3x3(nearest×2(x)) as one transposed convolution, its values and gradients
against the two-step computation in float64, both layouts, and where it applies."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hwlib.models import upsample_conv as uc

CL = torch.channels_last


def _two_step(x, w, b):
    return F.conv2d(F.interpolate(x, scale_factor=2.0, mode="nearest"), w, b, padding=1)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (3, 8, 4, 4), (1, 2, 1, 1)], ids=["5x7", "4x4", "1x1"])
def test_values_and_gradients_are_the_two_step_computations(shape, bias):
    torch.manual_seed(0)
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, shape[1], 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, dtype=torch.float64, requires_grad=True) if bias else None
    out, ref = uc.upsample_conv(x, w, b), _two_step(x, w, b)
    assert out.shape == (shape[0], 5, 2 * shape[2], 2 * shape[3])
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)  # the same function: borders included
    dout = torch.randn_like(ref)
    params = (x, w) + ((b,) if bias else ())
    for mine, theirs in zip(torch.autograd.grad(out, params, dout), torch.autograd.grad(ref, params, dout)):
        torch.testing.assert_close(mine, theirs, rtol=1e-12, atol=1e-12)


def test_fold_sums_the_taps_each_output_parity_sees():
    w = torch.arange(9.0).view(1, 1, 3, 3)  # taps (-1, 0, 1) x (-1, 0, 1) = 0..8
    k = uc.fold_kernel(w)[0, 0]
    assert k.shape == (4, 4)
    assert k[3, 3] == w[0, 0, 0, 0]  # a corner tap alone
    assert k[1, 1] == w[0, 0, 1:, 1:].sum()  # the centre of an even pixel: four taps on one input pixel
    assert k.sum() == 4 * w.sum()  # each tap reaches the four output parities


@pytest.mark.parametrize("layout", ["input", "weight", "neither"])
def test_float32_output_is_channels_last_where_conv2d_s_would_be(layout):
    torch.manual_seed(0)
    x, w = torch.randn(2, 8, 6, 6), torch.randn(4, 8, 3, 3)
    if layout == "input":
        x = x.contiguous(memory_format=CL)
    if layout == "weight":
        w = w.contiguous(memory_format=CL)
    out, ref = uc.upsample_conv(x, w), _two_step(x, w, None)
    assert out.is_contiguous(memory_format=CL) == ref.is_contiguous(memory_format=CL) == (layout != "neither")
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_available_for_float32_cpu_outside_autocast_only(monkeypatch):
    x = torch.randn(1, 2, 3, 3)
    assert uc.available(x) and not uc.available(x.bfloat16()) and not uc.available(x[0])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not uc.available(x)  # bf16 training keeps the two-step computation and its results
    monkeypatch.setattr(uc, "enabled", False)
    assert not uc.available(x)


def test_only_a_3x3_kernel_folds():
    with pytest.raises(ValueError, match="3x3"):
        uc.upsample_conv(torch.randn(1, 2, 3, 3), torch.randn(2, 2, 5, 5))


@pytest.mark.parametrize("x_format", [CL, torch.contiguous_format], ids=["x_cl", "x_nchw"])
@pytest.mark.parametrize("w_format", [CL, torch.contiguous_format], ids=["w_cl", "w_nchw"])
def test_backward_is_the_transposed_convolutions_bit_for_bit(x_format, w_format):
    """The input and kernel gradients, taken as those of the stride-2 convolution the layer transposes, are bitwise
    autograd's of ``F.conv_transpose2d`` (float32, both layouts); the bias gradient is dL/dy summed over batch and
    pixels."""
    torch.manual_seed(0)
    x = torch.randn(4, 8, 6, 6).to(memory_format=x_format).requires_grad_()
    w = torch.randn(5, 8, 3, 3).to(memory_format=w_format).requires_grad_()
    b = torch.randn(5, requires_grad=True)
    kernel = uc.fold_kernel(w)
    if not (x.is_contiguous() and w.is_contiguous()):
        kernel = kernel.contiguous(memory_format=CL)
    ref = F.conv_transpose2d(x, kernel, b, stride=2, padding=1)
    out = uc.upsample_conv(x, w, b)
    assert torch.equal(out, ref) and out.stride() == ref.stride()
    dout = torch.randn_like(ref)
    gx, gw, gb = torch.autograd.grad(out, (x, w, b), dout)
    rx, rw, _ = torch.autograd.grad(ref, (x, w, b), dout)
    assert torch.equal(gx, rx) and gx.stride() == rx.stride()
    assert torch.equal(gw, rw)
    torch.testing.assert_close(gb, dout.double().sum((0, 2, 3)).float())
