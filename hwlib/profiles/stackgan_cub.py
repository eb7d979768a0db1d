"""Profiles of notebook 01 (StackGAN on CUB / SynthBirds).

``full`` is the paper's setting (Zhang et al. 2017, sec. 4 and the official birds configs): widths
gf 128 / df 64, 4 residual blocks, 64 -> 256, batch 64, Adam 2e-4 (0.5, 0.999), 600 epochs per
stage with the learning rate halved every 100, KL weight 2 (official birds config), on the full
CUB-size SynthBirds (8,855 / 2,933); ``attr_n`` random-attribute birds train the attribute classifier.
``quick`` fits a 2-core CPU: narrow networks, a few thousand birds, a few epochs; Stage II at 256 px with
g_f 16 / d_f 8 on 320 birds for 12 epochs (480 steps, lr halved after 8; 18 epochs, 720 steps, until the 15 minutes asked
for a third less: over three Stage-II seeds the error of the detail it draws on real test birds went from 0.824 to 0.838,
bicubic up-sampling's 0.876, ``benchmarks/results/stackgan_stage2/``); Stage I 64 epochs (7,168 steps), lr
halved every 32 (four times the 1,792 steps of earlier sessions: on an AMD EPYC with AVX512-BF16, in bf16 and channels-last, Stage I
steps in 0.04 s; over three seeds the longer run lifted body and wing colour of unseen species from 0.37 and 0.33
to 0.47 and 0.43);
the main recipe is ``stable``; the paper's recipe is trained beside it for an eighth of its steps (``epochs1_side`` 8,
896 steps; a quarter, 1,792 steps, saved about 250 s of notebook 01's 15 minutes on a 2-core AMD EPYC, an eighth about
45 s more) and draws the captions at about chance, as it does at 1,792 and 7,168 steps over three seeds in
``benchmarks/results/stackgan_ladder/`` (notebook 01, section 8b).
``lr_decay_epochs`` halves Stage I's learning rate, ``lr_decay_epochs2`` Stage II's. ``epochs1_side``: Stage-I epochs of the
recipes in ``recipes`` other than ``recipe`` (those trained only for the side-by-side comparison).
``gpu`` (about an hour on a T4) keeps the paper's data, depth and 256 px output at half the widths (gf 64 / df 32
in both stages, a quarter of the FLOPs), 60 Stage-I epochs per recipe and 10 Stage-II epochs (batch 32).
``smoke`` runs in seconds (Stage II output 128).

``recipe`` is the training recipe of the notebook's main run, which Stage II builds on
(:data:`hwlib.models.stackgan.RECIPES`: ``paper`` is the official code's, ``stable`` adds GAN stabilisers);
``recipes`` are the Stage-I recipes trained side by side for the comparison (``full`` trains the paper's only).
``rerank``: the notebook samples the best of this many Stage-I candidates per caption (:func:`hwlib.models.stackgan.generate`),
drawn with ``rerank_ca_noise`` times the conditioning augmentation's noise (with the n-gram encoder, over three seeds:
x2 keeps x1's colours at a lower FID and 1.5x the variety; x4 costs colour; re-checked on today's ``stable``, five seeds:
x1 draws every colour 0.03-0.04 more often than x2 for 19% less variety and the same "type a caption" score over 128
birds, 0.47, so x2 stays), judged by ``judge``: ``"classifier"``, a
part-colour classifier of the training birds that G never trained against (:func:`hwlib.models.attributes.train_part_judge`,
at the attribute classifier's width and epochs; ``judges`` of them at as many seeds, their colour probabilities averaged,
:func:`hwlib.models.attributes.train_part_judges`: on five seeds eight drew every colour as often as one or more at the
same FID and the demo at 0.555 against 0.51 over 128 birds; ``judge_amp`` trains them in bf16, as good a choice in
two thirds of the time), or ``"D"``, Stage-I D's part head, which G learnt to satisfy
(``benchmarks/bench_stackgan_sampling.py --judge``), scoring each candidate by the log-probability that every asked
part is drawn as asked (:func:`hwlib.models.stackgan.part_scores`; the expected number of them, ``--rerank-score
expected``, drew the demo's birds worse on five seeds: 0.37 against 0.51 over 128 birds); recipes without a part head (``paper``) sample one, with the CA
noise as trained.
"""

_COMMON = {
    # SynthBirds' caption encoder (the notebook's `dataset` parameter picks the data): the n-gram encoder trained on the
    # training captions with part slots (hwlib.text.NgramEncoder, "part-ngrams": each slot attends to the n-grams of its
    # part and names its colour). With all-MiniLM-L6-v2 in its place the `stable` recipe drew unseen species' body / wing /
    # crown / belly at 0.50 / 0.52 / 0.29 / 0.48 (three seeds, 7,168 steps; bench_stackgan_consistency.py); with the
    # plain n-gram encoder ("bag-of-ngrams") the same colours, but the "type a caption" demo at 0.47 over 128 birds
    # (five seeds), which the part slots raise (notebook 01, section 10b)
    "embedding": "part-ngrams",
    "z_dim": 100, "c_dim": 128, "lr": 2e-4, "betas": (0.5, 0.999), "kl_coef": 2.0,
    "upsample": "nearest", "recipe": "paper", "recipes": ("paper", "stable"),
    "rerank": 16,  # sampling: the best of 16 Stage-I candidates per caption (recipes with parts)
    "rerank_ca_noise": 2.0,  # ... drawn with 2x the CA noise: more variety to choose from (benchmarks/bench_stackgan_sampling.py)
    "judge": "classifier",  # ... judged by a part classifier G never trained against (or "D": D's part head)
    "judges": 8,  # ... eight of them at eight seeds, their colour probabilities averaged (attributes.JudgeEnsemble;
    # every colour and the demo up at the same FID, benchmarks/results/stackgan_sampling/rerank_pn_judges8.json)
    "judge_amp": True,  # ... trained in bf16 autocast, channels-last where bf16 is faster than fp32 (a no-op elsewhere):
    # on the five benchmark generators every colour, FID and the demo as in float32 (rerank_pn_judges8amp.json), a
    # judge in 4.8 s against 7.1 s on the 2-core Intel Xeon
}

