"""The CPU batch-norm kernel: values, gradients and running statistics against PyTorch's in float64, every block
width of its channel loop, each activation, thread-count independence, and when it applies."""
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


def test_film_must_be_one_float32_pair_per_sample_and_channel():
    x, w, b = _inputs(2, 8, 4, 4)
    with pytest.raises(ValueError, match=r"film's scale and shift must be float32 \(2, 8\)"):
        bna.batch_norm_act(x, w, b, None, None, 0.1, 1e-5, film=(torch.ones(2, 8, 1, 1), torch.zeros(2, 8, 1, 1)))


def test_results_do_not_depend_on_the_thread_count():
    x, w, b = _inputs(6, 24, 9, 9, seed=1)
    dout = torch.randn(6, 24, 9, 9)
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


def test_it_applies_to_float32_channels_last_cpu_training_only():
    x = torch.randn(2, 8, 4, 4)
    assert bna.available(x.contiguous(memory_format=CL))
    assert not bna.available(x)  # contiguous: PyTorch's kernel is fast there
    assert not bna.available(x.contiguous(memory_format=CL).bfloat16())  # autocast
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
