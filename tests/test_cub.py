"""The CUB / StackGAN ``birds/`` loader against a fixture in the real layout (Python-2 pickles)."""
from __future__ import annotations

import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from fixtures_cub import PER_CLASS, make_cub_fixture, py2_dumps  # noqa: E402

from hwlib.data import cub  # noqa: E402


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    return make_cub_fixture(tmp_path / "cub")


def test_fixture_is_python2_format(root: Path) -> None:
    raw = (root / "birds/train/filenames.pickle").read_bytes()
    assert raw[:2] == b"\x80\x02" and b"U" in raw and b"X" not in raw[:40]  # SHORT_BINSTRING, no unicode opcode
    with pytest.raises(UnicodeDecodeError):  # the latin1 encoding is required for the array payload
        pickle.loads((root / "birds/train/char-CNN-RNN-embeddings.pickle").read_bytes(), encoding="ascii")


def test_open_birds_reads_real_layout(root: Path) -> None:
    train = cub.open_birds(root, "train")
    test = cub.open_birds(root, "test")
    assert len(train) == 2 * PER_CLASS and len(test) == 2 * PER_CLASS
    assert train.keys[0].startswith("001.Black_footed_Albatross/") and isinstance(train.keys[0], str)
    assert train.embeddings.shape == (6, 10, 1024) and train.embeddings.dtype == np.float32
    assert set(train.class_ids) == {1, 2} and set(test.class_ids) == {3, 4}
    assert train.bboxes[0].tolist() == [20.0, 15.0, train.bboxes[0, 2], train.bboxes[0, 3]]
    assert train.captions(0)[3].endswith("caption 3") and len(train.captions(0)) == 10


def test_crop_is_around_the_bounding_box(root: Path) -> None:
    split = cub.open_birds(root, "train")
    images = split.images(76)
    assert images.shape == (6, 3, 76, 76) and images.dtype == torch.uint8
    centre = images[:, :, 30:46, 30:46].float().mean((0, 2, 3))
    assert centre[0] > 200 and centre[2] < 60  # the red box fills the middle of every crop


def test_restricted_unpickler_refuses_code(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pickle"
    path.write_bytes(pickle.dumps(Evil(), protocol=2))
    with pytest.raises(cub.CUBFormatError, match=r"refusing to load (__builtin__|builtins)\.print"):
        cub.load_pickle(path)
    path.write_bytes(py2_dumps([b"caf\xe9", 7, 2.5, (1, 2), {"k": np.arange(3, dtype=np.int64)}]))
    out = cub.load_pickle(path)
    assert out[:4] == ["café", 7, 2.5, (1, 2)] and out[4]["k"].tolist() == [0, 1, 2]


def test_malformed_files_are_named(root: Path) -> None:
    emb = root / "birds/train/char-CNN-RNN-embeddings.pickle"
    emb.write_bytes(py2_dumps(np.zeros((6, 10, 512), np.float32)))
    with pytest.raises(cub.CUBFormatError, match=r"char-CNN-RNN-embeddings.pickle.*\(6, 10, 512\).*\(6, 10, 1024\)"):
        cub.open_birds(root, "train")
    (root / "birds/test/filenames.pickle").write_bytes(py2_dumps(["999.Nope/Nope_0001"] * 6))
    with pytest.raises(cub.CUBFormatError, match="999.Nope/Nope_0001.*images.txt|images.txt.*999.Nope"):
        cub.open_birds(root, "test")
    (root / "CUB_200_2011/bounding_boxes.txt").unlink()
    with pytest.raises(cub.CUBFormatError, match="bounding_boxes.txt"):
        cub.open_birds(root, "train")


def test_missing_data_and_failed_download_explain_layout(tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(cub.CUBFormatError, match="download=True"):
        cub.open_birds(tmp_path / "none")

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(cub.urllib.request, "urlopen", offline)
    with pytest.raises(cub.CUBFormatError) as err:
        cub.open_birds(tmp_path / "none", download=True)
    message = str(err.value)
    for needle in ("CUB_200_2011.tgz", "network unreachable", "birds/train/char-CNN-RNN-embeddings.pickle",
                   "bounding_boxes.txt", "text_c10", "synthbirds"):
        assert needle in message


def test_minilm_option_embeds_text_c10_and_caches(root: Path, monkeypatch) -> None:
    from hwlib import text

    calls = []

    def fake_encode(captions):
        calls.append(len(captions))
        return np.stack([np.full(384, len(c), np.float32) for c in captions])

    monkeypatch.setattr(text, "encode", fake_encode)
    first = cub.open_birds(root, "train", embedding="all-MiniLM-L6-v2")
    again = cub.open_birds(root, "train", embedding="all-MiniLM-L6-v2")
    assert calls == [60] and first.embeddings.shape == (6, 10, 384)
    np.testing.assert_array_equal(first.embeddings, again.embeddings)
    assert first.embeddings[0, 0, 0] == len(first.captions(0)[0])


def test_augment_crops_flips_and_scales() -> None:
    images = torch.arange(76, dtype=torch.uint8).repeat(2, 3, 76, 1)  # value = column index
    out = cub.augment(images, 64, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 3, 64, 64) and out.min() >= -1 and out.max() <= 1
    cols = ((out[:, 0, 0] + 1) * 127.5).round()
    steps = cols[:, 1:] - cols[:, :-1]
    assert torch.all((steps == 1).all(1) | (steps == -1).all(1))  # a contiguous crop, maybe mirrored
    flips = torch.stack([cub.augment(images[:1], 64)[0, 0, 0, 1] < cub.augment(images[:1], 64)[0, 0, 0, 0]
                         for _ in range(40)])
    assert 0 < flips.float().mean() < 1


def test_wrong_images_come_from_other_classes() -> None:
    class_ids = torch.tensor([1, 1, 2, 2, 3, 3, 3])
    idx = torch.arange(7).repeat(20)
    wrong = cub.wrong_indices(class_ids, idx, torch.Generator().manual_seed(1))
    assert torch.all(class_ids[wrong] != class_ids[idx]) and len(set(wrong.tolist())) == 7
    emb = torch.arange(2 * 10 * 3, dtype=torch.float32).view(2, 10, 3)
    picked = cub.pick_embedding(emb)
    assert picked.shape == (2, 3) and all(any(torch.equal(picked[i], emb[i, k]) for k in range(10)) for i in range(2))
