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
strings (an ordinary pickle can run any code); Python 3 pickles of arrays (protocols 0-5) load too.
The ``all-MiniLM-L6-v2`` embedding option embeds the ``text_c10`` captions with :mod:`hwlib.text` and
caches them (atomically) as ``birds/<split>/all-MiniLM-L6-v2-embeddings.npy``; the ``bag-of-ngrams`` option trains
:class:`hwlib.text.NgramEncoder` once on the train split's captions (cached as ``birds/bag-of-ngrams-encoder.npz``)
and caches its embeddings the same way; ``part-ngrams`` does the same with the encoder's part slots, trained on the part
colours the captions name as well (``birds/part-ngrams-encoder.npz``). Captions that are not
UTF-8 are read as latin-1, with a warning naming the file.

Every file is checked as it is read, and :class:`CUBFormatError` names the file (and the line, id or
key) of: unparsable or duplicate lines, keys that are not relative paths inside ``root``, class ids
that are not whole numbers in 1..200, NaN or infinite embeddings, bounding boxes that are not finite,
empty or outside their image, and images that cannot be decoded.

Preprocessing as StackGAN: crop a square around the bounding box's centre with half-side
``0.75 * max(w, h)`` (clipped to the image), resize to ``load_size`` (76 for 64 px, 304 for 256 px),
then at training time a random ``out_size`` crop and a horizontal flip (:func:`augment`), one of the 10
caption embeddings per sample (:func:`pick_embedding`) and "wrong" images from another class
(:func:`wrong_indices`) for the matching-aware loss.
"""
from __future__ import annotations

import codecs
import functools
import pickle
import shutil
import tarfile
import urllib.request
import warnings
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np
import torch

from hwlib.files import publish_dir, read_arrays, staging_dir, write_arrays
from hwlib.layout import is_channels_last, memory_format
from hwlib.paths import data_dir, shown

EMBEDDINGS = {"char-CNN-RNN": ("char-CNN-RNN-embeddings.pickle", 1024), "all-MiniLM-L6-v2": ("all-MiniLM-L6-v2-embeddings.npy", 384),
              "bag-of-ngrams": ("bag-of-ngrams-embeddings.npy", 128), "part-ngrams": ("part-ngrams-embeddings.npy", 128)}
NGRAM_ENCODER = "bag-of-ngrams-encoder.npz"  # under birds/: the n-gram encoder trained on birds/train's captions
NGRAM_ENCODERS = {"bag-of-ngrams": NGRAM_ENCODER, "part-ngrams": "part-ngrams-encoder.npz"}  # ... and with part slots
CAPTIONS_PER_IMAGE = 10
N_CLASSES = 200
BOX_SLACK = 2.0  # pixels a bounding box may reach past its image's border (rounding in the annotations)
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


# ----------------------------------------------------------------------------- safe pickles (Python 2 and 3)

def _latin1_bytes(text: str, encoding: str = "latin1", errors: str = "strict") -> bytes:
    """``_codecs.encode`` as Python 3 pickles of ``bytes`` (protocols 0-2) use it: latin-1 only."""
    if codecs.lookup(encoding).name != "iso8859-1":
        raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r} (only latin-1 rebuilds bytes)")
    return codecs.encode(text, "latin1", errors)


_RECONSTRUCT = np.ndarray.__reduce__(np.zeros(1))[0]
_SCALAR = np.float32(0).__reduce__()[0]
_FROMBUFFER = np.zeros(1).__reduce_ex__(5)[0]
# exactly the globals that pickles of numpy arrays, scalars and dtypes name (numpy 1.x and 2.x module paths)
_ALLOWED = {
    **{(f"numpy.{core}.multiarray", "_reconstruct"): _RECONSTRUCT for core in ("core", "_core")},
    **{(f"numpy.{core}.multiarray", "scalar"): _SCALAR for core in ("core", "_core")},
    **{(f"numpy.{core}.numeric", "_frombuffer"): _FROMBUFFER for core in ("core", "_core")},  # protocol 5
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_bytes,  # bytes in Python 3 pickles of protocols 0-2
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
    """Read a (Python 2 or 3, protocol 0-5) pickle of arrays / containers / numbers / strings.

    Python 2 ``str`` -> ``str`` (latin1). Anything else, and any damage, raises :class:`CUBFormatError` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise CUBFormatError(f"missing file {path}")
    try:
        with open(path, "rb") as f:
            return _RestrictedUnpickler(f, encoding="latin1").load()
    except Exception as err:  # noqa: BLE001 - a damaged pickle fails in many ways (EOFError, KeyError, TypeError, ...)
        raise CUBFormatError(f"cannot read {path}: {type(err).__name__}: {err}") from err


