"""CUB-200-2011 with StackGAN's preprocessed ``birds/`` folder (and SynthBirds, written in the same layout).

On-disk layout under ``root`` (default ``hwlib.data_dir() / "cub"``)::

    CUB_200_2011/images.txt                 "<id> <class>/<file>.jpg"
    CUB_200_2011/bounding_boxes.txt         "<id> <x> <y> <w> <h>"   (pixels, floats)
    CUB_200_2011/images/<class>/<file>.jpg
    birds/{train,test}/filenames.pickle     list of keys "002.Laysan_Albatross/Laysan_Albatross_0002_1027"
    birds/{train,test}/class_info.pickle    list of class ids (1..200), one per key
    birds/{train,test}/char-CNN-RNN-embeddings.pickle   (N, 10, 1024) float32
    birds/text_c10/<key>.txt                10 captions, one a line

The pickles were written by Python 2: they are read with ``encoding="latin1"`` through
:func:`load_pickle`, an unpickler that admits only numpy arrays, lists, tuples, dicts, numbers and
strings (an ordinary pickle can run any code). The ``all-MiniLM-L6-v2`` embedding option embeds the
``text_c10`` captions with :mod:`hwlib.text` and caches them as ``birds/<split>/all-MiniLM-L6-v2-embeddings.npy``.

Preprocessing as StackGAN: crop a square around the bounding box's centre with half-side
``0.75 * max(w, h)`` (clipped to the image), resize to ``load_size`` (76 for 64 px, 304 for 256 px),
then at training time a random ``out_size`` crop and a horizontal flip (:func:`augment`), one of the 10
caption embeddings per sample (:func:`pick_embedding`) and "wrong" images from another class
(:func:`wrong_indices`) for the matching-aware loss.
"""
from __future__ import annotations

import pickle
import shutil
import tarfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hwlib.paths import data_dir

EMBEDDINGS = {"char-CNN-RNN": ("char-CNN-RNN-embeddings.pickle", 1024), "all-MiniLM-L6-v2": ("all-MiniLM-L6-v2-embeddings.npy", 384)}
CAPTIONS_PER_IMAGE = 10
CUB_URL = "https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz?download=1"
BIRDS_URL = "https://drive.google.com/uc?export=download&id=0B3y_msrWZaXLT1BZdVdycDY5TEE"
EXPECTED_LAYOUT = """expected under {root}:
  CUB_200_2011/images.txt
  CUB_200_2011/bounding_boxes.txt
  CUB_200_2011/images/<class>/<file>.jpg
  birds/train/filenames.pickle, birds/test/filenames.pickle
  birds/train/class_info.pickle, birds/test/class_info.pickle
  birds/train/char-CNN-RNN-embeddings.pickle, birds/test/char-CNN-RNN-embeddings.pickle   (N, 10, 1024)
  birds/text_c10/<class>/<file>.txt   (10 captions each)
Get CUB_200_2011.tgz from https://data.caltech.edu/records/65de6-vp158 (CaltechDATA) and the
preprocessed birds.zip from the StackGAN README (https://github.com/hanzhanggit/StackGAN-Pytorch,
"Download our preprocessed char-CNN-RNN text embeddings for birds"); unpack both into {root}.
Without them, hwlib.data.synthbirds.make_synthbirds() writes an offline bird set in this layout."""


class CUBFormatError(ValueError):
    """A file of the CUB / ``birds`` layout is missing or malformed (the message names it)."""


# ----------------------------------------------------------------------------- safe Python-2 pickles

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): np.ndarray.__reduce__(np.zeros(1))[0],
    ("numpy._core.multiarray", "_reconstruct"): np.ndarray.__reduce__(np.zeros(1))[0],
    ("numpy.core.multiarray", "scalar"): np.float32(0).__reduce__()[0],
    ("numpy._core.multiarray", "scalar"): np.float32(0).__reduce__()[0],
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Admits numpy arrays/scalars/dtypes and the builtin containers, numbers and strings; nothing else."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a pickle (only numpy arrays, "
                                         "lists, tuples, dicts, numbers and strings are allowed)") from None


def load_pickle(path: str | Path) -> Any:
    """Read a (Python 2 or 3) pickle of arrays / containers / numbers / strings; Python 2 ``str`` -> ``str`` (latin1)."""
    path = Path(path)
    if not path.is_file():
        raise CUBFormatError(f"missing file {path}")
    try:
        with open(path, "rb") as f:
            return _RestrictedUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError) as err:
        raise CUBFormatError(f"cannot read {path}: {err}") from err


# ----------------------------------------------------------------------------- download


