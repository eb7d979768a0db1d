"""GAN losses and the shared alternating update (hwlib.gan)."""
import math

import pytest
import torch
from torch import nn

from hwlib.gan import d_loss, g_loss, make_gan_step, matching_aware_d_loss
from hwlib.layout import is_channels_last


def test_losses_at_the_equilibrium_logit():
    zero = torch.zeros(8)
    assert math.isclose(d_loss(zero, zero).item(), 2 * math.log(2), rel_tol=1e-6)
    assert math.isclose(g_loss(zero).item(), math.log(2), rel_tol=1e-6)
    assert math.isclose(g_loss(zero, saturating=True).item(), -math.log(2), rel_tol=1e-6)
    assert math.isclose(matching_aware_d_loss(zero, zero, zero).item(), 2 * math.log(2), rel_tol=1e-6)
    # one-sided label smoothing: BCE against 0.9 at logit 0 is still log 2
    assert math.isclose(d_loss(zero, zero, real_label=0.9).item(), 2 * math.log(2), rel_tol=1e-6)


def test_saturating_gradient_vanishes_where_d_rejects_fakes():
    logits = torch.tensor([-10.0, -5.0, 0.0, 5.0], requires_grad=True)
    (g_sat,) = torch.autograd.grad(g_loss(logits, saturating=True) * 4, logits)
    (g_ns,) = torch.autograd.grad(g_loss(logits) * 4, logits)
    d = torch.sigmoid(logits.detach())
    # d/dl log(1 - sigmoid(l)) = -D ; d/dl -log sigmoid(l) = -(1 - D)
    torch.testing.assert_close(g_sat, -d)
    torch.testing.assert_close(g_ns, -(1 - d))
    assert g_sat[0].abs() < 1e-4 and g_ns[0].abs() > 0.99  # D(G(z)) ~ 0: only the non-saturating loss still pushes


class _Toy(nn.Module):
    def __init__(self, n_in: int, n_out: int, num_classes: int = 0):
        super().__init__()
        self.embed = nn.Embedding(num_classes, 2) if num_classes else None
        self.net = nn.Sequential(nn.Linear(n_in + (2 if num_classes else 0), 32), nn.LeakyReLU(0.2), nn.Linear(32, n_out))

    def forward(self, x, y=None):
        if self.embed is not None:
            x = torch.cat([x, self.embed(y)], 1)
        return self.net(x).squeeze(-1)


def _count_steps(opt):
    calls = []
    orig = opt.step

    def step(*a, **k):
        calls.append(1)
        return orig(*a, **k)

    opt.step = step
    return calls


def test_step_makes_n_critic_d_updates_then_one_g_update():
    torch.manual_seed(0)
    G, D = _Toy(4, 2, num_classes=3), _Toy(2, 1, num_classes=3)
    opt_g, opt_d = torch.optim.SGD(G.parameters(), 0.1), torch.optim.SGD(D.parameters(), 0.1)
    g_calls, d_calls = _count_steps(opt_g), _count_steps(opt_d)
    step = make_gan_step(G, D, opt_g, opt_d, z_dim=4, n_critic=3, num_classes=3)
    logs = step((torch.randn(16, 2), torch.randint(0, 3, (16,))), 0)
    assert (len(d_calls), len(g_calls)) == (3, 1)
    assert set(logs) == {"loss_d", "loss_g", "d_real", "d_fake"}
    assert all(not v.requires_grad and v.dim() == 0 for v in logs.values())
    assert 0 < logs["d_real"] < 1 and 0 < logs["d_fake"] < 1
    assert all(p.requires_grad for p in D.parameters())  # D is unfrozen again afterwards


def test_joint_d_pass_computes_what_two_passes_do_and_keeps_two_passes_under_batch_norm():
    import copy

    def run(joint, D):
        torch.manual_seed(0)
        G = _Toy(4, 2, num_classes=3)
        D = copy.deepcopy(D)
        calls = []
        D.register_forward_hook(lambda m, i, o: calls.append(len(i[0])))
        opt_g, opt_d = torch.optim.SGD(G.parameters(), 0.1), torch.optim.SGD(D.parameters(), 0.1)
        torch.manual_seed(1)
        logs = make_gan_step(G, D, opt_g, opt_d, z_dim=4, n_critic=2, num_classes=3, joint_d=joint, amp=False)(
            (torch.randn(16, 2), torch.randint(0, 3, (16,))), 0)
        return logs, [p.detach() for p in (*G.parameters(), *D.parameters())], calls

    torch.manual_seed(0)
    D = _Toy(2, 1, num_classes=3)  # no batch norm: one pass over real and fakes
    (a, pa, calls_a), (b, pb, calls_b) = run(True, D), run(False, D)
    assert calls_a == [32, 32, 16] and calls_b == [16, 16, 16, 16, 16]  # two critic updates, then G's
    for k in a:
        torch.testing.assert_close(a[k], b[k])
    for x, y in zip(pa, pb):
        torch.testing.assert_close(x, y)
    D.net.insert(1, torch.nn.BatchNorm1d(D.net[0].out_features))  # batch statistics: real and fakes apart
    assert run(True, D)[2] == [16, 16, 16, 16, 16]