# ----------------------------------------------------------------------------- download


def _fetch(url: str, dest: Path, timeout: float) -> None:
    """Download ``url`` to ``dest``; a web page instead of an archive is an error.

    Google Drive answers large files with a confirmation page, so its URLs go through ``gdown`` (the maintained tool
    for it); every other URL (https, file) through urllib."""
    if "drive.google.com" in url:
        try:
            import gdown
        except ImportError as err:
            raise OSError("downloading from Google Drive needs gdown: pip install gdown") from err
        if gdown.download(url, str(dest), quiet=True) is None:
            raise OSError("gdown could not fetch the file (quota exceeded or the link moved)")
        return
    with urllib.request.urlopen(url, timeout=timeout) as response, open(dest, "wb") as f:
        if "html" in response.headers.get("Content-Type", ""):
            raise OSError("the server answered with a web page, not the archive")
        shutil.copyfileobj(response, f)


def _unpack(archive: Path, into: Path) -> None:
    """Extract a ``.tgz`` or ``.zip`` into the folder ``into``."""
    if archive.name.endswith(".tgz"):
        with tarfile.open(archive) as tar:
            tar.extractall(into, filter="data")
    else:
        with zipfile.ZipFile(archive) as z:
            z.extractall(into)


def download_cub(root: str | Path | None = None, timeout: float = 30.0) -> Path:
    """Fetch and unpack CUB_200_2011.tgz and StackGAN's birds.zip into ``root``; a clear error when that fails.

    Each archive is downloaded and extracted inside a temporary folder next to its destination, and its
    ``CUB_200_2011/`` or ``birds/`` folder is renamed into ``root`` only once complete: an interrupted or
    failed download leaves nothing that a retry would take for a finished folder.
    """
    root = Path(root) if root is not None else data_dir() / "cub"
    root.mkdir(parents=True, exist_ok=True)
    jobs = [("CUB_200_2011", CUB_URL, "CUB_200_2011.tgz"), ("birds", BIRDS_URL, "birds.zip")]
    for folder, url, name in jobs:
        if (root / folder).is_dir():
            continue
        try:
            with staging_dir(root / folder) as tmp:
                _fetch(url, tmp / name, timeout)
                _unpack(tmp / name, tmp / "unpacked")
                if not (tmp / "unpacked" / folder).is_dir():
                    raise OSError(f"the archive holds no folder {folder}/")
                publish_dir(tmp / "unpacked" / folder, root / folder)
        except Exception as err:  # noqa: BLE001 - every failure gets the same explanation
            raise CUBFormatError(f"could not download {name} from {url} ({type(err).__name__}: {err}).\n"
                                 + EXPECTED_LAYOUT.format(root=root)) from err
    return root


def ensure_cub(root: Path, download: bool = False) -> None:
    """Make sure ``root`` holds the ``CUB_200_2011/`` and ``birds/`` folders: fetch them (``download``) when missing,
    else raise :class:`CUBFormatError` with the expected layout and where to get it."""
    if (root / "CUB_200_2011").is_dir() and (root / "birds").is_dir():
        return
    if download:
        download_cub(root)
        return
    raise CUBFormatError("CUB-200-2011 / birds folders not found (pass download=True to fetch them).\n"
                         + EXPECTED_LAYOUT.format(root=root))


