"""Profiles of notebook 03 (conditional GAN on MNIST).

``full`` is the seed's setting: batch 128, Adam lr 1e-4, 5 discriminator updates per generator
update, 60 epochs over the 60,000 training digits, the seed's MLP widths with no batch norm; the conv
CGAN gets the same budget (batch, updates, epochs) with DCGAN's optimiser (Adam lr 2e-4, beta1 0.5;
Radford et al.).

``quick`` shrinks the budget to a few minutes on a 2-core CPU: 20,000 digits, batch 32, 7 epochs (4,375 generator
updates: the 1.3-1.4x more steps per second of ``hwlib.train``'s fast core spent on training longer; after 5 epochs,
in fp32 at four seeds, the conv CGAN's EMA generator drew 93 % (89-98 %) of its digits in the class asked and the
MLP's FID-MNIST was 28.0; after 7, 99.4 % (98.7-100 %) and 19.1, the conv's FID 26.1 against 32.7;
``benchmarks/bench_cgan_epochs.py``), one discriminator update per generator update, DCGAN's optimiser for both
models, half-width MLPs with 50-d label embeddings (10-d ones were ignored for thousands of steps), batch norm in
the MLP generator (without it the generator ignored z: one image per class, within-class pixel std 0.02 against 0.31
for real digits, and 40-60 % conditional accuracy; with it 82-86 % over seeds 0-2), a conv net at half DCGAN width
(ch 32; at ch 16 the discriminator was too weak), and an EMA of the generator's weights (decay 0.999) to sample
from, which damps the oscillations of short GAN runs. On the CPU the conv CGAN trains compiled (``torch.compile``)
and in bf16 where the CPU computes it faster than fp32; the MLP CGAN in fp32, uncompiled: in a probe on this CPU
both made its step slower (``benchmarks/bench_train_speed.py`` times the settings used). Other profiles use neither
option (``get``'s default).

``gpu`` (about an hour on a T4) is the seed's setting for half its epochs (30, ~14,000 steps of 5 D updates and
one G update), with the EMA generator to sample from.

Every profile also trains the MLP CGAN with the other ``batchnorm`` setting, the notebook's
mode-collapse ablation. ``smoke`` only checks that everything runs.
"""

_MLP = {"g_hidden": [256, 512, 1024], "d_hidden": [1024, 512, 256], "embed_dim": 10, "dropout": 0.3,
        "batchnorm": False}
_DCGAN_OPT = {"lr": 2e-4, "betas": [0.5, 0.999]}

PROFILES = {
    "smoke": {
        "train_subset": 512, "batch_size": 64, "epochs": 2, "z_dim": 100, "n_critic": 2,
        "mlp": {"g_hidden": [32, 64], "d_hidden": [64, 32], "embed_dim": 10, "dropout": 0.3, "batchnorm": True,
                **_DCGAN_OPT},
        "conv": {"ch": 8, "embed_dim": 10, "label_mode": "channel", **_DCGAN_OPT},
        "ema_decay": 0.99, "n_eval": 500, "eval_batch": 250,
    },
    "quick": {
        "train_subset": 20_000, "batch_size": 32, "epochs": 7, "z_dim": 100, "n_critic": 1,
        "mlp": {"g_hidden": [128, 256, 512], "d_hidden": [512, 256, 128], "embed_dim": 50, "dropout": 0.3,
                "batchnorm": True, **_DCGAN_OPT, "compile": False, "bf16": False},  # both slower for this MLP
        "conv": {"ch": 32, "embed_dim": 50, "label_mode": "channel", **_DCGAN_OPT, "compile": True},
        "ema_decay": 0.999, "n_eval": 5_000, "eval_batch": 500,
    },
    "gpu": {
        "train_subset": None, "batch_size": 128, "epochs": 30, "z_dim": 100, "n_critic": 5,
        "mlp": {**_MLP, "lr": 1e-4, "betas": [0.9, 0.999]},
        "conv": {"ch": 64, "embed_dim": 50, "label_mode": "channel", **_DCGAN_OPT},
        "ema_decay": 0.999, "n_eval": 10_000, "eval_batch": 500,
    },
    "full": {
        "train_subset": None, "batch_size": 128, "epochs": 60, "z_dim": 100, "n_critic": 5,
        "mlp": {**_MLP, "lr": 1e-4, "betas": [0.9, 0.999]},
        "conv": {"ch": 64, "embed_dim": 50, "label_mode": "channel", **_DCGAN_OPT},
        "ema_decay": None, "n_eval": 10_000, "eval_batch": 500,
    },
}

# HWLIB_DRYRUN: the profile's networks and update ratio on a few digits in batches of 2
DRYRUN = {"train_subset": 16, "batch_size": 2, "epochs": 1, "n_eval": 20, "eval_batch": 10}


def training_calls(cfg: dict) -> dict[str, tuple[int, int]]:
    """{training run: (batch size, optimiser steps)} of a run of ``cfg`` (``benchmarks/bench_cost.py`` prices them);
    one step holds ``n_critic`` discriminator updates and one generator update."""
    steps = cfg["epochs"] * ((cfg["train_subset"] or 60_000) // cfg["batch_size"])
    ablation = "mlp_no_bn" if cfg["mlp"]["batchnorm"] else "mlp_bn"
    return {name: (cfg["batch_size"], steps) for name in ("mlp", "conv", ablation)}
