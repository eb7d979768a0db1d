"""StackGAN networks: shapes, paper-size parameter counts, ICNR, the KL term and one training step."""
from __future__ import annotations

import math
from unittest import mock

import numpy as np
import pytest
import torch

from hwlib.data.cub import index_loader
from hwlib.models import stackgan, upsample_conv
from hwlib.train import count_parameters


def test_shapes_small() -> None:
    torch.manual_seed(0)
    nets = stackgan.build(t_dim=384, gf=4, df=4, n_res=1, stage2_size=128)
    text, z = torch.randn(3, 384), torch.randn(3, 100)
    low, mu, logvar = nets["G1"](text, z)
    assert low.shape == (3, 3, 64, 64) and mu.shape == logvar.shape == (3, 128)
    assert low.abs().max() <= 1
    high, mu2, _ = nets["G2"](low, text)
    assert high.shape == (3, 3, 128, 128)
    assert nets["D1"](low, mu).shape == (3,) and nets["D2"](high, mu2).shape == (3,)


@pytest.mark.parametrize("channels", [8, 32])
@pytest.mark.parametrize("train", [True, False])
def test_batch_norm_trains_channels_last_with_the_kernel_and_the_same_values(
        channels: int, train: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    from hwlib.models import batch_norm_act

    torch.manual_seed(0)
    ref = torch.nn.BatchNorm2d(channels)
    ref.weight.data.uniform_(0.5, 1.5), ref.bias.data.normal_(), ref.running_mean.normal_(), ref.running_var.uniform_(0.5, 2)
    ours = stackgan.BatchNorm2d(channels)
    ours.load_state_dict(ref.state_dict())  # the same keys
    ref.train(train), ours.train(train)
    x = torch.randn(4, channels, 12, 12).contiguous(memory_format=torch.channels_last)
    dy = torch.randn(4, channels, 12, 12).contiguous(memory_format=torch.channels_last)
    xr, xo = x.clone().requires_grad_(), x.clone().requires_grad_()
    yr = ref(xr)
    calls, kernel = [], batch_norm_act.batch_norm_act
    monkeypatch.setattr(batch_norm_act, "batch_norm_act", lambda *a, **k: calls.append(a[0].shape) or kernel(*a, **k))
    yo = ours(xo)
    monkeypatch.undo()
    built = batch_norm_act.available(x)
    assert calls == ([x.shape] if train and built else [])  # training with gradients: the kernel
    yr.backward(dy), yo.backward(dy)
    assert yo.is_contiguous(memory_format=torch.channels_last)  # the layout the next convolution expects
    torch.testing.assert_close(yo, yr, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(xo.grad, xr.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours.bias.grad, ref.bias.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours.running_mean, ref.running_mean)
    torch.testing.assert_close(ours.running_var, ref.running_var)
    assert torch.equal(ours.num_batches_tracked, ref.num_batches_tracked)
    assert isinstance(ours, torch.nn.BatchNorm2d)  # weights_init, standing_stats and joint_d find it
    ours.load_state_dict(ref.state_dict())
    with torch.no_grad():  # sampling and standing statistics: PyTorch's kernel, bitwise
        torch.testing.assert_close(ours(x), ref(x), rtol=0, atol=0)
        torch.testing.assert_close(ours.running_mean, ref.running_mean, rtol=0, atol=0)


@pytest.mark.parametrize("slope", [0.0, 0.2])
def test_norm_act_keeps_the_keys_printout_and_values_of_separate_modules(slope: float) -> None:
    torch.manual_seed(0)
    nets = [torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, 1, 1, bias=False), *stackgan.norm_act(8, slope, fused=f),
                                torch.nn.Conv2d(8, 4, 3, 1, 1)) for f in (True, False)]
    fused, separate = (net.to(memory_format=torch.channels_last) for net in nets)
    torch.manual_seed(0)
    plain = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, 1, 1, bias=False), torch.nn.BatchNorm2d(8),
                                torch.nn.ReLU(True) if slope == 0 else torch.nn.LeakyReLU(slope, True),
                                torch.nn.Conv2d(8, 4, 3, 1, 1))
    assert list(fused.state_dict()) == list(plain.state_dict())  # checkpoints load either way
    assert repr(fused) == repr(plain)  # and the architecture prints as the paper's
    fused.load_state_dict(separate.state_dict())
    x = torch.randn(4, 3, 10, 10).contiguous(memory_format=torch.channels_last)
    for train in (True, False):
        fused.train(train), separate.train(train)
        outs = [net(x) for net in (fused, separate)]
        grads = [torch.autograd.grad(out.square().sum(), net[0].weight) for out, net in zip(outs, (fused, separate))]
        torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-4)
    with torch.no_grad():  # sampling: PyTorch's batch norm and activation, bitwise
        assert torch.equal(fused(x), separate(x))
    bn, act = stackgan.norm_act(8, slope)
    y = act(bn(torch.randn(4, 8, 5, 5).contiguous(memory_format=torch.channels_last).requires_grad_()))
    again = torch.nn.functional.leaky_relu(y, slope)  # act works in place: the reference first
    assert torch.equal(act(y), again)  # the kernel's mark is read once


@pytest.mark.parametrize("mode", ["nearest", "pixelshuffle"])
def test_up_block_folds_nearest_and_conv_keeping_keys_printout_and_values(mode: str) -> None:
    torch.manual_seed(0)
    block = stackgan.up_block(8, 4, mode).to(memory_format=torch.channels_last)
    up = [torch.nn.Upsample(scale_factor=2, mode="nearest"), torch.nn.Conv2d(8, 4, 3, 1, 1, bias=False)]
    plain = torch.nn.Sequential(*(up if mode == "nearest" else [torch.nn.Conv2d(8, 16, 3, 1, 1, bias=False),
                                                                 torch.nn.PixelShuffle(2)]),
                                torch.nn.BatchNorm2d(4), torch.nn.ReLU(True))
    assert list(block.state_dict()) == list(plain.state_dict()) and repr(block) == repr(plain)
    x = torch.randn(4, 8, 5, 5).contiguous(memory_format=torch.channels_last).requires_grad_()
    with mock.patch("hwlib.models.upsample_conv.upsample_conv", side_effect=upsample_conv.upsample_conv) as fold:
        out, head = block(x), block[:-1](x)  # a leading slice folds too (Stage-I's conditional norm)
    assert fold.call_count == (2 if mode == "nearest" else 0)
    assert out.is_contiguous(memory_format=torch.channels_last) and head.shape == out.shape
    with mock.patch.object(upsample_conv, "enabled", False):
        ref = block(x)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    weight = block[0 if mode == "pixelshuffle" else 1].weight
    torch.testing.assert_close(*(torch.autograd.grad(y.square().sum(), weight)[0] for y in (out, ref)),
                               rtol=1e-4, atol=1e-4)


def test_conditional_norm_runs_in_the_kernels_pass_with_the_values_of_separate_operations() -> None:
    torch.manual_seed(0)
    g = stackgan.Stage1G(t_dim=32, c_dim=8, z_dim=8, gf=4, cond_norm=True).to(memory_format=torch.channels_last)
    for lin in g.film:  # away from the zero start: every sample its own scale and shift
        torch.nn.init.normal_(lin.weight, std=0.3), torch.nn.init.normal_(lin.bias, std=0.3)
    bn, relu = g.up[0][-2:]
    assert bn.act == 0.0 and repr(relu) == "ReLU(inplace=True)"  # per-channel FiLM: BN + FiLM + ReLU in one pass
    text, z = torch.randn(4, 32), torch.randn(4, 8)
    outs, grads = [], []
    for kernel in (True, False):
        with mock.patch.object(stackgan.batch_norm_act, "enabled", kernel):
            torch.manual_seed(1)
            out = g(text, z)[0]
        outs.append(out)
        grads.append(torch.autograd.grad(out.square().sum(), [g.film[1].weight, g.up[1][1].weight]))
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-4, atol=1e-5)
    for mine, theirs in zip(*grads):  # relative to the whole gradient: a ReLU at 0 may flip with the rounding
        assert (mine - theirs).norm() < 1e-4 * theirs.norm()
    x = torch.randn(4, 8, 5, 5).contiguous(memory_format=torch.channels_last)
    gamma, beta = torch.randn(4, 8), torch.randn(4, 8)
    norm = stackgan.BatchNorm2d(8, act=0.0)
    with torch.no_grad():  # sampling: PyTorch's norm, then the scale and shift as before, bitwise
        assert torch.equal(norm(x, film=(gamma, beta)),
                           torch.nn.BatchNorm2d.forward(norm, x) * (1 + gamma[:, :, None, None]) + beta[:, :, None, None])
    slots = stackgan.Stage1G(t_dim=32, c_dim=8, z_dim=8, gf=4, cond_norm=True, slots=2)
    assert slots.up[0][-2].act is None  # a per-pixel scale and shift: BN, then FiLM, then ReLU, apart


