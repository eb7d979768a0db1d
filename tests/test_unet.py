"""The DDPM U-Net: shapes, the time embedding, the null class, attention placement, gradients, the group norm, the
up-sampling."""
from __future__ import annotations

import math
from collections.abc import Callable
from unittest import mock

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hwlib.models import group_norm_silu, upsample_conv
from hwlib.models.unet import (AttnBlock, Downsample, GroupNorm, TimeResBlock, UNet, Upsample, build,
                               channelwise_group_norm, nearest_up2, norm, timestep_embedding)


def _net(**kw) -> UNet:
    args = dict(ch=8, channel_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(7,), dropout=0.0)
    return UNet(**{**args, **kw})


def test_output_shape_and_resolutions():
    torch.manual_seed(0)
    net = _net(num_classes=10)
    x, t, y = torch.randn(3, 1, 28, 28), torch.tensor([0, 500, 999]), torch.tensor([1, 2, 10])
    assert net(x, t, y).shape == (3, 1, 28, 28)
    assert sum(isinstance(m, Downsample) for m in net.modules()) == 2
    assert sum(isinstance(m, Upsample) for m in net.modules()) == 2
    # attention only at 7x7: one after the level-2 down block, 2 in the level-2 up blocks, 1 in the middle
    assert sum(isinstance(m, AttnBlock) for m in net.modules()) == 4
    seen = []
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append(o.shape[-1])) for m in net.modules() if isinstance(m, AttnBlock)]
    net(x, t, y)
    for h in hooks:
        h.remove()
    assert set(seen) == {7}


def test_timestep_embedding():
    e = timestep_embedding(torch.tensor([0, 1, 999]), 16)
    assert e.shape == (3, 16)
    assert torch.allclose(e[0, :8], torch.zeros(8)) and torch.allclose(e[0, 8:], torch.ones(8))  # sin 0, cos 0
    assert torch.allclose(e[2, 0], torch.tensor(math.sin(999.0)), atol=1e-4)
    assert torch.allclose(e.pow(2).view(3, 2, 8).sum(1), torch.ones(3, 8), atol=1e-5)  # sin² + cos² = 1


def test_null_class_equals_no_labels_and_classes_matter():
    torch.manual_seed(0)
    net = _net(num_classes=10).eval()
    with torch.no_grad():  # break the zero initialisation so that the output depends on the inputs
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x, t = torch.randn(2, 1, 28, 28), torch.tensor([10, 10])
    with torch.no_grad():
        none = net(x, t)
        null = net(x, t, torch.tensor([10, 10]))
        three = net(x, t, torch.tensor([3, 3]))
        later = net(x, torch.tensor([900, 900]), torch.tensor([3, 3]))
    assert torch.equal(none, null)
    assert not torch.allclose(null, three, atol=1e-4)
    assert not torch.allclose(three, later, atol=1e-4)


def test_zero_initialised_output_and_gradients_reach_every_parameter():
    torch.manual_seed(0)
    net = _net(num_classes=10)
    x, t, y = torch.randn(4, 1, 28, 28), torch.randint(0, 1000, (4,)), torch.randint(0, 11, (4,))
    assert torch.count_nonzero(net(x, t, y)) == 0  # as in the DDPM code: the network starts at zero
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for _ in range(3):  # after a few steps the zero-initialised layers pass gradients on
        opt.zero_grad()
        (net(x, t, y) - x).pow(2).mean().backward()
        opt.step()
    opt.zero_grad()
    (net(x, t, y) - x).pow(2).mean().backward()
    used = torch.unique(torch.cat([y, torch.tensor([10])]))
    for name, p in net.named_parameters():
        if name == "class_emb.weight":
            assert p.grad[y].abs().sum() > 0
            continue
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert used.numel() >= 1


def test_unconditional_model_and_size_checks():
    net = _net()
    assert net.class_emb is None and net.num_classes is None
    assert net(torch.randn(2, 1, 28, 28), torch.tensor([1, 2])).shape == (2, 1, 28, 28)
    with pytest.raises(ValueError, match="divisible"):
        UNet(image_size=28, channel_mult=(1, 2, 2, 2))


def test_full_size_parameter_count_is_stable():
    from hwlib.train import count_parameters

    net = UNet(ch=64, channel_mult=(1, 2, 2), num_res_blocks=2, attn_resolutions=(14, 7), num_classes=10)
    assert 6_000_000 < count_parameters(net) < 8_000_000


