"""The fused CPU GroupNorm + SiLU kernel: values and gradients against PyTorch's in float64, both layouts, with and
without the per-channel shift (the time embedding), thread-count independence, the custom op's registration (fake
tensors, autograd, torch.compile), the fallback where it cannot be built (the build itself: test_c_kernels.py), and
where the U-Net uses it."""
from __future__ import annotations

from unittest import mock

import pytest
import torch
import torch.nn.functional as F

from hwlib.models import c_kernels
from hwlib.models import group_norm_silu as gns
from hwlib.models.unet import norm

pytestmark = pytest.mark.skipif(not gns.available(torch.zeros(1, 4, 1, 1)), reason="the kernel could not be built here")


def _reference(x, w, b, groups, dout, shift=None):
    """float64 values and gradients of silu(group_norm(x + shift)): out, dx, dw, db (and dshift with a shift)."""
    xd, wd, bd = (t.detach().double().requires_grad_() for t in (x, w, b))
    inputs = (xd, wd, bd)
    if shift is not None:
        sd = shift.detach().double().requires_grad_()
        inputs, xd = (*inputs, sd), xd + sd[:, :, None, None]
    out = F.silu(F.group_norm(xd, groups, wd, bd, 1e-5))
    return (out, *torch.autograd.grad(out, inputs, dout.double()))


def _inputs(b, c, h, w, layout, seed=0):
    torch.manual_seed(seed)
    x = torch.randn(b, c, h, w) * 3 + 20 * torch.randn(1, c, 1, 1)  # channel offsets: the statistics must not cancel
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "strided":
        x = torch.randn(b, c, w, h).transpose(2, 3) * 3 + 2  # neither layout: copied first
    return x.requires_grad_(), torch.randn(c, requires_grad=True), torch.randn(c, requires_grad=True)


@pytest.mark.parametrize("shifted", [False, True], ids=["", "shift"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
@pytest.mark.parametrize("shape, groups", [((4, 16, 28, 28), 4), ((3, 48, 7, 7), 12), ((2, 64, 5, 3), 16),
                                           ((2, 8, 3, 3), 1), ((2, 6, 4, 4), 6)])
def test_values_and_gradients_are_pytorchs(shape, groups, layout, shifted):
    x, w, b = _inputs(*shape, layout)
    shift = (10 * torch.randn(shape[:2])).requires_grad_() if shifted else None  # per sample and channel
    out = gns.group_norm_silu(x, w, b, groups, 1e-5, shift)
    dout = torch.randn(shape)
    grads = torch.autograd.grad(out, (x, w, b) + ((shift,) if shifted else ()), dout)
    ref = _reference(x, w, b, groups, dout, shift)
    assert out.dtype == torch.float32 and out.shape == shape
    if layout == "channels_last":
        assert out.is_contiguous(memory_format=torch.channels_last) and grads[0].is_contiguous(
            memory_format=torch.channels_last)
    else:
        assert out.is_contiguous() and grads[0].is_contiguous()
    scales = [t.abs().max().item() for t in ref]
    if shifted:  # dL/dshift sums H*W values of dL/dx: up to H*W times dx's rounding (it is ~0 with one channel a group)
        scales[-1] = max(scales[-1], scales[1] * shape[2] * shape[3])
    for mine, theirs, scale in zip((out, *grads), ref, scales):
        torch.testing.assert_close(mine.double(), theirs, atol=2e-6 * max(scale, 1.0), rtol=1e-5)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_results_do_not_depend_on_the_thread_count(layout):
    x, w, b = _inputs(6, 16, 9, 9, layout, seed=1)
    shift = torch.randn(6, 16, requires_grad=True)
    dout = torch.randn(6, 16, 9, 9)
    runs = []
    threads = torch.get_num_threads()
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            out = gns.group_norm_silu(x, w, b, 4, 1e-5, shift)
            runs.append((out, *torch.autograd.grad(out, (x, w, b, shift), dout)))
    finally:
        torch.set_num_threads(threads)
    for other in runs[1:]:
        assert all(torch.equal(a, o) for a, o in zip(runs[0], other))


def test_the_custom_op_passes_opcheck():
    """Schema, fake (meta) implementation, autograd registration and AOT dispatch, as torch.compile relies on them."""
    for layout in ("contiguous", "channels_last"):
        x, w, b = _inputs(2, 8, 5, 5, layout)
        for shift in (None, torch.randn(2, 8, requires_grad=True)):
            result = torch.library.opcheck(torch.ops.hwlib.group_norm_silu.default, (x, shift, w, b, 2, 1e-5))
            assert set(result.values()) == {"SUCCESS"}, result


def test_it_compiles_as_one_opaque_op_with_its_gradients():
    x, w, b = _inputs(4, 16, 6, 6, "channels_last")
    shift = torch.randn(4, 16, requires_grad=True)
    dout = torch.randn(4, 16, 6, 6)
    compiled = torch.compile(lambda x, w, b, s: gns.group_norm_silu(x, w, b, 4, 1e-5, s) * dout, fullgraph=True)
    grads = torch.autograd.grad(compiled(x, w, b, shift).sum(), (x, w, b, shift))
    for mine, theirs in zip(grads, _reference(x, w, b, 4, dout, shift)[1:]):
        torch.testing.assert_close(mine.double(), theirs, atol=1e-4, rtol=1e-4)


def test_without_a_compiler_the_norm_falls_back(isolated_paths, monkeypatch):
    monkeypatch.setattr(c_kernels, "_libs", {})
    monkeypatch.setattr(c_kernels, "_failed", {})
    monkeypatch.setenv("CC", str(isolated_paths / "no-such-compiler"))
    with pytest.warns(RuntimeWarning, match=r"group_norm_silu\.c.*Install a C compiler"):  # once (tests/test_c_kernels.py)
        assert gns._library() is None
    x = torch.randn(2, 16, 4, 4)
    assert not gns.available(x)
    gn = norm(16)
    shift = torch.randn(2, 16)
    with mock.patch.object(torch.compiler, "is_compiling", return_value=True):
        torch.testing.assert_close(gn.silu(x), F.silu(gn(x)))
        torch.testing.assert_close(gn.silu(x, shift), F.silu(gn(x + shift[:, :, None, None])))


def test_group_norm_silu_takes_the_kernel_only_in_compiled_float32():
    torch.manual_seed(0)
    gn = norm(16)
    x = torch.randn(2, 16, 5, 5)
    with mock.patch.object(gns, "group_norm_silu", side_effect=gns.group_norm_silu) as fused:
        eager = gn.silu(x)
        assert fused.call_count == 0  # eager: PyTorch's norm, then SiLU
        with mock.patch.object(torch.compiler, "is_compiling", return_value=True):
            traced = gn.silu(x)
            assert fused.call_count == 1
            with torch.no_grad():
                sampled = gn.silu(x)  # sampling: the kernel too
            assert fused.call_count == 2
            gn.silu(x.bfloat16())  # bf16 autocast's tensors
            with mock.patch.object(gns, "enabled", False):  # HWLIB_FUSED_NORM=0
                gn.silu(x)
            assert fused.call_count == 2
            shift = torch.randn(2, 16)
            traced_shifted = gn.silu(x, shift)  # the time embedding goes into the kernel
            assert fused.call_count == 3 and fused.call_args.args[-1] is shift
    torch.testing.assert_close(traced, eager, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sampled, eager, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(traced_shifted, gn.silu(x, shift), atol=1e-5, rtol=1e-5)