def test_g_update_leaves_d_weights_alone():
    torch.manual_seed(0)
    G, D = _Toy(4, 2), _Toy(2, 1)
    opt_g, opt_d = torch.optim.SGD(G.parameters(), 0.1), torch.optim.SGD(D.parameters(), 0.0)  # D frozen by lr 0
    before = [p.clone() for p in D.parameters()]
    g_before = [p.clone() for p in G.parameters()]
    make_gan_step(G, D, opt_g, opt_d, z_dim=4, n_critic=1, conditional=False)((torch.randn(16, 2),), 0)
    assert all(torch.equal(a, b) for a, b in zip(before, D.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(g_before, G.parameters()))


def test_alternating_training_moves_fakes_to_the_data():
    """A 2-D toy GAN: the generated mean travels from ~0 to the data mean (3, -2)."""
    torch.manual_seed(0)
    G, D = _Toy(4, 2), _Toy(2, 1)
    opt_g = torch.optim.Adam(G.parameters(), 2e-3, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), 2e-3, betas=(0.5, 0.999))
    step = make_gan_step(G, D, opt_g, opt_d, z_dim=4, n_critic=2, conditional=False)
    target = torch.tensor([3.0, -2.0])
    with torch.no_grad():
        start = (G(torch.randn(2000, 4)).mean(0) - target).norm()
    for i in range(600):
        step((torch.randn(64, 2) * 0.3 + target,), i)
    with torch.no_grad():
        end = (G(torch.randn(2000, 4)).mean(0) - target).norm()
    assert start > 3 and end < 0.5, (start, end)


def test_diff_augment_translates_and_cuts_out_per_sample():
    from hwlib.gan import diff_augment

    torch.manual_seed(0)
    x = torch.ones(64, 3, 16, 16, requires_grad=True)
    assert diff_augment(x, "") is x or torch.equal(diff_augment(x, ""), x)
    out = diff_augment(x, "translation,cutout")
    assert out.shape == x.shape
    zero_share = (out == 0).float().mean((1, 2, 3))
    assert zero_share.min() > 0 and zero_share.mean() > 0.2 and zero_share.std() > 0  # holes of up to 1/4, borders vary
    out.sum().backward()  # differentiable: G gets gradients through it
    assert x.grad is not None and x.grad.abs().sum() > 0
    shifted = diff_augment(torch.arange(256.).view(1, 1, 16, 16).expand(32, 3, 16, 16), "translation")
    assert not all(torch.equal(shifted[0], s) for s in shifted[1:])  # a fresh shift per sample
    with pytest.raises(ValueError, match="unknown DiffAugment policy 'color'"):
        diff_augment(x, "color")


@pytest.mark.parametrize("policy", ["translation", "cutout", "translation,cutout"])
def test_diff_augment_keeps_a_channels_last_batch_channels_last_with_the_same_values(policy: str):
    from hwlib.gan import diff_augment

    x = torch.randn(4, 3, 16, 16)
    dy = torch.randn(4, 3, 16, 16)
    results = []
    for layout in (torch.contiguous_format, torch.channels_last):
        xi = x.clone(memory_format=layout).requires_grad_()
        torch.manual_seed(1)
        out = diff_augment(xi, policy)
        assert out.is_contiguous(memory_format=layout)  # StackGAN's D gets the layout its convolutions take
        out.backward(dy)
        results.append((out, xi.grad))
    for a, b in zip(*results):
        assert torch.equal(a, b)


def test_cycle_and_identity_losses_tell_an_inverse_pair_from_a_distribution_match():
    from hwlib.gan import cycle_consistency_loss, identity_loss

    x = torch.randn(4096, 1)
    y = 3 + 2 * x
    G, G_flip, F_ = (lambda a: 3 + 2 * a), (lambda a: 3 - 2 * a), (lambda b: (b - 3) / 2)
    assert cycle_consistency_loss(G, F_, x, y) < 1e-6  # an inverse pair: zero
    assert cycle_consistency_loss(G_flip, F_, x, y) > 1.0  # G_flip(X) has Y's distribution too, but no inverse F_
    assert identity_loss(lambda a: a, lambda b: b, x, y) == 0



