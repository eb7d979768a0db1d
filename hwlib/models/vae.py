"""A convolutional VAE for 28x28 MNIST (Kingma & Welling, 2014) with a Bernoulli or a Gaussian decoder.

The encoder q_phi(z|x) = N(mu(x), diag(sigma^2(x))) is two stride-2 convolutions (28 -> 14 -> 7) and a
hidden layer; the decoder mirrors it with transposed convolutions (7 -> 14 -> 28). Pixels are modelled
in [0, 1] (the course's images, in [-1, 1], are mapped by (x + 1) / 2):

- ``decoder="bernoulli"``: the network outputs logits l and p(x|z) = prod_i Bern(x_i; sigmoid(l_i)),
  so -log p(x|z) is the binary cross-entropy summed over the 784 pixels;
- ``decoder="gaussian"``: the network outputs a mean mu = sigmoid(.) and p(x|z) = N(x; mu, s^2 I) with
  one scale s for all pixels, fixed (``sigma=0.1``) or learned (``sigma=None``), so
  -log p(x|z) = ||x - mu||^2 / (2 s^2) + D log s + D/2 log(2 pi).

The loss is the negative ELBO per image, ``E_q[-log p(x|z)] + beta * KL(q(z|x) || N(0, I))``, with one
reparameterised sample z = mu + sigma * eps.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hwlib.divergences import kl_to_standard_normal

DECODERS = ("bernoulli", "gaussian")


def reconstruction_nll(out: torch.Tensor, x01: torch.Tensor, decoder: str, log_sigma: torch.Tensor | float = 0.0
                       ) -> torch.Tensor:
    """``-log p(x|z)`` per image (B,), summed over pixels.

    Args:
        out: decoder output (B, 1, 28, 28): logits (bernoulli) or the mean in [0, 1] (gaussian).
        x01: targets (B, 1, 28, 28) in [0, 1] (grey levels are used as soft Bernoulli targets).
        log_sigma: the Gaussian decoder's log standard deviation (a scalar).
    """
    if decoder == "bernoulli":
        return F.binary_cross_entropy_with_logits(out, x01, reduction="none").flatten(1).sum(1)
    if decoder == "gaussian":
        log_sigma = torch.as_tensor(log_sigma, dtype=out.dtype, device=out.device)
        d = x01[0].numel()
        sq = (x01 - out).pow(2).flatten(1).sum(1)
        return 0.5 * sq * torch.exp(-2 * log_sigma) + d * log_sigma + 0.5 * d * math.log(2 * math.pi)
    raise ValueError(f"decoder must be one of {DECODERS}, not {decoder!r}")


def kl_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag(exp(logvar))) || N(0, I)) per row (B,), in closed form."""
    return kl_to_standard_normal(mu, logvar).sum(1)