PROFILES = {
    "smoke": {**_COMMON, "n_train": 60, "n_test": 20, "gf": 4, "df": 4, "gf2": 4, "df2": 4, "n_res": 1,
              "stage2_size": 128, "stage2_n": 60, "rerank": 2, "batch_size": 12, "batch_size2": 6, "epochs1": 2, "epochs1_side": 2, "epochs2": 1,
              "lr_decay_epochs": 1, "lr_decay_epochs2": 1, "attr_n": 200, "attr_epochs": 1, "attr_width": 8, "n_eval": 40, "compare_epochs": 1,
              "compare_n": 60},
    "quick": {**_COMMON, "n_train": 1800, "n_test": 600, "gf": 16, "df": 16, "gf2": 16, "df2": 8, "n_res": 2,
              "stage2_size": 256, "stage2_n": 320, "batch_size": 16, "batch_size2": 8, "epochs1": 64, "epochs1_side": 8, "epochs2": 12,
              "lr_decay_epochs": 32, "lr_decay_epochs2": 8, "recipe": "stable", "attr_n": 4000, "attr_epochs": 12, "attr_width": 16, "n_eval": 600, "compare_epochs": 1,
              "compare_n": 640},
    "gpu": {**_COMMON, "n_train": 8855, "n_test": 2933, "gf": 64, "df": 32, "gf2": 64, "df2": 32, "n_res": 4,
            "stage2_size": 256, "stage2_n": 8855, "batch_size": 64, "batch_size2": 32, "epochs1": 60, "epochs1_side": 60, "epochs2": 10,
            "lr_decay_epochs": 20, "lr_decay_epochs2": 20, "recipe": "stable", "attr_n": 20000, "attr_epochs": 20, "attr_width": 32,
            "n_eval": 2933, "compare_epochs": 10, "compare_n": 8855},
    "full": {**_COMMON, "n_train": 8855, "n_test": 2933, "gf": 128, "df": 64, "gf2": 128, "df2": 64, "n_res": 4,
             "stage2_size": 256, "stage2_n": 8855, "batch_size": 64, "batch_size2": 64, "epochs1": 600, "epochs1_side": 600, "epochs2": 600,
             "lr_decay_epochs": 100, "lr_decay_epochs2": 100, "recipes": ("paper",), "attr_n": 20000, "attr_epochs": 20, "attr_width": 32, "n_eval": 2933, "compare_epochs": 60,
             "compare_n": 8855},
}

# HWLIB_DRYRUN: every width, stage and code path of the chosen profile on a few birds in batches of 2
DRYRUN = {"n_train": 20, "n_test": 10, "stage2_n": 4, "batch_size": 2, "batch_size2": 2, "epochs1": 1, "epochs1_side": 1, "epochs2": 1,
          "lr_decay_epochs": 1, "lr_decay_epochs2": 1, "attr_n": 2, "attr_epochs": 1, "n_eval": 10, "compare_epochs": 1, "compare_n": 4}


def stage1_epochs(cfg: dict, recipe: str) -> int:
    """Stage-I epochs of ``recipe`` in a run of ``cfg``: ``epochs1`` for the main recipe, ``epochs1_side`` for the others."""
    return cfg["epochs1"] if recipe == cfg["recipe"] else cfg["epochs1_side"]


def training_calls(cfg: dict) -> dict[str, tuple[int, int]]:
    """{training run: (batch size, optimiser steps)} of a run of ``cfg`` (``benchmarks/bench_cost.py`` prices them)."""
    calls = {f"Stage-I ({r})": (cfg["batch_size"], stage1_epochs(cfg, r) * (cfg["n_train"] // cfg["batch_size"]))
             for r in cfg["recipes"]}
    calls["Stage-II"] = (cfg["batch_size2"], cfg["epochs2"] * (min(cfg["stage2_n"], cfg["n_train"]) // cfg["batch_size2"]))
    from hwlib.models.attributes import TRAIN_BATCH

    attr_batch = min(TRAIN_BATCH, cfg["attr_n"])
    calls["attribute classifier"] = (attr_batch, cfg["attr_epochs"] * (cfg["attr_n"] // attr_batch))
    from hwlib.models.attributes import part_judge_name
    from hwlib.models.stackgan import get_recipe

    if cfg["judge"] == "classifier" and cfg["rerank"] > 1 and get_recipe(cfg["recipe"]).parts:  # the re-ranking judge
        # (the notebook re-ranks only a recipe with a part head): the attribute network on the training birds
        judge_batch = min(TRAIN_BATCH, cfg["n_train"])
        for j in range(cfg["judges"]):  # attributes.train_part_judges' judges, by their ledger names
            calls[part_judge_name(j)] = (judge_batch, cfg["attr_epochs"] * (cfg["n_train"] // judge_batch))
    compare = min(cfg["compare_n"], cfg["n_train"])
    for mode in ("nearest", "pixelshuffle"):
        calls[f"Stage-I (compare_{mode})"] = (cfg["batch_size"], cfg["compare_epochs"] * (compare // cfg["batch_size"]))
    return calls
