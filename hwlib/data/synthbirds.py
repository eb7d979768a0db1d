"""SynthBirds: a procedural stand-in for CUB-200-2011, written in CUB's + StackGAN's on-disk layout.

Each of 200 species fixes a set of attributes -- body, wing, crown, belly and beak colours, beak
length, wing-bars, size -- and every image draws one bird of its species from parts (tail, body,
belly, wing with optional bars, head with crown, eye, beak, legs) in a random pose over a random
background (sky/foliage gradient and a perch), with per-image jitter of shades and size. Birds are
drawn at 2x and downsampled (anti-aliased) to ``image_size`` (304) pixels. Species 1-150 form the
train split and 151-200 the test split (class-disjoint, as StackGAN's CUB split).

Each image gets 10 captions from templates in CUB's style ("this bird has a red crown, blue wings
and a short black beak"); their embeddings (by the n-gram encoder trained on the training captions, or by
all-MiniLM-L6-v2) are cached through :func:`hwlib.data.cub.open_birds`. Species attributes are saved in ``synthbirds.json`` (the labels of
the attribute classifier), with the settings the set was drawn with; :func:`parse_caption` reads the
attributes a caption mentions. Sets and caches are written atomically (:mod:`hwlib.files`).
"""
from __future__ import annotations

import json
import pickle
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from hwlib.files import publish_dir, read_arrays, staging_dir, write_arrays
from hwlib.paths import data_dir

if TYPE_CHECKING:
    import torch

COLOURS = {"red": (200, 30, 35), "orange": (240, 130, 20), "yellow": (245, 215, 40), "green": (50, 150, 50),
           "blue": (40, 80, 210), "brown": (125, 80, 40), "black": (25, 25, 25), "white": (240, 240, 235),
           "grey": (135, 135, 140), "purple": (120, 50, 150)}
BEAK_COLOURS = ("black", "orange", "yellow", "grey")
ATTRIBUTES = {"body": tuple(COLOURS), "wing": tuple(COLOURS), "crown": tuple(COLOURS), "belly": tuple(COLOURS),
              "beak_colour": BEAK_COLOURS, "beak_length": ("short", "long")}
COLOUR_PARTS = ("body", "wing", "crown", "belly")  # the attributes coloured by one of COLOURS
N_CLASSES, N_TRAIN_CLASSES = 200, 150
TEMPLATES = (
    "this bird has a {crown} crown, {wing} wings and a {beak_length} {beak_colour} beak",
    "a small bird with a {body} body, a {belly} belly and {wing} wings",
    "this is a {body} bird with {wing} wings and a {beak_length} beak",
    "the bird has a {belly} belly, a {crown} crown and a {beak_length} {beak_colour} bill",
    "a {body} bird with {wing} wings, a {crown} crown and a {belly} belly",
    "this bird is {body} with {wing} wings{bars}",
    "this small bird has a {beak_length} {beak_colour} beak, a {crown} crown and a {body} body",
    "a bird with {wing} wings{bars} and a {belly} breast",
    "this bird has a {body} body, {wing} wings and a {belly} belly",
    "the {body} bird has a {crown} crown and a {beak_length} pointed beak",
    "a {belly} bellied bird with {wing} wings and a {beak_length} {beak_colour} bill",
    "this bird has {wing} wings, a {body} body and a {crown} head",
    "a small {body} bird with a {crown} crown and {wing} secondaries",
    "this bird has a {beak_length} beak, a {belly} breast and {body} feathers",
)
# notebook 01's "type a caption" demo and benchmarks/bench_stackgan_sampling.py's demo score
# (metrics.both_asked: body and wing as asked, over the two captions that name both)
DEMO_CAPTIONS = ("this bird has a red crown, blue wings and a short black beak",
                 "a small yellow bird with black wings and a long orange bill",
                 "this bird is white with green wings and a purple belly")
_PART_WORDS = {"body": r"(?:body|bird|feathers)", "wing": r"(?:wings|secondaries)", "crown": r"(?:crown|head)",
               "belly": r"(?:belly|breast|bellied)"}