def download_cub(root: str | Path | None = None, timeout: float = 30.0) -> Path:
    """Fetch and unpack CUB_200_2011.tgz and StackGAN's birds.zip into ``root``; a clear error when that fails."""
    root = Path(root) if root is not None else data_dir() / "cub"
    root.mkdir(parents=True, exist_ok=True)
    jobs = [("CUB_200_2011", CUB_URL, "CUB_200_2011.tgz"), ("birds", BIRDS_URL, "birds.zip")]
    for folder, url, name in jobs:
        if (root / folder).is_dir():
            continue
        archive = root / name
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(archive, "wb") as f:
                if "html" in response.headers.get("Content-Type", ""):
                    raise OSError("the server answered with a web page, not the archive (Google Drive asks for a confirmation)")
                shutil.copyfileobj(response, f)
            if name.endswith(".tgz"):
                with tarfile.open(archive) as tar:
                    tar.extractall(root, filter="data")
            else:
                with zipfile.ZipFile(archive) as z:
                    z.extractall(root)
        except Exception as err:  # noqa: BLE001 - every failure gets the same explanation
            archive.unlink(missing_ok=True)
            raise CUBFormatError(f"could not download {name} from {url} ({err}).\n"
                                 + EXPECTED_LAYOUT.format(root=root)) from err
        archive.unlink(missing_ok=True)
    return root


# ----------------------------------------------------------------------------- the split


def _read_table(path: Path) -> dict[int, list[str]]:
    if not path.is_file():
        raise CUBFormatError(f"missing file {path}")
    rows = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            parts = line.split()
            try:
                rows[int(parts[0])] = parts[1:]
            except (ValueError, IndexError):
                raise CUBFormatError(f"{path}, line {n}: cannot parse {line!r}") from None
    return rows


def read_captions(root: Path, key: str) -> list[str]:
    """The 10 captions of ``key`` from ``birds/text_c10/<key>.txt``."""
    path = root / "birds" / "text_c10" / f"{key}.txt"
    if not path.is_file():
        raise CUBFormatError(f"missing caption file {path}")
    lines = [s.strip() for s in path.read_text(encoding="utf-8", errors="replace").splitlines() if s.strip()]
    if len(lines) < CAPTIONS_PER_IMAGE:
        raise CUBFormatError(f"{path} holds {len(lines)} captions, expected {CAPTIONS_PER_IMAGE}")
    return lines[:CAPTIONS_PER_IMAGE]


@dataclass
class BirdSplit:
    """One split (train/test) of the birds layout.

    ``keys`` (N,), ``class_ids`` (N,) int64 in 1..200, ``embeddings`` (N, 10, D) float32,
    ``bboxes`` (N, 4) float64 ``x, y, w, h`` in pixels, ``image_paths`` (N,).
    """

    root: Path
    split: str
    keys: list[str]
    class_ids: np.ndarray
    embeddings: np.ndarray
    bboxes: np.ndarray
    image_paths: list[Path]

    def __len__(self) -> int:
        return len(self.keys)

    def captions(self, index: int) -> list[str]:
        """The 10 captions of sample ``index``."""
        return read_captions(self.root, self.keys[index])

    def images(self, load_size: int, indices: np.ndarray | None = None) -> torch.Tensor:
        """Bounding-box crops resized to ``load_size``: uint8 tensor (len(indices), 3, load_size, load_size)."""
        indices = np.arange(len(self)) if indices is None else np.asarray(indices)
        out = torch.empty((len(indices), 3, load_size, load_size), dtype=torch.uint8)
        for j, i in enumerate(indices):
            out[j] = torch.from_numpy(crop_and_resize(self.image_paths[i], self.bboxes[i], load_size)).permute(2, 0, 1)
        return out


def crop_and_resize(path: Path, bbox: np.ndarray, size: int) -> np.ndarray:
    """StackGAN's crop: a square of half-side 0.75·max(w, h) around the box centre, clipped, resized (bicubic).

    Returns uint8 (size, size, 3).
    """
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        width, height = im.size
        x, y, w, h = bbox
        r = int(max(w, h) * 0.75)
        cx, cy = int(x + w / 2), int(y + h / 2)
        box = (max(0, cx - r), max(0, cy - r), min(width, cx + r), min(height, cy + r))
        im = im.crop(box).resize((size, size), Image.BICUBIC)
        return np.array(im, dtype=np.uint8)


def _embeddings(root: Path, split: str, keys: list[str], embedding: str) -> np.ndarray:
    if embedding not in EMBEDDINGS:
        raise ValueError(f"unknown embedding {embedding!r}; choose one of {sorted(EMBEDDINGS)}")
    name, dim = EMBEDDINGS[embedding]
    path = root / "birds" / split / name
    if embedding == "char-CNN-RNN":
        emb = np.asarray(load_pickle(path), dtype=np.float32)
    elif path.is_file():
        emb = np.load(path, allow_pickle=False)
    else:  # embed the text_c10 captions once, then cache next to the other embeddings
        from hwlib import text

        captions = [c for key in keys for c in read_captions(root, key)]
        emb = text.encode(captions).reshape(len(keys), CAPTIONS_PER_IMAGE, -1)
        np.save(path, emb)
    if emb.shape != (len(keys), CAPTIONS_PER_IMAGE, dim):
        raise CUBFormatError(f"{path}: embeddings of shape {emb.shape}, expected ({len(keys)}, {CAPTIONS_PER_IMAGE}, {dim})")
    return emb.astype(np.float32, copy=False)


