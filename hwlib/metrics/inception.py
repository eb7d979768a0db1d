"""The FID Inception-v3 (TF 2015-12-05 weights, pool3, 2048-d) through pytorch-fid, and the Inception Score.

The network is pytorch-fid's ``InceptionV3`` (not a copy). Its weights file
``pt_inception-2015-12-05-6726825d.pth`` is looked for at ``$HWLIB_INCEPTION_WEIGHTS`` (the file or
a folder holding it), in torch's hub cache (``<torch hub>/checkpoints/``, where pytorch-fid itself
downloads it) and in ``hwlib.data_dir()``; where none is found it is downloaded, and where that
fails too an :class:`InceptionWeightsMissing` error says which file to put where.
``weights="random"`` builds the same network with seeded random (He-normal) weights, for tests and
benchmarks; its features mean nothing, but they exercise the exact pipeline.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path
from unittest import mock

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hwlib.files import file_digest

WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{WEIGHTS_FILE}"


class InceptionWeightsMissing(FileNotFoundError):
    """The FID Inception weights are neither on disk nor downloadable."""


def weight_candidates() -> list[Path]:
    """Where the weights file is looked for, in order."""
    from hwlib.paths import data_dir

    paths = []
    env = os.environ.get("HWLIB_INCEPTION_WEIGHTS")
    if env:
        env_path = Path(env).expanduser()
        paths.append(env_path / WEIGHTS_FILE if env_path.is_dir() else env_path)
    paths.append(Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_FILE)
    paths.append(data_dir() / WEIGHTS_FILE)
    return paths


def inception_weights_path(download: bool = True, timeout: float = 20.0) -> Path:
    """The local FID Inception weights file, downloaded into torch's hub cache if absent (and allowed)."""
    candidates = weight_candidates()
    for path in candidates:
        if path.is_file():
            return path
    if os.environ.get("HWLIB_INCEPTION_WEIGHTS"):
        download = False  # an explicit location that does not hold the file is a mistake to report
    target = Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_FILE
    reason = "download disabled"
    if download:
        previous = socket.getdefaulttimeout()
        socket.setdefaulttimeout(timeout)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(WEIGHTS_URL, str(target), progress=False)
            return target
        except Exception as err:  # noqa: BLE001 - no network, proxy, HTTP error: all mean "not available"
            reason = f"download failed: {type(err).__name__}: {err}"
        finally:
            socket.setdefaulttimeout(previous)
    raise InceptionWeightsMissing(
        f"The FID Inception weights file {WEIGHTS_FILE} was not found ({reason}). Download it from "
        f"{WEIGHTS_URL} and put it at {target} (torch's hub cache), or anywhere and set "
        f"HWLIB_INCEPTION_WEIGHTS=/path/to/{WEIGHTS_FILE}. Looked in: " + ", ".join(str(p) for p in candidates)
    )


def weights_tag(path: str | Path) -> str:
    """``inception-<8 hex>``: names a weights file by a hash of its whole contents (hashed once per process)."""
    return "inception-" + file_digest(path)[:8]


def build_pytorch_fid_inception(state_dict: dict[str, torch.Tensor] | None):
    """pytorch-fid's ``InceptionV3`` (pool3 block) and the underlying ``Inception3`` holding ``fc``.

    ``state_dict`` (the contents of the weights file) is handed to pytorch-fid in place of its
    download; ``None`` keeps the network's own random initialisation.
    """
    import torchvision
    from pytorch_fid import inception as pfi

    built: dict[str, nn.Module] = {}
    original_load = torchvision.models.Inception3.load_state_dict

    def load(self: nn.Module, sd: dict, *args, **kwargs):  # records the Inception3 pytorch-fid builds
        built["net"] = self
        return original_load(self, sd, *args, **kwargs) if sd is not None else None

    with mock.patch.object(pfi, "load_state_dict_from_url", lambda *a, **k: state_dict), \
            mock.patch.object(torchvision.models.Inception3, "load_state_dict", load):
        model = pfi.InceptionV3([pfi.InceptionV3.BLOCK_INDEX_BY_DIM[2048]], resize_input=True, normalize_input=True)
    return model, built["net"]


def he_init_(net: nn.Module) -> nn.Module:
    """Random He-normal weights for every conv/linear layer: pool3 activations stay O(1) (the default
    initialisation that pytorch-fid leaves before loading its weights shrinks them to ~1e-8)."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    return net


class InceptionFeatures(nn.Module):
    """FID features and class probabilities of images (B, C, H, W) in [-1, 1] (C = 1 or 3).

    Grey images are repeated to 3 channels (as PIL's ``convert("RGB")`` in pytorch-fid), mapped to
    [0, 1], then pytorch-fid resizes to 299 x 299 (bilinear) and rescales to [-1, 1] itself.
    """

    dim = 2048

    def __init__(self, weights: str | Path | None = None, device: torch.device | str | None = None,
                 seed: int = 0) -> None:
        """``weights``: a file path, ``None`` (find or download the FID weights) or ``"random"``."""
        super().__init__()
        if weights == "random":
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                self.model, net = build_pytorch_fid_inception(None)
                he_init_(net)
            self.tag = f"inception-random{seed}"
        else:
            path = Path(weights) if weights is not None else inception_weights_path()
            state = torch.load(path, map_location="cpu", weights_only=True)
            with torch.random.fork_rng(devices=[]):  # the init the weights replace: leave the RNG be
                self.model, net = build_pytorch_fid_inception(state)
            self.tag = weights_tag(path)
        self.fc = net.fc  # 2048 -> 1008 logits of the 2015 Inception, for the Inception Score
        self.eval().requires_grad_(False)
        if device is not None:
            self.to(device)

    @staticmethod
    def preprocess(x: torch.Tensor) -> torch.Tensor:
        """(B, 1|3, H, W) in [-1, 1] -> (B, 3, H, W) in [0, 1], what pytorch-fid's model takes."""
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"images must be (B, 1 or 3, H, W), got {tuple(x.shape)}")
        x = x.float().clamp(-1, 1).add(1).div(2)
        return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) in [-1, 1] -> (B, 2048) pool3 features."""
        return self.model(self.preprocess(x))[0].flatten(1)

    def probs(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) in [-1, 1] -> (B, 1008) softmax class probabilities."""
        return F.softmax(self.fc(self.features(x)), dim=1)

    forward = features


def inception_score(probs: torch.Tensor | np.ndarray, splits: int = 10) -> tuple[float, float]:
    """Inception Score exp(E_x KL(p(y|x) || p(y))), mean and std over ``splits`` equal chunks.

    Args:
        probs: (N, C) class probabilities (rows sum to 1), e.g. ``InceptionFeatures.probs``.
    """
    p = torch.as_tensor(probs).detach().to("cpu", torch.float64)
    if p.ndim != 2 or len(p) < splits:
        raise ValueError(f"probs must be (N, C) with N >= splits={splits}, got {tuple(p.shape)}")
    scores = []
    for chunk in torch.tensor_split(p, splits):
        p_y = chunk.mean(0, keepdim=True)
        kl = (chunk * (torch.log(chunk.clamp_min(1e-12)) - torch.log(p_y.clamp_min(1e-12)))).sum(1)
        scores.append(float(torch.exp(kl.mean())))
    return float(np.mean(scores)), float(np.std(scores))