def parse_caption(caption: str) -> dict[str, str]:
    """The attributes a caption names, e.g. ``{"crown": "red", "wing": "blue", "beak_length": "short"}``."""
    text = caption.lower().replace("gray", "grey")
    colours = "|".join(COLOURS)
    found: dict[str, str] = {}
    for part, words in _PART_WORDS.items():
        m = re.search(rf"\b({colours})\s+{words}\b", text)
        if m:
            found[part] = m.group(1)
    m = re.search(rf"\bbird is (?:mostly )?({colours})\b", text)
    if m and "body" not in found:
        found["body"] = m.group(1)
    m = re.search(rf"\b(short|long)\s+(?:({'|'.join(BEAK_COLOURS)})\s+)?(?:pointed\s+)?(?:beak|bill)\b", text)
    if m:
        found["beak_length"] = m.group(1)
        if m.group(2):
            found["beak_colour"] = m.group(2)
    return found


def caption_targets(captions: list[str]) -> dict[str, np.ndarray]:
    """Targets for the attribute classifier from N captions: {attribute: int64 (N,)}, the index of the
    value each caption names (:func:`parse_caption`) and -1 where it names none."""
    targets = {k: np.full(len(captions), -1, dtype=np.int64) for k in ATTRIBUTES}
    for j, caption in enumerate(captions):
        for k, v in parse_caption(caption).items():
            targets[k][j] = ATTRIBUTES[k].index(v)
    return targets


def part_labels(captions: list[str]) -> np.ndarray:
    """The colour each of N captions names for each of :data:`COLOUR_PARTS`: int64 (N, 4), the index in
    :data:`COLOURS`, -1 where the caption names none (:func:`caption_targets`)."""
    targets = caption_targets(captions)
    return np.stack([targets[part] for part in COLOUR_PARTS], axis=1) if captions else np.zeros((0, 4), np.int64)


def part_label_mode(labels: np.ndarray) -> np.ndarray:
    """One label per image from its captions' (:func:`part_labels` of each): int64 (N, K, 4) -> (N, 4), for each
    part the colour its K captions name most often (a tie goes to the colour listed first in :data:`COLOURS`; -1
    where none names one). SynthBirds' captions of one bird never disagree; real CUB's do."""
    counts = (np.asarray(labels)[..., None] == np.arange(len(COLOURS))).sum(1)  # (N, 4, colours)
    return np.where(counts.max(-1) > 0, counts.argmax(-1), -1)


def novel_captions(n: int, exclude: set[tuple[str, ...]], seed: int = 0,
                   seen_pairs: set[tuple[str, str, str, str]] | None = None) -> list[str]:
    """``n`` captions of random species (:func:`random_species`) whose body, wing, crown and belly colours
    (:data:`COLOUR_PARTS`) are none of ``exclude``'s -- e.g. every test species' -- each from one random template
    (:func:`captions_for`): captions with colour combinations no bird in the data need have, for ``Recipe.novel``.
    With ``seen_pairs`` (:func:`training_pairs`), only captions that name at least one pair of
    part colours outside it (``Recipe.novel_pairs``); the same draws otherwise, the rest skipped."""
    rng = np.random.default_rng(seed)
    out: list[str] = []
    while len(out) < n:
        species = random_species(rng)
        if tuple(species[k] for k in COLOUR_PARTS) not in exclude:
            caption = captions_for(species, rng)[int(rng.integers(0, 10))]
            if seen_pairs is None or colour_pairs([parse_caption(caption)]) - seen_pairs:
                out.append(caption)
    return out


def colour_pairs(birds: Any) -> set[tuple[str, str, str, str]]:
    """Every (part, part, colour, colour) two parts of one bird name, over :data:`COLOUR_PARTS` in order: of
    ``birds``, (body, wing, crown, belly) colour tuples (:func:`species_colours`) or ``{part: colour}`` dicts naming
    some parts (:func:`parse_caption`)."""
    out = set()
    for bird in birds:
        named = bird if isinstance(bird, dict) else dict(zip(COLOUR_PARTS, bird))
        parts = [p for p in COLOUR_PARTS if p in named]
        out |= {(a, b, named[a], named[b]) for i, a in enumerate(parts) for b in parts[i + 1:]}
    return out


def training_pairs(root: str | Path) -> set[tuple[str, str, str, str]]:
    """:func:`colour_pairs` of the training species (classes 1..:data:`N_TRAIN_CLASSES`) of the SynthBirds set at
    ``root``: the pairs of part colours some training bird has."""
    return colour_pairs(species_colours(root, np.arange(1, N_TRAIN_CLASSES + 1)))


