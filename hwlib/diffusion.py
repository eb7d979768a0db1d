"""Gaussian diffusion (DDPM, Ho et al. 2020) with the fixes of Lin et al. 2024, DDIM and classifier-free guidance.

Notation: T training steps indexed t = 0..T-1 (t = 0 is the least noisy), ``betas[t]`` = β_t,
``alphas`` = 1 - β, ``alphas_cumprod[t]`` = ᾱ_t = Π_{s<=t} α_s. Images x_0 are (B, C, H, W) in [-1, 1].

- forward process  q(x_t | x_0) = N(√ᾱ_t x_0, (1 - ᾱ_t) I)                       -> :meth:`Diffusion.q_sample`
- posterior        q(x_{t-1} | x_t, x_0) = N(μ̃_t, β̃_t I)                          -> :meth:`Diffusion.q_posterior`
- parameterisations: ε (noise), v = √ᾱ_t ε - √(1-ᾱ_t) x_0 (Salimans & Ho 2022), x_0  -> ``*_from_*``
- training: the "simple" loss, MSE between the network output and its target       -> :meth:`Diffusion.loss`,
  :func:`make_diffusion_step` (one optimisation step for :func:`hwlib.train.fit`)
- sampling: DDPM ancestral steps or DDIM (any step count, leading/trailing/linspace spacing), with
  classifier-free guidance and Lin et al.'s guidance rescale                        -> :meth:`Diffusion.sample`,
  :meth:`Diffusion.trajectory` (the same loop, keeping the chain)

Every choice (process and sampling) lives in one :class:`DiffusionConfig`, given once when the ``Diffusion`` is
built, as a diffusers scheduler's registered config; ``sample`` takes only what varies between calls (labels,
steps, sampler, a guidance override, the generator, the chunk size). The posterior coefficients have one formula
(:func:`posterior_coefficients`) for the schedule's buffers and for respaced sampling steps.

Lin et al., "Common Diffusion Noise Schedules and Sample Steps are Flawed" (WACV 2024): (1) rescale the
schedule to zero terminal SNR (``zero_snr=True``), (2) train with v-prediction (``prediction="v"``),
(3) start sampling from the last timestep (``spacing="trailing"``), (4) rescale classifier-free guidance
(``guidance_rescale=0.7``). Schedules and spacings follow ``diffusers``' DDPMScheduler / DDIMScheduler
conventions (the tests check agreement to 1e-6).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hwlib.profiles import is_dry_run

# ----------------------------------------------------------------------------- schedules (float64)


def linear_betas(T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """DDPM's linear schedule β_t = linspace(beta_start, beta_end, T): (T,) float64."""
    return torch.linspace(beta_start, beta_end, T, dtype=torch.float64)