class ConvVAE(nn.Module):
    """images (B, 1, 28, 28) in [-1, 1] -> (decoder output, mu (B, latent_dim), logvar (B, latent_dim))."""

    def __init__(self, latent_dim: int = 16, decoder: str = "bernoulli", ch: int = 32, hidden: int = 256,
                 sigma: float | None = 0.1) -> None:
        super().__init__()
        if decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}, not {decoder!r}")
        self.latent_dim, self.decoder, self.ch = latent_dim, decoder, ch
        self.encoder = nn.Sequential(
            nn.Conv2d(1, ch, 4, 2, 1), nn.ReLU(True),  # 28 -> 14
            nn.Conv2d(ch, ch * 2, 4, 2, 1), nn.ReLU(True),  # 14 -> 7
            nn.Flatten(), nn.Linear(ch * 2 * 7 * 7, hidden), nn.ReLU(True),
            nn.Linear(hidden, 2 * latent_dim),  # mu and log-variance
        )
        self.decoder_fc = nn.Sequential(nn.Linear(latent_dim, hidden), nn.ReLU(True),
                                        nn.Linear(hidden, ch * 2 * 7 * 7), nn.ReLU(True))
        self.decoder_conv = nn.Sequential(
            nn.ConvTranspose2d(ch * 2, ch, 4, 2, 1), nn.ReLU(True),  # 7 -> 14
            nn.ConvTranspose2d(ch, 1, 4, 2, 1),  # 14 -> 28: logits / pre-sigmoid mean
        )
        learn = decoder == "gaussian" and sigma is None
        init = math.log(sigma) if sigma is not None else math.log(0.1)
        self.log_sigma = nn.Parameter(torch.tensor(init), requires_grad=learn)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, 1, 28, 28) in [-1, 1] -> mu, logvar (B, latent_dim) of q(z|x)."""
        mu, logvar = self.encoder((x + 1) / 2).chunk(2, dim=1)
        return mu, logvar.clamp(-12, 8)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, latent_dim) -> decoder output (B, 1, 28, 28): logits (bernoulli) or mean in [0, 1] (gaussian)."""
        h = self.decoder_conv(self.decoder_fc(z).view(-1, self.ch * 2, 7, 7))
        return h if self.decoder == "bernoulli" else torch.sigmoid(h)

    def mean_image(self, out: torch.Tensor) -> torch.Tensor:
        """The mean of p(x|z) from a decoder output, mapped to [-1, 1]."""
        p = torch.sigmoid(out) if self.decoder == "bernoulli" else out
        return p * 2 - 1

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()  # reparameterisation
        return self.decode(z), mu, logvar

    def loss(self, x: torch.Tensor, beta: float = 1.0) -> dict[str, torch.Tensor]:
        """Negative ELBO per image (mean over the batch) for x (B, 1, 28, 28) in [-1, 1]: ``loss``, ``rec``, ``kl``."""
        out, mu, logvar = self(x)
        rec = reconstruction_nll(out, (x + 1) / 2, self.decoder, self.log_sigma).mean()
        kl = kl_standard_normal(mu, logvar).mean()
        return {"loss": rec + beta * kl, "rec": rec, "kl": kl}

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n images (n, 1, 28, 28) in [-1, 1]: z ~ N(0, I), then the decoder's mean (no pixel noise)."""
        device = self.log_sigma.device
        z = torch.randn(n, self.latent_dim, generator=generator, device="cpu" if generator else device).to(device)
        return self.mean_image(self.decode(z))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, 1, 28, 28) in [-1, 1] -> decoded posterior mean, (B, 1, 28, 28) in [-1, 1]."""
        return self.mean_image(self.decode(self.encode(x)[0]))


def make_vae_step(model: ConvVAE, optimizer: torch.optim.Optimizer, beta: float = 1.0
                  ) -> Callable[[tuple[torch.Tensor, ...], int], dict[str, torch.Tensor]]:
    """One Adam step on the negative ELBO of a batch ``(x, ...)``, as a ``step_fn`` for :func:`hwlib.train.fit`.

    Returns detached ``loss`` (= rec + beta kl), ``rec`` and ``kl``, all in nats per image.
    """
    def step(batch: tuple[torch.Tensor, ...], step_index: int) -> dict[str, torch.Tensor]:
        losses = model.loss(batch[0], beta)
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        optimizer.step()
        return {k: v.detach() for k, v in losses.items()}

    return step


def build(cfg: Mapping[str, Any], latent_dim: int | None = None, decoder: str = "bernoulli") -> ConvVAE:
    """Notebook 04's VAE from a profile (``vae_ch``, ``vae_hidden``, ``vae_sigma``; the latent size defaults to
    ``vae_latent``). The autoencoder of its section 7 is the same network trained with ``beta = 0``."""
    return ConvVAE(latent_dim or cfg["vae_latent"], decoder, ch=cfg["vae_ch"], hidden=cfg["vae_hidden"],
                   sigma=cfg["vae_sigma"])