def pair_captions(part: str = "belly") -> list[str]:
    """One caption per (body colour, ``part`` colour) pair, row-major over :data:`COLOURS` (100): "this bird is
    {body} with {wing} wings and a {colour} {part}", the wings in the first colour that is neither; where the two
    colours are equal, the caption leaves ``part`` out ("this bird is {body} with {wing} wings"). Caption ``10 i + j``
    asks for body ``COLOURS[i]`` beside ``part`` ``COLOURS[j]``: which pairs a generator composes."""
    names = tuple(COLOURS)
    out = []
    for body in names:
        for other in names:
            wing = next(c for c in names if c not in (body, other))
            out.append(f"this bird is {body} with {wing} wings" + (f" and a {other} {part}" if other != body else ""))
    return out


def species_colours(root: str | Path, class_ids: np.ndarray) -> set[tuple[str, ...]]:
    """The (body, wing, crown, belly) colour names of the species in ``class_ids`` (1..200), from ``synthbirds.json``."""
    labels = attribute_labels(root, np.unique(np.asarray(class_ids)))
    return {tuple(ATTRIBUTES[k][labels[k][j]] for k in COLOUR_PARTS) for j in range(len(labels["body"]))}


def caption_codes(captions: list[str]) -> np.ndarray:
    """A perfect text encoder for SynthBirds: float32 (N, 46), for each attribute a one-hot block of the value
    the caption names (:func:`caption_targets`), all zeros where it names none. The benchmark's
    ``--condition attributes`` rung feeds it to StackGAN in place of the sentence embedding."""
    targets = caption_targets(captions)
    blocks = []
    for k, values in ATTRIBUTES.items():
        block = np.zeros((len(captions), len(values)), dtype=np.float32)
        named = targets[k] >= 0
        block[np.flatnonzero(named), targets[k][named]] = 1.0
        blocks.append(block)
    return np.concatenate(blocks, axis=1)


def consistency_set(split, n: int, z_dim: int, seed: int = 0) -> tuple["torch.Tensor", "torch.Tensor", dict[str, np.ndarray], list[str]]:
    """The text-image consistency evaluation of notebook 01 (and its benchmark) on a :class:`~hwlib.data.cub.BirdSplit`.

    ``n`` birds of ``split`` drawn with ``seed + 11``, each with its first caption. Returns their caption
    embeddings float32 (n, t_dim), noise float32 (n, z_dim) drawn with ``seed + 1``, the caption
    targets (:func:`caption_targets`) and the captions themselves.
    """
    import torch

    idx = np.random.default_rng(seed + 11).choice(len(split), n, replace=False)
    captions = [split.captions(i)[0] for i in idx]
    z = torch.randn(n, z_dim, generator=torch.Generator().manual_seed(seed + 1))
    return torch.from_numpy(split.embeddings[idx, 0]), z, caption_targets(captions), captions


PART_TEMPLATE = "a {body} bird with {wing} wings, a {crown} crown and a {belly} belly"  # one of TEMPLATES


def near_miss_captions(labels: dict[str, np.ndarray], rng: np.random.Generator) -> tuple[list[str], dict[str, list[str]]]:
    """Captions naming all four colour parts of N birds (:data:`PART_TEMPLATE`, ``labels`` {part: value index (N,)}
    as :func:`attribute_labels` gives them), and for each part (and ``"all"``) the same captions with that part's
    colour (every part's) changed to another of the ten, drawn with ``rng``: the near misses that tell which parts
    a caption-reading network checks."""
    names, parts = list(COLOURS), COLOUR_PARTS
    truth = [{k: names[labels[k][j]] for k in parts} for j in range(len(labels["body"]))]

    def other(colour: str) -> str:
        return names[(names.index(colour) + int(rng.integers(1, len(names)))) % len(names)]

    near = {part: [{**t, part: other(t[part])} for t in truth] for part in parts}
    near["all"] = [{k: other(t[k]) for k in parts} for t in truth]
    return ([PART_TEMPLATE.format(**t) for t in truth],
            {part: [PART_TEMPLATE.format(**t) for t in v] for part, v in near.items()})


