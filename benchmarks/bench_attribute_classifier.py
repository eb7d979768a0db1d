"""Does the measuring instrument decide notebook 01's colour scores? Its Stage-I samples re-scored by attribute
classifiers of increasing accuracy.

Notebook 01 scores text-image consistency with a small attribute classifier
(:class:`hwlib.models.attributes.AttributeNet`) that the `quick` profile trains in seconds; on real birds of the test
species it reads crowns right only about two times in three. If the generator drew crowns that this classifier
misreads, a better classifier would score them higher. This script trains classifiers that differ only in width,
number of random-attribute birds and epochs (``--configs``, each at ``--seeds`` classifier seeds), and scores with
each one
- ``real``: the real test-species birds (centre 64 px crops), against their species' attributes: the classifier's
  accuracy, the ceiling of any generated score;
- ``generated``: the notebook's saved Stage-I samples (``figures/01_stackgan_cub/consistency_samples.npz``, the main
  recipe's, one per evaluation caption) against the colours their captions name, exactly as the notebook does
  (``--key stage1``: as the notebook samples, the best of ``rerank`` candidates by D's part head; ``--key
  stage1_plain``: one sample per caption, written under ``stackgan_classifier/plain/``);
- ``wrong``: the same samples against the colours of a shuffled set of captions (a text-blind generator's score);
- ``body_for_k``: for crown, belly and wing, among samples whose caption names that part in a colour other than the
  body's, the fraction whose part is read as the *body's* colour (does G paint the whole bird in one colour?).

Writes ``benchmarks/results/stackgan_classifier/<profile>_w<width>_n<birds>_e<epochs>_train<seed>.json`` (one per
classifier; ``hwlib.report.print_grouped`` sets the seeds side by side). Run notebook 01 first (its samples).
Usage: ``python benchmarks/bench_attribute_classifier.py [--profile quick] [--seeds 0 1]
[--configs 16,4000,12 32,8000,12] [--key stage1_plain]`` (width,birds,epochs; the first default is the profile's own classifier).
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import hwlib
from hwlib import metrics
from hwlib.bench import write_result
from hwlib.data import cub, synthbirds
from hwlib.models import attributes
from hwlib.train import get_device

NB = "01_stackgan_cub"
PARTS = ("body", "wing", "crown", "belly")


def body_for_part(predicted: dict[str, np.ndarray], targets: dict[str, np.ndarray]) -> dict[str, float]:
    """{part: fraction of samples read as the body's colour at that part}, over samples whose caption names both
    the body and the part in different colours (parts: wing, crown, belly)."""
    out = {}
    for k in ("wing", "crown", "belly"):
        mask = (targets["body"] >= 0) & (targets[k] >= 0) & (targets["body"] != targets[k])
        out[k] = round(float((predicted[k][mask] == targets["body"][mask]).mean()), 3) if mask.any() else float("nan")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="classifier seeds")
    parser.add_argument("--configs", nargs="+", default=None, metavar="W,N,E",
                        help="width,random-attribute birds,epochs (default: the profile's, then five stronger ones)")
    parser.add_argument("--key", default="stage1", choices=("stage1", "stage1_plain"),
                        help="which saved Stage-I samples: as the notebook samples (default), or one per caption")
    args = parser.parse_args()
    folder = "stackgan_classifier" + ("/plain" if args.key == "stage1_plain" else "")
    cfg, device, seed = hwlib.get_profile(NB, args.profile, verbose=False), get_device(), 0
    own = (cfg.attr_width, cfg.attr_n, cfg.attr_epochs)
    configs = ([tuple(int(v) for v in c.split(",")) for c in args.configs] if args.configs else
               [own, (16, 4000, 30), (16, 12000, 12), (32, 4000, 20), (32, 8000, 12), (32, 16000, 12)])
    path = hwlib.figures_dir(NB) / "consistency_samples.npz"
    if not path.exists():
        raise SystemExit(f"{path} is missing: run notebook 01 with profile {cfg.profile!r} first (it saves its samples)")
    saved = np.load(path)
    root = synthbirds.make_synthbirds(cfg.n_train, cfg.n_test, seed=seed)
    test = cub.open_birds(root, "test", embedding=cfg.embedding)
    low = torch.from_numpy(saved[args.key]).permute(0, 3, 1, 2).float() / 127.5 - 1
    _, _, targets, captions = synthbirds.consistency_set(test, len(low), cfg.z_dim, seed)
    if list(captions) != [str(c) for c in saved["captions"]]:
        raise SystemExit(f"{path} was not made from this profile's evaluation captions: re-run notebook 01 with "
                         f"profile {cfg.profile!r}")
    real = cub.center_crop(test.images(76), 64)
    real_targets = synthbirds.attribute_labels(root, test.class_ids)
    shuffled = {k: v[np.random.default_rng(0).permutation(len(low))] for k, v in targets.items()}
    for width, n, epochs in configs:
        images, labels = synthbirds.attribute_birds(n, seed=seed)
        for s in args.seeds:
            start = time.perf_counter()
            clf, hist = attributes.train_attribute_net(
                torch.from_numpy(images), labels, width=width, epochs=epochs, seed=s, device=device,
                run_dir=hwlib.runs_dir(f"bench/attribute_classifier/w{width}_n{n}_e{epochs}_seed{s}"))
            predicted = attributes.predict_attributes(clf, low)
            row = {"profile": cfg.profile, "width": width, "n": n, "epochs": epochs, "train_seed": s,
                   "steps": len(hist), "profile_classifier": (width, n, epochs) == own,
                   "train_s": round(time.perf_counter() - start, 1), "threads": torch.get_num_threads(),
                   "samples": f"figures/{NB}/{path.name}:{args.key}", "n_samples": len(low),
                   "real": {k: round(v, 3) for k, v in metrics.attribute_accuracy(
                       attributes.predict_attributes(clf, real), {k: real_targets[k] for k in PARTS}).items()},
                   "generated": {k: round(v, 3) for k, v in metrics.attribute_accuracy(
                       predicted, {k: targets[k] for k in PARTS}).items()},
                   "wrong": {k: round(v, 3) for k, v in metrics.attribute_accuracy(
                       predicted, {k: shuffled[k] for k in PARTS}).items()},
                   "body_for_k": body_for_part(predicted, targets)}
            print(f"w{width} n{n} e{epochs} seed {s}: real {row['real']} | generated {row['generated']} | "
                  f"wrong {row['wrong']} | read as the body's colour {row['body_for_k']}", flush=True)
            write_result(f"{folder}/{cfg.profile}_w{width}_n{n}_e{epochs}_train{s}", row, device, echo=False)


if __name__ == "__main__":
    main()
