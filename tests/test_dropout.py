"""hwlib's dropout: the same output, gradient and random generator state as nn.Dropout bit for bit, wherever the
generator stands and however many MT19937 blocks a mask spans; nn.Dropout's own path where the kernel does not apply."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from hwlib.models import dropout

pytestmark = pytest.mark.skipif(not dropout.available(torch.zeros(2)), reason="the kernel could not be built here")


def _drop(module: nn.Module, x0: torch.Tensor, g: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, ...]:
    torch.set_rng_state(state)
    x = x0.clone().requires_grad_()
    out = module(x)
    after = torch.get_rng_state()
    out.backward(g)
    return out, x.grad, after, torch.rand(7)  # the last: what the generator draws next


@pytest.mark.parametrize("shape, p, offset", [((64, 512), 0.3, 0), ((128, 256), 0.3, 1), ((3, 5), 0.5, 7),
                                              ((2000, 700), 0.1, 3), ((1,), 0.9, 0), ((311,), 0.3, 1),
                                              ((312, 3), 0.25, 623), ((4, 8, 5, 5), 0.3, 622)])
def test_dropout_is_nn_dropouts_bit_for_bit(shape, p, offset):
    torch.manual_seed(0)
    x0, g = torch.randn(shape), torch.randn(shape)
    torch.rand(offset)  # one 32-bit word each: the generator anywhere in its 624-word block, mid-pair included
    state = torch.get_rng_state()
    ref, mine = _drop(nn.Dropout(p), x0, g, state), _drop(dropout.Dropout(p), x0, g, state)
    for a, b in zip(ref, mine):
        assert torch.equal(a, b)
    assert 0 < (mine[0] == 0).float().mean() < 1 or x0.numel() < 20


def test_noise_is_zero_or_the_rounded_inverse_keep():
    torch.manual_seed(1)
    noise = dropout.bernoulli_noise(torch.empty(10_000), 0.7)
    assert set(noise.unique().tolist()) == {0.0, float(torch.tensor(1.0) / 0.7)}
    assert abs((noise > 0).float().mean().item() - 0.7) < 0.02


@pytest.mark.parametrize("case", ["eval", "inplace", "strided", "float64", "p=0", "p=1", "disabled"])
def test_where_the_kernel_does_not_apply_it_is_nn_dropout(case, monkeypatch):
    p = {"p=0": 0.0, "p=1": 1.0}.get(case, 0.4)
    ref, mine = nn.Dropout(p, inplace=case == "inplace"), dropout.Dropout(p, inplace=case == "inplace")
    if case == "eval":
        ref.eval(), mine.eval()
    x0 = torch.randn(6, 10, dtype=torch.float64 if case == "float64" else torch.float32)
    if case == "strided":
        x0 = x0.t()
    if case == "disabled":
        monkeypatch.setattr(dropout, "enabled", False)
    torch.manual_seed(2)
    state = torch.get_rng_state()
    a = ref(x0.clone()), torch.rand(3)
    torch.set_rng_state(state)
    b = mine(x0.clone()), torch.rand(3)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_same_module_as_nn_dropout():
    ours, theirs = dropout.Dropout(0.3), nn.Dropout(0.3)
    assert repr(ours) == repr(theirs) and ours.state_dict() == theirs.state_dict() == {}