def cosine_betas(T: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Nichol & Dhariwal's cosine schedule ᾱ(t) = cos²((t/T + s)/(1 + s)·π/2), β clipped at ``max_beta``: (T,) float64."""
    f = lambda u: math.cos((u + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    return torch.tensor([min(1 - f((i + 1) / T) / f(i / T), max_beta) for i in range(T)], dtype=torch.float64)


def rescale_zero_terminal_snr(betas: torch.Tensor) -> torch.Tensor:
    """Lin et al. Algorithm 1: shift and scale √ᾱ_t so that √ᾱ_{T-1} = 0 (zero terminal SNR) and √ᾱ_0 is kept.

    Returns new betas (T,) with β_{T-1} = 1, i.e. x_{T-1} is pure noise, as the sampler assumes.
    """
    abar_sqrt = torch.cumprod(1 - betas.double(), 0).sqrt()
    first, last = abar_sqrt[0].clone(), abar_sqrt[-1].clone()
    abar_sqrt = (abar_sqrt - last) * first / (first - last)
    abar = abar_sqrt**2
    alphas = torch.cat([abar[:1], abar[1:] / abar[:-1]])
    return 1 - alphas


def spaced_timesteps(num_steps: int, T: int = 1000, spacing: str = "trailing", steps_offset: int = 0) -> torch.Tensor:
    """The ``num_steps`` timesteps a sampler visits, in decreasing order: (num_steps,) int64.

    ``leading``: 0, T//n, 2T//n, ... (+ ``steps_offset``), so it never starts at T-1 (Lin et al.'s flaw 3);
    ``trailing``: round(T, T - T/n, ..., T/n) - 1, always starts at T-1; ``linspace``: round(linspace(0, T-1, n)).
    """
    if not 1 <= num_steps <= T:
        raise ValueError(f"num_steps must be in 1..{T}, got {num_steps}")
    if spacing == "linspace":
        ts = np.linspace(0, T - 1, num_steps).round()[::-1]
    elif spacing == "leading":
        ts = (np.arange(0, num_steps) * (T // num_steps)).round()[::-1] + steps_offset
    elif spacing == "trailing":
        ts = np.round(np.arange(T, 0, -T / num_steps)) - 1
    else:
        raise ValueError(f"unknown spacing {spacing!r}: choose 'leading', 'trailing' or 'linspace'")
    return torch.from_numpy(ts.astype(np.int64).copy())


def rescale_guidance(guided: torch.Tensor, cond: torch.Tensor, phi: float) -> torch.Tensor:
    """Lin et al. Algorithm 2: rescale the guided prediction to the per-sample std of the conditional one.

    ``guided, cond``: (B, ...). Returns φ·guided·std(cond)/std(guided) + (1 - φ)·guided.
    """
    if phi <= 0:
        return guided
    dims = list(range(1, guided.ndim))
    factor = cond.std(dim=dims, keepdim=True) / guided.std(dim=dims, keepdim=True).clamp_min(1e-12)
    return guided * (phi * factor + (1 - phi))


def _gather(values: torch.Tensor, t: torch.Tensor, ndim: int) -> torch.Tensor:
    """values[t] reshaped to (B, 1, ..., 1) for broadcasting against a (B, ...) tensor of ``ndim`` dims."""
    return values[t].reshape(-1, *([1] * (ndim - 1)))


# ----------------------------------------------------------------------------- the process


SAMPLERS = ("ddpm", "ddim")
SPACINGS = ("leading", "trailing", "linspace")


@dataclass(frozen=True)
class DiffusionConfig:
    """Every choice of the process and of sampling, given once (as a diffusers scheduler's registered config).

    Process: ``T`` training timesteps, ``schedule`` ``"linear"`` (β from ``beta_start`` to ``beta_end``) or
    ``"cosine"``, ``zero_snr`` (Lin et al. fix 1, needs ``prediction`` "v" or "x0"), ``prediction`` what the network
    outputs: ``"eps"`` (DDPM), ``"v"`` (fix 2) or ``"x0"``.
    Sampling: ``sampler`` ``"ddpm"`` (ancestral) or ``"ddim"``, ``steps`` (None: T), ``spacing`` of the sampled
    timesteps (``"trailing"``: fix 3; see :func:`spaced_timesteps`), classifier-free ``guidance`` weight w
    (1: plain conditional), ``guidance_rescale`` φ (fix 4), DDIM noise ``eta``, ``clip`` x̂_0 to [-1, 1] at every step.
    """

    T: int = 1000
    schedule: str = "linear"
    beta_start: float = 1e-4
    beta_end: float = 0.02
    zero_snr: bool = False
    prediction: str = "eps"
    sampler: str = "ddpm"
    steps: int | None = None
    spacing: str = "trailing"
    guidance: float = 1.0
    guidance_rescale: float = 0.0
    eta: float = 0.0
    clip: bool = True

    def __post_init__(self) -> None:
        if self.prediction not in ("eps", "v", "x0"):
            raise ValueError(f"prediction must be 'eps', 'v' or 'x0', got {self.prediction!r}")
        if self.zero_snr and self.prediction == "eps":
            raise ValueError("zero terminal SNR needs prediction='v' (or 'x0'): at t=T-1 ε carries no information on x_0")
        if self.schedule not in ("linear", "cosine"):
            raise ValueError(f"unknown schedule {self.schedule!r}")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler must be 'ddpm' or 'ddim', got {self.sampler!r}")
        if self.spacing not in SPACINGS:
            raise ValueError(f"spacing must be one of {SPACINGS}, got {self.spacing!r}")


def posterior_coefficients(abar_t: torch.Tensor, abar_prev: torch.Tensor, beta: torch.Tensor
                           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q(x_prev | x_t, x_0) = N(c_x0 x_0 + c_xt x_t, var I) for a step from ᾱ_t to ᾱ_prev with β = 1 - ᾱ_t/ᾱ_prev:
    returns (c_x0, c_xt, var). The one place these are computed (schedule buffers and respaced sampling steps)."""
    c_x0 = abar_prev.sqrt() * beta / (1 - abar_t)
    c_xt = (1 - beta).sqrt() * (1 - abar_prev) / (1 - abar_t)
    return c_x0, c_xt, (1 - abar_prev) / (1 - abar_t) * beta


class Diffusion(nn.Module):
    """A discrete Gaussian diffusion: the schedule's maths (float32 buffers computed in float64) and the sampling
    loop, every choice in one :class:`DiffusionConfig` (``Diffusion(config)`` or ``Diffusion(T=200, prediction="v",
    ...)``: keywords override the config's fields)."""

    def __init__(self, config: DiffusionConfig | None = None, /, **overrides: Any) -> None:
        super().__init__()
        self.config = replace(config or DiffusionConfig(), **overrides)
        c = self.config
        betas = linear_betas(c.T, c.beta_start, c.beta_end) if c.schedule == "linear" else cosine_betas(c.T)
        if c.zero_snr:
            betas = rescale_zero_terminal_snr(betas)
        abar = torch.cumprod(1 - betas, 0)
        abar_prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
        coef_x0, coef_xt, var = posterior_coefficients(abar, abar_prev, betas)
        buffers = {
            "betas": betas, "alphas": 1 - betas, "alphas_cumprod": abar, "alphas_cumprod_prev": abar_prev,
            "sqrt_abar": abar.sqrt(), "sqrt_one_minus_abar": (1 - abar).sqrt(),
            # posterior q(x_{t-1} | x_t, x_0): variance β̃_t and the two mean coefficients
            "posterior_var": var, "posterior_coef_x0": coef_x0, "posterior_coef_xt": coef_xt,
        }
        for name, value in buffers.items():
            self.register_buffer(name, value.float(), persistent=False)

    @property
    def T(self) -> int:
        """Number of training timesteps (the config's)."""
        return self.config.T

    @property
    def prediction(self) -> str:
        """What the network outputs: "eps", "v" or "x0" (the config's)."""
        return self.config.prediction

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in asdict(self.config).items())

    def snr(self, t: torch.Tensor) -> torch.Tensor:
        """Signal-to-noise ratio ᾱ_t / (1 - ᾱ_t) at integer timesteps t."""
        abar = self.alphas_cumprod[t]
        return abar / (1 - abar)

    # --- forward process and posterior
    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Draw x_t ~ q(x_t | x_0) = √ᾱ_t x_0 + √(1-ᾱ_t) ε. ``x0`` (B, ...), ``t`` (B,) int64 in [0, T)."""
        noise = torch.randn_like(x0) if noise is None else noise
        return _gather(self.sqrt_abar, t, x0.ndim) * x0 + _gather(self.sqrt_one_minus_abar, t, x0.ndim) * noise

    def q_step(self, x_prev: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """One forward step x_t = √(1-β_t) x_{t-1} + √β_t ε (x_{-1} := x_0)."""
        noise = torch.randn_like(x_prev) if noise is None else noise
        return _gather(self.alphas.sqrt(), t, x_prev.ndim) * x_prev + _gather(self.betas.sqrt(), t, x_prev.ndim) * noise

    def q_posterior(self, x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean μ̃_t(x_t, x_0) (B, ...) and variance β̃_t (B, 1, ..., 1) of q(x_{t-1} | x_t, x_0)."""
        mean = _gather(self.posterior_coef_x0, t, xt.ndim) * x0 + _gather(self.posterior_coef_xt, t, xt.ndim) * xt
        return mean, _gather(self.posterior_var, t, xt.ndim)

    # --- parameterisations (all (B, ...) tensors; t (B,) int64)
    def v_from(self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """v = √ᾱ_t ε - √(1-ᾱ_t) x_0."""
        return _gather(self.sqrt_abar, t, x0.ndim) * eps - _gather(self.sqrt_one_minus_abar, t, x0.ndim) * x0

    def x0_from_eps(self, xt: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_0 = (x_t - √(1-ᾱ_t) ε) / √ᾱ_t (undefined where ᾱ_t = 0)."""
        return (xt - _gather(self.sqrt_one_minus_abar, t, xt.ndim) * eps) / _gather(self.sqrt_abar, t, xt.ndim)

    def eps_from_x0(self, xt: torch.Tensor, x0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """ε = (x_t - √ᾱ_t x_0) / √(1-ᾱ_t)."""
        return (xt - _gather(self.sqrt_abar, t, xt.ndim) * x0) / _gather(self.sqrt_one_minus_abar, t, xt.ndim)

    def x0_from_v(self, xt: torch.Tensor, v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_0 = √ᾱ_t x_t - √(1-ᾱ_t) v."""
        return _gather(self.sqrt_abar, t, xt.ndim) * xt - _gather(self.sqrt_one_minus_abar, t, xt.ndim) * v

    def eps_from_v(self, xt: torch.Tensor, v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """ε = √(1-ᾱ_t) x_t + √ᾱ_t v."""
        return _gather(self.sqrt_one_minus_abar, t, xt.ndim) * xt + _gather(self.sqrt_abar, t, xt.ndim) * v

    def target(self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the network learns to output: ε, v or x_0."""
        if self.prediction == "eps":
            return eps
        return self.v_from(x0, eps, t) if self.prediction == "v" else x0

    def split_output(self, out: torch.Tensor, xt: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Network output -> (x̂_0, ε̂), both (B, ...)."""
        if self.prediction == "eps":
            return self.x0_from_eps(xt, out, t), out
        if self.prediction == "v":
            return self.x0_from_v(xt, out, t), self.eps_from_v(xt, out, t)
        return out, self.eps_from_x0(xt, out, t)

    # --- training
    def loss(self, model: nn.Module, x0: torch.Tensor, labels: torch.Tensor | None = None,
             p_uncond: float = 0.1, null_label: int | None = None) -> torch.Tensor:
        """DDPM's simple loss E_{t,ε} ||target - model(x_t, t, y)||², t uniform in [0, T).

        ``x0`` (B, C, H, W) in [-1, 1]; ``labels`` (B,) int64 or None. For classifier-free guidance a
        fraction ``p_uncond`` of the labels is replaced by ``null_label`` (default: ``model.num_classes``).
        """
        t = torch.randint(0, self.T, (x0.shape[0],), device=x0.device)
        eps = torch.randn_like(x0)
        xt = self.q_sample(x0, t, eps)
        if labels is not None and p_uncond > 0:
            null = getattr(model, "num_classes", None) if null_label is None else null_label
            drop = torch.rand(labels.shape, device=labels.device) < p_uncond
            labels = torch.where(drop, torch.full_like(labels, null), labels)
        out = model(xt, t, labels) if labels is not None else model(xt, t)
        return F.mse_loss(out.float(), self.target(x0, eps, t))

    # --- sampling
    def predict(self, model: nn.Module, xt: torch.Tensor, t: int, labels: torch.Tensor | None = None,
                guidance: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(x̂_0, ε̂) at timestep ``t`` for a batch ``xt`` (B, ...), with classifier-free guidance.

        ``guidance`` w (default: the config's): ε̂ = ε̂_∅ + w (ε̂_y - ε̂_∅) (w = 1: plain conditional, w = 0:
        unconditional). The combination is done on the network output (linear in ε, v or x_0 alike); with the config's
        ``guidance_rescale`` φ > 0 the guided x̂_0 is rescaled to the std of the conditional x̂_0 (Lin et al.
        Algorithm 2) and ε̂ re-derived from it.
        """
        guidance = self.config.guidance if guidance is None else guidance
        tt = torch.full((xt.shape[0],), t, device=xt.device, dtype=torch.long)
        if labels is None:
            return self.split_output(model(xt, tt).float(), xt, tt)
        if guidance == 1.0:
            return self.split_output(model(xt, tt, labels).float(), xt, tt)
        null = torch.full_like(labels, model.num_classes)
        out = model(torch.cat([xt, xt]), torch.cat([tt, tt]), torch.cat([labels, null])).float()
        cond, uncond = out.chunk(2)
        x0, eps = self.split_output(uncond + guidance * (cond - uncond), xt, tt)
        if self.config.guidance_rescale > 0:
            x0_cond, _ = self.split_output(cond, xt, tt)
            x0 = rescale_guidance(x0, x0_cond, self.config.guidance_rescale)
            eps = self.eps_from_x0(xt, x0, tt)
        return x0, eps

    def ddpm_step(self, x0: torch.Tensor, xt: torch.Tensor, t: int, t_prev: int, noise: torch.Tensor) -> torch.Tensor:
        """Ancestral step x_t -> x_{t_prev} from the posterior q(x_{t_prev} | x_t, x̂_0) (variance "fixed small").

        With t_prev = t - 1 this is DDPM's step; for t_prev < t - 1 it uses the respaced β = 1 - ᾱ_t/ᾱ_{t_prev}.
        """
        abar_t = self.alphas_cumprod[t]
        abar_prev = self.alphas_cumprod[t_prev] if t_prev >= 0 else abar_t.new_tensor(1.0)
        c_x0, c_xt, var = posterior_coefficients(abar_t, abar_prev, 1 - abar_t / abar_prev)
        mean = c_x0 * x0 + c_xt * xt
        if t_prev < 0:
            return mean
        return mean + var.clamp_min(1e-20).sqrt() * noise

    def ddim_step(self, x0: torch.Tensor, eps: torch.Tensor, t: int, t_prev: int, noise: torch.Tensor | None
                  ) -> torch.Tensor:
        """DDIM step x_t -> x_{t_prev} = √ᾱ_prev x̂_0 + √(1-ᾱ_prev-σ²) ε̂ + σ z, σ = η·√(β̃) (the config's η;
        η = 0 is deterministic)."""
        eta = self.config.eta
        abar_t = self.alphas_cumprod[t]
        abar_prev = self.alphas_cumprod[t_prev] if t_prev >= 0 else abar_t.new_tensor(1.0)
        sigma = eta * ((1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev)).clamp_min(0).sqrt()
        x = abar_prev.sqrt() * x0 + (1 - abar_prev - sigma**2).clamp_min(0).sqrt() * eps
        if eta > 0 and t_prev >= 0 and noise is not None:
            x = x + sigma * noise
        return x

    def timesteps(self, steps: int | None = None) -> list[int]:
        """The timesteps a sampling run visits, from noisiest to cleanest (``steps`` default: the config's, else T).
        A dry run keeps three of them (the first two and the last): every code path, three network calls."""
        ts = spaced_timesteps(steps or self.config.steps or self.T, self.T, self.config.spacing).tolist()
        return ts[:2] + ts[-1:] if is_dry_run() and len(ts) > 3 else ts

    @torch.no_grad()
    def sample(self, model: nn.Module, n: int, *, labels: torch.Tensor | None = None, steps: int | None = None,
               sampler: str | None = None, guidance: float | None = None, generator: torch.Generator | None = None,
               batch_size: int | None = None) -> torch.Tensor:
        """Generate ``n`` images (n, C, H, W) in [-1, 1] with the config's choices.

        ``model(x_t, t[, labels])`` in eval mode (e.g. an EMA copy); its ``in_channels`` / ``image_size`` give the
        shape. ``labels`` (n,) int64 for a class-conditional model. ``steps``, ``sampler`` and ``guidance`` override the
        config's for this call (e.g. the 1,000-step ancestral chain, or w = 1 for the null class). ``batch_size``:
        generate in chunks of this size.
        """
        if batch_size is not None and n > batch_size:
            return torch.cat([self.sample(model, min(batch_size, n - i), steps=steps, sampler=sampler,
                                          labels=labels[i:i + batch_size] if labels is not None else None,
                                          guidance=guidance, generator=generator) for i in range(0, n, batch_size)])
        return self._run(model, n, labels, steps, sampler, guidance, generator, every=None)[0]

    @torch.no_grad()
    def trajectory(self, model: nn.Module, n: int, *, labels: torch.Tensor | None = None, steps: int | None = None,
                   sampler: str | None = None, generator: torch.Generator | None = None, every: int = 1
                   ) -> tuple[torch.Tensor, list[tuple[int, torch.Tensor]]]:
        """:meth:`sample` that also returns the chain: [(t, x_t)] every ``every`` steps, the first x_T included and
        the final sample as t = -1."""
        return self._run(model, n, labels, steps, sampler, None, generator, every=every)

    def _run(self, model: nn.Module, n: int, labels: torch.Tensor | None, steps: int | None, sampler: str | None,
             guidance: float | None, generator: torch.Generator | None, every: int | None
             ) -> tuple[torch.Tensor, list[tuple[int, torch.Tensor]]]:
        sampler = sampler or self.config.sampler
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be 'ddpm' or 'ddim', got {sampler!r}")
        device = self.betas.device
        shape = (getattr(model, "in_channels", 1), getattr(model, "image_size", 28), getattr(model, "image_size", 28))
        timesteps = self.timesteps(steps)
        x = torch.randn((n, *shape), device=device, generator=generator)
        labels = labels.to(device) if labels is not None else None
        chain = [(timesteps[0], x.clone())] if every else []
        for i, t in enumerate(timesteps):
            t_prev = timesteps[i + 1] if i + 1 < len(timesteps) else -1
            x0, eps = self.predict(model, x, t, labels, guidance)
            if self.config.clip:
                x0 = x0.clamp(-1, 1)
                eps = self.eps_from_x0(x, x0, torch.full((n,), t, device=device, dtype=torch.long))  # consistent ε̂
            noise = (torch.randn(x.shape, device=device, generator=generator)
                     if (sampler == "ddpm" or self.config.eta > 0) else None)
            x = self.ddpm_step(x0, x, t, t_prev, noise) if sampler == "ddpm" else self.ddim_step(x0, eps, t, t_prev, noise)
            if every and ((i + 1) % every == 0 or t_prev < 0):
                chain.append((t_prev, x.clone()))
        return x.clamp(-1, 1), chain


# ----------------------------------------------------------------------------- the training entry point


def make_diffusion_step(
    model: nn.Module,
    diffusion: Diffusion,
    optimizer: torch.optim.Optimizer,
    ema: Any | None = None,
    *,
    p_uncond: float = 0.1,
    grad_clip: float | None = 1.0,
    conditional: bool | None = None,
) -> Callable[[tuple[torch.Tensor, ...], int], dict[str, torch.Tensor]]:
    """One DDPM optimisation step for :func:`hwlib.train.fit`: ``step_fn((images, [labels]), step) -> {"loss": ...}``.

    ``images`` (B, C, H, W) in [-1, 1]; ``labels`` (B,) are used when the model is class-conditional
    (``model.num_classes`` set, or ``conditional=True``), with label dropout ``p_uncond`` for classifier-free
    guidance. bf16 autocast where faster (:func:`hwlib.train.autocast`); gradient-norm clipping ``grad_clip``;
    ``ema.update(model)`` after each step.
    The learning rate is the optimiser's: a warm-up is a scheduler that :func:`hwlib.train.fit` steps
    (:class:`hwlib.train.Warmup`), as every schedule is.
    """
    from hwlib.train import autocast

    conditional = getattr(model, "num_classes", None) is not None if conditional is None else conditional
    device = next(model.parameters()).device

    def step(batch: tuple[torch.Tensor, ...], step_index: int) -> dict[str, torch.Tensor]:
        x0 = batch[0]
        labels = batch[1] if conditional and len(batch) > 1 else None
        with autocast(device):
            loss = diffusion.loss(model, x0, labels, p_uncond=p_uncond)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip, foreach=True)
        optimizer.step()
        if ema is not None:
            ema.update(model)
        return {"loss": loss.detach()}

    return step
