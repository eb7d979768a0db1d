"""The CPU batch-norm kernel: values, gradients and running statistics against PyTorch's in float64, every block
width of its channel loop, each activation, float32 and bf16, thread-count independence, and when it applies."""
from __future__ import annotations

from unittest import mock

import pytest
import torch
import torch.nn.functional as F

from hwlib.models import batch_norm_act as bna

CL = torch.channels_last
pytestmark = pytest.mark.skipif(not bna.available(torch.zeros(2, 4, 2, 2).contiguous(memory_format=CL)),
                                reason="the kernel could not be built here")


def _inputs(b, c, h, w, seed=0):
    torch.manual_seed(seed)
    x = torch.randn(b, c, h, w) * 3 + 20 * torch.randn(1, c, 1, 1)  # channel offsets: the statistics must not cancel
    x = x.contiguous(memory_format=CL).requires_grad_()
    return x, (torch.rand(c) + 0.5).requires_grad_(), torch.randn(c, requires_grad=True)


@pytest.mark.parametrize("slope", [1.0, 0.0, 0.2], ids=["none", "relu", "leaky"])
@pytest.mark.parametrize("shape", [(4, 8, 16, 16), (3, 16, 5, 7), (2, 40, 6, 6), (2, 5, 3, 3), (5, 24, 1, 1)],
                         ids=["8", "16", "16+16+8", "5", "16+8-1x1"])
def test_values_gradients_and_running_statistics_are_pytorchs(shape, slope):
    x, w, b = _inputs(*shape)
    c = shape[1]
    running = torch.randn(c), torch.rand(c) + 0.5
    mine_running = tuple(t.clone() for t in running)
    out = bna.batch_norm_act(x, w, b, *mine_running, momentum=0.1, eps=1e-5, slope=slope)
    dout = torch.randn(shape)
    grads = torch.autograd.grad(out, (x, w, b), dout)

    xd, wd, bd = (t.detach().double().requires_grad_() for t in (x, w, b))
    ref_running = tuple(t.double() for t in running)
    ref = F.leaky_relu(F.batch_norm(xd, *ref_running, wd, bd, training=True, momentum=0.1, eps=1e-5), slope)
    ref_grads = torch.autograd.grad(ref, (xd, wd, bd), dout.double())

    assert out.dtype == torch.float32 and out.is_contiguous(memory_format=CL)
    assert grads[0].is_contiguous(memory_format=CL)
    for mine, theirs in zip((out, *grads, *mine_running), (ref, *ref_grads, *ref_running)):
        scale = max(theirs.abs().max().item(), 1.0)
        torch.testing.assert_close(mine.double(), theirs.detach(), atol=2e-6 * scale, rtol=1e-5)


@pytest.mark.parametrize("slope", [1.0, 0.0], ids=["none", "relu"])
@pytest.mark.parametrize("shape", [(4, 8, 16, 16), (3, 16, 5, 7), (2, 40, 6, 6)], ids=["8", "16", "16+16+8"])
def test_film_between_norm_and_activation_has_pytorchs_values_and_gradients(shape, slope):
    x, w, b = _inputs(*shape)
    scale = (1 + 0.5 * torch.randn(shape[:2])).requires_grad_()  # per sample and channel: a conditional norm
    shift = torch.randn(shape[:2], requires_grad=True)
    out = bna.batch_norm_act(x, w, b, None, None, momentum=0.1, eps=1e-5, slope=slope, film=(scale, shift))
    dout = torch.randn(shape)
    grads = torch.autograd.grad(out, (x, w, b, scale, shift), dout)

    xd, wd, bd, sd, hd = (t.detach().double().requires_grad_() for t in (x, w, b, scale, shift))
    bn = F.batch_norm(xd, None, None, wd, bd, training=True, eps=1e-5)
    ref = F.leaky_relu(bn * sd[:, :, None, None] + hd[:, :, None, None], slope)
    ref_grads = torch.autograd.grad(ref, (xd, wd, bd, sd, hd), dout.double())
    for mine, theirs in zip((out, *grads), (ref, *ref_grads)):
        tol = max(theirs.abs().max().item(), 1.0)
        torch.testing.assert_close(mine.double(), theirs.detach(), atol=2e-6 * tol, rtol=1e-5)