def random_species(rng: np.random.Generator) -> dict:
    """One species' attributes drawn uniformly: colour names, beak length, bars, size, shape."""
    names = list(COLOURS)
    body, wing, crown, belly = (names[i] for i in rng.integers(0, len(names), 4))
    return {"body": body, "wing": wing, "crown": crown, "belly": belly,
            "beak_colour": BEAK_COLOURS[rng.integers(0, len(BEAK_COLOURS))],
            "beak_length": ("short", "long")[rng.integers(0, 2)],
            "bars": bool(rng.random() < 0.4), "size": float(rng.uniform(0.85, 1.15)),
            "tail": float(rng.uniform(0.6, 1.2)), "plump": float(rng.uniform(0.8, 1.15))}


def species_table(seed: int = 0) -> list[dict]:
    """Attributes of the 200 species (index 0 is class 1), each from :func:`random_species`."""
    rng = np.random.default_rng(seed)
    return [random_species(rng) for _ in range(N_CLASSES)]


def captions_for(species: dict, rng: np.random.Generator) -> list[str]:
    """10 captions of one image of ``species``, from 10 different templates."""
    bars = " and white wing bars" if species["bars"] else ""
    chosen = rng.choice(len(TEMPLATES), 10, replace=False)
    return [TEMPLATES[i].format(bars=bars, **{k: species[k] for k in ATTRIBUTES}) for i in chosen]


def _shade(name: str, rng: np.random.Generator, spread: float = 18.0) -> tuple[int, int, int]:
    c = np.array(COLOURS.get(name, (20, 20, 20)), dtype=np.float64) + rng.normal(0, spread, 3)
    return tuple(int(v) for v in np.clip(c, 0, 255))


def _ellipse(cx: float, cy: float, rx: float, ry: float, angle: float = 0.0, n: int = 40) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    pts = np.stack([rx * np.cos(t), ry * np.sin(t)], 1)
    c, s = np.cos(angle), np.sin(angle)
    return pts @ np.array([[c, s], [-s, c]]) + (cx, cy)


def draw_bird(species: dict, rng: np.random.Generator, size: int = 304) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """One anti-aliased image of ``species``: uint8 (size, size, 3) and its bounding box (x, y, w, h)."""
    from PIL import Image, ImageDraw

    ss = 2  # supersampling factor
    big = size * ss
    # background: vertical gradient between two random scene colours, plus a perch
    top, bottom = rng.uniform(60, 235, 3), rng.uniform(40, 200, 3)
    if rng.random() < 0.5:
        bottom = bottom * np.array([0.6, 1.0, 0.6])  # foliage-like
    grad = np.linspace(0, 1, big)[:, None, None]
    column = np.clip(top * (1 - grad) + bottom * grad, 0, 255).astype(np.uint8)  # (big, 1, 3)
    im = Image.fromarray(column).resize((big, big), Image.NEAREST)  # the column repeated: 7x faster than numpy's copy
    d = ImageDraw.Draw(im)

    s = big * 0.2 * species["size"] * rng.uniform(0.9, 1.1)  # body half-length in pixels
    cx, cy = big * rng.uniform(0.42, 0.52), big * rng.uniform(0.42, 0.52)
    tilt = rng.uniform(-0.35, 0.35)
    rot = np.array([[np.cos(tilt), np.sin(tilt)], [-np.sin(tilt), np.cos(tilt)]])

    def place(pts: np.ndarray) -> list[tuple[float, float]]:  # bird coordinates (units of s) -> pixels
        return [tuple(p) for p in (np.asarray(pts) * s) @ rot + (cx, cy)]

    perch_y = cy + 0.55 * s
    d.line([(0, perch_y + rng.uniform(-0.1, 0.1) * s), (big, perch_y + rng.uniform(-0.2, 0.2) * s)],
           fill=_shade("brown", rng, 25), width=int(0.09 * s))
    drawn: list[list[tuple[float, float]]] = []

    def poly(pts: np.ndarray, colour) -> None:
        p = place(pts)
        drawn.append(p)
        d.polygon(p, fill=colour)

    wing_c = _shade(species["wing"], rng)
    leg_c = _shade("grey", rng, 10)
    for lx in (-0.1, 0.12):
        d.line(place([(lx, 0.25), (lx + 0.03, 0.55)]), fill=leg_c, width=max(2, int(0.05 * s)))
    tl = species["tail"]
    poly(np.array([(-0.7, -0.05), (-0.7 - 0.6 * tl, -0.05 - 0.25 * tl), (-0.7 - 0.6 * tl, 0.1 + 0.05 * tl), (-0.6, 0.15)]), wing_c)
    pl = species["plump"]
    poly(_ellipse(0, 0, 0.8, 0.45 * pl) / 1.0, _shade(species["body"], rng))
    poly(_ellipse(0.1, 0.16 * pl, 0.55, 0.26 * pl), _shade(species["belly"], rng))
    wing = _ellipse(-0.2, -0.05, 0.55, 0.25, angle=0.15)
    poly(wing, wing_c)
    if species["bars"]:
        bar_c = _shade("white", rng, 8)
        for bx in (-0.35, -0.15):
            p = place([(bx, -0.24), (bx - 0.08, 0.16)])
            d.line(p, fill=bar_c, width=max(2, int(0.07 * s)))
    hx, hy, hr = 0.72, -0.38, 0.3
    poly(_ellipse(hx, hy, hr, hr), _shade(species["body"], rng))
    t = np.linspace(np.pi, 2 * np.pi, 20)
    poly(np.stack([hx + hr * np.cos(t), hy + hr * np.sin(t) + 0.02], 1), _shade(species["crown"], rng))
    beak_len = 0.22 if species["beak_length"] == "short" else 0.55
    poly(np.array([(hx + 0.24, hy - 0.1), (hx + 0.27 + beak_len, hy + 0.03), (hx + 0.24, hy + 0.1)]),
         _shade(species["beak_colour"], rng, 10))
    d.polygon(place(_ellipse(hx + 0.1, hy - 0.03, 0.08, 0.08)), fill=(250, 250, 250))
    d.polygon(place(_ellipse(hx + 0.11, hy - 0.03, 0.05, 0.05)), fill=(10, 10, 10))

    pts = np.concatenate([np.asarray(p) for p in drawn]) / ss
    x0, y0 = np.clip(pts.min(0), 0, size)
    x1, y1 = np.clip(pts.max(0), 0, size)
    image = np.asarray(im.resize((size, size), Image.BOX))
    return image, (float(x0), float(y0), float(x1 - x0), float(y1 - y0))


