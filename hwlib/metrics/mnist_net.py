"""The MNIST feature network: a small CNN classifier trained by this project, shipped in ``hwlib/assets``.

Its penultimate layer (128-d) gives the features of "FID-MNIST"; its logits give the *conditional
accuracy* of a class-conditional generator (the share of digits classified as the label they were
generated for). Retrain it reproducibly (seeded, deterministic kernels) with::

    python -m hwlib.metrics.mnist_net            # full MNIST train set, prints the test accuracy

Architecture (inputs (B, 1, 28, 28) in [-1, 1])::

    conv5x5(1->24)  BN ReLU maxpool   28 -> 14
    conv3x3(24->48) BN ReLU maxpool   14 -> 7
    conv3x3(48->96) BN ReLU maxpool    7 -> 3
    linear(864->128) BN ReLU          <- features(): 128-d, the FID-MNIST space
    dropout(0.3) linear(128->10)      <- logits
"""
from __future__ import annotations

import argparse
import functools
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hwlib.files import atomic_write, file_digest
from hwlib.metrics.features import map_batches
from hwlib.models.dropout import Dropout

ASSETS = Path(__file__).resolve().parent.parent / "assets"
WEIGHTS = ASSETS / "mnist_cnn.pt"
FEATURE_DIM = 128


def _block(c_in: int, c_out: int, k: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=False), nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True), nn.MaxPool2d(2)]


class MnistNet(nn.Module):
    """Three conv blocks and a 128-d penultimate layer; see the module docstring."""

    def __init__(self, widths: tuple[int, int, int] = (24, 48, 96), feature_dim: int = FEATURE_DIM,
                 dropout: float = 0.3) -> None:
        super().__init__()
        c1, c2, c3 = widths
        self.dim, self.tag = feature_dim, "mnist-untrained"
        self.body = nn.Sequential(*_block(1, c1, 5), *_block(c1, c2, 3), *_block(c2, c3, 3), nn.Flatten(),
                                  nn.Linear(c3 * 9, feature_dim, bias=False), nn.BatchNorm1d(feature_dim),
                                  nn.ReLU(inplace=True))
        self.head = nn.Sequential(Dropout(dropout), nn.Linear(feature_dim, 10))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, 28, 28) in [-1, 1] -> (B, 128) non-negative penultimate activations."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, 28, 28) in [-1, 1] -> (B, 10) logits."""
        return self.head(self.body(x))


@functools.lru_cache(maxsize=4)
def _load(device: str, path: str) -> MnistNet:
    if not Path(path).is_file():
        raise FileNotFoundError(f"no MNIST classifier weights at {path}: run `python -m hwlib.metrics.mnist_net`")
    state = torch.load(path, map_location="cpu", weights_only=True)
    with torch.random.fork_rng(devices=[]):  # the throw-away initialisation must not shift the caller's draws
        net = MnistNet(widths=tuple(state["widths"]))
    net.load_state_dict(state["state_dict"])
    net.tag = "mnist-" + file_digest(path)[:8]  # names the weights in cache keys
    return net.to(device).eval().requires_grad_(False)


def mnist_classifier(device: torch.device | str | None = None, path: str | Path | None = None) -> MnistNet:
    """The shipped, trained classifier in eval mode without gradients (cached per device)."""
    from hwlib.train import get_device

    return _load(str(get_device(str(device) if device is not None else None)), str(path or WEIGHTS))


def predict_digits(images: torch.Tensor, batch_size: int = 500, device: torch.device | str | None = None) -> torch.Tensor:
    """Predicted digit of each image: (N, 1, 28, 28) in [-1, 1] -> int64 (N,) on the CPU."""
    net = mnist_classifier(device)
    return map_batches(net, images, batch_size, lambda b: net(b).argmax(1))


def conditional_accuracy(images: torch.Tensor, labels: torch.Tensor, batch_size: int = 500,
                         device: torch.device | str | None = None) -> float:
    """Share of ``images`` (N, 1, 28, 28) in [-1, 1] that the classifier assigns to ``labels`` (N,)."""
    pred = predict_digits(images, batch_size, device)
    return float((pred == torch.as_tensor(labels).cpu().long()).float().mean())


def per_class_accuracy(images: torch.Tensor, labels: torch.Tensor, batch_size: int = 500,
                       device: torch.device | str | None = None) -> np.ndarray:
    """Conditional accuracy for each label 0..9: float64 (10,), NaN for a label that does not occur."""
    return class_accuracy(predict_digits(images, batch_size, device), torch.as_tensor(labels))