def test_attention_block_is_single_head_scaled_dot_product_attention():
    torch.manual_seed(0)
    block = AttnBlock(8)
    torch.nn.init.normal_(block.proj.weight)  # zero-initialised: the block would be the identity
    x = torch.randn(2, 8, 5, 5)
    q, k, v = block.qkv(block.norm(x)).reshape(2, 3, 8, 25).transpose(-1, -2).unbind(1)
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v)  # (B, HW, C)
    expected = x + block.proj(ref.transpose(-1, -2).reshape(2, 8, 5, 5))
    torch.testing.assert_close(block(x), expected, atol=1e-5, rtol=1e-5)  # training: written out
    with torch.no_grad():  # sampling: PyTorch's fused attention, the same function
        torch.testing.assert_close(block(x), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("channels, groups", [(16, 4), (32, 8), (48, 12), (8, 1)])
def test_channelwise_group_norm_is_group_norm_with_its_gradients(channels, groups):
    torch.manual_seed(0)
    x = (torch.randn(3, channels, 7, 5) * 3 + 5 * torch.randn(1, channels, 1, 1)).requires_grad_()  # offsets per channel
    w, b = torch.randn(channels, requires_grad=True), torch.randn(channels, requires_grad=True)
    ours, ref = channelwise_group_norm(x, groups, w, b, 1e-5), F.group_norm(x, groups, w, b, 1e-5)
    assert ours.dtype == x.dtype and torch.allclose(ours, ref, atol=1e-4)
    g = torch.randn_like(ref)
    grads, ref_grads = torch.autograd.grad(ours, (x, w, b), g), torch.autograd.grad(ref, (x, w, b), g)
    for mine, theirs in zip(grads, ref_grads):
        assert torch.allclose(mine, theirs, atol=1e-3, rtol=1e-4)
    with torch.no_grad():  # sampling's form (the channel statistics of x minus its first pixel)
        assert torch.allclose(channelwise_group_norm(x, groups, w, b, 1e-5), ref, atol=1e-4)
        half = channelwise_group_norm(x.bfloat16(), groups, w, b, 1e-5)  # bf16 in, bf16 out
    assert half.dtype == torch.bfloat16 and torch.allclose(half.float(), ref.detach(), atol=0.1)
    xh = x.detach().bfloat16().requires_grad_()  # training in bf16: bf16 in and out, float32 weight gradients
    out = channelwise_group_norm(xh, groups, w, b, 1e-5)
    gx, gw = torch.autograd.grad(out, (xh, w), g.bfloat16())
    assert out.dtype == gx.dtype == torch.bfloat16 and gw.dtype == torch.float32
    assert torch.allclose(gx.float(), ref_grads[0], atol=0.05, rtol=0.05)


def test_channelwise_group_norm_compiles_with_its_gradients():
    """Under ``torch.compile`` (the only place the U-Net uses it) the hand-written backward gives PyTorch's gradients."""
    torch.manual_seed(0)
    x = (torch.randn(4, 16, 6, 6) * 2 + 3 * torch.randn(1, 16, 1, 1)).requires_grad_()
    w, b = torch.randn(16, requires_grad=True), torch.randn(16, requires_grad=True)
    g = torch.randn(4, 16, 6, 6)
    compiled = torch.compile(lambda x, w, b: channelwise_group_norm(x, 4, w, b, 1e-5) * g, fullgraph=True)
    grads = torch.autograd.grad(compiled(x, w, b).sum(), (x, w, b))
    ref_grads = torch.autograd.grad((F.group_norm(x, 4, w, b, 1e-5) * g).sum(), (x, w, b))
    for mine, theirs in zip(grads, ref_grads):
        torch.testing.assert_close(mine, theirs, atol=1e-4, rtol=1e-4)


def test_group_norm_takes_the_channelwise_form_only_under_compile():
    torch.manual_seed(0)
    gn = norm(32)
    assert isinstance(gn, GroupNorm) and gn.num_groups == 8
    plain = nn.GroupNorm(8, 32)
    assert gn.state_dict().keys() == plain.state_dict().keys()  # checkpoints of either load into the other
    nn.init.normal_(gn.weight), nn.init.normal_(gn.bias)
    x = torch.randn(2, 32, 6, 6)
    with mock.patch("hwlib.models.unet.channelwise_group_norm", side_effect=channelwise_group_norm) as cw:
        eager = gn(x)
        assert cw.call_count == 0  # eager mode: PyTorch's kernel
        with mock.patch.object(torch.compiler, "is_compiling", return_value=True):
            traced = gn(x)
        assert cw.call_count == 1
    assert torch.allclose(eager, F.group_norm(x, 8, gn.weight, gn.bias)) and torch.allclose(traced, eager, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_nearest_up2_is_interpolate_bitwise_compiled_with_its_gradient(dtype):
    """The compiled up-sampling (a broadcast, whose gradient is a 2×2 block sum) gives ``F.interpolate``'s values and
    gradients bit for bit, so a U-Net trains the same with either."""
    torch.manual_seed(0)
    x = torch.randn(3, 4, 7, 5, dtype=dtype, requires_grad=True)
    g = torch.randn(3, 4, 14, 10, dtype=dtype)
    compiled = torch.compile(nearest_up2, fullgraph=True)
    out = compiled(x)
    ref = F.interpolate(x, scale_factor=2.0, mode="nearest")
    assert out.shape == (3, 4, 14, 10) and torch.equal(out, ref)
    assert torch.equal(torch.autograd.grad(out, x, g)[0], torch.autograd.grad(ref, x, g)[0])


def test_upsample_folds_into_one_transposed_convolution_in_float32_on_a_cpu():
    up = Upsample(4)
    x = torch.randn(2, 4, 3, 3, requires_grad=True)
    with mock.patch("hwlib.models.upsample_conv.upsample_conv", side_effect=upsample_conv.upsample_conv) as fold:
        out = up(x)
        assert fold.call_count == 1
        with mock.patch.object(upsample_conv, "enabled", False):
            ref = up(x)
        assert fold.call_count == 1
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(*(torch.autograd.grad(y.sum(), up.conv.weight)[0] for y in (out, ref)))


@mock.patch.object(upsample_conv, "enabled", False)
def test_upsample_takes_the_broadcast_only_in_compiled_training():
    up = Upsample(4)
    x = torch.randn(2, 4, 3, 3)
    with mock.patch("hwlib.models.unet.nearest_up2", side_effect=nearest_up2) as bc:
        eager = up(x)
        assert bc.call_count == 0  # eager mode: PyTorch's interpolation
        with mock.patch.object(torch.compiler, "is_compiling", return_value=True):
            with torch.no_grad():
                sampled = up(x)
            assert bc.call_count == 0  # sampling: the interpolation too
            traced = up(x)
        assert bc.call_count == 1
    assert eager.shape == (2, 4, 6, 6) and torch.equal(sampled, eager)
    torch.testing.assert_close(traced, eager)  # traced: channels-last, whose convolution sums in another order on
    # some CPUs (an AMD EPYC with AVX2: not bitwise equal; an Intel Xeon with AMX: equal)


def test_compiled_float32_sampling_takes_the_fused_norms_and_gives_the_eager_outputs(monkeypatch):
    """Sampling (no gradient) through ``torch.compile`` in float32 on a CPU runs the GroupNorm → SiLU pairs as the
    fused kernel, channels-last, with the eager network's outputs up to float rounding."""
    from hwlib import train

    monkeypatch.delenv("HWLIB_DRYRUN", raising=False)
    monkeypatch.setenv("HWLIB_CPU_BF16", "0")
    torch.manual_seed(0)
    unet = build({"ch": 8, "channel_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0})
    for p in unet.parameters():  # no zero-initialised layer: every path shows in the output
        nn.init.normal_(p, std=0.1)
    x, t = torch.randn(3, 1, 28, 28), torch.tensor([0, 50, 199])
    with torch.no_grad():
        eager = unet.eval()(x, t)
    ops = []

    def graph_ops(gm: torch.fx.GraphModule, inputs) -> Callable:  # a torch.compile backend: records the traced ops
        ops.extend(n.target for n in gm.graph.nodes if n.op == "call_function")
        return gm.forward

    with torch.no_grad():
        torch.compile(unet, backend=graph_ops)(x, t)
    blocks = sum(isinstance(m, TimeResBlock) for m in unet.modules())
    assert ops.count(torch.ops.hwlib.group_norm_silu.default) == 2 * blocks + 1  # two pairs in every ResNet block
    # and the output's
    out = train.SamplingNet(unet, compile=True)(x, t)  # inductor
    assert out.dtype == torch.float32 and not out.requires_grad
    torch.testing.assert_close(out, eager, atol=1e-5, rtol=1e-4)
