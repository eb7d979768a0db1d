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

from hwlib.data import cub, synthbirds  # noqa: E402


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


def test_swapped_embeddings_embed_one_colour_swap_per_caption_and_cache(root: Path, monkeypatch) -> None:
    from hwlib import text

    calls: list[list[str]] = []

    def fake_encode(captions):
        calls.append(list(captions))
        return np.stack([np.full(384, len(c) + 0.5 * ("red" in c), np.float32) for c in captions])

    monkeypatch.setattr(text, "encode", fake_encode)
    split = cub.open_birds(root, "train", embedding="all-MiniLM-L6-v2")
    first = root / "birds" / "text_c10" / f"{split.keys[0]}.txt"  # the fixture's captions name no colour: give some one
    first.write_text("".join(f"a red bird with {c} wings\n" if k < 5 else f"a plain bird {k}\n"
                             for k, c in enumerate(("blue", "grey", "gray", "white", "pink") + ("",) * 5)))
    swapped = split.swapped_embeddings()
    captions = [c for i in range(len(split)) for c in split.captions(i)]
    n_coloured = sum(text.swap_colour(c, np.random.default_rng(0)) is not None for c in captions)
    assert swapped.shape == split.embeddings.shape and n_coloured == 5 and len(calls[1]) == n_coloured
    assert all(text.swap_colour(c, np.random.default_rng(0)) != c for c in calls[1])  # every one a changed caption
    flat_new, flat_old = swapped.reshape(len(captions), -1), split.embeddings.reshape(len(captions), -1)
    coloured = np.array([text.swap_colour(c, np.random.default_rng(0)) is not None for c in captions])
    np.testing.assert_array_equal(flat_new[~coloured], flat_old[~coloured])  # no colour word: its own embedding
    np.testing.assert_array_equal(split.swapped_embeddings(), swapped)
    assert len(calls) == 2  # cached
    with pytest.raises(ValueError, match="sentence encoder"):
        cub.open_birds(root, "train").swapped_embeddings()


def test_caption_labels_parse_each_captions_part_colours(root: Path) -> None:
    split = cub.open_birds(root, "train")
    first = root / "birds" / "text_c10" / f"{split.keys[0]}.txt"
    first.write_text("this bird has a red crown, gray wings and a short black beak\n"
                     "a small bird with a blue body, a white belly and green wings\n" + "a plain bird\n" * 8)
    labels = split.caption_labels()
    assert labels.shape == (len(split), 10, 4) and labels.dtype == np.int64
    red, grey, blue, white, green = (list(synthbirds.COLOURS).index(c) for c in ("red", "grey", "blue", "white", "green"))
    assert labels[0, 0].tolist() == [-1, grey, red, -1] and labels[0, 1].tolist() == [blue, green, -1, white]
    assert (labels[0, 2:] == -1).all()  # body, wing, crown, belly; -1 where a caption names none
    per_image = split.image_part_labels()  # the colour the image's captions name most often, per part
    assert per_image.shape == (len(split), 4)  # the wings are named grey once and green once: a tie goes to the
    assert per_image[0].tolist() == [blue, green, red, white]  # colour listed first in synthbirds.COLOURS
    first.write_text("a bird with red wings\n" * 2 + "a bird with blue wings\n" * 3 + "a plain bird\n" * 5)
    assert split.image_part_labels()[0].tolist() == [-1, blue, -1, -1]


def test_pick_embedding_averages_captions_without_replacement() -> None:
    emb = torch.arange(2 * 10 * 3, dtype=torch.float32).view(2, 10, 3)
    torch.testing.assert_close(cub.pick_embedding(emb, average=10), emb.mean(1))  # all ten: the mean
    four = cub.pick_embedding(emb, generator=torch.Generator().manual_seed(0), average=4)
    rows = [{tuple(r.tolist()) for r in emb[i]} for i in range(2)]
    assert four.shape == (2, 3) and all(tuple(four[i].tolist()) not in rows[i] for i in range(2))


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