def class_accuracy(pred: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """Share of correct predictions per label 0..9 from int (N,) predictions and labels; NaN if absent."""
    pred, labels = pred.cpu().long(), labels.cpu().long()
    hits = torch.bincount(labels[pred == labels], minlength=10).double()
    counts = torch.bincount(labels, minlength=10).double()
    return (hits / counts).numpy()  # 0/0 -> NaN for absent labels


# ----------------------------------------------------------------------------- training


def random_affine(x: torch.Tensor, generator: torch.Generator, shift: float = 2.0, degrees: float = 10.0) -> torch.Tensor:
    """Random small affine warps (rotation, +-``shift`` px translation) of (B, 1, 28, 28) in [-1, 1]."""
    b = x.shape[0]
    u = torch.rand(b, 3, generator=generator, device=x.device) * 2 - 1
    angle, tx, ty = u[:, 0] * math.radians(degrees), u[:, 1] * shift * 2 / 28, u[:, 2] * shift * 2 / 28
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    # pad with the background value -1 (grid_sample pads with 0): shift to [0, 2] and back.
    return F.grid_sample(x + 1, grid, align_corners=False, padding_mode="zeros") - 1


def evaluate_accuracy(net: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 500) -> float:
    """Top-1 accuracy of ``net`` on images (N, 1, 28, 28) in [-1, 1]."""
    was_training = net.training
    net.eval()
    pred = map_batches(net, images, batch_size, lambda b: net(b).argmax(1))
    net.train(was_training)
    return int((pred == labels.cpu()).sum()) / len(images)


def train(epochs: int = 6, batch_size: int = 128, lr: float = 3e-3, seed: int = 0, out: str | Path | None = WEIGHTS,
          device: str | None = None, resume: bool = True) -> tuple[MnistNet, float]:
    """Train on the full MNIST train set with :func:`hwlib.train.fit`; return the net and its test accuracy.

    AdamW with a linear warm-up and cosine decay (:class:`hwlib.train.Warmup`, stepped and checkpointed by fit,
    so a resume is exact), random affine augmentation, then the weights (and their test accuracy) go to ``out``.
    """
    import hwlib
    from hwlib.data import ResidentLoader, load_mnist
    from hwlib.train import Warmup, fit, get_device, seed_everything

    dev = get_device(device)
    seed_everything(seed)
    x_train, y_train = load_mnist("train")
    x_test, y_test = load_mnist("test")
    net = MnistNet().to(dev)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=5e-4)
    loader = ResidentLoader(x_train, y_train, batch_size=batch_size, seed=seed, device=dev)
    total, warmup = epochs * len(loader), len(loader) // 2
    gen = torch.Generator(device=dev)

    def step(batch: tuple[torch.Tensor, ...], step_index: int) -> dict[str, torch.Tensor]:
        x, y = batch
        gen.manual_seed(seed * 1_000_003 + step_index)  # augmentation depends on the step only: exact resume
        logits = net(random_affine(x, gen))
        loss = F.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {"loss": loss.detach(), "acc": (logits.argmax(1) == y).float().mean()}

    config = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed, "arch": "MnistNet(24,48,96)"}
    fit(step, loader, epochs=epochs, run_dir=hwlib.runs_dir(f"metrics/mnist_cnn/seed{seed}"),
        modules={"net": net}, optimizers={"opt": opt}, schedulers={"opt": Warmup(opt, warmup, total=total)},
        seed=seed, resume=resume, config=config,
        on_epoch_end=lambda e: print(f"epoch {e}: test accuracy {evaluate_accuracy(net, x_test, y_test):.4%}",
                                     flush=True),
        desc="mnist cnn")
    net.eval()
    acc = evaluate_accuracy(net, x_test, y_test)
    if out is not None:
        state = {"state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
                 "widths": [24, 48, 96], "test_accuracy": acc, "config": config}
        with atomic_write(out) as f:  # the shipped weights are never left half-written
            torch.save(state, f)
        _load.cache_clear()
    return net, acc


def main() -> None:
    parser = argparse.ArgumentParser(description="Retrain the FID-MNIST / conditional-accuracy classifier.")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(WEIGHTS), help="where to write the weights")
    parser.add_argument("--device", default=None)
    parser.add_argument("--no-resume", action="store_true", help="ignore checkpoints of an earlier run")
    args = parser.parse_args()
    t0 = time.perf_counter()
    _, acc = train(args.epochs, args.batch_size, args.lr, args.seed, args.out, args.device, not args.no_resume)
    print(f"test accuracy {acc:.4%} ({acc * 10_000:.0f}/10000) after {time.perf_counter() - t0:.0f} s; "
          f"weights written to {args.out}")


if __name__ == "__main__":
    main()