def resolve_dataset(dataset: str = "auto", root: str | Path | None = None, download: bool = False) -> str:
    """``"cub"`` or ``"synthbirds"``: which bird set a run trains on.

    ``"auto"``: real CUB-200-2011 + StackGAN's ``birds/`` when both folders are under ``root`` (default
    ``hwlib.data_dir() / "cub"``), or when ``download=True`` fetches them; else the offline SynthBirds, with a line
    saying why. ``"cub"`` insists (and fails naming the missing files); ``"synthbirds"`` never looks."""
    if dataset not in ("auto", "cub", "synthbirds"):
        raise ValueError(f"dataset must be 'auto', 'cub' or 'synthbirds', not {dataset!r}")
    if dataset == "synthbirds":
        return dataset
    root = Path(root) if root is not None else data_dir() / "cub"
    try:
        ensure_cub(root, download)
        return "cub"
    except CUBFormatError as err:
        if dataset == "cub":
            raise
        if download:  # the download failed: say why before falling back
            print(f"hwlib: {str(err).splitlines()[0]}")
    print(f"hwlib: no CUB-200-2011 + birds/ under {shown(root)}: training on SynthBirds (download=True fetches CUB)")
    return "synthbirds"


# ----------------------------------------------------------------------------- the split


def _read_table(path: Path, fields: int) -> dict[int, list[str]]:
    """``{id: the other fields}`` of a table of lines ``"<id> <field> ..."`` with ``fields`` fields in all."""
    if not path.is_file():
        raise CUBFormatError(f"missing file {path}")
    rows, first_line = {}, {}
    for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if line.strip():
            parts = line.split(None, fields - 1)
            try:
                image_id = int(parts[0])
            except ValueError:
                raise CUBFormatError(f"{path}, line {n}: {line!r} does not start with an integer id") from None
            if len(parts) != fields:
                raise CUBFormatError(f"{path}, line {n}: {line!r} has {len(parts)} field(s), expected {fields}")
            if image_id in rows:
                raise CUBFormatError(f"{path}, line {n}: id {image_id} is listed again (first on line {first_line[image_id]})")
            rows[image_id], first_line[image_id] = parts[1:], n
    return rows


def _relative_key(key: str, where: str) -> str:
    """``key`` itself when it is a relative path that stays inside its folder (no '..', not absolute)."""
    if not key or PurePosixPath(key).is_absolute() or PureWindowsPath(key).anchor or ".." in PurePosixPath(key).parts \
            or "\\" in key:
        raise CUBFormatError(f"{where}: {key!r} is not a relative path inside the data folder "
                             "(absolute paths and '..' are refused)")
    return key


