"""hwlib.models.matching: the frozen image-caption matcher of Recipe.matcher."""
from __future__ import annotations

import math

import pytest
import torch

from hwlib.gan import contrastive_loss
from hwlib.models import matching, stackgan


def test_matcher_logits_are_cosines_over_the_temperature_with_a_near_miss_column():
    torch.manual_seed(0)
    m = matching.Matcher(t_dim=8, dim=16, width=4).eval()
    images, text, near = torch.rand(5, 3, 64, 64) * 2 - 1, torch.randn(5, 8), torch.randn(5, 8)
    logits = m.logits(images, text)
    assert logits.shape == (5, 5) and logits.abs().max() <= 1 / matching.TEMPERATURE + 1e-4
    with_near = m.logits(images, text, near)
    assert with_near.shape == (5, 6)
    torch.testing.assert_close(with_near[:, :5], logits)
    torch.testing.assert_close(with_near[:, 5], (m.encode_image(images) * m.encode_text(near)).sum(1) / matching.TEMPERATURE)
    equal = torch.zeros(5, 6)
    assert math.isclose(float(contrastive_loss(equal)), math.log(6), rel_tol=1e-6)  # the near miss is one more column


def test_train_matcher_learns_which_caption_a_bird_has_and_comes_back_frozen(tmp_path):
    torch.manual_seed(0)
    n = 32
    colour = torch.randint(0, 2, (n,))  # half the birds red, half blue; the caption says which
    images = torch.zeros(n, 3, 76, 76, dtype=torch.uint8)
    images[colour == 0, 0], images[colour == 1, 2] = 255, 255
    words = torch.eye(2)[colour]
    emb = torch.cat([words, torch.zeros(n, 6)], 1)[:, None].expand(n, 10, 8).contiguous()
    swapped = torch.cat([words.flip(1), torch.zeros(n, 6)], 1)[:, None].expand(n, 10, 8).contiguous()
    m, hist = matching.train_matcher(images, emb, swapped, epochs=30, batch_size=16, width=4, dim=8, run_dir=tmp_path / "m")
    assert not m.training and not any(p.requires_grad for p in m.parameters())
    with torch.no_grad():
        own = m.logits(images[:, :, 6:70, 6:70].float() / 127.5 - 1, emb[:, 0], swapped[:, 0])
    assert (own[:, :n].diagonal() > own[:, n]).float().mean() > 0.9  # the true caption above its colour swap
    assert hist.columns["loss"][-1] < hist.columns["loss"][0]


def test_recipe_matcher_adds_the_frozen_matchers_loss_to_g():
    torch.manual_seed(0)
    r = stackgan.Recipe(**{**stackgan.get_recipe("stable").as_dict(), "matcher": 1.0, "parts": 0.0, "novel": 0.0})
    G, D = stackgan.build_stage1(8, c_dim=4, z_dim=4, gf=4, df=4, recipe=r)
    m = matching.Matcher(8, dim=8, width=4).eval().requires_grad_(False)
    images, emb = torch.randint(0, 256, (6, 3, 76, 76), dtype=torch.uint8), torch.randn(6, 10, 8)
    opt_g, opt_d = torch.optim.Adam(G.parameters()), torch.optim.Adam(D.parameters())
    kw = dict(images=images, embeddings=emb, class_ids=torch.arange(6), out_size=64, kl_coef=1.0, z_dim=4, recipe=r)
    out = stackgan.make_stackgan_step(G, D, opt_g, opt_d, matcher=m, swapped=emb + 1, **kw)((torch.arange(6),), 0)
    assert 0 < float(out["matcher"]) and all(p.grad is None for p in m.parameters())
    with pytest.raises(ValueError, match="matcher"):
        stackgan.make_stackgan_step(G, D, opt_g, opt_d, **kw)