def open_birds(root: str | Path | None = None, split: str = "train", embedding: str = "char-CNN-RNN",
               download: bool = False) -> BirdSplit:
    """Read the metadata and caption embeddings of one split; images are read by :meth:`BirdSplit.images`.

    ``root`` defaults to ``hwlib.data_dir() / "cub"``; ``download=True`` fetches the official archives
    when the folders are missing. Every missing or malformed file raises :class:`CUBFormatError` naming it.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    root = Path(root) if root is not None else data_dir() / "cub"
    if not (root / "CUB_200_2011").is_dir() or not (root / "birds").is_dir():
        if download:
            download_cub(root)
        else:
            raise CUBFormatError("CUB-200-2011 / birds folders not found (pass download=True to fetch them).\n"
                                 + EXPECTED_LAYOUT.format(root=root))
    cub, birds = root / "CUB_200_2011", root / "birds" / split
    keys = [str(k) for k in load_pickle(birds / "filenames.pickle")]
    class_ids = np.asarray(load_pickle(birds / "class_info.pickle"), dtype=np.int64).reshape(-1)
    if len(class_ids) != len(keys):
        raise CUBFormatError(f"{birds / 'class_info.pickle'} lists {len(class_ids)} classes for {len(keys)} filenames")
    images = _read_table(cub / "images.txt")
    boxes = _read_table(cub / "bounding_boxes.txt")
    id_of = {v[0].rsplit(".", 1)[0]: k for k, v in images.items()}
    missing = [k for k in keys if k not in id_of]
    if missing:
        raise CUBFormatError(f"{len(missing)} keys of {birds / 'filenames.pickle'} are not in {cub / 'images.txt'}, "
                             f"e.g. {missing[0]!r}")
    ids = [id_of[k] for k in keys]
    try:
        bboxes = np.array([[float(v) for v in boxes[i]] for i in ids], dtype=np.float64).reshape(len(keys), 4)
    except (KeyError, ValueError):
        raise CUBFormatError(f"{cub / 'bounding_boxes.txt'} lacks a box 'x y w h' for some image of {split}") from None
    paths = [cub / "images" / images[i][0] for i in ids]
    emb = _embeddings(root, split, keys, embedding)
    return BirdSplit(root, split, keys, class_ids, emb, bboxes, paths)


# ----------------------------------------------------------------------------- training-time sampling


def augment(images: torch.Tensor, out_size: int, flip: bool = True, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random ``out_size`` crop (one offset per sample) and horizontal flip of uint8 images (B, 3, L, L).

    Returns float (B, 3, out_size, out_size) in [-1, 1] on the images' device.
    """
    b, _, h, w = images.shape
    dev = images.device
    oy = torch.randint(0, h - out_size + 1, (b,), generator=generator).to(dev)
    ox = torch.randint(0, w - out_size + 1, (b,), generator=generator).to(dev)
    ar = torch.arange(out_size, device=dev)
    rows, cols = (oy[:, None] + ar)[:, :, None], (ox[:, None] + ar)[:, None, :]
    if flip:
        do = (torch.rand(b, generator=generator) < 0.5).to(dev)
        cols = torch.where(do[:, None, None], ox[:, None, None] + out_size - 1 - ar[None, None, :], cols)
    crops = images[torch.arange(b, device=dev)[:, None, None], :, rows, cols]  # (B, S, S, 3)
    return crops.permute(0, 3, 1, 2).float().div(127.5).sub(1.0).contiguous()


def pick_embedding(embeddings: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One of the 10 caption embeddings per sample: (B, 10, D) -> (B, D)."""
    b, k, _ = embeddings.shape
    choice = torch.randint(0, k, (b,), generator=generator).to(embeddings.device)
    return embeddings[torch.arange(b, device=embeddings.device), choice]


def wrong_indices(class_ids: torch.Tensor, index: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """For each dataset index in ``index`` (B,), a random index whose class differs (``class_ids`` (N,))."""
    n = class_ids.shape[0]
    if bool((class_ids == class_ids[0]).all()):
        raise ValueError("wrong images need at least two classes")
    out = torch.randint(0, n, index.shape, generator=generator).to(index.device)
    same = class_ids[out] == class_ids[index]
    while bool(same.any()):
        out[same] = torch.randint(0, n, (int(same.sum()),), generator=generator).to(index.device)
        same = class_ids[out] == class_ids[index]
    return out


def index_loader(n: int, batch_size: int, seed: int = 0, device: torch.device | str | None = None):
    """A :class:`~hwlib.data.resident.ResidentLoader` over dataset indices ``(idx (B,),)``; the step gathers the rest."""
    from hwlib.data.resident import ResidentLoader

    return ResidentLoader(torch.arange(n), batch_size=batch_size, shuffle=True, drop_last=True, seed=seed, device=device)
