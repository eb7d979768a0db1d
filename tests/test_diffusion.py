"""hwlib.diffusion against diffusers' DDPMScheduler / DDIMScheduler, the closed forms, and one training step."""
from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pytest
import torch

from hwlib.diffusion import (Diffusion, DiffusionConfig, cosine_betas, linear_betas, make_diffusion_step, posterior_coefficients,
                             rescale_guidance, rescale_zero_terminal_snr, spaced_timesteps)
from hwlib.models.unet import UNet

diffusers = pytest.importorskip("diffusers")
ATOL = 1e-6


def _ddim(**kw):
    return diffusers.DDIMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
                                   clip_sample=False, set_alpha_to_one=True, **kw)


@pytest.mark.parametrize("zero_snr", [False, True])
def test_schedule_matches_diffusers(zero_snr):
    ours = Diffusion(zero_snr=zero_snr, prediction="v" if zero_snr else "eps")
    ref = _ddim(rescale_betas_zero_snr=zero_snr)
    # diffusers rescales in float32, we in float64: β_t = 1 - ᾱ_t/ᾱ_{t-1} near t = T-1 differs by ~2e-6 there
    # (the float64 algorithms agree to 1e-6 in test_zero_snr_rescale_and_cosine_match_diffusers)
    assert torch.allclose(ours.betas.double(), ref.betas.double(), atol=5e-6 if zero_snr else ATOL, rtol=0)
    assert torch.allclose(ours.alphas_cumprod.double(), ref.alphas_cumprod.double(), atol=ATOL, rtol=0)
    assert abs(float(ours.alphas_cumprod[0]) - (1 - 1e-4)) < ATOL
    if zero_snr:
        assert float(ours.alphas_cumprod[-1]) == 0.0 and float(ours.betas[-1]) == pytest.approx(1.0)
        assert torch.all(ours.alphas_cumprod[1:] <= ours.alphas_cumprod[:-1])  # still decreasing
    else:
        assert float(ours.alphas_cumprod[-1]) == pytest.approx(4.04e-5, rel=0.01)  # SNR(T) > 0: the flaw


def test_zero_snr_rescale_and_cosine_match_diffusers():
    from diffusers.schedulers.scheduling_ddim import rescale_zero_terminal_snr as ref_rescale

    betas = linear_betas()
    assert torch.allclose(rescale_zero_terminal_snr(betas), ref_rescale(betas.clone()), atol=ATOL, rtol=0)
    ref = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
    assert torch.allclose(cosine_betas(1000).float(), ref.betas, atol=ATOL, rtol=0)


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("steps", [1000, 250, 50, 20, 10, 7])
def test_timestep_spacing_matches_diffusers(spacing, steps):
    ref = _ddim(timestep_spacing=spacing, steps_offset=1 if spacing == "leading" else 0)
    ref.set_timesteps(steps)
    ours = spaced_timesteps(steps, 1000, spacing, steps_offset=1 if spacing == "leading" else 0)
    assert ours.tolist() == ref.timesteps.tolist()
    assert ours.tolist() == sorted(ours.tolist(), reverse=True)
    if spacing == "trailing":
        assert ours[0] == 999  # Lin et al.: always start at the last timestep


