"""Profiles of notebook 02 (DDPM on MNIST, with the fixes of Lin et al. and classifier-free guidance).

``full`` is the assignment's DDPM: T = 1000, linear β 1e-4..0.02, the DDPM U-Net (ch 64, widths ×(1, 2, 2) at
28/14/7, 2 ResNet blocks per resolution, attention at 14 and 7, dropout 0.1), Adam lr 2e-4 with warm-up, batch
128, EMA 0.9999, gradient clipping 1, label dropout 0.1 for guidance, 40 epochs of the 60,000 digits (~19k steps);
evaluation on 10,000 samples with 1000/250/50/20/10 sampling steps, and the baseline with its own 1,000-step
ancestral sampler on ``ancestral_n`` samples (GPU only).
``quick`` keeps every setting of the process (T, schedule, the two configurations) but shrinks the network
(ch 16, one block per resolution) and the budget (2 × 400 steps of batch 64: two passes over 12,800 digits per
model, ~0.65 s per step on one CPU thread, i.e. ~9 min of training for both) to fit a 2-core CPU, and
evaluates 300 samples with 20/10/5 DDIM steps (1000 and 250 steps are left to ``full``). ``gpu`` (about an hour
on a T4) trains the full U-Net for 5 epochs of the 60,000 digits (2,340 steps per configuration, EMA 0.999 to match
the shorter run) and evaluates 1,000 samples with 50/20/10 steps. ``smoke`` only checks that everything runs.
"""

_PROCESS = {"T": 1000, "beta_start": 1e-4, "beta_end": 0.02}
# The two configurations of the ablation: DDPM as the assignment asks, and Lin et al.'s four fixes.
_CONFIGS = {
    "baseline": {"zero_snr": False, "prediction": "eps", "spacing": "leading", "guidance_rescale": 0.0},
    "lin": {"zero_snr": True, "prediction": "v", "spacing": "trailing", "guidance_rescale": 0.7},
}

_FULL = {  # the assignment's DDPM
    **_PROCESS, "configs": _CONFIGS,
    "unet": {"ch": 64, "channel_mult": [1, 2, 2], "num_res_blocks": 2, "attn_resolutions": [14, 7], "dropout": 0.1},
    "train_subset": None, "batch_size": 128, "epochs": 40, "lr": 2e-4, "warmup_steps": 1000, "ema_decay": 0.9999,
    "p_uncond": 0.1, "guidance": 3.0, "sample_steps": 250, "traj_steps": 1000,
    "n_eval": 10_000, "eval_batch": 500, "eval_steps": 250, "step_counts": [1000, 250, 50, 20, 10],
    "check_images": 1024, "ancestral_n": 10_000, "compile": False,  # not yet measured on a GPU
}

PROFILES = {
    "smoke": {
        **_PROCESS, "configs": _CONFIGS,
        "unet": {"ch": 8, "channel_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [14], "dropout": 0.0},
        "train_subset": 256, "batch_size": 32, "epochs": 1, "lr": 1e-3, "warmup_steps": 2, "ema_decay": 0.9,
        "p_uncond": 0.1, "guidance": 3.0, "sample_steps": 10, "traj_steps": 20,
        "n_eval": 40, "eval_batch": 20, "eval_steps": 5, "step_counts": [10, 5], "check_images": 16, "ancestral_n": 10,
        "compile": False,
    },
    "quick": {
        **_PROCESS, "configs": _CONFIGS,
        "unet": {"ch": 16, "channel_mult": [1, 2, 2], "num_res_blocks": 1, "attn_resolutions": [7], "dropout": 0.0},
        "train_subset": 12_800, "batch_size": 64, "epochs": 2, "lr": 2e-3, "warmup_steps": 50, "ema_decay": 0.99,
        "p_uncond": 0.1, "guidance": 3.0, "sample_steps": 20, "traj_steps": 250,
        "n_eval": 300, "eval_batch": 300, "eval_steps": 10, "step_counts": [20, 10, 5], "check_images": 256,
        "ancestral_n": 30, "compile": True,  # torch.compile of the U-Net (benchmarks/bench_train_speed.py)
    },
    "gpu": {**_FULL, "epochs": 5, "warmup_steps": 500, "ema_decay": 0.999, "sample_steps": 50,
            "n_eval": 1000, "eval_steps": 20, "step_counts": [50, 20, 10], "ancestral_n": 500},
    "full": _FULL,
}

# HWLIB_DRYRUN: the profile's U-Net, T and samplers (every step count) on a few digits in batches of 2
DRYRUN = {"train_subset": 8, "batch_size": 2, "epochs": 1, "warmup_steps": 1, "n_eval": 4, "eval_batch": 2,
          "check_images": 8, "ancestral_n": 2}


def training_calls(cfg: dict) -> dict[str, tuple[int, int]]:
    """{training run: (batch size, optimiser steps)} of a run of ``cfg`` (``benchmarks/bench_cost.py`` prices them)."""
    n = cfg["train_subset"] or 60_000
    return {name: (cfg["batch_size"], cfg["epochs"] * (n // cfg["batch_size"])) for name in cfg["configs"]}