def test_amp_false_keeps_the_step_in_fp32_where_autocast_would_be_bf16(monkeypatch):
    from hwlib import train

    monkeypatch.delenv("HWLIB_CPU_BF16", raising=False)
    monkeypatch.setattr(train, "cpu_bf16_is_faster", lambda: True)
    for amp, dtype in ((True, torch.bfloat16), (False, torch.float32)):
        torch.manual_seed(0)
        G, D = _Toy(4, 2), _Toy(2, 1)
        seen = set()
        D.register_forward_hook(lambda m, inp, out: seen.add(out.dtype))
        opt_g, opt_d = torch.optim.Adam(G.parameters()), torch.optim.Adam(D.parameters())
        make_gan_step(G, D, opt_g, opt_d, z_dim=4, n_critic=1, conditional=False, amp=amp)((torch.randn(8, 2),), 0)
        assert seen == {dtype}, (amp, seen)


def test_contrastive_loss_is_log_b_at_chance_and_falls_as_the_diagonal_wins():
    from hwlib.gan import contrastive_loss

    assert torch.isclose(contrastive_loss(torch.zeros(6, 6)), torch.tensor(math.log(6)))
    assert contrastive_loss(10 * torch.eye(6)) < 1e-3
    assert contrastive_loss(10 * torch.eye(6).flip(0)) > math.log(6)  # each image prefers another's caption


def test_translation_gradient_is_the_opposite_shift_in_the_gradients_memory_format():
    """On a CPU the shift's backward shifts the gradient back (gan._Windows): autograd's values through the pad and
    slices, bit for bit, and a channels-last gradient stays channels-last for the generator behind it."""
    from hwlib import gan

    x0 = torch.randn(5, 3, 16, 16).contiguous(memory_format=torch.channels_last)
    ty, tx = torch.tensor([0, 2, -2, 1, -1]).view(5, 1, 1), torch.tensor([1, -2, 0, 2, 0]).view(5, 1, 1)
    for g in (torch.randn(5, 3, 16, 16), torch.randn(5, 3, 16, 16).contiguous(memory_format=torch.channels_last)):
        x = x0.clone().requires_grad_(True)
        out = gan._translate(x, ty, tx)
        ref = gan._shift_windows(x, ty.flatten().tolist(), tx.flatten().tolist())  # autograd through pad and slices
        (grad,), (ref_grad,) = torch.autograd.grad(out, x, g), torch.autograd.grad(ref, x, g)
        assert torch.equal(out, ref) and torch.equal(grad, ref_grad)
        assert out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous()
        assert is_channels_last(grad) == is_channels_last(g)
    torch.autograd.gradcheck(lambda v: gan._translate(v, ty[:2], tx[:2]), torch.randn(2, 2, 5, 5, dtype=torch.float64,
                                                                                     requires_grad=True))


def test_diff_augment_translation_equals_a_gather_from_the_zero_padded_batch():
    """The windows of the zero-padded batch (the CPU's way) give the values and gradients, bit for bit, of the
    zero-padded index gather, which other devices keep (the checkpoints trained with that gather stay reproducible)."""
    import torch.nn.functional as F

    from hwlib import gan
    from hwlib.gan import diff_augment

    for b, size in ((9, 64), (3, 256)):
        x0 = torch.randn(b, 3, size, size).contiguous(memory_format=torch.channels_last)
        g = torch.randn(b, 3, size, size)
        torch.manual_seed(1)
        x = x0.clone().requires_grad_(True)
        out = diff_augment(x, "translation")
        out.backward(g)
        torch.manual_seed(1)  # the same draws, through the gather
        s = int(size / 8 + 0.5)
        ty, tx = torch.randint(-s, s + 1, (b, 1, 1)), torch.randint(-s, s + 1, (b, 1, 1))
        gy = (torch.arange(size)[None, :, None] + ty + 1).clamp(0, size + 1)
        gx = (torch.arange(size)[None, None, :] + tx + 1).clamp(0, size + 1)
        ref_x = x0.clone().requires_grad_(True)
        ref = F.pad(ref_x, [1, 1, 1, 1]).permute(0, 2, 3, 1)[torch.arange(b)[:, None, None], gy, gx].permute(0, 3, 1, 2)
        ref.contiguous().backward(g)
        assert torch.equal(out, ref) and torch.equal(x.grad, ref_x.grad)
        meta = x0.to("meta")  # a device other than the CPU takes the gather: the same shape, no copy per image
        assert gan._translate(meta, ty.to("meta"), tx.to("meta")).shape == meta.shape
    shifted = diff_augment(torch.ones(64, 1, 8, 8), "translation")  # every shift up to 1 pixel each way, zero fill
    assert set(shifted.sum((1, 2, 3)).tolist()) <= {64.0, 56.0, 49.0} and shifted.sum((1, 2, 3)).min() < 64
    far = gan._translate(torch.ones(3, 2, 4, 4), torch.tensor([0, 5, -2]).view(3, 1, 1), torch.tensor([0, 0, 1]).view(3, 1, 1))
    assert far.sum((1, 2, 3)).tolist() == [32.0, 0.0, 12.0]  # a shift past the edge leaves zeros