def test_conversions_match_diffusers_and_invert():
    d = Diffusion(zero_snr=True, prediction="v")
    ref = diffusers.DDPMScheduler(num_train_timesteps=1000, rescale_betas_zero_snr=True, prediction_type="v_prediction")
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.rand(16, 1, 8, 8, generator=g) * 2 - 1, torch.randn(16, 1, 8, 8, generator=g)
    t = torch.randint(0, 1000, (16,), generator=g)
    t[0] = 999
    xt = d.q_sample(x0, t, eps)
    assert torch.allclose(xt, ref.add_noise(x0, eps, t), atol=ATOL)
    v = d.v_from(x0, eps, t)
    assert torch.allclose(v, ref.get_velocity(x0, eps, t), atol=ATOL)
    assert torch.allclose(d.x0_from_v(xt, v, t), x0, atol=1e-5)
    assert torch.allclose(d.eps_from_v(xt, v, t), eps, atol=1e-5)
    keep = t < 999  # x0 from ε is undefined at zero SNR
    assert torch.allclose(d.x0_from_eps(xt[keep], eps[keep], t[keep]), x0[keep], atol=1e-4)
    assert torch.allclose(d.eps_from_x0(xt, x0, t), eps, atol=1e-5)
    assert torch.allclose(d.split_output(v, xt, t)[0], x0, atol=1e-5)


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_ddim_and_ddpm_steps_match_diffusers(prediction):
    zero_snr = prediction == "v"
    kind = "v_prediction" if prediction == "v" else "epsilon"
    d = Diffusion(zero_snr=zero_snr, prediction=prediction)
    g = torch.Generator().manual_seed(1)
    x, out = (torch.randn(4, 1, 8, 8, generator=g) for _ in range(2))
    ddim = _ddim(rescale_betas_zero_snr=zero_snr, prediction_type=kind, timestep_spacing="trailing")
    ddim.set_timesteps(50)
    ts = spaced_timesteps(50, 1000, "trailing")
    for i in (0, 10, 49):
        t, t_prev = int(ts[i]), int(ts[i + 1]) if i < 49 else -1
        x0, e = d.split_output(out, x, torch.full((4,), t))
        assert torch.allclose(d.ddim_step(x0, e, t, t_prev, None), ddim.step(out, t, x).prev_sample, atol=1e-5)
    ddpm = diffusers.DDPMScheduler(num_train_timesteps=1000, rescale_betas_zero_snr=zero_snr, prediction_type=kind,
                                   clip_sample=False, variance_type="fixed_small")
    for t in (999, 500, 1, 0):
        x0, _ = d.split_output(out, x, torch.full((4,), t))
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(t))  # the noise diffusers draws
        ours = d.ddpm_step(x0, x, t, t - 1, noise)
        ref = ddpm.step(out, t, x, generator=torch.Generator().manual_seed(t)).prev_sample
        assert torch.allclose(ours, ref, atol=1e-5)


def test_posterior_matches_bayes_formulas():
    d = Diffusion()
    t = torch.tensor([1, 10, 500, 999])
    betas = linear_betas()  # float64 reference (float32 1 - ᾱ loses digits near t = 0)
    abar_all = torch.cumprod(1 - betas, 0)
    abar, abar_prev, beta = abar_all[t], abar_all[t - 1], betas[t]
    mean_xt_coef = (1 - beta).sqrt() * (1 - abar_prev) / (1 - abar)
    assert torch.allclose(d.posterior_var[t].double(), (1 - abar_prev) / (1 - abar) * beta, atol=1e-7)
    assert torch.allclose(d.posterior_coef_xt[t].double(), mean_xt_coef, atol=1e-6)
    # Gaussian conditioning: precision of q(x_{t-1}|x_t,x0) = 1/(1-abar_prev) + alpha_t / beta_t
    prec = 1 / (1 - abar_prev) + (1 - beta) / beta
    assert torch.allclose(1 / d.posterior_var[t].double(), prec, rtol=1e-5)


def test_q_sample_statistics_match_closed_form():
    d = Diffusion()
    g = torch.Generator().manual_seed(0)
    x0 = torch.full((20000, 1), 0.7)
    for t in (50, 400, 900):
        xt = d.q_sample(x0, torch.full((20000,), t), torch.randn(20000, 1, generator=g))
        mean, var = d.alphas_cumprod[t].sqrt() * 0.7, 1 - d.alphas_cumprod[t]  # N(sqrt(abar_t) x0, (1 - abar_t) I)
        assert abs(xt.mean() - mean.item()) < 0.02 and abs(xt.var() - var.item()) < 0.03


def test_rescale_guidance_restores_conditional_std():
    g = torch.Generator().manual_seed(0)
    cond, guided = torch.randn(3, 1, 8, 8, generator=g), 5 * torch.randn(3, 1, 8, 8, generator=g)
    full = rescale_guidance(guided, cond, 1.0)
    assert torch.allclose(full.std(dim=(1, 2, 3)), cond.std(dim=(1, 2, 3)), atol=1e-5)
    assert torch.equal(rescale_guidance(guided, cond, 0.0), guided)
    half = rescale_guidance(guided, cond, 0.5)
    assert torch.allclose(half, 0.5 * full + 0.5 * guided, atol=1e-5)


def test_zero_snr_with_eps_prediction_is_refused():
    with pytest.raises(ValueError, match="zero terminal SNR"):
        Diffusion(zero_snr=True, prediction="eps")