def test_stackgan_networks_use_the_kernel_batch_norm() -> None:
    nets = stackgan.build(t_dim=64, gf=16, df=16, n_res=1, stage2_size=128)
    norms = [m for name in ("G1", "G2", "D1", "D2") for m in nets[name].modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all(type(m) is stackgan.BatchNorm2d for m in norms)


def test_full_configuration_matches_paper_widths() -> None:
    nets = stackgan.build(t_dim=1024)  # gf 128, df 64, 4 residual blocks, 64 -> 256
    g1, g2, d2 = nets["G1"], nets["G2"], nets["D2"]
    assert g1.fc[0].out_features == 1024 * 4 * 4  # 4x4x(8 gf)
    assert [b[1].out_channels for b in g1.up] == [512, 256, 128, 64]
    assert len(g2.res) == 4 and g2.res[0].body[0].in_channels == 512
    assert [b[1].out_channels for b in g2.up] == [256, 128, 64, 32]
    assert d2.logit.in_channels == 8 * 64
    # counted by instantiating StackGAN-Pytorch's code/model.py (STAGE1_G, STAGE1_D, STAGE2_G less its frozen
    # STAGE1_G, STAGE2_D) with GF_DIM 128, DF_DIM 64, CONDITION_DIM 128, Z_DIM 100, R_NUM 4, TEXT.DIMENSION 1024
    official = {"G1": 10_301_248, "D1": 5_715_713, "G2": 26_290_080, "D2": 71_269_122}
    assert {k: count_parameters(v) for k, v in nets.items()} == official
    with torch.no_grad():
        out = g2.eval()(torch.zeros(1, 3, 64, 64), torch.zeros(1, 1024))[0]
    assert out.shape == (1, 3, 256, 256)


def test_pixelshuffle_icnr_starts_as_nearest() -> None:
    torch.manual_seed(0)
    block = stackgan.up_block(6, 5, "pixelshuffle")
    conv = block[0]
    x = torch.randn(2, 6, 8, 8)
    shuffled = block[1](conv(x))
    nearest = torch.nn.functional.interpolate(torch.nn.functional.conv2d(x, conv.weight[::4], padding=1), scale_factor=2)
    assert shuffled.shape == (2, 5, 16, 16) and torch.allclose(shuffled, nearest, atol=1e-5)


def test_kl_loss_and_conditioning_augmentation() -> None:
    assert stackgan.kl_loss(torch.zeros(4, 8), torch.zeros(4, 8)).item() == 0
    mu, logvar = torch.full((1, 2), 1.0), torch.full((1, 2), 0.5)
    expected = 0.5 * (1 + torch.exp(torch.tensor(0.5)) - 1 - 0.5)  # per dimension, as the official code
    assert torch.isclose(stackgan.kl_loss(mu, logvar), expected)
    mu2 = torch.tensor([[1.0, 0.0], [0.0, 0.0]])  # mean over batch and dimensions: 0.5 * 1 / 4
    assert torch.isclose(stackgan.kl_loss(mu2, torch.zeros(2, 2)), torch.tensor(0.125))
    ca = stackgan.CondAugment(16, 4)
    torch.manual_seed(0)
    c1, mu1, _ = ca(torch.ones(2, 16))
    c2, mu2, _ = ca(torch.ones(2, 16))
    assert torch.equal(mu1, mu2) and not torch.equal(c1, c2)  # same mean, fresh noise


def test_training_step_updates_both_players_and_stage2_keeps_stage1_frozen() -> None:
    torch.manual_seed(0)
    nets = stackgan.build(t_dim=32, gf=4, df=4, n_res=1, stage2_size=128)
    n = 8
    data = dict(images=torch.randint(0, 256, (n, 3, 76, 76), dtype=torch.uint8), embeddings=torch.randn(n, 10, 32),
                class_ids=torch.tensor([1, 1, 2, 2, 3, 3, 4, 4]))
    g, d = nets["G1"], nets["D1"]
    opt_g, opt_d = torch.optim.Adam(g.parameters(), 2e-4), torch.optim.Adam(d.parameters(), 2e-4)
    step = stackgan.make_stackgan_step(g, d, opt_g, opt_d, out_size=64, **data)
    before_g, before_d = g.to_img[0].weight.clone(), d.logit.weight.clone()
    (batch,) = list(index_loader(n, 4).epoch(0))[:1]
    logs = step(batch, 0)
    assert set(logs) == {"loss_d", "loss_g", "kl", "d_real", "d_wrong", "d_fake"}
    assert all(torch.isfinite(v) for v in logs.values())
    assert not torch.equal(before_g, g.to_img[0].weight) and not torch.equal(before_d, d.logit.weight)

    g1 = g.eval().requires_grad_(False)
    frozen = g1.fc[0].weight.clone()
    hi = dict(data, images=torch.randint(0, 256, (n, 3, 152, 152), dtype=torch.uint8))
    g2, d2 = nets["G2"], nets["D2"]
    step2 = stackgan.make_stackgan_step(g2, d2, torch.optim.Adam(g2.parameters()), torch.optim.Adam(d2.parameters()),
                               out_size=128, G1=g1, **hi)
    before2 = g2.to_img[0].weight.clone()
    step2(batch, 0)
    assert torch.equal(frozen, g1.fc[0].weight) and not torch.equal(before2, g2.to_img[0].weight)
    low, high = stackgan.generate(g1, torch.randn(5, 32), g2, batch_size=2)
    assert low.shape == (5, 3, 64, 64) and high.shape == (5, 3, 128, 128)


def test_train_stage_sets_text_stats_halves_lr_and_resumes(tmp_path) -> None:
    torch.manual_seed(0)
    n = 8
    data = dict(images=torch.randint(0, 256, (n, 3, 76, 76), dtype=torch.uint8), embeddings=3 + 2 * torch.randn(n, 10, 32),
                class_ids=torch.tensor([1, 1, 2, 2, 3, 3, 4, 4]))

    def run(epochs: int, resume: bool = True):
        g, d = stackgan.Stage1G(32, 8, 10, 2), stackgan.StageD(64, 8, 2)
        hist = stackgan.train_stage(g, d, out_size=64, epochs=epochs, batch_size=4, run_dir=tmp_path, z_dim=10,
                                    lr_decay_epochs=1, resume=resume, progress=False, **data)
        return g, hist

    g, hist = run(2, resume=False)
    assert len(hist) == 4 and set(hist.keys()) >= {"loss_d", "loss_g", "kl"}
    flat = data["embeddings"].reshape(-1, 32)
    assert torch.allclose(g.ca.t_mean, flat.mean(0)) and torch.allclose(g.ca.t_std, flat.std(0))
    g3, hist3 = run(3)  # resumes from the 2-epoch checkpoint and trains one more epoch
    assert len(hist3) == 6 and torch.equal(torch.tensor(hist3["loss_d"][:4]), torch.tensor(hist["loss_d"]))
    state = torch.load(sorted(tmp_path.glob("ckpt_*.pt"))[-1], weights_only=True)
    assert [round(gr["lr"], 8) for gr in state["optimizers"]["G"]["param_groups"]] == [2.5e-5]  # 2e-4 halved 3 times


def test_official_initialisation_and_heads() -> None:
    torch.manual_seed(0)
    nets = stackgan.build(t_dim=1024)
    conv = nets["G1"].up[0][1].weight
    assert abs(conv.mean().item()) < 1e-3 and abs(conv.std().item() - 0.02) < 1e-3  # weights_init: N(0, 0.02)
    bn = nets["G1"].fc[1]
    assert abs(bn.weight.mean().item() - 1) < 2e-3 and bn.bias.abs().max() == 0
    assert nets["D1"].logit_uncond is None and nets["D2"].logit_uncond is not None  # as STAGE1_D / STAGE2_D
    h = nets["D2"].features(torch.zeros(2, 3, 256, 256))
    assert h.shape == (2, 512, 4, 4) and nets["D2"].uncond_logit(h).shape == (2,)


def test_recipes_shape_the_networks_and_are_validated() -> None:
    assert stackgan.get_recipe("paper") == stackgan.Recipe()
    assert stackgan.get_recipe({"loss": "hinge"}).loss == "hinge"
    with pytest.raises(ValueError, match="unknown StackGAN recipe 'fast'"):
        stackgan.get_recipe("fast")
    with pytest.raises(ValueError, match="Recipe.wrong must be one of"):
        stackgan.Recipe(wrong="random")
    nets = stackgan.build(t_dim=32, gf=4, df=4, n_res=1, stage2_size=128,
                          recipe=stackgan.Recipe(spectral_norm=True, projection=True, ca_logvar_init=-4, g_min_channels=16))
    d = nets["D1"]
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in d.modules())  # spectral norm replaces BN in D
    assert hasattr(d.encode[0], "parametrizations") and d.projection
    h = d.features(torch.zeros(3, 3, 64, 64))
    mu = torch.randn(3, 128)
    assert torch.allclose(d.cond_logit(h, mu), d.uncond_logit(h) + (d.embed(mu) * h.sum((2, 3))).sum(1))
    g = nets["G1"]
    assert torch.all(g.ca.fc.bias[128:] == -4) and torch.all(g.ca.fc.bias[:128] == 0)  # sigma starts at exp(-2)
    assert [b[1].out_channels for b in g.up] == [16, 16, 16, 16]  # 32 -> 16 ... floored at 16