@pytest.mark.parametrize("film", [False, True], ids=["plain", "film"])
@pytest.mark.parametrize("slope", [0.0, 0.2], ids=["relu", "leaky"])
@pytest.mark.parametrize("shape", [(4, 8, 16, 16), (2, 40, 6, 6), (5, 24, 1, 1)], ids=["8", "16+16+8", "16+8-1x1"])
@mock.patch.object(bna, "bf16", True)
def test_bf16_reads_and_writes_bf16_and_computes_as_float32(shape, slope, film):
    """bf16 x and dL/dout (autocast): the output and dx are the float64 results rounded to bf16; the parameters'
    gradients, FiLM's and the running statistics are as exact as in float32."""
    x, w, b = _inputs(*shape)
    x = x.detach().bfloat16().contiguous(memory_format=CL).requires_grad_()
    c = shape[1]
    running = torch.randn(c), torch.rand(c) + 0.5
    mine_running = tuple(t.clone() for t in running)
    extra = ((1 + 0.5 * torch.randn(shape[:2])).requires_grad_(),
             torch.randn(shape[:2], requires_grad=True)) if film else ()
    out = bna.batch_norm_act(x, w, b, *mine_running, momentum=0.1, eps=1e-5, slope=slope, film=extra or None)
    dout = torch.randn(shape).bfloat16()
    grads = torch.autograd.grad(out, (x, w, b, *extra), dout)

    xd, wd, bd, *fd = (t.detach().double().requires_grad_() for t in (x, w, b, *extra))
    ref_running = tuple(t.double() for t in running)
    ref = F.batch_norm(xd, *ref_running, wd, bd, training=True, momentum=0.1, eps=1e-5)
    if film:
        ref = ref * fd[0][:, :, None, None] + fd[1][:, :, None, None]
    ref = F.leaky_relu(ref, slope)
    ref_grads = torch.autograd.grad(ref, (xd, wd, bd, *fd), dout.double())

    assert out.dtype == grads[0].dtype == torch.bfloat16 and out.is_contiguous(memory_format=CL)
    assert all(g.dtype == torch.float32 for g in grads[1:])
    for mine, theirs in ((out, ref), (grads[0], ref_grads[0])):  # one rounding to bf16 (8 bits): 2^-9 relative
        scale = theirs.abs().max().item()
        torch.testing.assert_close(mine.double(), theirs.detach(), atol=1e-5 * scale, rtol=2 ** -8)
    for mine, theirs in zip((*grads[1:], *mine_running), (*ref_grads[1:], *ref_running)):
        scale = max(theirs.abs().max().item(), 1.0)
        torch.testing.assert_close(mine.double(), theirs.detach(), atol=2e-6 * scale, rtol=1e-5)


def test_bf16_training_matches_pytorchs_autocast_batch_norm():
    """StackGAN's BatchNorm2d + LeakyReLU under bf16 autocast, the kernel against PyTorch's own bf16 batch norm: the
    same values and gradients up to bf16 rounding (PyTorch rounds the norm's output once more, before the
    activation)."""
    from hwlib.models.stackgan import norm_act

    assert not bna.bf16  # off by default (HWLIB_BF16_NORM)

    torch.manual_seed(0)
    x0 = (torch.randn(4, 16, 8, 8) * 2 + 1).bfloat16().contiguous(memory_format=CL)
    dout = torch.randn(4, 16, 8, 8).bfloat16()
    results = []
    for use_kernel in (True, False):
        torch.manual_seed(1)
        layer = torch.nn.Sequential(*norm_act(16, slope=0.2)).train()
        x = x0.clone().requires_grad_()
        with mock.patch.object(bna, "bf16", use_kernel), torch.autocast("cpu", dtype=torch.bfloat16):
            out = layer(x)
        out.backward(dout)
        bn = layer[0]
        results.append((out, x.grad, bn.weight.grad, bn.bias.grad, bn.running_mean, bn.running_var))
    for mine, theirs in zip(*results):
        assert mine.dtype == theirs.dtype
        scale = theirs.abs().max().item()
        torch.testing.assert_close(mine.double(), theirs.double(), atol=1e-2 * scale, rtol=2 ** -7)


def test_film_must_be_one_pair_per_sample_and_channel():
    x, w, b = _inputs(2, 8, 4, 4)
    with pytest.raises(ValueError, match=r"film's scale and shift must be \(2, 8\) tensors"):
        bna.batch_norm_act(x, w, b, None, None, 0.1, 1e-5, film=(torch.ones(2, 8, 1, 1), torch.zeros(2, 8, 1, 1)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bf16"])
@mock.patch.object(bna, "bf16", True)
def test_results_do_not_depend_on_the_thread_count(dtype):
    x, w, b = _inputs(6, 24, 9, 9, seed=1)
    x = x.detach().to(dtype).contiguous(memory_format=CL).requires_grad_()
    dout = torch.randn(6, 24, 9, 9).to(dtype)
    runs, threads = [], torch.get_num_threads()
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            running = torch.zeros(24), torch.ones(24)
            out = bna.batch_norm_act(x, w, b, *running, momentum=0.1, eps=1e-5, slope=0.2)
            runs.append((out, *torch.autograd.grad(out, (x, w, b), dout), *running))
    finally:
        torch.set_num_threads(threads)
    for other in runs[1:]:
        for a, r in zip(other, runs[0]):
            assert torch.equal(a, r)


def test_it_applies_to_float32_channels_last_cpu_training_only_and_to_bf16_when_asked():
    x = torch.randn(2, 8, 4, 4)
    assert bna.available(x.contiguous(memory_format=CL))
    assert not bna.available(x.contiguous(memory_format=CL).bfloat16())  # autocast: off by default
    with mock.patch.object(bna, "bf16", True):  # HWLIB_BF16_NORM=1
        assert bna.available(x.contiguous(memory_format=CL).bfloat16())
        assert not bna.available(x.contiguous(memory_format=CL).half())
    assert not bna.available(x)  # contiguous: PyTorch's kernel is fast there
    assert not bna.available(torch.randn(2, 8, 1, 1).contiguous(memory_format=CL))  # both layouts at once
    with torch.no_grad():  # sampling, standing statistics
        assert not bna.available(x.contiguous(memory_format=CL))
    with mock.patch.object(bna, "enabled", False):  # HWLIB_FUSED_NORM=0
        assert not bna.available(x.contiguous(memory_format=CL))
    with mock.patch.object(torch.compiler, "is_compiling", return_value=True):
        assert not bna.available(x.contiguous(memory_format=CL))


def test_one_value_per_channel_is_an_error_as_in_pytorch():
    x, w, b = _inputs(1, 8, 1, 2)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        bna.batch_norm_act(x[:, :, :, :1], w, b, None, None, momentum=0.1, eps=1e-5)
