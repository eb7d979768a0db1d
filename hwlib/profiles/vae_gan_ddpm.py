"""Notebook 04: VAE vs GAN vs DDPM on MNIST, measured on the generative trilemma.

The three models share the data and the training budget: ``epochs`` passes over the same ``n_train``
images with batch ``batch_size`` (so the same number of parameter updates; a GAN update is one D step
plus one G step, as in DCGAN). ``full`` follows the papers: VAE (Kingma & Welling 2014) with Adam 1e-3;
DCGAN (Radford et al. 2016): z 100, width 64, Adam 2e-4 (0.5, 0.999); DDPM (Ho et al. 2020): T = 1000,
linear betas 1e-4 .. 0.02, Adam 2e-4, EMA 0.9999, dropout 0.1, a U-Net sized for 28x28; evaluation on
10,000 samples against the MNIST test set. ``quick`` fits a 2-core CPU: narrow networks, a 20k-image
subset (notebook 03's), 3 epochs of batches of 32 (1,875 updates; four times more than batches of 128 for the
same images), T = 200 (betas scaled by 1000 / T so that alpha_bar_T still vanishes) and 1,000 evaluation
samples drawn in batches of 100 (the quick U-Net runs 1.4x faster per image at batch 100 than at 500 on a
2-core CPU). The DCGAN has width 32 and the data 20k digits: FID-MNIST on 5,000 samples, mean (min-max) over
training seeds 0-2 (``benchmarks/bench_trilemma_gan.py``): width 16 with 10k digits 44.5 (40.6-49.2; at seed 0 the
10k-parameter discriminator drove its loss to about 0 from step 100 on), width 32 with 10k 36.7 (35.9-37.6),
width 16 with 20k 34.7 (32.7-36.1), width 32 with 20k 29.7 (28.6-30.5); notebook 03's conv CGAN 31.7 (27.8-36.2).
``gpu`` (about an hour on a T4) is ``full`` for 10 epochs (4,680 updates per model) with
an EMA decay of 0.999 to suit the shorter run. ``smoke`` runs in seconds.
"""

_COMMON = {
    "batch_size": 128,
    # VAE: Bernoulli decoder for quality (z 16) and for the 2-D map (z 2); a Gaussian decoder to compare
    "vae_latent": 16, "vae_lr": 1e-3, "vae_sigma": None,  # None: learn the Gaussian decoder's scale
    # DCGAN
    "z_dim": 100, "gan_lr": 2e-4, "gan_betas": (0.5, 0.999), "n_critic": 1,
    # DDPM
    "schedule": "linear", "ddpm_lr": 2e-4, "ddim_steps": 20, "grad_clip": 1.0,
    # evaluation
    "eval_batch": 500, "grid_n": 100,
    # question 3: the optimal-discriminator experiment on two 1-D Gaussians
    "d_data": (0.0, 1.0), "d_model": (1.5, 0.7),
}

PROFILES = {
    "smoke": {**_COMMON, "n_train": 512, "epochs": 1, "batch_size": 64,
              "vae_ch": 8, "vae_hidden": 32, "gan_ch": 8,
              "unet": {"ch": 8, "channel_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0}, "T": 50, "ema_decay": 0.99, "ddpm_lr": 1e-3, "warmup": 0,
              "n_eval": 100, "d_steps": 150, "compile": False},
    "quick": {**_COMMON, "n_train": 20_000, "epochs": 3, "batch_size": 32,
              "vae_ch": 16, "vae_hidden": 128, "gan_ch": 32,
              "unet": {"ch": 16, "channel_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0}, "T": 200, "ema_decay": 0.995, "ddpm_lr": 1e-3, "warmup": 50,
              "n_eval": 1000, "eval_batch": 100, "d_steps": 600,
              "compile": True},  # torch.compile of the DCGAN and the U-Net (benchmarks/bench_train_speed.py)
    "gpu": {**_COMMON, "n_train": 60_000, "epochs": 10,
            "vae_ch": 32, "vae_hidden": 256, "gan_ch": 64,
            "unet": {"ch": 64, "channel_mult": [1, 2, 2], "num_res_blocks": 2, "attn_resolutions": [7], "dropout": 0.1}, "T": 1000, "ema_decay": 0.999, "warmup": 500,
            "n_eval": 10_000, "d_steps": 3000, "compile": False},
    "full": {**_COMMON, "n_train": 60_000, "epochs": 40,
             "vae_ch": 32, "vae_hidden": 256, "gan_ch": 64,
             "unet": {"ch": 64, "channel_mult": [1, 2, 2], "num_res_blocks": 2, "attn_resolutions": [7], "dropout": 0.1}, "T": 1000, "ema_decay": 0.9999, "warmup": 1000,
             "n_eval": 10_000, "d_steps": 3000, "compile": False},  # compile: not yet measured on a GPU
}

# HWLIB_DRYRUN: the profile's three networks and T on a few digits in batches of 2
DRYRUN = {"n_train": 16, "batch_size": 2, "epochs": 1, "warmup": 1, "n_eval": 20, "eval_batch": 10, "grid_n": 4,
          "d_steps": 10}


def training_calls(cfg: dict) -> dict[str, tuple[int, int]]:
    """{training run: (batch size, optimiser steps)} of a run of ``cfg`` (``benchmarks/bench_cost.py`` prices them):
    the three VAEs, the DCGAN and the DDPM share the budget (and the autoencoder of section 7)."""
    steps = cfg["epochs"] * (cfg["n_train"] // cfg["batch_size"])
    return {name: (cfg["batch_size"], steps) for name in ("vae", "vae_z2", "vae_gauss", "dcgan", "ddpm", "ae")}