def test_stage2_losses_follow_the_official_formula() -> None:
    from hwlib.gan import matching_aware_d_loss

    r, w, f, ru, fu = (torch.tensor([v]) for v in (0.3, -0.2, -1.0, 0.5, 0.1))
    bce = lambda x, t: torch.nn.functional.binary_cross_entropy_with_logits(x, torch.full_like(x, t))  # noqa: E731
    stage1 = bce(r, 1) + (bce(w, 0) + bce(f, 0)) / 2
    stage2 = (bce(r, 1) + bce(ru, 1)) / 2 + (bce(f, 0) + bce(w, 0) + bce(fu, 0)) / 3
    assert torch.isclose(matching_aware_d_loss(r, w, f), stage1)
    assert torch.isclose(matching_aware_d_loss(r, w, f, real_uncond=ru, fake_uncond=fu), stage2)
    hinge = torch.relu(1 - r) + (torch.relu(1 + w) + torch.relu(1 + f)) / 2
    assert torch.isclose(matching_aware_d_loss(r, w, f, loss="hinge"), hinge.squeeze())
    assert torch.isclose(matching_aware_d_loss(r, None, f), bce(r, 1) + bce(f, 0))  # no wrong pairs


@pytest.mark.parametrize("recipe", ["paper", "stable", {"wrong": "class", "ema": 0.9}, {"wrong": "none"},
                                    {"contrastive": 2.0, "loss": "hinge"}])
def test_every_recipe_trains_a_step(recipe) -> None:
    from hwlib.train import EMA

    torch.manual_seed(0)
    r = stackgan.get_recipe(recipe)
    nets = stackgan.build(t_dim=32, gf=4, df=4, n_res=1, stage2_size=128, recipe=r)
    n = 8
    data = dict(images=torch.randint(0, 256, (n, 3, 76, 76), dtype=torch.uint8), embeddings=torch.randn(n, 10, 32),
                class_ids=torch.tensor([1, 1, 2, 2, 3, 3, 4, 4]), labels=torch.randint(-1, 10, (n, 10, 4)))
    g, d = nets["G1"], nets["D1"]
    ema = EMA(g, r.ema) if r.ema else None
    novel = (torch.randn(5, 32), torch.randint(-1, 10, (5, 4))) if r.novel else None  # stable's novel captions
    step = stackgan.make_stackgan_step(g, d, torch.optim.Adam(g.parameters()), torch.optim.Adam(d.parameters()), out_size=64,
                              recipe=r, ema=ema, novel=novel, **data)
    (batch,) = list(index_loader(n, 4).epoch(0))[:1]
    logs = step(batch, 0)
    assert all(torch.isfinite(v) for v in logs.values()) and ("d_wrong" in logs) == (r.wrong != "none")
    assert all(p.grad is None or p.requires_grad for p in d.parameters())
    assert ("match_d" in logs) == (r.contrastive > 0)
    if r.contrastive:  # D's matching head learned from the step, and it is no part of G's update
        assert d.match["image"].weight.grad is not None and d.match["image"].weight.grad.abs().sum() > 0
    assert ("parts_d" in logs) == (r.parts > 0)


def test_contrastive_head_scores_every_image_against_every_caption() -> None:
    torch.manual_seed(0)
    d = stackgan.StageD(64, c_dim=8, df=4, match=True)
    h, mu = d.features(torch.randn(5, 3, 64, 64)), torch.randn(5, 8)
    logits = d.match_logits(h, mu)
    assert logits.shape == (5, 5) and logits.abs().max() <= 10 + 1e-4  # cosine / 0.1
    assert torch.allclose(logits[2, 3], d.match_logits(h[2:3], mu[3:4])[0, 0], atol=1e-5)
    assert stackgan.StageD(64, c_dim=8, df=4).match is None
    paper = stackgan.build(t_dim=1024)
    assert paper["D1"].match is None and paper["D2"].match is None and not paper["G2"].skip  # the paper's networks


def test_stage2_skip_paints_a_residual_over_the_bicubic_upsampled_stage1_image() -> None:
    torch.manual_seed(0)
    g = stackgan.Stage2G(t_dim=16, c_dim=8, gf=4, n_res=1, n_up=3, skip=True).eval()
    low = torch.rand(2, 3, 64, 64) * 1.8 - 0.9
    up = torch.nn.functional.interpolate(low, size=128, mode="bicubic", align_corners=False)
    with torch.no_grad():
        start = g(low, torch.randn(2, 16))[0]
        torch.nn.init.zeros_(g.to_img.weight)  # a zero residual: exactly the up-sampled input
        high = g(low, torch.randn(2, 16))[0]
    assert high.shape == (2, 3, 128, 128) and torch.allclose(high, up.clamp(-0.999, 0.999), atol=1e-5)
    assert (start - high).abs().mean() < 0.1 * up.std()  # the official init starts near it
    flat = stackgan.Stage2G(t_dim=16, c_dim=8, gf=4, n_res=1, n_up=3).eval()(low, torch.randn(2, 16))[0]
    assert flat.std() < 0.5 * up.std()  # without the skip the paper's G2 starts near a flat grey


def test_condition_joins_the_features_in_their_memory_format() -> None:
    h, c = torch.randn(2, 5, 4, 4), torch.randn(2, 3)
    ref = torch.cat([h, c[:, :, None, None].expand(-1, -1, 4, 4)], 1)
    assert torch.equal(stackgan.with_condition(h, c), ref) and stackgan.with_condition(h, c).is_contiguous()
    joined = stackgan.with_condition(h.contiguous(memory_format=torch.channels_last), c)
    assert torch.equal(joined, ref) and joined.is_contiguous(memory_format=torch.channels_last)
    torch.manual_seed(0)  # Stage-II's image skip keeps G's channels-last layout for D's first convolution
    g = stackgan.Stage2G(t_dim=16, c_dim=8, gf=4, n_res=1, n_up=3, skip=True).to(memory_format=torch.channels_last)
    out = g(torch.rand(2, 3, 64, 64).contiguous(memory_format=torch.channels_last), torch.randn(2, 16))[0]
    assert out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous()


def _stage2_step_logs(**fields) -> dict[str, torch.Tensor]:
    """One Stage-II step's logs with Recipe(stage2_skip=True, **fields): the same networks, data and noise every call."""
    n = 8
    torch.manual_seed(0)
    data = dict(images=torch.randint(0, 256, (n, 3, 152, 152), dtype=torch.uint8), embeddings=torch.randn(n, 10, 32),
                class_ids=torch.arange(n))
    r = stackgan.Recipe(stage2_skip=True, **fields)
    nets = stackgan.build(t_dim=32, gf=4, df=4, n_res=1, stage2_size=128, recipe=r)
    g1, g2, d2 = nets["G1"].eval().requires_grad_(False), nets["G2"], nets["D2"]
    step = stackgan.make_stackgan_step(g2, d2, torch.optim.Adam(g2.parameters()), torch.optim.Adam(d2.parameters()),
                                       out_size=128, G1=g1, recipe=r, **data)
    (batch,) = list(index_loader(n, 4).epoch(0))[:1]
    return step(batch, 0)


def test_stage2_consistency_pulls_stage2_toward_the_stage1_colours() -> None:
    losses = {w: _stage2_step_logs(stage2_consistency=w) for w in (0.0, 10.0)}  # only the weight differs
    assert torch.equal(losses[10.0]["loss_d"], losses[0.0]["loss_d"])  # D's update does not see the term
    assert losses[10.0]["loss_g"] > losses[0.0]["loss_g"]  # the L1 term enters G's loss


def test_stage2_sr_adds_a_paired_l1_term_on_real_birds_to_stage2s_loss_alone() -> None:
    logs = {w: _stage2_step_logs(stage2_sr=w) for w in (0.0, 1.0, 3.0)}  # only the weight differs
    assert torch.equal(logs[3.0]["loss_d"], logs[0.0]["loss_d"])  # D's update does not see the term
    term = logs[1.0]["loss_g"] - logs[0.0]["loss_g"]  # the L1 distance to the real birds, in [0, 2]
    assert 0.05 < term < 2
    torch.testing.assert_close(logs[3.0]["loss_g"] - logs[0.0]["loss_g"], 3 * term, rtol=1e-4, atol=1e-5)
    r = stackgan.Recipe(stage2_sr=3.0)
    assert "stage2_sr" not in stackgan.Recipe().as_dict() and "stage2_sr" not in r.stage1_dict()


def test_stage2_adversarial_weighs_the_terms_d_judges_and_zero_leaves_the_paired_terms_alone() -> None:
    logs = {w: _stage2_step_logs(stage2_adversarial=w, stage2_sr=1.0) for w in (1.0, 0.5, 0.0)}
    only_sr = _stage2_step_logs(stage2_adversarial=0.0, stage2_sr=1.0)["loss_g"]  # the paired L1 alone
    adversarial = logs[1.0]["loss_g"] - only_sr
    assert adversarial.abs() > 0.1 and 0 < only_sr < 2
    torch.testing.assert_close(logs[0.5]["loss_g"], only_sr + 0.5 * adversarial, rtol=1e-4, atol=1e-5)
    assert torch.equal(logs[0.0]["loss_d"], logs[1.0]["loss_d"])  # D trains as before
    assert "stage2_adversarial" not in stackgan.Recipe().as_dict()
    assert torch.equal(_stage2_step_logs()["loss_g"], _stage2_step_logs(stage2_adversarial=1.0)["loss_g"])