def _class_name(cls: int) -> str:
    return f"{cls:03d}.Synth_Bird_{cls:03d}"


class SynthBirdsError(ValueError):
    """A SynthBirds folder on disk is incomplete or holds another set than the one asked for (the message names it)."""


def _write_set(folder: Path, n_train: int, n_test: int, seed: int, image_size: int) -> None:
    """Draw the whole set into ``folder``: images, tables, pickles, captions; ``synthbirds.json`` last."""
    from PIL import Image

    table = species_table(seed)
    rng = np.random.default_rng(seed + 1)
    cub, birds = folder / "CUB_200_2011", folder / "birds"
    lines, boxes, labels, splits, records = [], [], [], [], {"train": [], "test": []}
    image_id = 0
    for split, n, first, count in (("train", n_train, 1, N_TRAIN_CLASSES), ("test", n_test, N_TRAIN_CLASSES + 1, N_CLASSES - N_TRAIN_CLASSES)):
        for j in range(n):
            cls = first + j % count
            image_id += 1
            key = f"{_class_name(cls)}/Synth_Bird_{cls:03d}_{image_id:05d}"
            image, box = draw_bird(table[cls - 1], rng, image_size)
            path = cub / "images" / f"{key}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(path, quality=92)
            text = birds / "text_c10" / f"{key}.txt"
            text.parent.mkdir(parents=True, exist_ok=True)
            text.write_text("\n".join(captions_for(table[cls - 1], rng)) + "\n")
            lines.append(f"{image_id} {key}.jpg")
            boxes.append(f"{image_id} " + " ".join(f"{v:.1f}" for v in box))
            labels.append(f"{image_id} {cls}")
            splits.append(f"{image_id} {int(split == 'train')}")
            records[split].append((key, cls))
    (cub / "images.txt").write_text("\n".join(lines) + "\n")
    (cub / "bounding_boxes.txt").write_text("\n".join(boxes) + "\n")
    (cub / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    (cub / "train_test_split.txt").write_text("\n".join(splits) + "\n")
    (cub / "classes.txt").write_text("\n".join(f"{c} {_class_name(c)}" for c in range(1, N_CLASSES + 1)) + "\n")
    for split, rows in records.items():
        (birds / split).mkdir(parents=True, exist_ok=True)
        with open(birds / split / "filenames.pickle", "wb") as f:
            pickle.dump([k for k, _ in rows], f, protocol=2)
        with open(birds / split / "class_info.pickle", "wb") as f:
            pickle.dump([c for _, c in rows], f, protocol=2)
    settings = {"n_train": n_train, "n_test": n_test, "seed": seed, "image_size": image_size}
    (folder / "synthbirds.json").write_text(json.dumps({"seed": seed, "settings": settings, "attributes": {
        k: list(v) for k, v in ATTRIBUTES.items()}, "species": table}, indent=1))


def _settings_on_disk(root: Path) -> dict:
    """``n_train``, ``n_test``, ``seed``, ``image_size`` of the finished set at ``root`` (inferred for sets
    written before ``synthbirds.json`` recorded them)."""
    meta_path = root / "synthbirds.json"
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as err:
        raise SynthBirdsError(f"cannot read {meta_path} ({err}); delete {root} to rebuild the set") from err
    if "settings" in meta:
        return meta["settings"]
    from PIL import Image

    from hwlib.data.cub import load_pickle

    train = load_pickle(root / "birds/train/filenames.pickle")
    test = load_pickle(root / "birds/test/filenames.pickle")
    with Image.open(root / "CUB_200_2011/images" / f"{(train or test)[0]}.jpg") as im:
        size = im.size[0]
    return {"n_train": len(train), "n_test": len(test), "seed": meta.get("seed"), "image_size": size}


def make_synthbirds(n_train: int = 8855, n_test: int = 2933, seed: int = 0, image_size: int = 304,
                    root: str | Path | None = None, embed: bool | str = True) -> Path:
    """Write SynthBirds in the CUB + ``birds/`` layout (cached: a finished folder is reused) and return its root.

    ``n_train`` images over species 1-150 and ``n_test`` over 151-200 (round-robin); with ``embed``, the captions'
    embeddings by that encoder (True: ``part-ngrams``, notebook 01's) are computed and cached too (seconds; other encoders
    embed on first use). The set is drawn into a
    temporary folder next to ``root`` and renamed to ``root`` when complete, so an interrupted build
    leaves nothing behind that a later call would reuse. A ``root`` that holds a set of other settings,
    or files but no finished set, raises :class:`SynthBirdsError` (the default ``root`` is named after
    the settings).
    """
    root = Path(root) if root is not None else data_dir() / "synthbirds" / f"n{n_train}-{n_test}_px{image_size}_seed{seed}"
    wanted = {"n_train": n_train, "n_test": n_test, "seed": seed, "image_size": image_size}
    if not (root / "synthbirds.json").is_file():
        if root.is_dir() and any(root.iterdir()):
            raise SynthBirdsError(f"{root} holds files but no finished SynthBirds set (no synthbirds.json): delete "
                                  "it or choose another root")
        with staging_dir(root) as tmp:
            _write_set(tmp, **wanted)
            publish_dir(tmp, root)  # False: another process finished first; its settings are checked below
    found = _settings_on_disk(root)
    if found != wanted:
        raise SynthBirdsError(f"{root} already holds SynthBirds with {found}, not the requested {wanted}: pass another "
                              f"root (or none: the default folder is named after the settings) or delete {root}")
    if embed:
        from hwlib.data.cub import open_birds

        for split in ("train", "test"):
            open_birds(root, split, embedding="part-ngrams" if embed is True else embed)
    return root


def attribute_labels(root: str | Path, class_ids: np.ndarray) -> dict[str, np.ndarray]:
    """Per-sample attribute indices from ``synthbirds.json``: {attribute: int64 (N,)} for ``class_ids`` (N,) in 1..200."""
    meta = json.loads((Path(root) / "synthbirds.json").read_text())
    table = meta["species"]
    return {a: np.array([ATTRIBUTES[a].index(table[c - 1][a]) for c in np.asarray(class_ids)], dtype=np.int64)
            for a in ATTRIBUTES}


def attribute_birds(n: int, seed: int = 0, load_size: int = 76, root: str | Path | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Training set of the attribute classifier: ``n`` birds whose attributes are drawn *per image*.

    The 200 species tie attributes together (150 train species cannot show every colour pair), so a
    classifier trained on them learns species shortcuts; here every bird gets fresh uniform attributes
    (:func:`random_species`), is drawn at ``2 * load_size`` px, JPEG-encoded and cropped around its box as
    the dataset's images (:func:`hwlib.data.cub.crop_and_resize`). Cached under ``data_dir()/synthbirds``.
    Returns uint8 images (n, 3, load_size, load_size) and {attribute: int64 (n,)} value indices.
    """
    path = (Path(root) if root is not None else data_dir() / "synthbirds") / f"attribute_birds_n{n}_px{load_size}_seed{seed}.npz"
    data = read_arrays(path, ("images", *ATTRIBUTES))  # None when missing; None with a warning when unreadable
    if data is None:
        images, labels = _draw_crops(n, {}, np.random.default_rng(seed + 1_000_003), load_size)
        data = {"images": images.transpose(0, 2, 3, 1), **labels}
        write_arrays(path, data)
    return data["images"].transpose(0, 3, 1, 2).copy(), {a: data[a] for a in ATTRIBUTES}


def caption_birds(caption: str, n: int, seed: int = 0, load_size: int = 76) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``n`` real SynthBirds drawn to a caption: every attribute it names (:func:`parse_caption`) as named, the rest
    drawn per bird (:func:`random_species`), rendered and cropped as :func:`attribute_birds`' are. Returns uint8
    (n, 3, load_size, load_size) and {attribute: int64 (n,)}; e.g. the attribute classifier's reading of these birds
    is the most a generator's birds of that caption can score under it."""
    return _draw_crops(n, parse_caption(caption), np.random.default_rng(seed), load_size)


def _draw_crops(n: int, fixed: dict[str, str], rng: np.random.Generator, load_size: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``n`` birds of random attributes but ``fixed``'s, drawn at ``2 * load_size`` px, JPEG-encoded and cropped
    around their box as the dataset's images (:func:`hwlib.data.cub.crop_and_resize`): uint8 (n, 3, L, L) and
    {attribute: int64 (n,)} value indices."""
    import io

    from PIL import Image

    from hwlib.data.cub import crop_and_resize

    images = np.empty((n, load_size, load_size, 3), np.uint8)
    labels = {a: np.empty(n, np.int64) for a in ATTRIBUTES}
    for i in range(n):
        species = {**random_species(rng), **fixed}
        image, box = draw_bird(species, rng, 2 * load_size)
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="JPEG", quality=92)
        images[i] = crop_and_resize(buf, np.array(box), load_size)
        for a, values in ATTRIBUTES.items():
            labels[a][i] = values.index(species[a])
    return images.transpose(0, 3, 1, 2), labels


def novel_set(train: Any, n: int = 4000, seed: int = 0, unseen_pairs: bool = False,
              encode: Callable[[list[str]], np.ndarray] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``Recipe.novel``'s captions: ``n`` of colour combinations no test species has (:func:`novel_captions`), embedded
    with the training split's encoder (a :class:`hwlib.data.cub.BirdSplit` of SynthBirds; cached next to its
    embeddings) -> (embeddings float32 (n, t_dim), part labels int64 (n, 4)). ``unseen_pairs``
    (``Recipe.novel_pairs``): each caption names two parts in colours no training species pairs. ``encode``: another
    encoder, e.g. :func:`caption_codes` for the benchmark's ``--condition attributes`` (not cached)."""
    import torch

    root = train.root
    exclude = species_colours(root, np.arange(N_TRAIN_CLASSES + 1, N_CLASSES + 1))
    seen = training_pairs(root) if unseen_pairs else None
    captions = novel_captions(n, exclude, seed, seen_pairs=seen)
    if encode is not None:
        return torch.from_numpy(encode(captions)), torch.from_numpy(part_labels(captions))
    path = root / "birds" / "train" / f"{train.embedding}-novel{seed}_{n}{'_pairs' if unseen_pairs else ''}.npy"
    emb = read_arrays(path)
    if emb is None or len(emb) != n:
        emb = train.encode(captions)
        write_arrays(path, emb)
    return torch.from_numpy(emb), torch.from_numpy(part_labels(captions))
