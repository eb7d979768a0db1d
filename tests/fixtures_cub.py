"""A tiny copy of the real CUB-200-2011 + StackGAN ``birds/`` layout, with Python-2 pickles.

The real pickles were written by Python 2: strings are byte strings (``SHORT_BINSTRING`` /
``BINSTRING`` opcodes, no encoding), numpy arrays reference ``numpy.core.multiarray._reconstruct``
and carry their raw data as such a byte string. :class:`Py2Pickler` writes exactly that, so the
loader is tested against the format it meets in the wild.
"""
from __future__ import annotations

import io
import pickle
import struct
from pathlib import Path

import numpy as np

CLASSES = {1: "001.Black_footed_Albatross", 2: "002.Laysan_Albatross", 3: "003.Sooty_Albatross", 4: "004.Groove_billed_Ani"}
SPLITS = {"train": (1, 2), "test": (3, 4)}
PER_CLASS = 3


class Py2Pickler(pickle._Pickler):
    """Protocol-2 pickler that writes ``bytes`` as Python 2 ``str`` and numpy globals under ``numpy.core``."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj: bytes) -> None:
        n = len(obj)
        self.write((b"U" + bytes([n]) if n < 256 else b"T" + struct.pack("<i", n)) + obj)

    def save_py2_text(self, obj: str) -> None:  # Python 2 had no separate text type in these files
        self.save_py2_str(obj.encode("latin1"))

    dispatch[bytes] = save_py2_str
    dispatch[str] = save_py2_text

    def save_global(self, obj, name=None) -> None:
        module = getattr(obj, "__module__", None) or "numpy"
        name = name or obj.__name__
        module = module.replace("numpy._core", "numpy.core")
        self.write(pickle.GLOBAL + module.encode() + b"\n" + name.encode() + b"\n")
        self.memoize(obj)


def py2_dumps(obj) -> bytes:
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def make_cub_fixture(root: Path, emb_dim: int = 1024, seed: int = 0) -> Path:
    """Write the fixture under ``root`` and return it (12 images, 4 classes, train 1-2 / test 3-4)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    cub, birds = root / "CUB_200_2011", root / "birds"
    images, boxes, image_id = [], [], 0
    keys: dict[str, list[tuple[str, int]]] = {"train": [], "test": []}
    for split, classes in SPLITS.items():
        for cls in classes:
            for j in range(PER_CLASS):
                image_id += 1
                species = CLASSES[cls].split(".", 1)[1]
                key = f"{CLASSES[cls]}/{species}_{image_id:04d}_{100 + j}"
                w, h = int(rng.integers(90, 140)), int(rng.integers(70, 110))
                pixels = np.full((h, w, 3), 40 * cls, np.uint8)
                bx, by, bw, bh = 20, 15, w // 2, h // 2
                pixels[by:by + bh, bx:bx + bw] = (250, 20 * cls, 10)
                path = cub / "images" / f"{key}.jpg"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(pixels).save(path, quality=95)
                images.append(f"{image_id} {key}.jpg")
                boxes.append(f"{image_id} {bx}.0 {by}.0 {bw}.0 {bh}.0")
                text = birds / "text_c10" / f"{key}.txt"
                text.parent.mkdir(parents=True, exist_ok=True)
                text.write_text("".join(f"this bird number {image_id} has colour {cls} caption {k}\n" for k in range(10)))
                keys[split].append((key, cls))
    (cub / "images.txt").write_text("\n".join(images) + "\n")
    (cub / "bounding_boxes.txt").write_text("\n".join(boxes) + "\n")
    for split, rows in keys.items():
        (birds / split).mkdir(parents=True, exist_ok=True)
        (birds / split / "filenames.pickle").write_bytes(py2_dumps([k.encode("latin1") for k, _ in rows]))
        (birds / split / "class_info.pickle").write_bytes(py2_dumps([c for _, c in rows]))
        emb = rng.standard_normal((len(rows), 10, emb_dim)).astype(np.float32)
        (birds / split / "char-CNN-RNN-embeddings.pickle").write_bytes(py2_dumps(emb))
    return root