def test_stage2_image_skip_lets_the_upsampled_input_reach_the_full_resolution_features() -> None:
    torch.manual_seed(0)
    plain = stackgan.build(t_dim=8, gf=4, df=4, n_res=1, stage2_size=128, recipe="stable")["G2"]
    skip = stackgan.build(t_dim=8, gf=4, df=4, n_res=1, stage2_size=128,
                          recipe=stackgan.Recipe(**{**stackgan.RECIPES["stable"].__dict__, "stage2_image_skip": True}))["G2"]
    assert plain.refine is None and count_parameters(skip) == count_parameters(plain) + 2 * 9 * 8 * 8 + 9 * 3 * 8
    image, text = torch.rand(2, 3, 64, 64) * 2 - 1, torch.randn(2, 8)
    out = skip.eval()(image, text)[0]
    assert out.shape == (2, 3, 128, 128)
    feats = {}
    skip.refine.register_forward_hook(lambda m, inp, o: feats.update({"in": inp[0]}))  # returns None: output kept
    skip(image, text)
    base = torch.nn.functional.interpolate(image, size=128, mode="bicubic", align_corners=False)
    torch.testing.assert_close(feats["in"][:, -3:], base)  # the last three input channels are the up-sampled image
    assert "stage2_image_skip" not in stackgan.Recipe().as_dict()


def test_stage2_sr_branch_starts_at_zero_sharpens_at_the_input_resolution_and_needs_the_skip() -> None:
    stable = stackgan.RECIPES["stable"].__dict__
    torch.manual_seed(0)
    plain = stackgan.build(t_dim=16, gf=4, df=4, n_res=1, stage2_size=128, recipe=stackgan.Recipe(
        **{**stable, "stage2_sr_branch": 0, "stage2_sr_lr": 1.0, "stage2_sr_paired": False}))["G2"].eval()
    assert plain.sr_branch is None
    torch.manual_seed(0)
    g2 = stackgan.build(t_dim=16, gf=4, df=4, n_res=1, stage2_size=128,
                        recipe=stackgan.Recipe(**{**stable, "stage2_sr_branch": 8}))["G2"].eval()
    image, text = torch.rand(2, 3, 64, 64) * 2 - 1, torch.randn(2, 16)
    torch.manual_seed(1)
    ref = plain(image, text)[0]
    torch.manual_seed(1)
    torch.testing.assert_close(g2(image, text)[0], ref)  # its last conv starts at zero: Stage-II as without it
    convs = [m for m in g2.sr_branch if isinstance(m, torch.nn.Conv2d)]
    assert convs[-1].out_channels == 3 * 2 * 2 and isinstance(g2.sr_branch[-1], torch.nn.PixelShuffle)  # 64 -> 128
    with torch.no_grad():
        convs[-1].bias.fill_(0.1)  # a branch that paints: the residual (in atanh space) moves by its output
    torch.manual_seed(1)
    moved = g2(image, text)[0]
    inside = (moved.abs() < 0.99) & (ref.abs() < 0.99)  # (where neither is clamped near +-1)
    torch.testing.assert_close((torch.atanh(moved) - torch.atanh(ref))[inside], torch.full_like(ref, 0.1)[inside],
                               atol=2e-2, rtol=0)
    assert inside.float().mean() > 0.9
    assert "stage2_sr_branch" not in stackgan.Recipe().as_dict()
    with pytest.raises(ValueError, match="stage2_skip"):
        stackgan.Recipe(stage2_sr_branch=8)


def test_stage2_sr_paired_branch_learns_from_the_paired_term_alone() -> None:
    stable = stackgan.RECIPES["stable"].__dict__
    g2 = stackgan.build(t_dim=16, gf=4, df=4, n_res=1, stage2_size=128,
                        recipe=stackgan.Recipe(**{**stable, "stage2_sr_branch": 8, "stage2_sr_paired": True}))["G2"]
    image, text = torch.rand(2, 3, 64, 64) * 2 - 1, torch.randn(2, 16)
    last = [m for m in g2.sr_branch if isinstance(m, torch.nn.Conv2d)][-1]
    g2(image, text)[0].sum().backward()  # a fake's path: the branch's output is detached
    assert last.weight.grad is None and g2.to_img.weight.grad is not None
    g2(image, text, paired=True)[0].sum().backward()  # the paired super-resolution term's path
    assert last.weight.grad is not None and last.weight.grad.abs().sum() > 0


def test_stage2_sr_lr_gives_the_branch_its_own_learning_rate(monkeypatch, tmp_path) -> None:
    import hwlib.train

    stable = stackgan.RECIPES["stable"].__dict__
    recipe = stackgan.Recipe(**{**stable, "stage2_sr_branch": 8, "stage2_sr_lr": 5.0})
    nets = stackgan.build(t_dim=16, gf=4, df=4, n_res=1, stage2_size=128, recipe=recipe)
    groups = []

    class Stop(Exception):
        pass

    def adam(params, lr, betas):
        groups.append((list(params), lr))
        if len(groups) == 2:
            raise Stop

    monkeypatch.setattr(hwlib.train, "adam", adam)
    with pytest.raises(Stop):
        stackgan.train_stage(nets["G2"], nets["D2"], images=torch.zeros(2, 3, 152, 152, dtype=torch.uint8),
                             embeddings=torch.randn(2, 10, 16), class_ids=torch.arange(2), out_size=128, epochs=1,
                             batch_size=2, run_dir=tmp_path, lr=2e-4, G1=nets["G1"], recipe=recipe)
    (g_groups, lr), _ = groups
    branch = {id(p) for p in nets["G2"].sr_branch.parameters()}
    assert lr == 2e-4 and "lr" not in g_groups[0] and g_groups[1]["lr"] == 1e-3
    assert {id(p) for p in g_groups[1]["params"]} == branch and not branch & {id(p) for p in g_groups[0]["params"]}
    assert len(g_groups[0]["params"]) + len(branch) == len(list(nets["G2"].parameters()))


def test_stage2_sr_halving_false_keeps_the_branch_rate_while_the_rest_halves(tmp_path) -> None:
    stable = stackgan.RECIPES["stable"].__dict__
    for halving, branch_lr in ((True, 1e-3 / 8), (False, 1e-3)):
        torch.manual_seed(0)
        recipe = stackgan.Recipe(**{**stable, "stage2_sr_branch": 8, "stage2_sr_lr": 5.0, "stage2_sr_halving": halving})
        nets = stackgan.build(t_dim=16, gf=4, df=4, n_res=1, stage2_size=128, recipe=recipe)
        run_dir = tmp_path / str(halving)
        stackgan.train_stage(nets["G2"], nets["D2"], images=torch.randint(0, 256, (4, 3, 152, 152), dtype=torch.uint8),
                             embeddings=torch.randn(4, 10, 16), class_ids=torch.arange(4), out_size=128, epochs=3,
                             batch_size=2, run_dir=run_dir, lr=2e-4, lr_decay_epochs=1, G1=nets["G1"].eval(),
                             recipe=recipe, z_dim=100, progress=False, labels=torch.randint(-1, 10, (4, 10, 4)))
        state = torch.load(sorted(run_dir.glob("ckpt_*.pt"))[-1], weights_only=True)
        lrs = [g["lr"] for g in state["optimizers"]["G"]["param_groups"]]
        assert lrs == pytest.approx([2e-4 / 8, branch_lr]) and state["optimizers"]["D"]["param_groups"][0]["lr"] == pytest.approx(2e-4 / 8)
    assert "stage2_sr_halving" not in stackgan.Recipe().as_dict()


def test_stage2_trains_without_recipe_novel_and_part_teacher_stage1_fields() -> None:
    stable = stackgan.RECIPES["stable"].__dict__
    recipe = stackgan.Recipe(**{**stable, "novel": 1.0, "part_teacher": 1.0})
    nets = stackgan.build(t_dim=16, gf=4, df=4, n_res=1, stage2_size=128, recipe=recipe)
    g2, d2 = nets["G2"], nets["D2"]
    step = stackgan.make_stackgan_step(g2, d2, torch.optim.Adam(g2.parameters()), torch.optim.Adam(d2.parameters()),
                                       images=torch.randint(0, 256, (4, 3, 152, 152), dtype=torch.uint8),
                                       embeddings=torch.randn(4, 10, 16), class_ids=torch.arange(4), out_size=128,
                                       G1=nets["G1"].eval(), recipe=recipe, labels=torch.randint(-1, 10, (4, 10, 4)))
    logs = step((torch.arange(4),), 0)  # no novel= captions nor teacher= needed: Stage-II ignores the Stage-I fields
    assert "novel_g" not in logs and "teacher" not in logs and torch.isfinite(logs["loss_g"])


