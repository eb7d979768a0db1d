"""The convolutional VAE of notebook 04: shapes, ELBO terms against torch.distributions, a learning step."""
import math

import pytest
import torch

from hwlib.models.vae import ConvVAE, kl_standard_normal, make_vae_step, reconstruction_nll

torch.set_num_threads(1)


@pytest.mark.parametrize("decoder", ["bernoulli", "gaussian"])
@pytest.mark.parametrize("latent", [2, 16])
def test_shapes_and_ranges(decoder, latent):
    torch.manual_seed(0)
    vae = ConvVAE(latent_dim=latent, decoder=decoder, ch=8, hidden=32)
    x = torch.rand(5, 1, 28, 28) * 2 - 1
    out, mu, logvar = vae(x)
    assert out.shape == x.shape and mu.shape == logvar.shape == (5, latent)
    for imgs in (vae.sample(7), vae.reconstruct(x)):
        assert imgs.shape[1:] == (1, 28, 28) and imgs.min() >= -1 and imgs.max() <= 1
    losses = vae.loss(x)
    assert torch.allclose(losses["loss"], losses["rec"] + losses["kl"])


def test_bernoulli_nll_matches_torch_distribution():
    torch.manual_seed(0)
    logits, x = torch.randn(3, 1, 28, 28), torch.rand(3, 1, 28, 28).round()
    ref = -torch.distributions.Bernoulli(logits=logits).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(reconstruction_nll(logits, x, "bernoulli"), ref)


def test_gaussian_nll_matches_torch_distribution():
    torch.manual_seed(0)
    mean, x, log_sigma = torch.rand(3, 1, 28, 28), torch.rand(3, 1, 28, 28), torch.tensor(math.log(0.3))
    ref = -torch.distributions.Normal(mean, log_sigma.exp()).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(reconstruction_nll(mean, x, "gaussian", log_sigma), ref)


def test_kl_matches_torch_distribution():
    torch.manual_seed(0)
    mu, logvar = torch.randn(4, 3), torch.randn(4, 3)
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    ref = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).sum(1)
    torch.testing.assert_close(kl_standard_normal(mu, logvar), ref)


def test_sigma_learned_only_when_asked():
    assert not ConvVAE(decoder="gaussian", sigma=0.1).log_sigma.requires_grad
    assert ConvVAE(decoder="gaussian", sigma=None).log_sigma.requires_grad
    with pytest.raises(ValueError):
        ConvVAE(decoder="laplace")


def test_training_lowers_the_negative_elbo():
    torch.manual_seed(0)
    x = torch.rand(64, 1, 28, 28).round() * 2 - 1  # a fixed batch of binary noise images
    vae = ConvVAE(latent_dim=4, ch=8, hidden=32)
    step = make_vae_step(vae, torch.optim.Adam(vae.parameters(), lr=3e-3))
    first = step((x,), 0)["loss"].item()
    for i in range(60):
        last = step((x,), i + 1)["loss"].item()
    assert last < first - 10  # nats per image


def test_build_from_the_profile():
    import hwlib
    from hwlib.models import vae

    cfg = hwlib.get_profile("04_vae_gan_ddpm", "quick", verbose=False)
    model = vae.build(cfg)
    assert model.latent_dim == cfg.vae_latent and model.ch == cfg.vae_ch and model.decoder == "bernoulli"
    gauss = vae.build(cfg, 2, "gaussian")
    assert gauss.latent_dim == 2 and gauss.log_sigma.requires_grad  # vae_sigma None: the scale is learnt
