"""An image-caption matcher trained on real pairs and then frozen: DAMSM's sentence half (AttnGAN, Xu et al. 2018).

StackGAN's discriminator learns which caption a bird has *while* the generator learns to please it, so the
generator can write the caption into its images in a way only that discriminator reads
(``benchmarks/bench_stackgan_critic.py``: D's contrastive head ranks the caption of G's birds above one with another
crown colour 0.83 of the time, the attribute classifier asked the same question 0.57; 0.5 is chance). A matcher
trained once on real birds and frozen cannot be co-adapted with; its contrastive loss on G's images
(``Recipe.matcher``) asks G to draw what real birds of the caption look like. Measured: G learns to fool it too
(0.84 on G's crowns, 0.74 on real ones).

- :class:`Matcher`: image (B, 3, 64, 64) in [-1, 1] -> unit vector (B, dim) (four stride-2 conv blocks, the 4x4
  map flattened so *where* a colour is counts, as the attribute classifier); caption embedding (B, t_dim)
  (standardised per dimension) -> unit vector (B, dim); ``logits(images, text, near=None)`` cosine / temperature,
  (B, B) or, with near-miss captions (B, t_dim), (B, B + 1): column B holds each image's own near miss.
- :func:`train_matcher`: contrastive training on real crops (random crop, flip, DiffAugment), each image against
  the batch's captions and its own caption with one colour word swapped (``BirdSplit.swapped_embeddings``), so
  the matcher must read every part a caption names, not only the largest.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from hwlib.train import History

TEMPERATURE = 0.1


class Matcher(nn.Module):
    """Image and caption encoders into one ``dim``-d space; see the module docstring for shapes."""

    def __init__(self, t_dim: int, dim: int = 128, width: int = 32) -> None:
        super().__init__()
        w = width

        def block(a: int, b: int) -> list[nn.Module]:
            return [nn.Conv2d(a, b, 3, 2, 1, bias=False), nn.BatchNorm2d(b), nn.LeakyReLU(0.2, True)]

        self.image = nn.Sequential(*block(3, w), *block(w, 2 * w), *block(2 * w, 4 * w), *block(4 * w, 4 * w),
                                   nn.Flatten(), nn.Linear(16 * 4 * w, dim))
        self.text = nn.Sequential(nn.Linear(t_dim, 2 * dim), nn.LeakyReLU(0.2, True), nn.Linear(2 * dim, dim))
        self.register_buffer("t_mean", torch.zeros(t_dim))
        self.register_buffer("t_std", torch.ones(t_dim))

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image(images).float(), dim=1)

    def encode_text(self, text: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text((text.float() - self.t_mean) / self.t_std).float(), dim=1)

    def score(self, images: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Cosine similarity (N,) of each image (N, 3, 64, 64) with its own caption (N, t_dim)."""
        return (self.encode_image(images) * self.encode_text(text)).sum(1)

    def logits(self, images: torch.Tensor, text: torch.Tensor, near: torch.Tensor | None = None) -> torch.Tensor:
        """(B, B) cosine similarities / temperature, entry (i, j) image i with caption j; with ``near`` (B, t_dim)
        a last column of each image with its near miss."""
        img, txt = self.encode_image(images), self.encode_text(text)
        out = img @ txt.T
        if near is not None:
            out = torch.cat([out, (img * self.encode_text(near)).sum(1, keepdim=True)], 1)
        return out / TEMPERATURE


def near_or_other(text: torch.Tensor, near: torch.Tensor) -> torch.Tensor:
    """Each caption's near miss (B, t_dim); where a caption had no colour word to swap (its near miss is itself),
    the previous caption of the batch instead, so that every image still gets one wrong caption."""
    return torch.where((near != text).any(1, keepdim=True), near, text.roll(1, 0))


def train_matcher(images: torch.Tensor, embeddings: torch.Tensor, swapped: torch.Tensor | None, *, epochs: int,
                  run_dir: str | os.PathLike, batch_size: int = 64, width: int = 32, dim: int = 128, lr: float = 1e-3,
                  seed: int = 0, resume: bool = True, device: torch.device | str = "cpu") -> tuple[Matcher, History]:
    """Train a :class:`Matcher` on uint8 birds (N, 3, L, L) (L >= 64), their caption embeddings (N, 10, t_dim) and,
    optionally, the near misses ``swapped`` (N, 10, t_dim) row for row; Adam(``lr``), cosine schedule, through
    :func:`hwlib.train.fit` (checkpoints in ``run_dir``, resumable). Returns the matcher (eval mode, frozen)."""
    from hwlib.data.cub import augment, pick_embedding
    from hwlib.gan import contrastive_loss, diff_augment
    from hwlib.train import fit_minibatches, seed_everything

    seed_everything(seed)
    net = Matcher(embeddings.shape[-1], dim, width).to(device)
    flat = embeddings.reshape(-1, embeddings.shape[-1]).float()
    net.t_mean.copy_(flat.mean(0))
    net.t_std.copy_(flat.std(0).clamp_min(1e-6))
    x, emb = images.to(device), embeddings.to(device)
    both = torch.cat([emb, swapped.to(device)], -1) if swapped is not None else None

    def loss(idx: torch.Tensor) -> torch.Tensor:
        real = diff_augment(augment(x, 64, index=idx), "translation,cutout")
        if both is None:
            text, near = pick_embedding(emb[idx]), None
        else:
            text, near = pick_embedding(both[idx]).chunk(2, dim=1)
            near = near_or_other(text, near)
        return contrastive_loss(net.logits(real, text, near))

    history = fit_minibatches(net, loss, len(x), name="matcher", epochs=epochs, batch_size=batch_size, lr=lr,
                              run_dir=run_dir, seed=seed, resume=resume, device=device, desc="matcher", progress=False,
                              config={"n": len(x), "width": width, "dim": dim, "epochs": epochs,
                                      "near_misses": swapped is not None})
    return net.eval().requires_grad_(False), history