def test_real_detail_scores_stage2_against_real_birds_and_bicubic(tmp_path) -> None:
    from fixtures_cub import make_cub_fixture

    from hwlib.data import cub

    split = cub.open_birds(make_cub_fixture(tmp_path / "cub"), "train")
    torch.manual_seed(0)
    g2 = stackgan.build(t_dim=split.embeddings.shape[-1], gf=4, df=4, n_res=1, stage2_size=128, recipe="stable")["G2"]
    torch.manual_seed(1)  # (Stage-II's conditioning augmentation draws its noise)
    out = stackgan.real_detail(g2, split, 128, n=3, keep_low_=True)
    assert set(out) == {"hf_error_stage2", "hf_error_bicubic"} and g2.training
    assert 0.5 < out["hf_error_bicubic"] < 1.5 and out["hf_error_stage2"] > 0  # bicubic: about no detail
    decoded = cub.center_crop(split.images(128 * 76 // 64, np.arange(3)), 128)  # the caller's own crops: same scores
    torch.manual_seed(1)
    assert stackgan.real_detail(g2, split, 128, n=3, keep_low_=True, real=decoded) == out
    high, up = stackgan.refine_real(g2, decoded, torch.from_numpy(split.embeddings[:3, 0]))
    assert high.shape == up.shape == decoded.shape and g2.training
    torch.testing.assert_close(up, torch.nn.functional.interpolate(torch.nn.functional.adaptive_avg_pool2d(decoded, 64), size=128,
                                                                    mode="bicubic", align_corners=False).clamp(-1, 1))


def test_train_stage_keeps_networks_and_ema_channels_last(tmp_path) -> None:
    from hwlib.train import EMA

    torch.manual_seed(0)
    g, d = stackgan.build_stage1(32, gf=4, df=4, recipe="stable")
    ema = EMA(g, 0.99)
    stackgan.train_stage(g, d, images=torch.randint(0, 256, (8, 3, 76, 76), dtype=torch.uint8),
                         embeddings=torch.randn(8, 10, 32), class_ids=torch.arange(8), labels=torch.randint(-1, 10, (8, 10, 4)), out_size=64, epochs=1,
                         novel=(torch.randn(5, 32), torch.randint(-1, 10, (5, 4))),
                         batch_size=4, run_dir=tmp_path, recipe="stable", ema=ema, progress=False)
    for net in (g, d, ema.module):
        conv = next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d))
        assert conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_stage1_dict_leaves_out_the_stage2_fields() -> None:
    r = stackgan.RECIPES["stable"]
    assert "stage2_skip" not in r.stage1_dict() and r.stage1_dict()["contrastive"] == r.contrastive
    assert stackgan.Recipe(stage2_consistency=3.0).stage1_dict() == stackgan.Recipe().stage1_dict()
    # a field added later is left out at the value that reproduces older runs, so their checkpoints stay valid
    assert "matcher" not in stackgan.Recipe().as_dict() and stackgan.Recipe(matcher=2.0).stage1_dict()["matcher"] == 2.0


def test_hardest_negatives_pick_the_closest_caption_of_another_class():
    text = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.8, 0.6], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 1, 2])
    pick, valid = stackgan.hardest_negatives(text, labels)
    assert pick.tolist() == [2, 2, 1, 2] and valid.all()  # never the same class, even when closer (row 0: row 1)
    _, valid = stackgan.hardest_negatives(text[:2], labels[:2])
    assert not valid.any()  # one class only: no wrong pair


def test_hardest_wrong_pairs_train_a_step():
    torch.manual_seed(0)
    G, D = stackgan.build_stage1(8, c_dim=4, z_dim=4, gf=4, df=4, recipe="stable")
    r = _stable(wrong="hardest", parts=0.0)
    images = torch.randint(0, 256, (6, 3, 76, 76), dtype=torch.uint8)
    opt_g, opt_d = torch.optim.Adam(G.parameters()), torch.optim.Adam(D.parameters())
    step = stackgan.make_stackgan_step(G, D, opt_g, opt_d, images=images, embeddings=torch.randn(6, 10, 8),
                                       class_ids=torch.tensor([1, 1, 2, 2, 3, 3]), out_size=64, kl_coef=1.0, z_dim=4,
                                       recipe=r)
    out = step((torch.arange(6),), 0)
    assert torch.isfinite(out["loss_d"]) and 0 < float(out["d_wrong"]) < 1


def test_swap_wrong_pairs_add_each_image_with_its_colour_swapped_caption():
    r = _stable(wrong="swap", parts=0.0)
    shift = stackgan.Recipe(**{**r.as_dict(), "wrong": "shift"})
    images = torch.randint(0, 256, (6, 3, 76, 76), dtype=torch.uint8)
    emb = torch.randn(6, 10, 8)

    def loss_d(recipe, swapped):
        torch.manual_seed(0)
        G, D = stackgan.build_stage1(8, c_dim=4, z_dim=4, gf=4, df=4, recipe=recipe)
        opt_g, opt_d = torch.optim.Adam(G.parameters()), torch.optim.Adam(D.parameters())
        step = stackgan.make_stackgan_step(G, D, opt_g, opt_d, images=images, embeddings=emb, class_ids=torch.arange(6),
                                           out_size=64, kl_coef=1.0, z_dim=4, recipe=recipe, swapped=swapped, amp=False)
        torch.manual_seed(1)
        return float(step((torch.arange(6),), 0)["loss_d"])

    # a caption without a colour word keeps its embedding: no near miss, the official shifted pairs alone
    assert loss_d(r, emb.clone()) == loss_d(shift, None)
    assert loss_d(r, emb + torch.randn_like(emb)) != loss_d(shift, None)
    with pytest.raises(ValueError, match="swapped"):
        loss_d(r, None)


def test_projection_map_scores_the_condition_at_each_position():
    torch.manual_seed(0)
    D = stackgan.StageD(64, c_dim=4, df=4, projection="map")
    h, cond = torch.randn(3, 32, 4, 4), torch.randn(3, 4)
    v = D.embed(cond).view(3, 32, 4, 4)
    expected = D.logit_uncond(h).view(-1) + (v * h).sum((1, 2, 3))
    torch.testing.assert_close(D.cond_logit(h, cond), expected)
    moved = h.roll(1, dims=3)  # the same features elsewhere: a pooled projection could not tell
    assert not torch.allclose(D.cond_logit(moved, cond) - D.logit_uncond(moved).view(-1), expected - D.logit_uncond(h).view(-1))
    with pytest.raises(ValueError, match="projection"):
        stackgan.Recipe(projection="pooled")


def test_generate_ca_noise_zero_samples_the_conditioning_mean():
    torch.manual_seed(0)
    G, _ = stackgan.build_stage1(8, c_dim=4, z_dim=4, gf=4, df=4)
    text, z = torch.randn(5, 8), torch.randn(5, 4)
    mean_a = stackgan.generate(G, text, z=z, ca_noise=0.0)[0]
    mean_b = stackgan.generate(G, text, z=z, ca_noise=0.0)[0]
    sampled = stackgan.generate(G, text, z=z)[0]
    torch.testing.assert_close(mean_a, mean_b)  # c = mu: the same images for the same z
    assert not torch.allclose(sampled, mean_a) and G.ca.noise == 1.0  # training samples c again afterwards


def test_standing_stats_re_estimate_both_stages_batchnorm():
    torch.manual_seed(0)
    nets = stackgan.build(8, c_dim=4, z_dim=4, gf=4, df=4, stage2_size=64)
    G1, G2 = nets["G1"].eval(), nets["G2"].eval()
    emb = torch.randn(6, 10, 8)
    for G, kw in ((G1, {}), (G2, {"G1": G1})):
        bn = next(m for m in G.modules() if isinstance(m, torch.nn.BatchNorm2d))
        stackgan.standing_stats(G, emb, n_batches=2, batch_size=4, **kw)
        assert int(bn.num_batches_tracked) == 2 and not torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))
        assert not G.training


def test_critic_ranking_reports_both_heads_and_leaves_d_alone():
    torch.manual_seed(0)
    G, D = stackgan.build_stage1(8, c_dim=4, z_dim=4, gf=4, df=4, recipe="stable")
    D.eval()
    before = {k: v.clone() for k, v in D.state_dict().items()}
    images, true = torch.rand(6, 3, 64, 64) * 2 - 1, torch.randn(6, 8)
    out = stackgan.critic_ranking(G, D, images, true, {"crown": torch.randn(6, 8), "same": true.clone()})
    assert set(out) == {"cond", "match"} and all(0 <= v <= 1 for r in out.values() for v in r.values())
    assert out["cond"]["same"] == 0.0  # the same caption never ranks above itself
    assert not D.training and all(torch.equal(before[k], v) for k, v in D.state_dict().items())


def _stable(**fields) -> stackgan.Recipe:
    """The stable recipe less its novel captions (they need novel= data; pinned on their own below), ``fields`` overridden."""
    return stackgan.Recipe(**{**stackgan.get_recipe("stable").as_dict(), "novel": 0.0, **fields})


def _stable_step_logs(labels: torch.Tensor | None = None, novel_set: tuple | None = None, teacher=None, batch: int = 6,
                      **fields) -> dict[str, float]:
    """One seeded step of a tiny Stage-I with :func:`_stable` ``(**fields)`` on the first ``batch`` of its 6 birds: its logs."""
    gen = torch.Generator().manual_seed(5)
    images = torch.randint(0, 256, (6, 3, 76, 76), dtype=torch.uint8, generator=gen)
    emb = torch.randn(6, 10, 8, generator=gen)
    torch.manual_seed(0)
    r = _stable(**fields)
    if labels is None and r.parts and not fields.get("parts"):  # stable's own part head: some labels
        labels = torch.randint(-1, 10, (6, 10, 4), generator=gen)
    G, D = stackgan.build_stage1(8, c_dim=4, z_dim=4, gf=4, df=4, recipe=r)
    opt_g, opt_d = torch.optim.Adam(G.parameters()), torch.optim.Adam(D.parameters())
    step = stackgan.make_stackgan_step(G, D, opt_g, opt_d, images=images, embeddings=emb, class_ids=torch.arange(6),
                                       out_size=64, kl_coef=1.0, z_dim=4, recipe=r, amp=False, labels=labels,
                                       novel=novel_set, teacher=teacher)
    torch.manual_seed(1)
    return {k: float(v) for k, v in step((torch.arange(batch),), 0).items()}