def _decode_text(path: Path) -> str:
    """A text file's contents as UTF-8, or as latin-1 (with a warning naming the file) when it is not UTF-8."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        warnings.warn(f"{path} is not UTF-8 ({err}); read as latin-1", UnicodeWarning, stacklevel=3)
        return raw.decode("latin-1")


def read_captions(root: Path, key: str) -> list[str]:
    """The 10 captions of ``key`` from ``birds/text_c10/<key>.txt``."""
    folder = root / "birds" / "text_c10"
    path = folder / f"{_relative_key(key, f'caption key for {folder}')}.txt"
    if not path.is_file():
        raise CUBFormatError(f"missing caption file {path}")
    lines = [s.strip() for s in _decode_text(path).splitlines() if s.strip()]
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
    embedding: str = "char-CNN-RNN"

    def __len__(self) -> int:
        return len(self.keys)

    def captions(self, index: int) -> list[str]:
        """The 10 captions of sample ``index``."""
        return read_captions(self.root, self.keys[index])

    @property
    def text_parts(self) -> tuple[int, int]:
        """(slots, width) of the part slots at the end of each embedding (the ``part-ngrams`` encoder's); (0, 0) for
        an embedding without them. ``stackgan.build(text_parts=...)``: what ``Recipe.g_part_attention`` attends over."""
        if self.embedding not in NGRAM_ENCODERS:
            return (0, 0)
        enc = ngram_encoder(self.root, self.embedding)
        return (enc.parts, enc.part_dim) if enc.parts else (0, 0)

    def encode(self, captions: Sequence[str]) -> np.ndarray:
        """New captions embedded as this split's are: float32 (N, D). char-CNN-RNN cannot embed new sentences."""
        return _caption_encoder(self.root, self.embedding)(captions)

    def swapped_embeddings(self, seed: int = 0) -> np.ndarray:
        """Embeddings (N, 10, D) float32 of every caption with one colour word swapped (:func:`hwlib.text.swap_colour`,
        drawn with ``seed``), the negatives of ``Recipe.wrong = "swap"``; a caption without a colour word keeps its own
        embedding. Needs a sentence encoder (char-CNN-RNN cannot embed new sentences); embedded once and cached
        (atomically) as ``birds/<split>/<encoder>-swapped<seed>.npy``."""
        if self.embedding == "char-CNN-RNN":
            raise ValueError("swapped captions need a sentence encoder: open the split with "
                             "open_birds(..., embedding='all-MiniLM-L6-v2' or 'bag-of-ngrams'), or choose another Recipe.wrong")
        path = self.root / "birds" / self.split / f"{self.embedding}-swapped{seed}.npy"
        emb = read_arrays(path)
        if emb is None or emb.shape != self.embeddings.shape:
            from hwlib import text

            rng = np.random.default_rng(seed)
            captions = [c for i in range(len(self)) for c in self.captions(i)]
            swapped = [text.swap_colour(c, rng) for c in captions]
            emb = self.embeddings.reshape(len(captions), -1).copy()
            todo = [j for j, c in enumerate(swapped) if c is not None]
            if todo:
                emb[todo] = self.encode([swapped[j] for j in todo])
            emb = emb.reshape(self.embeddings.shape)
            write_arrays(path, emb)
        return emb

    def caption_labels(self) -> np.ndarray:
        """The part colours each caption names, parsed from its words (:func:`hwlib.data.synthbirds.part_labels`):
        int64 (N, 10, 4), body, wing, crown and belly, the index of the colour or -1 where the caption names none.
        The labels of ``Recipe.parts``; on CUB's free-form captions the parser finds the phrasings it knows
        ("a red crown", "blue wings") and leaves the rest at -1."""
        from hwlib.data.synthbirds import part_labels

        captions = [c for i in range(len(self)) for c in self.captions(i)]  # read_captions checks there are 10
        return part_labels(captions).reshape(len(self), CAPTIONS_PER_IMAGE, -1)

    def image_part_labels(self) -> np.ndarray:
        """One label per image: int64 (N, 4), for each part the colour its captions name most often
        (:func:`hwlib.data.synthbirds.part_label_mode` of :meth:`caption_labels`; -1 where none names one): the
        labels of D's part head (``Recipe.parts``) and of the judge of the part colours
        (:func:`hwlib.models.attributes.train_part_judge`)."""
        from hwlib.data.synthbirds import part_label_mode

        return part_label_mode(self.caption_labels())

    def images(self, load_size: int, indices: np.ndarray | None = None) -> torch.Tensor:
        """Bounding-box crops resized to ``load_size``: uint8 tensor (len(indices), 3, load_size, load_size)."""
        indices = np.arange(len(self)) if indices is None else np.asarray(indices)
        out = torch.empty((len(indices), 3, load_size, load_size), dtype=torch.uint8)
        for j, i in enumerate(indices):
            out[j] = torch.from_numpy(crop_and_resize(self.image_paths[i], self.bboxes[i], load_size)).permute(2, 0, 1)
        return out


def box_fits(bbox: np.ndarray, width: float = np.inf, height: float = np.inf) -> bool:
    """Whether ``x, y, w, h`` is finite, of positive size and inside a ``width`` x ``height`` image
    (its right and bottom edges may pass the border by ``BOX_SLACK`` pixels)."""
    x, y, w, h = (float(v) for v in bbox)
    return bool(np.isfinite([x, y, w, h]).all() and w > 0 and h > 0 and x >= 0 and y >= 0
                and x + w <= width + BOX_SLACK and y + h <= height + BOX_SLACK)


def _decode_image(path: Path | Any) -> Any:
    """The RGB PIL image at ``path`` (a file or a binary stream); undecodable data raises :class:`CUBFormatError`."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.convert("RGB")  # decodes every pixel: a truncated or corrupt file fails here
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise CUBFormatError(f"cannot decode the image {path} ({type(err).__name__}: {err}); replace it from "
                             "CUB_200_2011.tgz (or delete the CUB_200_2011 folder and open_birds(download=True))") from err


def crop_and_resize(path: Path, bbox: np.ndarray, size: int) -> np.ndarray:
    """StackGAN's crop: a square of half-side 0.75·max(w, h) around the box centre, clipped, resized (bicubic).

    ``bbox`` is ``x, y, w, h`` in pixels; one that is not finite, empty or off the image raises
    :class:`CUBFormatError` naming the image. Returns uint8 (size, size, 3).
    """
    from PIL import Image

    im = _decode_image(path)
    width, height = im.size
    if not box_fits(bbox, width, height):
        raise CUBFormatError(f"the bounding box x, y, w, h = {tuple(float(v) for v in bbox)} of {path} (from "
                             f"CUB_200_2011/bounding_boxes.txt) does not lie inside its {width} x {height} image")
    x, y, w, h = (float(v) for v in bbox)
    r = max(1, int(max(w, h) * 0.75))
    cx, cy = int(x + w / 2), int(y + h / 2)
    box = (max(0, cx - r), max(0, cy - r), min(width, cx + r), min(height, cy + r))
    return np.array(im.crop(box).resize((size, size), Image.BICUBIC), dtype=np.uint8)


def ngram_encoder(root: str | Path, embedding: str = "bag-of-ngrams") -> Any:
    """The :class:`hwlib.text.NgramEncoder` of the birds under ``root``: trained on ``birds/train``'s captions and
    class ids (:func:`hwlib.text.fit_ngram_encoder`, seed 0) the first time, then read from its cache -- once per
    version of the cache file (kept in memory; every ``BirdSplit.encode`` call goes through here). Draws nothing from
    torch's global generator. ``embedding="part-ngrams"``: the encoder with part slots, trained on the part colours
    the captions name as well (:meth:`BirdSplit.caption_labels`'s parser)."""
    path = Path(root) / "birds" / NGRAM_ENCODERS[embedding]
    try:
        stamp = path.stat()
    except FileNotFoundError:
        return _fit_ngram_encoder(Path(root), path, embedding)
    return _read_ngram_encoder(str(path), stamp.st_mtime_ns, stamp.st_size, embedding)


@functools.lru_cache(maxsize=8)
def _read_ngram_encoder(path: str, mtime_ns: int, size: int, embedding: str = "bag-of-ngrams") -> Any:
    """The encoder cached at ``path`` (its modification time and size key the memory cache)."""
    from hwlib import text

    keys = text.NgramEncoder.STATE_KEYS + (text.NgramEncoder.PART_STATE_KEYS if embedding == "part-ngrams" else ())
    state = read_arrays(Path(path), keys)
    if state is None:  # an unreadable cache: fit again, as on first use
        return _fit_ngram_encoder(Path(path).parents[1], Path(path), embedding)
    return text.NgramEncoder.from_state(state)


def _fit_ngram_encoder(root: Path, path: Path, embedding: str = "bag-of-ngrams") -> Any:
    """Fit the encoder on ``root``'s training captions and cache it (atomically) at ``path``."""
    from hwlib import text
    from hwlib.data.synthbirds import COLOURS, part_labels

    birds = root / "birds" / "train"
    keys = _read_keys(birds / "filenames.pickle")
    class_ids = _read_class_ids(birds / "class_info.pickle", keys)
    captions = [read_captions(root, key) for key in keys]
    labels = None
    if embedding == "part-ngrams":
        labels = part_labels([c for caps in captions for c in caps]).reshape(len(keys), CAPTIONS_PER_IMAGE, -1)
    enc = text.fit_ngram_encoder(captions, class_ids, labels=labels, part_classes=len(COLOURS))
    write_arrays(path, enc.state())
    return enc


def _caption_encoder(root: Path, embedding: str) -> Callable[[Sequence[str]], np.ndarray]:
    """The function that embeds captions as ``embedding`` does: captions (N,) -> float32 (N, D)."""
    if embedding == "char-CNN-RNN":
        raise ValueError("char-CNN-RNN embeddings are precomputed and cannot embed new captions: open the split "
                         "with open_birds(..., embedding='all-MiniLM-L6-v2' or 'bag-of-ngrams')")
    if embedding in NGRAM_ENCODERS:
        return ngram_encoder(root, embedding).encode
    from hwlib import text

    return text.encode


def _sentence_embeddings(path: Path, root: Path, keys: list[str], embedding: str) -> np.ndarray:
    """The cached ``.npy`` at ``path``, or the ``text_c10`` captions embedded once (by ``embedding``:
    all-MiniLM-L6-v2 or the n-gram encoder) and cached (atomically)."""
    emb = read_arrays(path)  # None when missing; None with a warning when unreadable
    if emb is None:
        captions = [c for key in keys for c in read_captions(root, key)]
        emb = _caption_encoder(root, embedding)(captions).reshape(len(keys), CAPTIONS_PER_IMAGE, -1)
        write_arrays(path, emb)
    return emb


def _embeddings(root: Path, split: str, keys: list[str], embedding: str) -> np.ndarray:
    """Caption embeddings (N, 10, D) float32, finite; a wrong shape or NaN / inf raises :class:`CUBFormatError`."""
    if embedding not in EMBEDDINGS:
        raise ValueError(f"unknown embedding {embedding!r}; choose one of {sorted(EMBEDDINGS)}")
    name, dim = EMBEDDINGS[embedding]
    path = root / "birds" / split / name
    raw = load_pickle(path) if embedding == "char-CNN-RNN" else _sentence_embeddings(path, root, keys, embedding)
    try:
        emb = np.asarray(raw, dtype=np.float32)
    except (TypeError, ValueError) as err:
        raise CUBFormatError(f"{path} does not hold an array of numbers ({err})") from None
    if emb.shape != (len(keys), CAPTIONS_PER_IMAGE, dim):
        raise CUBFormatError(f"{path}: embeddings of shape {emb.shape}, expected ({len(keys)}, {CAPTIONS_PER_IMAGE}, {dim})")
    bad = ~np.isfinite(emb).all(axis=(1, 2))
    if bad.any():
        i = int(np.argmax(bad))
        raise CUBFormatError(f"{path}: {int(bad.sum())} sample(s) have NaN or infinite embeddings, the first {keys[i]!r} "
                             f"(index {i}); replace the file (a cached .npy is recomputed once deleted)")
    return emb


def open_birds(root: str | Path | None = None, split: str = "train", embedding: str = "char-CNN-RNN",
               download: bool = False) -> BirdSplit:
    """Read the metadata and caption embeddings of one split; images are read by :meth:`BirdSplit.images`.

    ``root`` defaults to ``hwlib.data_dir() / "cub"``; ``download=True`` fetches the official archives
    when the folders are missing. Every missing or malformed file raises :class:`CUBFormatError` naming it.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    root = Path(root) if root is not None else data_dir() / "cub"
    ensure_cub(root, download)
    cub, birds = root / "CUB_200_2011", root / "birds" / split
    keys = _read_keys(birds / "filenames.pickle")
    class_ids = _read_class_ids(birds / "class_info.pickle", keys)
    images = _read_table(cub / "images.txt", 2)
    ids = _image_ids(images, cub / "images.txt", keys, birds / "filenames.pickle")
    bboxes = _read_boxes(cub / "bounding_boxes.txt", ids, keys)
    paths = [cub / "images" / images[i][0] for i in ids]
    emb = _embeddings(root, split, keys, embedding)
    return BirdSplit(root, split, keys, class_ids, emb, bboxes, paths, embedding)


def _read_keys(path: Path) -> list[str]:
    """``filenames.pickle``: a list of relative keys ``"<class>/<file>"`` (no extension)."""
    keys = load_pickle(path)
    if not isinstance(keys, (list, tuple)):
        raise CUBFormatError(f"{path} holds a {type(keys).__name__}, expected a list of strings "
                             "like '002.Laysan_Albatross/Laysan_Albatross_0002_1027'")
    for i, key in enumerate(keys):
        if not isinstance(key, str):
            raise CUBFormatError(f"{path}: item {i} is a {type(key).__name__} ({key!r:.60}), expected a string key")
        _relative_key(key, f"{path}, item {i}")
    return list(keys)


def _read_class_ids(path: Path, keys: list[str]) -> np.ndarray:
    """``class_info.pickle``: one whole-number class id in 1..200 per key -> int64 (N,)."""
    try:
        raw = np.asarray(load_pickle(path)).reshape(-1)
    except ValueError as err:  # ragged nested lists
        raise CUBFormatError(f"{path} does not hold a list of class ids ({err})") from None
    if raw.dtype.kind not in "iuf":
        raise CUBFormatError(f"{path} holds {raw.dtype} values, expected integer class ids 1..{N_CLASSES}")
    if len(raw) != len(keys):
        raise CUBFormatError(f"{path} lists {len(raw)} classes for {len(keys)} filenames")
    bad = ~np.isfinite(raw) | (raw != np.round(raw)) | (raw < 1) | (raw > N_CLASSES)
    if bad.any():
        i = int(np.argmax(bad))
        raise CUBFormatError(f"{path}: item {i} (key {keys[i]!r}) has class id {raw[i].item()!r}, expected a whole number "
                             f"in 1..{N_CLASSES} ({int(bad.sum())} such item(s))")
    return raw.astype(np.int64)


def _image_ids(images: dict[int, list[str]], path: Path, keys: list[str], keys_path: Path) -> list[int]:
    """The id in ``images`` (read from ``path``, images.txt) of each key; every file must be a relative path."""
    id_of = {}
    for image_id, (name,) in images.items():
        id_of[_relative_key(name, f"{path}, id {image_id}").rsplit(".", 1)[0]] = image_id
    missing = [k for k in keys if k not in id_of]
    if missing:
        raise CUBFormatError(f"{len(missing)} keys of {keys_path} are not in {path}, e.g. {missing[0]!r}")
    return [id_of[k] for k in keys]


def _read_boxes(path: Path, ids: list[int], keys: list[str]) -> np.ndarray:
    """``bounding_boxes.txt`` rows of ``ids``: float64 (N, 4) ``x, y, w, h``, finite, non-negative corner, positive size."""
    table = _read_table(path, 5)
    out = np.empty((len(ids), 4), np.float64)
    for j, (image_id, key) in enumerate(zip(ids, keys)):
        if image_id not in table:
            raise CUBFormatError(f"{path} has no box 'x y w h' for id {image_id} ({key})")
        try:
            out[j] = [float(v) for v in table[image_id]]
        except ValueError:
            raise CUBFormatError(f"{path}, id {image_id} ({key}): cannot parse {' '.join(table[image_id])!r} "
                                 "as 'x y w h'") from None
        if not box_fits(out[j]):
            raise CUBFormatError(f"{path}, id {image_id} ({key}): box x, y, w, h = {tuple(out[j].tolist())} is not finite, "
                                 "starts left of or above the image, or is empty")
    return out


# ----------------------------------------------------------------------------- training-time sampling


def augment(images: torch.Tensor, out_size: int, flip: bool = True, generator: torch.Generator | None = None,
            index: torch.Tensor | None = None) -> torch.Tensor:
    """Random ``out_size`` crop (one offset per sample) and horizontal flip of uint8 images (N, 3, L, L), or of the
    rows ``index`` (B,) of them (no copy of the rows first).

    Returns float (B, 3, out_size, out_size) in [-1, 1] on the images' device, in their memory format (channels-last
    stays channels-last, as StackGAN trains: D's first convolution then takes it without a copy; else contiguous). On
    a CPU each sample's window is a view and one stack copies them (0.22 against 0.76 ms for 16 of (2000, 3, 76, 76)
    in channels-last, 0.20 against 0.80 contiguous, 2 threads); elsewhere one gather, a single kernel where the
    windows would be B launches. The same random draws, values and layout on both paths.
    """
    n, _, h, w = images.shape
    b = n if index is None else len(index)
    oy = torch.randint(0, h - out_size + 1, (b,), generator=generator)
    ox = torch.randint(0, w - out_size + 1, (b,), generator=generator)
    do = (torch.rand(b, generator=generator) < 0.5) if flip else torch.zeros(b, dtype=torch.bool)
    layout = memory_format(images)
    crop = _crop_windows if images.device.type == "cpu" else _crop_gather
    crops = crop(images, out_size, torch.arange(n) if index is None else index, oy, ox, do)
    return crops.float().div_(127.5).sub_(1.0).contiguous(memory_format=layout)


def _crop_windows(images: torch.Tensor, size: int, index: torch.Tensor, oy: torch.Tensor, ox: torch.Tensor,
                  flip: torch.Tensor) -> torch.Tensor:
    """Images (N, C, L, L) -> (B, C, size, size) in their memory format: row ``index[i]``'s window at (``oy[i]``,
    ``ox[i]``), mirrored where ``flip[i]``; one view per sample, one copy (the stack)."""
    last = is_channels_last(images)
    rows = images.permute(0, 2, 3, 1) if last else images  # channels-last: stack (size, size, C) windows
    cut = (lambda r, y, x: r[y:y + size, x:x + size]) if last else (lambda r, y, x: r[:, y:y + size, x:x + size])
    crops = [cut(rows[i], y, x) for i, y, x in zip(index.tolist(), oy.tolist(), ox.tolist())]
    crops = torch.stack([c.flip(-2 if last else -1) if f else c for c, f in zip(crops, flip.tolist())])
    return crops.permute(0, 3, 1, 2) if last else crops


def _crop_gather(images: torch.Tensor, size: int, index: torch.Tensor, oy: torch.Tensor, ox: torch.Tensor,
                 flip: torch.Tensor) -> torch.Tensor:
    """As :func:`_crop_windows`, as one gather on the images' device ((B, C, size, size), channels-last strides)."""
    dev = images.device
    index, oy, ox, flip = index.to(dev), oy.to(dev), ox.to(dev), flip.to(dev)
    ar = torch.arange(size, device=dev)
    rows, cols = (oy[:, None] + ar)[:, :, None], (ox[:, None] + ar)[:, None, :]
    cols = torch.where(flip[:, None, None], ox[:, None, None] + size - 1 - ar[None, None, :], cols)
    return images.permute(0, 2, 3, 1)[index[:, None, None], rows, cols].permute(0, 3, 1, 2)


def center_crop(images: torch.Tensor, out_size: int) -> torch.Tensor:
    """The centre ``out_size`` crop of uint8 images (B, 3, L, L), as float (B, 3, out_size, out_size) in [-1, 1]
    (the deterministic counterpart of :func:`augment`, for evaluation)."""
    o = (images.shape[-1] - out_size) // 2
    return images[:, :, o:o + out_size, o:o + out_size].float() / 127.5 - 1


def pick_embedding(embeddings: torch.Tensor, generator: torch.Generator | None = None, average: int = 1) -> torch.Tensor:
    """One of the 10 caption embeddings per sample, (B, 10, D) -> (B, D); with ``average`` > 1, the mean of that many
    of the sample's captions drawn without replacement (the original TensorFlow StackGAN averages 4)."""
    b, k, _ = embeddings.shape
    if average > 1:
        choice = torch.rand(b, k, generator=generator).argsort(1)[:, :average].to(embeddings.device)
        return embeddings[torch.arange(b, device=embeddings.device)[:, None], choice].mean(1)
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