def _tiny_unet(**kw):
    return UNet(ch=8, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,), dropout=0.0, image_size=8, **kw)


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_training_steps_reduce_loss_on_fixed_batch(prediction):
    torch.manual_seed(0)
    model = _tiny_unet(num_classes=3)
    d = Diffusion(zero_snr=prediction == "v", prediction=prediction)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    step = make_diffusion_step(model, d, opt, p_uncond=0.0)
    x0 = torch.rand(32, 1, 8, 8) * 2 - 1
    x0[:, :, 2:6, 2:6] = 1.0
    y = torch.randint(0, 3, (32,))

    def eval_loss() -> float:  # the same t and noise every time
        torch.manual_seed(123)
        with torch.no_grad():
            return float(d.loss(model, x0, y, p_uncond=0.0))

    before = eval_loss()
    torch.manual_seed(1)
    for i in range(30):
        logs = step((x0, y), i)
    assert torch.isfinite(logs["loss"]) and logs["loss"].requires_grad is False
    assert eval_loss() < 0.8 * before


@pytest.mark.parametrize("sampler,steps,guidance", [("ddpm", 10, 1.0), ("ddim", 5, 3.0), ("ddpm", 40, 2.0)])
def test_sampler_shape_range_and_trajectory(sampler, steps, guidance):
    torch.manual_seed(0)
    model = _tiny_unet(num_classes=3).eval()
    with torch.no_grad():  # non-zero output layer so that samples depend on the network
        model.out[-1].weight.normal_(0, 0.1)
    d = Diffusion(zero_snr=True, prediction="v", guidance=guidance, guidance_rescale=0.7, sampler=sampler)
    labels = torch.tensor([0, 1, 2, 0, 1])
    x = d.sample(model, 5, steps=steps, labels=labels, batch_size=3, generator=torch.Generator().manual_seed(0))
    assert x.shape == (5, 1, 8, 8) and torch.isfinite(x).all()
    assert x.min() >= -1 and x.max() <= 1
    x3, traj = d.trajectory(model, 3, steps=steps, labels=labels[:3], generator=torch.Generator().manual_seed(0))
    assert traj[0][0] == 999 and traj[-1][0] == -1 and traj[-1][1].shape == (3, 1, 8, 8)
    assert len(traj) == steps + 1 and torch.equal(traj[-1][1], x3)
    assert torch.equal(x3, x[:3])  # the first chunk of a chunked run is the same chain
    # reproducible with the same generator
    again = d.sample(model, 5, steps=steps, labels=labels, batch_size=3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x, again)


def test_ddim_with_one_step_returns_x0_prediction():
    d = Diffusion(zero_snr=True, prediction="v", clip=False)
    model = _tiny_unet().eval()
    x = d.sample(model, 2, steps=1, sampler="ddim", generator=torch.Generator().manual_seed(0))
    # zero-init output layer: v = 0, so x0 = sqrt(abar_T) x_T - ... = 0 at t = T-1 with zero SNR
    assert torch.allclose(x, torch.zeros_like(x), atol=1e-6)
    assert np.isclose(float(d.snr(torch.tensor([999]))), 0.0)


def test_config_holds_every_choice_and_keywords_override_it():
    base = DiffusionConfig(T=200, prediction="v", zero_snr=True, spacing="trailing", guidance=3.0, guidance_rescale=0.7)
    d = Diffusion(base, sampler="ddim")
    assert d.config == DiffusionConfig(**{**asdict(base), "sampler": "ddim"}) and d.T == 200
    assert "guidance_rescale=0.7" in repr(d)
    with pytest.raises(ValueError, match="spacing"):
        Diffusion(spacing="sideways")
    with pytest.raises(ValueError, match="sampler"):
        Diffusion(sampler="euler")


def test_posterior_coefficients_are_the_one_formula():
    d = Diffusion()
    t = torch.arange(10, 1000)  # float32 ᾱ leaves 1 - ᾱ_t a few 1e-5 relative error from t = 10 on
    abar, prev = d.alphas_cumprod[t].double(), d.alphas_cumprod_prev[t].double()
    c_x0, c_xt, var = posterior_coefficients(abar, prev, d.betas[t].double())  # what ddpm_step uses for t_prev = t - 1
    for ours, buffer in ((c_x0, d.posterior_coef_x0), (c_xt, d.posterior_coef_xt), (var, d.posterior_var)):
        assert torch.allclose(ours.float(), buffer[t], rtol=1e-4)