def test_part_loss_averages_over_the_named_parts_only():
    logits = torch.zeros(2, 4, 10)
    logits[0, 0, 3] = 5.0
    labels = torch.tensor([[3, -1, -1, -1], [-1, -1, -1, -1]])
    expected = torch.nn.functional.cross_entropy(logits[0, :1], labels[0, :1])
    torch.testing.assert_close(stackgan.part_loss(logits, labels), expected)
    assert float(stackgan.part_loss(logits, torch.full((2, 4), -1))) == 0.0  # nothing named: no term, no NaN


def test_parts_head_names_each_part_colour_and_keeps_the_other_terms():
    labels = torch.randint(-1, 10, (6, 10, 4), generator=torch.Generator().manual_seed(2))
    plain = _stable_step_logs(parts=0.0)
    parts, twice = _stable_step_logs(labels=labels, parts=1.0), _stable_step_logs(labels=labels, parts=2.0)
    fakes = _stable_step_logs(labels=labels, parts=1.0, parts_fakes=True)
    assert "parts_d" not in plain and 0 < parts["parts_d"] < 10 and 0 < parts["parts_g"] < 10
    assert abs(parts["parts_d"] - math.log(10)) < 0.5  # ten colours, near-uniform at the official initialisation
    # the same caption picks and the same D before its update: only the weight of the part terms differs
    assert twice["d_real"] == parts["d_real"] and twice["parts_d"] == parts["parts_d"]
    assert twice["loss_d"] > parts["loss_d"]
    assert fakes["parts_d"] != parts["parts_d"]  # D also labels G's parts "drawn by G"
    G, D = stackgan.build_stage1(8, c_dim=4, z_dim=4, gf=4, df=4, recipe=stackgan.Recipe(parts=1.0, parts_fakes=True))
    assert D.part_logits(torch.randn(3, 32, 4, 4)).shape == (3, 4, 11)  # ten colours and "drawn by G"
    assert "parts" not in stackgan.Recipe().as_dict()  # older runs keep their identity
    with pytest.raises(ValueError, match="labels"):
        _stable_step_logs(parts=1.0)


def test_contrastive_fakes_adds_g_images_as_negatives_for_d_only():
    plain, with_fakes = _stable_step_logs(contrastive_fakes=False), _stable_step_logs(contrastive_fakes=True)
    assert with_fakes["match_d"] != plain["match_d"]  # D's contrastive loss now also ranks G's images
    assert "contrastive_fakes" not in stackgan.Recipe().as_dict()  # older runs keep their identity


def test_caption_mix_conditions_on_the_mean_of_several_captions():
    r = _stable(caption_mix=10, parts=0.0)
    G, D = stackgan.build_stage1(8, c_dim=4, z_dim=4, gf=4, df=4, recipe=r)
    seen = []
    G.ca.register_forward_hook(lambda m, inp, out: seen.append(inp[0].detach()))
    emb = torch.randn(6, 10, 8)
    opt_g, opt_d = torch.optim.Adam(G.parameters()), torch.optim.Adam(D.parameters())
    kw = dict(images=torch.randint(0, 256, (6, 3, 76, 76), dtype=torch.uint8), embeddings=emb,
              class_ids=torch.arange(6), out_size=64, kl_coef=1.0, z_dim=4, recipe=r, amp=False)
    stackgan.make_stackgan_step(G, D, opt_g, opt_d, **kw)((torch.arange(6),), 0)
    torch.testing.assert_close(seen[0], emb.mean(1))  # all ten captions: their mean
    with pytest.raises(ValueError, match="caption_mix"):
        stackgan.make_stackgan_step(G, D, opt_g, opt_d, swapped=emb, **kw)


def test_contrastive_g_zero_keeps_ds_head_and_drops_gs_term():
    both, d_only = _stable_step_logs(contrastive_g=None), _stable_step_logs(contrastive_g=0.0)
    assert both["match_d"] == d_only["match_d"]  # D's update is the same
    assert abs(both["loss_g"] - d_only["loss_g"] - both["match_g"]) < 1e-4  # G's loss lacks exactly the term


def test_extra_half_batches_train_g_at_a_dry_runs_batch_of_2():
    """The novel captions' and the mode-seeking term's half batches keep two rows at batch 2 (a dry run's), so that G's
    batch norm trains on them: with one row it raised "Expected more than 1 value per channel"."""
    gen = torch.Generator().manual_seed(3)
    labels = torch.randint(-1, 10, (6, 10, 4), generator=gen)
    novel = (torch.randn(20, 8, generator=gen), torch.randint(-1, 10, (20, 4), generator=gen))
    logs = _stable_step_logs(labels=labels, parts=1.0, novel=1.0, mode_seeking=1.0, novel_set=novel, batch=2)
    assert 0 < logs["novel_g"] < 20 and all(np.isfinite(v) for v in logs.values())


def test_novel_captions_add_a_second_batch_for_g_and_d():
    gen = torch.Generator().manual_seed(3)
    labels = torch.randint(-1, 10, (6, 10, 4), generator=gen)
    novel = (torch.randn(20, 8, generator=gen), torch.randint(-1, 10, (20, 4), generator=gen))
    parts = _stable_step_logs(labels=labels, parts=1.0)
    both = _stable_step_logs(labels=labels, parts=1.0, novel=1.0, novel_set=novel)
    assert "novel_g" not in parts and 0 < both["novel_g"] < 20
    assert both["loss_d"] != parts["loss_d"]  # D also calls G's images of the novel captions fake
    with pytest.raises(ValueError, match="novel"):
        _stable_step_logs(labels=labels, parts=1.0, novel=1.0)  # no captions given
    with pytest.raises(ValueError, match="novel"):
        _stable_step_logs(parts=0.0, novel=1.0, novel_set=novel)  # no part head


def test_part_teacher_adds_a_frozen_readers_colour_loss_to_g_without_the_crown():
    from hwlib.models.attributes import PartReader

    gen = torch.Generator().manual_seed(3)
    labels = torch.randint(-1, 10, (6, 10, 4), generator=gen)
    novel = (torch.randn(20, 8, generator=gen), torch.randint(-1, 10, (20, 4), generator=gen))
    teacher = PartReader(width=4)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    plain = _stable_step_logs(labels=labels, parts=1.0, novel=1.0, novel_set=novel)
    taught = _stable_step_logs(labels=labels, parts=1.0, novel=1.0, novel_set=novel, part_teacher=1.0, teacher=teacher)
    assert "teacher" not in plain and 0 < taught["teacher"] < 10
    assert taught["loss_d"] == plain["loss_d"]  # D's update is the same; only G's loss gains the term
    assert abs(taught["loss_g"] - plain["loss_g"] - taught["teacher"]) < 1e-4
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())  # frozen, BN statistics too
    crown_only = labels.clone()
    crown_only[..., [0, 1, 3]] = -1  # captions that name the crown alone: nothing for the teacher to read
    novel_crown = (novel[0], novel[1].clone().index_fill_(1, torch.tensor([0, 1, 3]), -1))
    assert _stable_step_logs(labels=crown_only, parts=1.0, novel=1.0, novel_set=novel_crown, part_teacher=1.0,
                             teacher=teacher)["teacher"] == 0.0
    assert "part_teacher" not in stackgan.Recipe().as_dict()  # older runs keep their identity
    with pytest.raises(ValueError, match="part_teacher"):
        _stable_step_logs(labels=labels, parts=1.0, part_teacher=1.0)  # no teacher given


def test_novel_focus_draws_captions_in_proportion_to_their_latest_part_loss():
    focus = stackgan.NovelFocus(4)
    assert torch.allclose(focus.loss, torch.full((4,), math.log(10)))  # every caption at chance: all come first
    focus.update(torch.tensor([0, 1, 2]), torch.tensor([0.0, 0.0, 0.0]))  # G draws three of them perfectly
    torch.manual_seed(0)
    hard = focus.pick(400, 1.0)
    assert (hard == 3).float().mean() > 0.99  # the one still at chance
    mixed = focus.pick(400, 0.5)
    assert (mixed[:200] == 3).float().mean() > 0.99 and 0.1 < (mixed[200:] == 3).float().mean() < 0.4  # the rest uniformly
    assert len(focus.pick(4, 0.0)) == 4
    logits = torch.zeros(2, 4, 10)
    logits[0, 0, 3] = 5.0
    per_row = stackgan.part_loss(logits, torch.tensor([[3, -1, -1, -1], [1, 2, -1, -1]]), per_row=True)
    assert per_row[0] < 0.1 and per_row[1] == pytest.approx(math.log(10))


def test_novel_focus_remembers_each_step_and_is_checkpointed(tmp_path) -> None:
    gen = torch.Generator().manual_seed(3)
    novel = (torch.randn(20, 32, generator=gen), torch.randint(-1, 10, (20, 4), generator=gen))
    r = _stable(novel=1.0, novel_focus=0.5)
    with pytest.raises(ValueError, match="novel_focus"):
        _stable_step_logs(labels=torch.randint(-1, 10, (6, 10, 4), generator=gen), novel=1.0, novel_focus=0.5,
                          novel_set=(novel[0][:, :8], novel[1]))  # no NovelFocus given
    torch.manual_seed(0)
    g, d = stackgan.build_stage1(32, gf=4, df=4, recipe=r)
    stackgan.train_stage(g, d, images=torch.randint(0, 256, (8, 3, 76, 76), dtype=torch.uint8),
                         embeddings=torch.randn(8, 10, 32), class_ids=torch.arange(8),
                         labels=torch.randint(-1, 10, (8, 10, 4)), out_size=64, epochs=1, novel=novel,
                         batch_size=4, run_dir=tmp_path, recipe=r, progress=False)
    from hwlib.checkpoints import Checkpointer
    memory = Checkpointer(tmp_path).load_latest()["modules"]["novel_focus"]["loss"]
    assert memory.shape == (20,) and (memory < math.log(10) - 1e-4).any()  # two steps of two captions remembered