def test_augment_index_layout_and_both_crop_paths_agree() -> None:
    images = torch.randint(0, 256, (9, 3, 76, 76), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    index = torch.tensor([4, 0, 4, 8, 2])
    for layout in (torch.contiguous_format, torch.channels_last):
        x = images.contiguous(memory_format=layout)
        for flip in (True, False):
            rows = cub.augment(x[index], 64, flip, torch.Generator().manual_seed(0))
            out = cub.augment(x, 64, flip, torch.Generator().manual_seed(0), index=index)  # no copy of the rows first
            assert torch.equal(out, rows) and out.is_contiguous(memory_format=layout)
            assert out.is_contiguous() == (layout == torch.contiguous_format)  # channels-last stays channels-last
        g = torch.Generator().manual_seed(2)
        oy, ox, flips = torch.randint(0, 13, (5,), generator=g), torch.randint(0, 13, (5,), generator=g), torch.rand(5, generator=g) < 0.5
        windows = cub._crop_windows(x, 64, index, oy, ox, flips)  # the CPU's windows and the GPU's gather agree
        assert torch.equal(windows, cub._crop_gather(x, 64, index, oy, ox, flips))
        i = int(flips.float().argmax())  # a mirrored one, read back from the source image
        assert torch.equal(windows[i], x[index[i], :, oy[i]:oy[i] + 64, ox[i]:ox[i] + 64].flip(-1))


def test_wrong_images_come_from_other_classes() -> None:
    class_ids = torch.tensor([1, 1, 2, 2, 3, 3, 3])
    idx = torch.arange(7).repeat(20)
    wrong = cub.wrong_indices(class_ids, idx, torch.Generator().manual_seed(1))
    assert torch.all(class_ids[wrong] != class_ids[idx]) and len(set(wrong.tolist())) == 7
    emb = torch.arange(2 * 10 * 3, dtype=torch.float32).view(2, 10, 3)
    picked = cub.pick_embedding(emb)
    assert picked.shape == (2, 3) and all(any(torch.equal(picked[i], emb[i, k]) for k in range(10)) for i in range(2))


# ----------------------------------------------------------------------------- download (atomic)


def _tgz(folder: Path, dest: Path) -> Path:
    import tarfile

    with tarfile.open(dest, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
        tar.add(folder / "images.txt", arcname="attributes.txt")  # CUB's archive holds a file beside the folder
    return dest


def _zip(folder: Path, dest: Path) -> Path:
    import zipfile

    with zipfile.ZipFile(dest, "w") as z:
        for path in sorted(folder.rglob("*")):
            z.write(path, path.relative_to(folder.parent).as_posix())
    return dest


def _truncated(path: Path) -> Path:
    out = path.with_name("truncated_" + path.name)
    out.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return out


@pytest.fixture()
def archives(tmp_path: Path) -> dict[str, Path]:
    src = make_cub_fixture(tmp_path / "src")
    tgz, zipped = _tgz(src / "CUB_200_2011", tmp_path / "CUB_200_2011.tgz"), _zip(src / "birds", tmp_path / "birds.zip")
    return {"tgz": tgz, "zip": zipped, "bad_tgz": _truncated(tgz), "bad_zip": _truncated(zipped),
            "other_zip": _zip(src / "CUB_200_2011", tmp_path / "other.zip")}


def _serve(monkeypatch, cub_archive: Path, birds_archive: Path) -> None:
    monkeypatch.setattr(cub, "CUB_URL", cub_archive.as_uri())
    monkeypatch.setattr(cub, "BIRDS_URL", birds_archive.as_uri())


def test_download_from_local_archives(tmp_path: Path, archives, monkeypatch) -> None:
    root = tmp_path / "data"
    _serve(monkeypatch, archives["tgz"], archives["zip"])
    assert cub.download_cub(root) == root
    assert sorted(p.name for p in root.iterdir()) == ["CUB_200_2011", "birds"]  # no archive, no temporary left
    assert len(cub.open_birds(root, "train")) == 2 * PER_CLASS
    _serve(monkeypatch, tmp_path / "gone.tgz", tmp_path / "gone.zip")
    cub.download_cub(root)  # complete folders are not fetched again


def test_failed_extraction_leaves_no_folder(tmp_path: Path, archives, monkeypatch) -> None:
    root = tmp_path / "data"
    _serve(monkeypatch, archives["bad_tgz"], archives["zip"])
    with pytest.raises(cub.CUBFormatError, match=r"could not download CUB_200_2011.tgz from file://.*truncated_"):
        cub.download_cub(root)
    assert list(root.iterdir()) == []  # neither a half-extracted CUB_200_2011 nor a stray archive
    _serve(monkeypatch, archives["tgz"], archives["bad_zip"])
    with pytest.raises(cub.CUBFormatError, match="could not download birds.zip"):
        cub.download_cub(root)
    assert [p.name for p in root.iterdir()] == ["CUB_200_2011"]
    _serve(monkeypatch, archives["tgz"], archives["other_zip"])  # an archive without the expected folder
    with pytest.raises(cub.CUBFormatError, match="holds no folder birds/"):
        cub.download_cub(root)
    assert [p.name for p in root.iterdir()] == ["CUB_200_2011"]
    _serve(monkeypatch, archives["tgz"], archives["zip"])  # the retry completes the set
    cub.download_cub(root)
    assert len(cub.open_birds(root, "test")) == 2 * PER_CLASS


def test_interrupted_extraction_leaves_no_folder(tmp_path: Path, archives, monkeypatch) -> None:
    import tarfile

    root = tmp_path / "data"
    _serve(monkeypatch, archives["tgz"], archives["zip"])
    extract = tarfile.TarFile.extract

    def interrupted(self, path, *args, **kwargs):  # the user presses Ctrl-C after a few files
        for member in self.getmembers()[:5]:
            extract(self, member, path, filter="data")
        raise KeyboardInterrupt

    monkeypatch.setattr(tarfile.TarFile, "extractall", interrupted)
    with pytest.raises(KeyboardInterrupt):
        cub.download_cub(root)
    assert list(root.iterdir()) == []
    monkeypatch.undo()
    _serve(monkeypatch, archives["tgz"], archives["zip"])
    cub.download_cub(root)
    assert len(cub.open_birds(root, "train")) == 2 * PER_CLASS


# ----------------------------------------------------------------------------- malformed inputs name the file


def _set_line(path: Path, image_id: int, line: str | None) -> None:
    """Replace (or with ``None`` drop) the line of ``image_id`` in a CUB table."""
    rows = [r for r in path.read_text().splitlines() if r.split()[0] != str(image_id)]
    path.write_text("\n".join(([line] if line is not None else []) + rows) + "\n")


FIRST_KEY = "001.Black_footed_Albatross/Black_footed_Albatross_0001_100"


def test_corrupt_jpegs_are_named(root: Path) -> None:
    split = cub.open_birds(root, "train")
    path = split.image_paths[2]
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(cub.CUBFormatError, match=rf"cannot decode the image .*{path.name}"):
        split.images(76)
    path.write_bytes(b"this is not a jpeg")
    with pytest.raises(cub.CUBFormatError, match=rf"cannot decode the image .*{path.name}.*CUB_200_2011.tgz"):
        split.images(76, indices=[2])
    assert split.images(76, indices=[0, 1]).shape == (2, 3, 76, 76)  # the others still load


@pytest.mark.parametrize("box", ["nan 15 30 30", "20 inf 30 30", "-5 15 30 30", "20 15 0 30", "20 15 30 -3",
                                 "20 15 0 0"])
def test_bad_bounding_boxes_are_named(root: Path, box: str) -> None:
    _set_line(root / "CUB_200_2011/bounding_boxes.txt", 1, f"1 {box}")
    with pytest.raises(cub.CUBFormatError, match=rf"bounding_boxes.txt, id 1 \({FIRST_KEY}\): box"):
        cub.open_birds(root, "train")


def test_bounding_box_off_the_image_is_named(root: Path) -> None:
    _set_line(root / "CUB_200_2011/bounding_boxes.txt", 1, "1 500.0 400.0 30.0 30.0")
    split = cub.open_birds(root, "train")
    with pytest.raises(cub.CUBFormatError, match=r"bounding box .* of .*_0001_100.jpg .*does not lie inside its \d+ x \d+ image"):
        split.images(76)
    with pytest.raises(cub.CUBFormatError, match="does not lie inside"):
        cub.crop_and_resize(split.image_paths[1], np.array([1.0, 1.0, 0.4, 0.4]) * np.nan, 8)


def test_images_txt_lines_are_checked(root: Path) -> None:
    images = root / "CUB_200_2011/images.txt"
    original = images.read_text()
    _set_line(images, 2, "2")
    with pytest.raises(cub.CUBFormatError, match=r"images.txt, line 1: '2' has 1 field\(s\), expected 2"):
        cub.open_birds(root, "train")
    images.write_text(original + "3 001.Black_footed_Albatross/another.jpg\n")
    with pytest.raises(cub.CUBFormatError, match=r"images.txt, line 13: id 3 is listed again \(first on line 3\)"):
        cub.open_birds(root, "train")
    images.write_text(original.replace(f"1 {FIRST_KEY}.jpg", "1 ../../outside.jpg"))
    with pytest.raises(cub.CUBFormatError, match=r"images.txt, id 1: '../../outside.jpg' is not a relative path inside"):
        cub.open_birds(root, "train")


@pytest.mark.parametrize("value,message", [
    ({"keys": 1}, r"filenames.pickle holds a dict, expected a list of strings"),
    (np.arange(6), r"filenames.pickle holds a ndarray, expected a list of strings"),
    ([FIRST_KEY, 7], r"filenames.pickle: item 1 is a int \(7\), expected a string key"),
    ([FIRST_KEY, "../../../etc/passwd"], r"filenames.pickle, item 1: '../../../etc/passwd' is not a relative path"),
    ([FIRST_KEY, "/etc/passwd"], r"filenames.pickle, item 1: '/etc/passwd' is not a relative path"),
])
def test_filenames_pickle_must_be_relative_string_keys(root: Path, value, message: str) -> None:
    (root / "birds/train/filenames.pickle").write_bytes(py2_dumps(value))
    with pytest.raises(cub.CUBFormatError, match=message):
        cub.open_birds(root, "train")


def test_caption_keys_cannot_leave_the_root(root: Path) -> None:
    for key in ("../../secret", "/etc/passwd", "..\\..\\secret"):
        with pytest.raises(cub.CUBFormatError, match="not a relative path inside"):
            cub.read_captions(root, key)


@pytest.mark.parametrize("ids,message", [
    ([1, 1.7, 1, 2, 2, 2], r"item 1 \(key '.*'\) has class id 1.7, expected a whole number in 1..200"),
    ([1, 1, 1, 2, 2, 201], r"item 5 .* has class id 201"),
    ([0, 1, 1, 2, 2, 2], r"item 0 .* has class id 0"),
    ([1, 1, 1, 2, 2, float("nan")], r"item 5 .* has class id nan"),
    (["1", "1", "1", "2", "2", "2"], r"holds <U1 values, expected integer class ids 1..200"),
])
def test_class_ids_must_be_whole_numbers_in_range(root: Path, ids, message: str) -> None:
    (root / "birds/train/class_info.pickle").write_bytes(py2_dumps(ids))
    with pytest.raises(cub.CUBFormatError, match=rf"class_info.pickle: {message}|class_info.pickle {message}"):
        cub.open_birds(root, "train")


def test_whole_float_class_ids_are_accepted(root: Path) -> None:
    (root / "birds/train/class_info.pickle").write_bytes(py2_dumps(np.array([1, 1, 1, 2, 2, 2], np.float64)))
    split = cub.open_birds(root, "train")
    assert split.class_ids.dtype == np.int64 and split.class_ids.tolist() == [1, 1, 1, 2, 2, 2]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_embeddings_are_refused(root: Path, bad: float) -> None:
    emb = np.zeros((6, 10, 1024), np.float32)
    emb[4, 3, 7] = bad
    (root / "birds/train/char-CNN-RNN-embeddings.pickle").write_bytes(py2_dumps(emb))
    with pytest.raises(cub.CUBFormatError, match=r"char-CNN-RNN-embeddings.pickle: 1 sample\(s\) have NaN or infinite "
                                                 r"embeddings, the first '002.Laysan_Albatross/.*' \(index 4\)"):
        cub.open_birds(root, "train")


def test_minilm_cache_is_atomic_checked_and_rebuilt(root: Path, monkeypatch) -> None:
    from hwlib import text

    monkeypatch.setattr(text, "encode", lambda caps: np.ones((len(caps), 384), np.float32))
    cub.open_birds(root, "train", embedding="all-MiniLM-L6-v2")
    cache = root / "birds/train/all-MiniLM-L6-v2-embeddings.npy"
    assert sorted(p.name for p in cache.parent.iterdir() if p.name.startswith(".")) == []  # no temporary left
    cache.write_bytes(cache.read_bytes()[:300])  # a cache cut short (disk full, killed writer)
    with pytest.warns(RuntimeWarning, match=f"{cache.name} is unreadable"):
        assert cub.open_birds(root, "train", embedding="all-MiniLM-L6-v2").embeddings.shape == (6, 10, 384)
    np.save(cache, np.full((6, 10, 384), np.nan, np.float32))
    with pytest.raises(cub.CUBFormatError, match=r"all-MiniLM-L6-v2-embeddings.npy: 6 sample\(s\) have NaN"):
        cub.open_birds(root, "train", embedding="all-MiniLM-L6-v2")


# ----------------------------------------------------------------------------- Python 3 pickles, latin-1 captions


@pytest.mark.parametrize("protocol", range(6))
def test_python3_pickles_of_arrays_load(tmp_path: Path, protocol: int) -> None:
    value = {"c": np.arange(6, dtype=np.float32).reshape(2, 3), "f": np.asfortranarray(np.eye(3)),
             "strided": np.arange(10)[::2], "scalar": np.float64(2.5), "int": np.int64(-3), "dtype": np.dtype("<u2"),
             "text": ["café", "002.Laysan_Albatross/x"], "bytes": b"\x00\xff", "nested": (1, 2.0, None, True)}
    path = tmp_path / "p.pickle"
    path.write_bytes(pickle.dumps(value, protocol=protocol))
    out = cub.load_pickle(path)
    for key in ("c", "f", "strided"):
        assert out[key].dtype == value[key].dtype and np.array_equal(out[key], value[key])
    assert out["f"].flags.f_contiguous and out["scalar"] == 2.5 and out["int"] == -3 and out["dtype"] == np.dtype("<u2")
    assert out["text"] == value["text"] and out["bytes"] == b"\x00\xff" and out["nested"] == (1, 2.0, None, True)


@pytest.mark.parametrize("protocol", range(6))
def test_open_birds_reads_python3_pickles(root: Path, protocol: int) -> None:
    birds = root / "birds/train"
    for name in ("filenames.pickle", "class_info.pickle", "char-CNN-RNN-embeddings.pickle"):
        (birds / name).write_bytes(pickle.dumps(cub.load_pickle(birds / name), protocol=protocol))
    assert cub.open_birds(root, "train").embeddings.shape == (6, 10, 1024)


@pytest.mark.parametrize("protocol", range(6))
def test_hostile_pickles_are_refused_at_every_protocol(tmp_path: Path, protocol: int) -> None:
    import os

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "evil.pickle"
    path.write_bytes(pickle.dumps([np.zeros(2), Evil()], protocol=protocol))
    with pytest.raises(cub.CUBFormatError, match=r"evil.pickle.*refusing to load (os|posix|nt)\.system"):
        cub.load_pickle(path)


def test_unusual_codecs_and_out_of_band_buffers_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "codec.pickle"
    path.write_bytes(b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX\x05\x00\x00\x00rot13\x86R.")
    with pytest.raises(cub.CUBFormatError, match="codec.pickle.*refusing _codecs.encode with encoding 'rot13'"):
        cub.load_pickle(path)
    buffers: list = []
    path.write_bytes(pickle.dumps(np.arange(5), protocol=5, buffer_callback=buffers.append))
    assert buffers  # the array's data went out of band: the file alone cannot rebuild it
    with pytest.raises(cub.CUBFormatError, match="codec.pickle.*out-of-band"):
        cub.load_pickle(path)


def test_latin1_captions_are_read_with_a_warning(root: Path) -> None:
    split = cub.open_birds(root, "train")
    path = root / "birds/text_c10" / f"{split.keys[0]}.txt"
    path.write_bytes("".join(f"a caf\xe9-coloured bird {k}\n" for k in range(10)).encode("latin-1"))
    with pytest.warns(UnicodeWarning, match=rf"{path.name} is not UTF-8.*read as latin-1"):
        captions = split.captions(0)
    assert captions[0] == "a café-coloured bird 0" and len(captions) == 10


def test_resolve_dataset_prefers_real_cub_and_falls_back_to_synthbirds(tmp_path: Path, archives, monkeypatch,
                                                                       capsys) -> None:
    root = tmp_path / "data"
    assert cub.resolve_dataset("auto", root) == "synthbirds"
    assert "training on SynthBirds" in capsys.readouterr().out
    with pytest.raises(cub.CUBFormatError, match="birds folders not found"):
        cub.resolve_dataset("cub", root)
    _serve(monkeypatch, tmp_path / "gone.tgz", tmp_path / "gone.zip")  # offline: auto falls back, cub fails
    assert cub.resolve_dataset("auto", root, download=True) == "synthbirds"
    assert "could not download CUB_200_2011.tgz" in capsys.readouterr().out
    with pytest.raises(cub.CUBFormatError, match="could not download"):
        cub.resolve_dataset("cub", root, download=True)
    _serve(monkeypatch, archives["tgz"], archives["zip"])
    assert cub.resolve_dataset("auto", root, download=True) == "cub"
    assert cub.resolve_dataset("auto", root) == "cub" and cub.resolve_dataset("synthbirds", root) == "synthbirds"
    with pytest.raises(ValueError, match="'auto', 'cub' or 'synthbirds'"):
        cub.resolve_dataset("CUB-200", root)


def test_google_drive_urls_go_through_gdown(tmp_path: Path, monkeypatch) -> None:
    import sys
    import types

    calls = []

    def fake_download(url, output, quiet):
        calls.append(url)
        Path(output).write_bytes(b"zip")
        return output

    monkeypatch.setitem(sys.modules, "gdown", types.SimpleNamespace(download=fake_download))
    cub._fetch(cub.BIRDS_URL, tmp_path / "birds.zip", timeout=1)
    assert calls == [cub.BIRDS_URL] and (tmp_path / "birds.zip").read_bytes() == b"zip"
    monkeypatch.setitem(sys.modules, "gdown", types.SimpleNamespace(download=lambda url, output, quiet: None))
    with pytest.raises(OSError, match="gdown could not fetch"):
        cub._fetch(cub.BIRDS_URL, tmp_path / "again.zip", timeout=1)


def test_center_crop_takes_the_middle_and_scales_to_minus_one_one() -> None:
    images = torch.randint(0, 256, (2, 3, 76, 76), dtype=torch.uint8)
    out = cub.center_crop(images, 64)
    assert out.shape == (2, 3, 64, 64) and out.dtype == torch.float32
    torch.testing.assert_close(out, images[:, :, 6:70, 6:70].float() / 127.5 - 1, rtol=0, atol=0)
    assert cub.center_crop(torch.full((1, 3, 8, 8), 255, dtype=torch.uint8), 4).eq(1).all()


def test_bag_of_ngrams_option_trains_the_encoder_once_on_train_captions(root: Path, monkeypatch) -> None:
    from hwlib import text

    fits = []
    real_fit = text.fit_ngram_encoder
    monkeypatch.setattr(text, "fit_ngram_encoder", lambda *a, **k: fits.append(len(a[0])) or real_fit(*a, **k, steps=5))
    train = cub.open_birds(root, "train", embedding="bag-of-ngrams")
    test = cub.open_birds(root, "test", embedding="bag-of-ngrams")
    assert fits == [len(train)] and train.embeddings.shape == (6, 10, 128) and test.embeddings.shape == (6, 10, 128)
    assert (root / "birds" / cub.NGRAM_ENCODER).is_file() and (root / "birds/test/bag-of-ngrams-embeddings.npy").is_file()
    caption = test.captions(0)[0]
    np.testing.assert_allclose(test.encode([caption])[0], test.embeddings[0, 0], atol=1e-6)  # new captions, same encoder
    assert set(cub.ngram_encoder(root).vocab) == {g for i in range(len(train)) for c in train.captions(i) for g in text.ngrams(c)}
    state = torch.random.get_rng_state()  # read once per version of its cache file, drawing nothing
    assert cub.ngram_encoder(root) is cub.ngram_encoder(root) and torch.equal(torch.random.get_rng_state(), state)
    test.encode(["a red bird"])
    assert torch.equal(torch.random.get_rng_state(), state)
    with pytest.raises(ValueError, match="cannot embed new captions"):
        cub.open_birds(root, "train").encode(["a red bird"])


def test_part_ngrams_option_trains_its_own_encoder_with_part_slots(root: Path, monkeypatch) -> None:
    from hwlib import text

    calls = []
    real_fit = text.fit_ngram_encoder
    monkeypatch.setattr(text, "fit_ngram_encoder", lambda *a, **k: calls.append(k) or real_fit(*a, **k, steps=5))
    train = cub.open_birds(root, "train", embedding="part-ngrams")
    assert len(calls) == 1 and calls[0]["labels"].shape == (len(train), 10, 4) and calls[0]["part_classes"] == 10
    np.testing.assert_array_equal(calls[0]["labels"], train.caption_labels())
    assert train.embeddings.shape == (6, 10, 128) and (root / "birds" / cub.NGRAM_ENCODERS["part-ngrams"]).is_file()
    enc = cub.ngram_encoder(root, "part-ngrams")
    assert enc.parts == 4 and enc is cub.ngram_encoder(root, "part-ngrams") and cub.ngram_encoder(root).parts == 0
    np.testing.assert_allclose(train.encode([train.captions(1)[2]])[0], train.embeddings[1, 2], atol=1e-6)
    assert train.text_parts == (4, 16)  # what stackgan.build's text_parts takes for Recipe.g_part_attention
    assert cub.open_birds(root, "train", embedding="bag-of-ngrams").text_parts == (0, 0)
    assert cub.open_birds(root, "train").text_parts == (0, 0)  # char-CNN-RNN
