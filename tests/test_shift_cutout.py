"""The DiffAugment kernel: hwlib.gan.diff_augment's values, gradients, layouts and random draws through it, bit for bit
those of PyTorch's operators, at every policy it takes, shifts past the edge and squares across it; and when it
applies."""
from __future__ import annotations

import pytest
import torch

from hwlib import gan
from hwlib.models import shift_cutout

CL = torch.channels_last
pytestmark = pytest.mark.skipif(not shift_cutout.available(torch.zeros(2, 3, 4, 4)),
                                reason="the kernel could not be built here")


def _augment(x0: torch.Tensor, g: torch.Tensor, policy: str, kernel: bool, monkeypatch) -> tuple[torch.Tensor, ...]:
    monkeypatch.setattr(shift_cutout, "enabled", kernel)
    torch.manual_seed(3)
    x = x0.clone().requires_grad_()
    out = gan.diff_augment(x, policy)
    (grad,) = torch.autograd.grad(out, x, g)
    return out, grad, torch.randint(0, 10**6, (1,))  # the last: the generator's state after the draws


@pytest.mark.parametrize("policy", ["translation,cutout", "translation", "cutout"])
@pytest.mark.parametrize("layout", [torch.contiguous_format, CL], ids=["contiguous", "channels-last"])
@pytest.mark.parametrize("shape", [(16, 3, 64, 64), (5, 2, 9, 7), (3, 1, 8, 8)])
def test_diff_augment_through_the_kernel_is_pytorchs_bit_for_bit(shape, layout, policy, monkeypatch):
    x0 = torch.randn(shape).contiguous(memory_format=layout)
    x0[0, :, 0] = -x0[0, :, 0].abs()  # negative values cut out: -0 in both
    g = torch.randn(shape).contiguous(memory_format=layout)
    ref, mine = _augment(x0, g, policy, False, monkeypatch), _augment(x0, g, policy, True, monkeypatch)
    for a, b in zip(ref, mine):
        assert torch.equal(a, b) and torch.equal(torch.signbit(a), torch.signbit(b))
    assert mine[0].is_contiguous(memory_format=layout) and mine[1].is_contiguous(memory_format=layout)


def test_shifts_past_the_edge_and_squares_across_it():
    x = torch.randn(4, 3, 6, 5, dtype=torch.float32).contiguous(memory_format=CL).requires_grad_()
    ty, tx = torch.tensor([0, 7, -2, 3]), torch.tensor([-9, 0, 1, -1])  # rows 0 and 1 leave only zeros
    oy, ox = torch.tensor([-2, 0, 4, 1]), torch.tensor([3, -3, 2, 0])
    out = shift_cutout.shift_cutout(x, (ty, tx), (oy, ox, 3, 3))
    padded = torch.nn.functional.pad(x.detach(), [9, 9, 7, 7])
    for i in range(4):  # the definition, one image at a time
        ref = padded[i, :, 7 + ty[i]:7 + ty[i] + 6, 9 + tx[i]:9 + tx[i] + 5].clone()
        ys, xs = torch.arange(6)[:, None], torch.arange(5)[None, :]
        ref = ref * ~((ys >= oy[i]) & (ys < oy[i] + 3) & (xs >= ox[i]) & (xs < ox[i] + 3))
        assert torch.equal(out[i], ref)
    assert out[0].abs().sum() == 0 and out[1].abs().sum() == 0
    g = torch.randn_like(out)
    (grad,) = torch.autograd.grad(out, x, g)  # the adjoint: <out(x), g> = <x, grad> for every x
    torch.testing.assert_close((out.detach() * g).sum(), (x.detach() * grad).sum())


def test_where_it_applies(monkeypatch):
    x = torch.zeros(2, 3, 8, 8)
    assert shift_cutout.available(x) and shift_cutout.available(x.contiguous(memory_format=CL))
    assert not shift_cutout.available(x.bfloat16()) and not shift_cutout.available(x[:, :, ::2])
    assert not shift_cutout.available(x[0])

    def unused(*args):
        raise AssertionError("the kernel was called")

    monkeypatch.setattr(shift_cutout, "shift_cutout", unused)  # cutout first: PyTorch's operators, in that order
    assert gan.diff_augment(torch.ones(2, 1, 8, 8), "cutout,translation").shape == (2, 1, 8, 8)
    monkeypatch.setattr(shift_cutout, "enabled", False)
    assert not shift_cutout.available(x) and gan.diff_augment(x).shape == x.shape