def test_bicubic_up_is_pytorchs_bicubic_as_two_matrix_products():
    gen = torch.Generator().manual_seed(0)
    interpolate = torch.nn.functional.interpolate
    for s, size in ((16, 64), (7, 29), (64, 256)):
        x = torch.rand(2, 3, s, s, generator=gen) * 2 - 1
        torch.testing.assert_close(stackgan.bicubic_up(x, size), interpolate(x, size=size, mode="bicubic",
                                   align_corners=False), atol=1e-6, rtol=0)
    x = torch.rand(2, 3, 8, 8, generator=gen, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # float32 inside autocast too
        out = stackgan.bicubic_up(x.bfloat16(), 32)
    assert out.dtype == torch.float32
    out.square().sum().backward()
    ref = x.detach().clone().requires_grad_(True)
    interpolate(ref.bfloat16().float(), size=32, mode="bicubic", align_corners=False).square().sum().backward()
    torch.testing.assert_close(x.grad, ref.grad, atol=1e-4, rtol=1e-4)


def test_keep_low_pools_back_to_the_low_resolution_image():
    gen = torch.Generator().manual_seed(0)
    pool = torch.nn.functional.avg_pool2d
    low = torch.rand(2, 3, 16, 16, generator=gen) * 1.2 - 0.6
    smooth = torch.nn.functional.interpolate(low, scale_factor=4, mode="bicubic", align_corners=False)
    high = smooth + 0.1 * torch.randn(2, 3, 64, 64, generator=gen)  # a refinement: the input up-sampled plus detail
    out = stackgan.keep_low(high, low)
    torch.testing.assert_close(pool(out, 4), low, atol=1e-5, rtol=0)
    detail = high - torch.nn.functional.interpolate(pool(high, 4), scale_factor=4)  # zero mean in every block
    consistent = torch.nn.functional.interpolate(low, scale_factor=4) + 0.3 * detail  # in range
    torch.testing.assert_close(stackgan.keep_low(consistent, low), consistent, atol=1e-5, rtol=0)  # nothing to correct
    extreme = stackgan.keep_low(torch.rand(2, 3, 64, 64, generator=gen) * 2 - 1, low.sign() * 0.97)
    assert extreme.abs().max() <= 1  # in range, and still pooling back where the clamp bites
    torch.testing.assert_close(pool(extreme, 4), low.sign() * 0.97, atol=1e-5, rtol=0)
    from hwlib.metrics import high_frequency_energy

    smooth_low = torch.nn.functional.interpolate(low[:, :, ::4, ::4], size=16, mode="bilinear", align_corners=False)
    up = torch.nn.functional.interpolate(smooth_low, scale_factor=4, mode="bicubic", align_corners=False)
    kept = stackgan.keep_low(up, smooth_low)  # a smooth mismatch gets a smooth correction, no block edges
    assert abs(high_frequency_energy(kept) - high_frequency_energy(up)) < 0.1 * high_frequency_energy(up)
    with pytest.raises(ValueError, match="whole scale"):
        stackgan.keep_low(high, torch.zeros(2, 3, 24, 24))


def test_stage2_keep_low_keeps_stage1s_colours_by_construction():
    torch.manual_seed(0)
    r = stackgan.Recipe(**{**stackgan.get_recipe("stable").as_dict(), "stage2_keep_low": True})
    G2 = stackgan.build(8, c_dim=4, z_dim=4, gf=4, df=4, n_res=1, stage2_size=128, recipe=r)["G2"].eval()
    low = torch.nn.functional.interpolate(torch.rand(3, 3, 16, 16) * 1.2 - 0.6, size=64, mode="bicubic")
    high = G2(low, torch.randn(3, 8))[0]
    assert high.shape == (3, 3, 128, 128)
    torch.testing.assert_close(torch.nn.functional.interpolate(high, size=64, mode="area"), low, atol=1e-4, rtol=0)
    assert "stage2_keep_low" not in stackgan.Recipe().as_dict()  # older runs keep their identity


def test_generate_keep_low_projects_stage2_onto_stage1():
    torch.manual_seed(0)
    nets = stackgan.build(8, c_dim=4, z_dim=4, gf=4, df=4, n_res=1, stage2_size=128, recipe="stable")
    with torch.no_grad():  # away from the official initialisation's near-zero images
        for p in nets["G1"].parameters():
            p.add_(torch.randn_like(p) * 0.1)
        for p in nets["G2"].parameters():
            p.add_(torch.randn_like(p) * 0.02)
    text, z = torch.randn(3, 8), torch.randn(3, 4)
    low, raw = stackgan.generate(nets["G1"], text, nets["G2"], z=z, ca_noise=0)
    low2, kept = stackgan.generate(nets["G1"], text, nets["G2"], z=z, ca_noise=0, keep_low=True)
    torch.testing.assert_close(low2, low)
    torch.testing.assert_close(torch.nn.functional.avg_pool2d(kept, 2), low, atol=1e-4, rtol=0)
    assert not torch.allclose(torch.nn.functional.interpolate(raw, size=64, mode="area"), low, atol=1e-3)


def test_mode_seeking_rewards_g_for_drawing_another_bird_from_fresh_noise():
    plain, seeking = _stable_step_logs(), _stable_step_logs(mode_seeking=1.0)
    assert "ms_spread" not in plain and seeking["ms_spread"] > 0
    term = 1.0 / (seeking["ms_spread"] + 1e-5)  # the rest of G's loss moves a little: the extra draw shifts the RNG
    assert abs(seeking["loss_g"] - plain["loss_g"] - term) < 0.1 * term
    assert "mode_seeking" not in stackgan.Recipe().as_dict()  # older runs keep their identity


def test_part_scores_sum_the_log_probability_of_the_asked_colours_only():
    torch.manual_seed(0)
    _, D = stackgan.build_stage1(8, c_dim=4, z_dim=4, gf=4, df=4, recipe="stable")
    images = torch.rand(3, 3, 64, 64) * 2 - 1
    labels = torch.tensor([[2, -1, -1, -1], [2, 5, -1, -1], [-1, -1, -1, -1]])
    logp = torch.log_softmax(D.part_logits(D.features(images)).float(), -1)
    scores = stackgan.part_scores(D, images, labels)
    torch.testing.assert_close(scores, torch.stack([logp[0, 0, 2], logp[1, 0, 2] + logp[1, 1, 5], torch.tensor(0.0)]))
    p = logp.exp()  # "expected": the expected number of asked parts drawn as asked
    torch.testing.assert_close(stackgan.part_scores(D, images, labels, "expected"),
                               torch.stack([p[0, 0, 2], p[1, 0, 2] + p[1, 1, 5], torch.tensor(0.0)]))
    with pytest.raises(ValueError, match="joint"):
        stackgan.part_scores(D, images, labels, "product")


def test_the_two_rerank_scores_disagree_where_one_asked_part_is_rarely_drawn():
    """Two candidates: one draws body and wing as asked and misses the belly badly, one draws all three poorly. The
    joint score keeps the second (its worst part is less bad), the expected count of parts drawn as asked the first."""
    class Judge(torch.nn.Module):
        def read_parts(self, images):  # (B, 4 parts, 3 colours): p(asked colour 0) per part from the images' first pixel
            p = images[:, :, 0, 0].clamp(1e-6, 1 - 1e-6)  # (B, 3): body, wing, belly
            asked = torch.stack([p[:, 0], p[:, 1], torch.full_like(p[:, 0], 0.5), p[:, 2]], 1)
            return torch.stack([asked.log(), (1 - asked).log(), (1 - asked).log() - 9], -1)
    images = torch.zeros(2, 3, 4, 4)
    images[0, :, 0, 0] = torch.tensor([0.9, 0.9, 0.01])
    images[1, :, 0, 0] = torch.tensor([0.3, 0.3, 0.2])
    labels = torch.tensor([[0, 0, -1, 0]] * 2)
    assert stackgan.part_scores(Judge(), images, labels).argmax() == 1
    assert stackgan.part_scores(Judge(), images, labels, "expected").argmax() == 0


def test_generate_rerank_keeps_each_captions_best_candidate_by_the_part_head():
    torch.manual_seed(0)
    G, D = stackgan.build_stage1(8, c_dim=4, z_dim=4, gf=4, df=4, recipe="stable")
    with torch.no_grad():  # away from the official initialisation's near-zero images
        for p in G.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    text, z, labels = torch.randn(5, 8), torch.randn(5, 4), torch.randint(0, 10, (5, 4))
    labels[4] = -1  # a caption that asks for nothing keeps its first candidate, z
    plain = stackgan.generate(G, text, z=z, ca_noise=0)[0]
    torch.manual_seed(1)
    best = stackgan.generate(G, text, z=z, ca_noise=0, rerank=6, judge=D, labels=labels, batch_size=2)[0]
    assert D.training  # D's mode is restored
    torch.manual_seed(1)  # the candidates generate draws: z first, then fresh noise per batch of 2 captions
    extra = [torch.randn(5 * len(b), 4) for b in torch.arange(5).split(2)]
    cands = torch.stack([plain] + [stackgan.generate(G, text, z=torch.cat([e[j * len(e) // 5:(j + 1) * len(e) // 5]
                                                                          for e in extra]), ca_noise=0)[0]
                                   for j in range(5)])  # (6, 5, 3, 64, 64)
    D.eval()
    scores = torch.stack([stackgan.part_scores(D, c, labels) for c in cands])  # (6, 5)
    torch.testing.assert_close(best, cands[scores.argmax(0), torch.arange(5)], atol=1e-5, rtol=0)
    torch.testing.assert_close(best[4], plain[4])
    assert (scores.argmax(0)[:4] > 0).any()  # some caption changed its bird
    with pytest.raises(ValueError, match="part head"):
        stackgan.generate(G, text, rerank=4)


def test_generate_ca_noise2_sets_stage2s_noise_apart_from_stage1s():
    torch.manual_seed(0)
    nets = stackgan.build(8, c_dim=4, z_dim=4, gf=4, df=4, n_res=1, stage2_size=128, recipe="stable")
    with torch.no_grad():
        for p in nets["G2"].parameters():
            p.add_(torch.randn_like(p) * 0.05)
    text, z = torch.randn(3, 8), torch.randn(3, 4)
    low_a, high_a = stackgan.generate(nets["G1"], text, nets["G2"], z=z, ca_noise=0)  # Stage II follows: its mean too
    low_b, high_b = stackgan.generate(nets["G1"], text, nets["G2"], z=z, ca_noise=0)
    low_c, high_c = stackgan.generate(nets["G1"], text, nets["G2"], z=z, ca_noise=0, ca_noise2=1.0)
    torch.testing.assert_close(high_a, high_b)
    torch.testing.assert_close(low_c, low_a)  # Stage I still at its mean
    assert not torch.allclose(high_c, high_a) and nets["G2"].ca.noise == 1.0


def test_stage2_diffaug_sets_stage2s_augmentation_apart_from_stage1s(monkeypatch) -> None:
    import hwlib.gan

    seen: list[str] = []
    real_aug = hwlib.gan.diff_augment
    monkeypatch.setattr(hwlib.gan, "diff_augment", lambda x, policy="": seen.append(policy) or real_aug(x, policy))
    n, r = 8, stackgan.Recipe(diffaug="translation,cutout", stage2_diffaug="")
    data = dict(embeddings=torch.randn(n, 10, 32), class_ids=torch.arange(n))
    torch.manual_seed(0)
    nets, frozen = (stackgan.build(t_dim=32, gf=4, df=4, n_res=1, stage2_size=128, recipe=r) for _ in range(2))
    g1, d1, g2, d2 = nets["G1"], nets["D1"], nets["G2"], nets["D2"]
    (batch,) = list(index_loader(n, 4).epoch(0))[:1]
    for g, d, kw in ((g1, d1, dict(images=torch.randint(0, 256, (n, 3, 76, 76), dtype=torch.uint8), out_size=64)),
                     (g2, d2, dict(images=torch.randint(0, 256, (n, 3, 152, 152), dtype=torch.uint8), out_size=128,
                                   G1=frozen["G1"].eval().requires_grad_(False)))):
        seen.clear()
        stackgan.make_stackgan_step(g, d, torch.optim.Adam(g.parameters()), torch.optim.Adam(d.parameters()),
                                    recipe=r, **data, **kw)(batch, 0)
        assert seen and set(seen) == ({"translation,cutout"} if "G1" not in kw else {""})
    assert "stage2_diffaug" not in stackgan.Recipe().as_dict() and "stage2_diffaug" not in r.stage1_dict()


def test_pair_birds_draws_each_pair_caption_in_order_from_the_seed() -> None:
    from hwlib.data import synthbirds

    torch.manual_seed(0)
    g, _ = stackgan.build_stage1(8, c_dim=4, z_dim=4, gf=4, df=4, recipe="stable")
    encode = lambda captions: np.stack([np.full(8, len(c) / 50.0, np.float32) for c in captions])  # a toy encoder
    birds = stackgan.pair_birds(g, encode, z_dim=4, seed=3, per_caption=2)
    assert birds.shape == (200, 3, 64, 64)
    text = torch.from_numpy(encode(synthbirds.pair_captions("belly"))).repeat_interleave(2, 0)
    z = torch.randn(200, 4, generator=torch.Generator().manual_seed(3))
    torch.manual_seed(3)
    torch.testing.assert_close(birds, stackgan.generate(g, text, z=z)[0])
    torch.manual_seed(99)  # the seed, not the global generator's state, decides the birds
    state = torch.random.get_rng_state()
    torch.testing.assert_close(stackgan.pair_birds(g, encode, z_dim=4, seed=3, per_caption=2), birds)
    assert torch.equal(torch.random.get_rng_state(), state)
    # caption_samples: z from seed, the CA noise from noise_seed, in captions' order
    few = synthbirds.pair_captions("belly")[:3]
    drawn = stackgan.caption_samples(g, few, encode, 4, 2, seed=5, noise_seed=7, ca_noise=2.0)
    torch.manual_seed(7)
    torch.testing.assert_close(drawn, stackgan.generate(g, torch.from_numpy(encode(few)).repeat_interleave(2, 0), ca_noise=2.0,
                                                        z=torch.randn(6, 4, generator=torch.Generator().manual_seed(5)))[0])


def test_g_slots_mixes_the_conditional_norm_per_pixel_and_starts_as_the_global_one():
    torch.manual_seed(0)
    plain = stackgan.Stage1G(t_dim=8, c_dim=4, z_dim=4, gf=2, cond_norm=True)
    torch.manual_seed(0)
    slots = stackgan.Stage1G(t_dim=8, c_dim=4, z_dim=4, gf=2, cond_norm=True, slots=3)
    text, z = torch.randn(5, 8), torch.randn(5, 4)
    plain.eval(), slots.eval()
    torch.testing.assert_close(slots(text, z)[0], plain(text, z)[0])  # zero-initialised: the same generator at start
    assert slots.film[0].out_features == 3 * plain.film[0].out_features and len(slots.where) == len(slots.up)
    with torch.no_grad():  # once the slots differ, the mix varies over the image: a per-pixel scale and shift
        for lin, conv in zip(slots.film, slots.where):
            lin.weight.normal_(), conv.weight.normal_()
    slots.train()
    out = slots(text, z)[0]
    out.sum().backward()
    assert slots.where[0].weight.grad.abs().sum() > 0 and out.shape == (5, 3, 64, 64)
    with pytest.raises(ValueError, match="g_slots"):
        stackgan.Stage1G(t_dim=8, c_dim=4, z_dim=4, gf=2, slots=3)
    assert "g_slots" not in stackgan.Recipe().as_dict()  # older runs keep their identity
    G, _ = stackgan.build_stage1(8, c_dim=4, z_dim=4, gf=2, df=4, recipe=stackgan.Recipe(g_cond_norm=True, g_slots=2))
    assert G.slots == 2


def test_g_part_attention_attends_over_the_captions_part_slots_and_starts_as_the_plain_generator():
    torch.manual_seed(0)
    plain = stackgan.Stage1G(t_dim=12, c_dim=4, z_dim=4, gf=2, cond_norm=True)
    torch.manual_seed(0)
    attn = stackgan.Stage1G(t_dim=12, c_dim=4, z_dim=4, gf=2, cond_norm=True, part_slots=2, part_dim=3)
    text, z = torch.randn(5, 12), torch.randn(5, 4)
    plain.eval(), attn.eval()
    torch.testing.assert_close(attn(text, z)[0], plain(text, z)[0])  # zero-initialised: the same generator at start
    assert attn.part_vectors(text).shape == (5, 2, 3)
    torch.testing.assert_close(attn.part_vectors(text).flatten(1), text[:, -6:])  # the tail, standardised (identity here)
    with torch.no_grad():
        for lin, conv in zip(attn.part_film, attn.part_where):
            lin.weight.normal_(), conv.weight.normal_()
    other = text.clone()
    other[:, -3:] += 1.0  # the last part's slot alone changes...
    assert not torch.allclose(attn(other, z)[0], attn(text, z)[0])  # ...and so does the image
    attn.train()
    out = attn(text, z)[0]
    out.sum().backward()
    assert attn.part_where[0].weight.grad.abs().sum() > 0 and attn.part_film[-1].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="text_parts"):
        stackgan.Stage1G(t_dim=8, c_dim=4, z_dim=4, gf=2, part_slots=4, part_dim=16)
    assert "g_part_attention" not in stackgan.Recipe().as_dict()  # older runs keep their identity
    r = stackgan.Recipe(g_part_attention=True)
    G, _ = stackgan.build_stage1(12, c_dim=4, z_dim=4, gf=2, df=4, recipe=r, text_parts=(2, 3))
    assert G.part_slots == 2 and G.part_dim == 3 and G.film is None
    assert G(text, z)[0].shape == (5, 3, 64, 64)  # without the conditional norm too
    # an embedding without part slots: nothing to attend to, the plain generator
    assert stackgan.build(12, c_dim=4, z_dim=4, gf=2, df=4, n_res=1, stage2_size=128, recipe=r)["G1"].part_film is None
    assert stackgan.build(12, c_dim=4, z_dim=4, gf=2, df=4, n_res=1, stage2_size=128, recipe=r,
                          text_parts=(2, 3))["G1"].part_slots == 2
