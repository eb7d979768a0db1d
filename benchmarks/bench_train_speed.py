"""Training speed of every `quick` model, before and after the fast training core, and where a step's time goes.

Each training run of the four notebooks (the `quick` profile's networks, optimiser settings, batch size, EMA and
schedule, built with the same hwlib builders and step factories the notebooks call) trains ``--steps`` optimiser
steps through :func:`hwlib.train.fit` in two settings, alternated ``--rounds`` times so that drift in the
machine's load hits both alike (the faster round of each is kept):

- ``before``: the training core as it was: ``torch.optim.Adam`` with its per-tensor loop (PyTorch's CPU default),
  the EMA updated tensor by tensor, gradients clipped tensor by tensor, fp32 (``HWLIB_CPU_BF16=0``);
- ``after``: what the notebooks run now: :func:`hwlib.train.adam` (fused), the EMA and the clipping in one
  ``_foreach`` call each, one D pass over real and fake images where D has no batch norm (``make_gan_step``'s
  ``joint_d``: 03's MLP CGAN), :func:`hwlib.train.autocast` (bf16 on CPUs that compute it faster than fp32) and
  :func:`hwlib.train.maybe_compile` where the profile turns them on (``compile``; 03's MLP: neither), and
  StackGAN's networks and images in channels-last memory format, as ``stackgan.train_stage`` keeps them, with its
  batch norms trained on hwlib's CPU kernel (``stackgan.BatchNorm2d``, :mod:`hwlib.models.batch_norm_act`: in fp32
  since 2026-12-07, in bf16 too with ``HWLIB_BF16_NORM=1``; ``--ablate fused_bn`` times it against ``nn.BatchNorm2d``), and in
  fp32 on a CPU a nearest ×2 and its 3×3 convolution computed as one transposed convolution
  (:mod:`hwlib.models.upsample_conv`: StackGAN's up-blocks, the U-Net's ``Upsample``; since the same day; ``--ablate folded_up``), and the DCGAN generators'
  first layer (a transposed convolution of a 1×1 input) as a matrix product (:class:`hwlib.models.matmul_conv.ConvTranspose2d`,
  the same day), and StackGAN's discriminator heads (a 4×4 kernel over 4×4 features) as matrix products
  (:class:`hwlib.models.matmul_conv.Conv2d`, 2026-12-07, later; ``--ablate matmul_conv`` switches both, named
  ``matmul_projection`` before the heads joined), and StackGAN's DiffAugment (translation and cutout) as one CPU
  kernel each way (:mod:`hwlib.models.shift_cutout`, the same day, later; ``--ablate shift_cutout``), and dropout's
  random noise (notebook 03's MLP discriminator) drawn by hwlib's CPU kernel, the same mask bit for bit
  (:mod:`hwlib.models.dropout`, since 2026-12-07, later still; ``--ablate fast_dropout``).

Both settings run in one process, and ``fit`` sets :func:`hwlib.train.keep_freed_memory` for the whole process from
the first run on (glibc's setting cannot be undone), so since 2026-12-06 ``before`` keeps freed memory too: these
ratios leave out what that setting gains (``benchmarks/bench_diffusion.py`` times it, each library in its own process;
run this script with ``HWLIB_KEEP_MEMORY=0`` for glibc's defaults on both sides).

Compilation happens in the few steps ``fit`` measures before training (its cost line), outside the timed steps;
``after_warmup_s`` is the wall time of ``fit`` beyond its training time: compilation plus those steps, to weigh
against the time the faster steps save over the profile's run.

Then one more ``after`` pass runs under ``torch.profiler`` and splits a step's CPU time into phases: ``data``
(the loader), ``forward`` (the step minus the rest: noise, augmentation, the networks' forward passes and the
loss), ``backward`` (autograd), ``optimizer`` (``Optimizer.step`` and ``zero_grad``), ``ema``, ``log`` (the
host sync of the loss history, once per ``log_every`` steps); ``dense`` is the part of forward and backward spent
inside convolutions and matrix products (their operators' own time). ``ceiling`` = before's ms per step / after's
dense ms per step: the speed-up the core could reach if everything else were free and the dense operators ran as
fast as oneDNN computes them here. Checkpoints and sample grids happen once per epoch
and are left out (``fit`` is run without grids; the one end-of-run checkpoint is outside the timed steps).
Each notebook's speed-up is its `quick` training calls (the profile's ``training_calls``) timed at these steps/s.

Writes ``benchmarks/results/train_speed_<device>[_<tag>].json``; quality at the new settings is the seed runs' job
(``benchmarks/bench_seeds.py``). Usage: ``python benchmarks/bench_train_speed.py [--runs 02/lin 03/mlp ...]
[--steps 20] [--rounds 2] [--tag amd_epyc] [--ablate channels_last]``; pin the thread count with ``OMP_NUM_THREADS``.
With ``HWLIB_CPU_BF16=force`` the ``after`` core takes bf16 also where hwlib would train in fp32
(:func:`hwlib.train.cpu_bf16_is_faster`): ``--ablate bf16`` then measures what bf16 would give on such a CPU.

``--notebooks`` instead splits each published notebook's time: the training seconds of each of its `quick` runs
(``History.seconds``, read from the newest checkpoint under ``HWLIB_RUNS``) and the notebook's wall time
(``metadata.hwlib.wall_seconds``); a notebook re-run from its checkpoints spends that wall time on everything but
training (evaluation, sampling, figures). Writes ``benchmarks/results/notebook_time_<device>.json``.

``--allocator RUN [RUN ...]`` times each named run's ``after`` core with :func:`hwlib.train.keep_freed_memory`
against glibc's defaults (``HWLIB_KEEP_MEMORY=0``), each in a process of its own (``hwlib.bench.Worker``: the setting
is process-wide), in turns for ``--rounds`` rounds of ``--steps`` steps: the median of the per-round ratios with its
range and each side's minor page faults per step. Writes ``train_speed_<device>_allocator[_<tag>].json``.

``--from-scratch NB [NB ...]`` runs each named notebook under papermill (``quick``) as a new machine would: an empty
checkpoint folder, figures in a scratch folder, and with ``--fresh-data`` an empty data folder too (notebook 01 then
draws SynthBirds and trains its caption encoder; the MNIST notebooks would need a download). It records the wall time
of the whole run beside the training seconds of each of its runs and its eight slowest cells, at the thread count
``OMP_NUM_THREADS`` pins: ``benchmarks/results/notebook_time_<device>_from_scratch[_<tag>].json`` (notebook 01's
15-minute budget is this wall time). ``--make-run NB [NB ...]`` runs the named notebooks from scratch in one scratch
folder as ``make run`` does (:func:`hwlib.nbtools.run_all`: two at a time on a CPU, each on half the cores) and records
the whole run's wall time beside each notebook's: ``notebook_time_<device>_make_run[_<tag>].json`` (the 30-minute
``make run`` goal is this wall time). With ``--keep`` the timed run is kept to publish: the executed notebook as
``runs/<notebook>.ipynb``, its figures and its checkpoints (:func:`keep_run`).
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from unittest import mock

import torch

import hwlib
from hwlib import nbtools
from hwlib.bench import Worker, is_dense, minor_page_faults, ratio_summary, write_result
from hwlib.checkpoints import Checkpointer
from hwlib.data import ResidentLoader, cub, load_mnist
from hwlib.data.cub import index_loader
from hwlib.diffusion import Diffusion, make_diffusion_step
from hwlib.gan import make_gan_step
from hwlib.models import batch_norm_act, cgan, dcgan, dropout, matmul_conv, shift_cutout, stackgan, upsample_conv, vae
from hwlib.models.unet import build as build_unet
from hwlib.models.vae import make_vae_step
from hwlib.train import EMA, Warmup, adam, fit, get_device, maybe_compile, unwrap


class LoopEMA(EMA):
    """The EMA update as it was: one ``lerp_`` and one ``copy_`` per tensor."""

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates)) if self.warmup else self.decay
        src = unwrap(model)
        with torch.profiler.record_function("hwlib.ema"):
            for p_ema, p in zip(self.module.parameters(), src.parameters()):
                p_ema.lerp_(p.detach(), 1.0 - d)
            for b_ema, b in zip(self.module.buffers(), src.buffers()):
                b_ema.copy_(b)


@dataclass
class Core:
    """The training core's choices that differ between ``before`` and ``after``."""

    name: str
    adam: Callable[..., torch.optim.Optimizer]
    ema: type
    bf16: bool
    compile: bool
    channels_last: bool  # StackGAN's networks and images, as stackgan.train_stage keeps them
    joint_d: bool = False  # make_gan_step's one D pass over real and fakes (where D has no batch norm)
    fused_bn: bool = False  # StackGAN's batch norms in training on hwlib's CPU kernel (stackgan.BatchNorm2d, batch_norm_act)
    folded_up: bool = False  # nearest x2 + 3x3 conv as one transposed convolution (hwlib.models.upsample_conv)
    matmul_conv: bool = False  # DCGAN G's first layer and StackGAN D's heads as matrix products (hwlib.models.matmul_conv)
    shift_cutout: bool = False  # StackGAN's DiffAugment in one CPU kernel each way (hwlib.models.shift_cutout)
    fast_dropout: bool = False  # dropout's noise from hwlib's CPU kernel (hwlib.models.dropout; 03's MLP D)

    def net(self, module: torch.nn.Module, enabled: bool) -> torch.nn.Module:
        return maybe_compile(module, self.compile and enabled)


BEFORE = Core("before", lambda params, lr, betas=(0.9, 0.999): torch.optim.Adam(params, lr=lr, betas=tuple(betas),
                                                                                 foreach=False), LoopEMA,
              bf16=False, compile=False, channels_last=False)
AFTER = Core("after", adam, EMA, bf16=True, compile=True, channels_last=True, joint_d=True, fused_bn=True, folded_up=True,
             matmul_conv=True, shift_cutout=True, fast_dropout=True)


@dataclass
class Run:
    """One training run ready for ``fit``: the step, its loader and the state ``fit`` checkpoints."""

    step: Callable
    loader: ResidentLoader
    modules: dict
    optimizers: dict
    emas: dict
    schedulers: dict


def mnist(n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = load_mnist("train")
    return x[:n].to(device), y[:n].to(device)


def run_02(core: Core, n: int, device: torch.device) -> Run:
    """Notebook 02's `lin` configuration: class-conditional U-Net, Adam, EMA, warm-up."""
    cfg = hwlib.get_profile("02_diffusion_mnist", "quick", verbose=False)
    diffusion = Diffusion(T=cfg.T, beta_start=cfg.beta_start, beta_end=cfg.beta_end, sampler="ddim",
                          guidance=cfg.guidance, **cfg.configs["lin"]).to(device)
    model = build_unet(cfg.unet, num_classes=10).to(device)
    opt = core.adam(model.parameters(), lr=cfg.lr)
    ema = core.ema(model, decay=cfg.ema_decay)
    x, y = mnist(n * cfg.batch_size, device)
    return Run(make_diffusion_step(core.net(model, cfg.compile), diffusion, opt, ema, p_uncond=cfg.p_uncond),
               ResidentLoader(x, y, batch_size=cfg.batch_size, device=device), {"model": model}, {"opt": opt},
               {"ema": ema}, {"opt": Warmup(opt, cfg.warmup_steps)})


def run_03(name: str) -> Callable[[Core, int, torch.device], Run]:
    def make(core: Core, n: int, device: torch.device) -> Run:
        """Notebook 03's CGAN `name`: G, D, Adam with the model's settings, EMA of G."""
        cfg = hwlib.get_profile("03_cgan_mnist", "quick", verbose=False)
        G, D = (net.to(device) for net in cgan.build(cfg)[name])
        s = cfg[name]
        opt_g, opt_d = core.adam(G.parameters(), lr=s.lr, betas=s.betas), core.adam(D.parameters(), lr=s.lr, betas=s.betas)
        ema = core.ema(G, cfg.ema_decay)
        x, y = mnist(n * cfg.batch_size, device)
        fast = s.get("compile", False)
        step = make_gan_step(core.net(G, fast), core.net(D, fast), opt_g, opt_d, z_dim=cfg.z_dim, n_critic=cfg.n_critic,
                             num_classes=10, ema=ema, amp=s.get("bf16", True), device=device, joint_d=core.joint_d)
        return Run(step, ResidentLoader(x, y, batch_size=cfg.batch_size, device=device), {"G": G, "D": D},
                   {"G": opt_g, "D": opt_d}, {"G": ema}, {})
    return make


def run_04(name: str) -> Callable[[Core, int, torch.device], Run]:
    def make(core: Core, n: int, device: torch.device) -> Run:
        """Notebook 04's model `name` (vae, dcgan or ddpm) with its optimiser settings."""
        cfg = hwlib.get_profile("04_vae_gan_ddpm", "quick", verbose=False)
        x, y = mnist(n * cfg.batch_size, device)
        loader = ResidentLoader(x, y, batch_size=cfg.batch_size, device=device)
        if name == "vae":
            model = vae.build(cfg, cfg.vae_latent, "bernoulli").to(device)
            opt = core.adam(model.parameters(), lr=cfg.vae_lr)
            return Run(make_vae_step(model, opt), loader, {"vae": model}, {"vae": opt}, {}, {})
        if name == "dcgan":
            G, D = (net.to(device) for net in dcgan.build(cfg))
            opt_g = core.adam(G.parameters(), lr=cfg.gan_lr, betas=cfg.gan_betas)
            opt_d = core.adam(D.parameters(), lr=cfg.gan_lr, betas=cfg.gan_betas)
            step = make_gan_step(core.net(G, cfg.compile), core.net(D, cfg.compile), opt_g, opt_d, z_dim=cfg.z_dim,
                                 n_critic=cfg.n_critic, conditional=False, joint_d=core.joint_d)
            return Run(step, loader, {"G": G, "D": D}, {"G": opt_g, "D": opt_d}, {}, {})
        scale = 1000 / cfg.T
        diffusion = Diffusion(T=cfg.T, schedule=cfg.schedule, beta_start=1e-4 * scale, beta_end=0.02 * scale).to(device)
        unet = build_unet(cfg.unet).to(device)
        opt = core.adam(unet.parameters(), lr=cfg.ddpm_lr)
        ema = core.ema(unet, cfg.ema_decay)
        step = make_diffusion_step(core.net(unet, cfg.compile), diffusion, opt, ema, grad_clip=cfg.grad_clip,
                                   conditional=False)
        return Run(step, loader, {"unet": unet}, {"unet": opt}, {"unet": ema}, {"unet": Warmup(opt, cfg.warmup)})
    return make


def run_01(stage: int) -> Callable[[Core, int, torch.device], Run]:
    def make(core: Core, n: int, device: torch.device) -> Run:
        """Notebook 01's Stage-I (the `stable` recipe) or Stage-II, on random birds of the real sizes."""
        cfg = hwlib.get_profile("01_stackgan_cub", "quick", verbose=False)
        t_dim = cub.EMBEDDINGS[cfg.embedding][1]  # SynthBirds' caption embedding (part-ngrams: 128)
        text_parts = (4, 16)  # part-ngrams: a 64-d n-gram mean, then four 16-d part slots (Recipe.g_part_attention's)
        nets = stackgan.build(t_dim=t_dim, c_dim=cfg.c_dim, z_dim=cfg.z_dim, gf=cfg.gf, df=cfg.df, n_res=cfg.n_res,
                              stage2_size=cfg.stage2_size, upsample=cfg.upsample, gf2=cfg.gf2, df2=cfg.df2,
                              recipe=cfg.recipe, text_parts=text_parts)
        r = stackgan.get_recipe(cfg.recipe)
        batch = cfg.batch_size if stage == 1 else cfg.batch_size2
        side, size = (76, 64) if stage == 1 else (cfg.stage2_size * 304 // 256, cfg.stage2_size)
        g = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (n * batch, 3, side, side), dtype=torch.uint8, generator=g).to(device)
        emb = torch.randn(n * batch, 10, t_dim, generator=g).to(device)
        classes = torch.randint(0, 10, (n * batch,), generator=g).to(device)
        G, D = (nets["G1"], nets["D1"]) if stage == 1 else (nets["G2"], nets["D2"])
        G, D, G1 = G.to(device), D.to(device), (nets["G1"].to(device).eval() if stage == 2 else None)
        G.ca.fit_text_stats(emb)
        opt_g = core.adam(G.parameters(), lr=cfg.lr, betas=cfg.betas)
        opt_d = core.adam(D.parameters(), lr=cfg.lr * r.lr_d, betas=cfg.betas)
        ema = core.ema(G, r.ema) if r.ema and stage == 1 else None
        if core.channels_last:
            images = stackgan.to_channels_last(images, G, D, G1, ema.module if ema else None)
        labels = torch.randint(-1, 10, (n * batch, 10, 4), generator=g).to(device)  # the part colours captions name
        novel = None  # Stage-I's captions of new colour combinations (stable's Recipe.novel): as many as the notebook's
        if r.novel and stage == 1:
            novel = (torch.randn(4000, t_dim, generator=g).to(device), torch.randint(-1, 10, (4000, 4), generator=g).to(device))
        step = stackgan.make_stackgan_step(G, D, opt_g, opt_d, images=images, embeddings=emb, class_ids=classes,
                                           out_size=size, kl_coef=cfg.kl_coef, z_dim=cfg.z_dim, G1=G1, recipe=r, ema=ema,
                                           labels=labels, novel=novel)
        return Run(step, index_loader(n * batch, batch, device=device), {"G": G, "D": D}, {"G": opt_g, "D": opt_d},
                   {"G": ema} if ema else {}, {})
    return make


RUNS = {"01/stage1": run_01(1), "01/stage2": run_01(2), "02/lin": run_02, "03/mlp": run_03("mlp"),
        "03/conv": run_03("conv"), "04/vae": run_04("vae"), "04/dcgan": run_04("dcgan"), "04/ddpm": run_04("ddpm")}

PHASES = {"autograd::engine": "backward", "Optimizer.": "optimizer", "hwlib.ema": "ema"}  # inside hwlib.step


def train(name: str, core: Core, steps: int, device: torch.device, profile: bool = False) -> dict:
    """``steps`` steps of run ``name`` with ``core`` through ``fit``: steps/s, and the phases when ``profile``."""
    bf16 = "force" if os.environ.get("HWLIB_CPU_BF16") == "force" else "1"  # force: bf16 also where it is slower
    with mock.patch.dict(os.environ, {"HWLIB_CPU_BF16": bf16 if core.bf16 else "0"}), \
            mock.patch.object(batch_norm_act, "enabled", batch_norm_act.enabled and core.fused_bn), \
            mock.patch.object(upsample_conv, "enabled", upsample_conv.enabled and core.folded_up), \
            mock.patch.object(matmul_conv, "enabled", matmul_conv.enabled and core.matmul_conv), \
            mock.patch.object(shift_cutout, "enabled", shift_cutout.enabled and core.shift_cutout), \
            mock.patch.object(dropout, "enabled", dropout.enabled and core.fast_dropout):
        torch.manual_seed(0)
        run = RUNS[name](core, steps, device)
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as run_dir, \
                torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) if profile else nullcontext() as prof:
            history = fit(run.step, run.loader, epochs=1, run_dir=run_dir, modules=run.modules,
                          optimizers=run.optimizers, emas=run.emas, schedulers=run.schedulers, progress=False,
                          resume=False, log_every=10)
        out = {"steps_per_s": round(len(history) / history.seconds, 3),
               "warmup_s": round(time.perf_counter() - start - history.seconds, 1)}
        if profile:
            out["phases_ms_per_step"] = phases(prof, len(history))
        return out


def phases(prof: torch.profiler.profile, steps: int) -> dict[str, float]:
    """CPU milliseconds per step in each phase, from ``fit``'s ``record_function`` scopes (``hwlib.data``,
    ``hwlib.step``, ``hwlib.log``) and, inside a step, autograd's, the optimisers' and the EMA's own events; the rest
    of a step is ``forward``. The cost measurement ``fit`` makes before training runs outside these scopes."""
    total = dict.fromkeys(("data", "forward", "backward", "optimizer", "ema", "log", "dense"), 0.0)
    for e in prof.events():
        parent = e.cpu_parent
        if parent is None and e.name in ("hwlib.data", "hwlib.log"):
            total[e.name.split(".")[1]] += e.cpu_time_total
        elif parent is not None and parent.name == "hwlib.step":
            phase = next((v for k, v in PHASES.items() if e.name.startswith(k)), "forward")
            total[phase] += e.cpu_time_total
        if is_dense(e.name) and in_step(e):
            total["dense"] += e.self_cpu_time_total
    return {k: round(v / 1000 / steps, 2) for k, v in total.items()}


def in_step(event) -> bool:
    """Whether a profiler event ran inside ``fit``'s ``hwlib.step`` scope."""
    while event is not None:
        if event.name == "hwlib.step":
            return True
        event = event.cpu_parent
    return False


def run_of(notebook: str, call: str) -> str | None:
    """The benchmarked run that stands for training call ``call`` of ``notebook`` (same network and step), if any."""
    nb = notebook[:2]
    if nb == "01":
        return "01/stage1" if call.startswith("Stage-I") else "01/stage2" if call == "Stage-II" else None
    if nb == "02":
        return "02/lin"  # the baseline trains the same U-Net with the same step
    if nb == "03":
        return "03/conv" if call == "conv" else "03/mlp"  # the batch-norm ablation is the same MLP
    return {"dcgan": "04/dcgan", "ddpm": "04/ddpm"}.get(call, "04/vae")  # the autoencoder is the VAE at beta = 0


def notebook_speedups(runs: dict[str, dict]) -> dict[str, dict]:
    """Each notebook's training speed-up: its `quick` training calls (``training_calls`` of its profile) timed at
    the benchmarked runs' steps/s, before and after; calls with no benchmarked run (01's attribute classifier and part judge) are
    left out and named."""
    out = {}
    for nb in (path.stem for path in nbtools.published()):
        calls = hwlib.profiles.training_calls(nb, hwlib.get_profile(nb, "quick", verbose=False))
        before = after = 0.0
        left_out = []
        for call, (_, steps) in calls.items():
            run = run_of(nb, call)
            if run not in runs:
                left_out.append(call)
                continue
            before += steps / runs[run]["before_steps_per_s"]
            after += steps / runs[run]["after_steps_per_s"]
        if after:
            out[nb] = {"training_s_before": round(before), "training_s_after": round(after),
                       "speedup": round(before / after, 2), "left_out": left_out}
            print(f"{nb}: training {before:.0f} s -> {after:.0f} s at the measured steps/s ({before / after:.2f}x)"
                  + (f"; left out: {left_out}" if left_out else ""), flush=True)
    return out


def training_seconds(runs: Path) -> dict[str, float]:
    """{run: training seconds} of every run folder under ``runs``, read from its newest checkpoint."""
    out = {}
    for run in sorted(d for d in runs.iterdir() if d.is_dir()) if runs.is_dir() else []:
        state = Checkpointer(run).load_latest()
        if state is not None:
            out[run.name] = round(float(state.get("seconds", 0.0)), 1)
    return out


def notebook_times(profile: str = "quick") -> dict[str, dict]:
    """{notebook: {"training_s": {run: seconds}, "training_total_s", "published_wall_s"}} of the published notebooks."""
    out = {}
    for path in nbtools.published():
        training = training_seconds(hwlib.runs_dir(f"{path.stem}/{profile}"))
        wall = nbtools.wall_seconds(path)
        out[path.stem] = {"training_s": training, "training_total_s": round(sum(training.values()), 1),
                          "published_wall_s": wall}
        print(f"{path.stem}: training {out[path.stem]['training_total_s']:.0f} s over {len(training)} runs; "
              f"published notebook's wall time {wall} s", flush=True)
    return out


def keep_run(notebook: str, work: Path, executed: Path) -> None:
    """Keep what a from-scratch run of ``notebook`` made in ``work``: the executed notebook as ``runs/<notebook>.ipynb``
    in the checkout (to publish with ``python -m hwlib.nbtools publish``), its figures in ``HWLIB_FIGURES`` and its
    checkpoints in ``HWLIB_RUNS``, each run folder only where that folder does not exist yet (an existing run is never
    replaced; the message names the folder that was not kept)."""
    out = (nbtools.repo_root() or Path.cwd()) / "runs"
    out.mkdir(exist_ok=True)
    if executed.is_file():  # papermill writes it, cell by cell, even when a cell fails
        shutil.copy2(executed, out / f"{notebook}.ipynb")
    if (work / "figures" / notebook).is_dir():
        shutil.copytree(work / "figures" / notebook, hwlib.figures_dir(notebook), dirs_exist_ok=True)
    for run in sorted((work / "runs").glob(f"{notebook}/*/*")):
        target = hwlib.runs_dir(str(run.relative_to(work / "runs")))
        if any(target.iterdir()):
            print(f"kept: {run.name} not copied, {target} already holds a run", flush=True)
        else:
            shutil.copytree(run, target, dirs_exist_ok=True)
    print(f"kept: {out / f'{notebook}.ipynb'}, figures and checkpoints", flush=True)


def from_scratch(notebooks: list[str], fresh_data: bool, profile: str = "quick", keep: bool = False) -> dict[str, dict]:
    """Run each notebook under papermill with no checkpoints (and, with ``fresh_data``, no data): {notebook:
    {"wall_s", "training_s": {run: seconds}, "training_total_s", "other_s"}} (``other_s``: data, evaluation, figures).
    ``keep``: :func:`keep_run` after each, so that the timed run is also the one published."""
    out = {}
    for notebook in notebooks:
        with tempfile.TemporaryDirectory(prefix="hwlib-scratch-") as tmp:
            work = Path(tmp)
            env = {"HWLIB_DATA": str(work / "data")} if fresh_data else {}
            start = time.perf_counter()
            try:
                nbtools.execute(notebook, work / "out.ipynb", work, {"profile": profile}, env=env)
            finally:  # a run that fails keeps what it trained too: nothing is lost with the scratch folder
                wall = time.perf_counter() - start
                if keep:
                    keep_run(notebook, work, work / "out.ipynb")
            timings = notebook_timings(work, notebook, profile, work / "out.ipynb")
        total = timings["training_total_s"]
        out[notebook] = {"wall_s": round(wall, 1), **timings, "other_s": round(wall - total, 1),
                         "fresh_data": fresh_data, "threads": int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads()))}
        print(f"{notebook}: {wall:.0f} s from scratch ({total:.0f} s training: "
              + ", ".join(f"{k} {v:.0f} s" for k, v in timings["training_s"].items()) + ")", flush=True)
    return out


def notebook_timings(work: Path, notebook: str, profile: str, executed: Path) -> dict:
    """What a notebook run in the scratch folder ``work`` spent: {"training_s": {run: seconds}, "training_total_s",
    "slowest_cells"} (the cells of ``executed``, papermill's output, where it was written)."""
    training = training_seconds(work / "runs" / notebook / profile)
    return {"training_s": training, "training_total_s": round(sum(training.values()), 1),
            "slowest_cells": nbtools.slowest_cells(executed) if executed.is_file() else []}


def make_run(notebooks: list[str], fresh_data: bool, profile: str = "quick", keep: bool = False) -> dict:
    """The notebooks from scratch as ``make run`` runs them (:func:`hwlib.nbtools.run_all`: two at a time on a CPU,
    each on half the cores, unless ``HWLIB_LANES`` / ``OMP_NUM_THREADS`` say otherwise) in one scratch folder:
    {"lanes", "threads", "wall_s", "notebooks": {notebook: {"wall_s", "training_s", "training_total_s",
    "slowest_cells", "returncode"}}}."""
    lanes, threads = nbtools.lanes_and_threads(nbtools.cpu_cores(), torch.cuda.is_available())
    with tempfile.TemporaryDirectory(prefix="hwlib-scratch-") as tmp:
        work = Path(tmp)
        env = {**nbtools.scratch_env(work), **({"HWLIB_DATA": str(work / "data")} if fresh_data else {})}
        try:
            summary = nbtools.run_all(notebooks, work / "out", {"profile": profile}, lanes=lanes, threads=threads, env=env)
        finally:
            if keep:
                for notebook in notebooks:
                    keep_run(notebook, work, work / "out" / f"{notebook}.ipynb")
        for notebook, row in summary["notebooks"].items():
            row.update(notebook_timings(work, notebook, profile, work / "out" / f"{notebook}.ipynb"))
            row.pop("log")
    summary["fresh_data"] = fresh_data
    print(f"make run: {summary['wall_s']:.0f} s for {len(notebooks)} notebooks, {lanes} at a time, {threads} threads "
          "each: " + ", ".join(f"{k} {v['wall_s']:.0f} s" for k, v in summary["notebooks"].items()), flush=True)
    return summary


class AllocatorSide:
    """One side of ``--allocator``, in its own process: trains a run with the ``after`` core through ``fit``."""

    def __init__(self) -> None:
        self.device = get_device()

    def rate(self, name: str, steps: int) -> tuple[float, float]:
        """Steps/s of ``steps`` steps of run ``name`` and the minor page faults per step they took."""
        faults = minor_page_faults()
        steps_per_s = train(name, AFTER, steps, self.device)["steps_per_s"]
        return steps_per_s, (minor_page_faults() - faults) / steps


def allocator(runs: list[str], steps: int, rounds: int) -> dict[str, dict]:
    """Each run with freed memory kept (``keep``) against glibc's defaults (``glibc``), each side in its own process,
    timed in turns (the order alternating by round): {run: the median ratio keep / glibc, its range, steps/s and page
    faults per step of each side}."""
    import statistics


    sides = {"glibc": Worker(AllocatorSide, "glibc's defaults", env={"HWLIB_KEEP_MEMORY": "0"}),
             "keep": Worker(AllocatorSide, "freed memory kept", env={"HWLIB_KEEP_MEMORY": "1"})}
    out = {}
    try:
        for name in runs:
            rate, faults = {k: [] for k in sides}, {k: [] for k in sides}
            for r in range(rounds):
                for k in (("glibc", "keep") if r % 2 == 0 else ("keep", "glibc")):
                    steps_per_s, per_step = sides[k]("rate", name, steps)
                    rate[k].append(steps_per_s)
                    faults[k].append(per_step)
            ratios = [a / b for a, b in zip(rate["keep"], rate["glibc"])]
            out[name] = {**ratio_summary(ratios, "keep_over_glibc"),
                         **{f"{k}_steps_per_s": round(statistics.median(v), 3) for k, v in rate.items()},
                         **{f"{k}_page_faults_per_step": round(statistics.median(v)) for k, v in faults.items()}}
            print(f"{name:10s} keep / glibc {out[name]['keep_over_glibc']:.3f}x ({out[name]['keep_over_glibc_min']:.3f}-"
                  f"{out[name]['keep_over_glibc_max']:.3f}); page faults per step {out[name]['keep_page_faults_per_step']} against "
                  f"{out[name]['glibc_page_faults_per_step']}", flush=True)
    finally:
        for side in sides.values():
            side.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--notebooks", action="store_true", help="split the published notebooks' time instead")
    parser.add_argument("--from-scratch", nargs="+", metavar="NB", help="run these notebooks with no checkpoints and time them")
    parser.add_argument("--allocator", nargs="+", metavar="RUN", choices=list(RUNS),
                        help="time these runs with freed memory kept against glibc's defaults, each in its own process")
    parser.add_argument("--make-run", nargs="+", metavar="NB", help="run these notebooks from scratch as make run "
                        "does (two at a time on a CPU) and time the whole")
    parser.add_argument("--fresh-data", action="store_true", help="with --from-scratch: an empty data folder too")
    parser.add_argument("--keep", action="store_true", help="with --from-scratch: keep the executed notebook (runs/), its "
                        "figures and its checkpoints (where no run of that name exists), to publish the timed run")
    parser.add_argument("--tag", default="", help="a run on another machine: write train_speed_<device>_<tag>.json "
                        "(with --from-scratch: notebook_time_<device>_from_scratch_<tag>.json)")
    parser.add_argument("--ablate", choices=[f for f in vars(AFTER) if isinstance(getattr(AFTER, f), bool)],
                        help="'before' is the after core less this one choice (e.g. channels_last): its speed-up alone")
    args = parser.parse_args()
    device = get_device()
    if args.allocator:
        write_result(f"train_speed_{device.type}_allocator",
                     {"threads": torch.get_num_threads(), "steps": args.steps, "rounds": args.rounds,
                      "runs": allocator(args.allocator, args.steps, args.rounds)}, device, tag=args.tag)
        return
    if args.make_run:
        write_result(f"notebook_time_{device.type}_make_run",
                     make_run(args.make_run, args.fresh_data, keep=args.keep), device, tag=args.tag)
        return
    if args.from_scratch:
        write_result(f"notebook_time_{device.type}_from_scratch",
                     {"notebooks": from_scratch(args.from_scratch, args.fresh_data, keep=args.keep)}, device, tag=args.tag)
        return
    if args.notebooks:
        write_result(f"notebook_time_{device.type}", {"notebooks": notebook_times()},
                     device)
        return
    before = replace(AFTER, name="before", **{args.ablate: False}) if args.ablate else BEFORE
    result = {"threads": torch.get_num_threads(), "steps": args.steps, "rounds": args.rounds,
              "before": vars(before) | {"adam": getattr(before.adam, "__name__", "torch.optim.Adam (per-tensor loop)"),
                                        "ema": before.ema.__name__}, "runs": {}}
    for name in args.runs:
        speed, warmup = {before.name: 0.0, AFTER.name: 0.0}, []
        for _ in range(args.rounds):
            for core in (before, AFTER):
                out = train(name, core, args.steps, device)
                speed[core.name] = max(speed[core.name], out["steps_per_s"])
                if core is AFTER:
                    warmup.append(out["warmup_s"])
        prof = train(name, AFTER, args.steps, device, profile=True)
        row = {"before_steps_per_s": speed["before"], "after_steps_per_s": speed["after"],
               "speedup": round(speed["after"] / speed["before"], 2),
               "after_warmup_s": warmup, "after_phases_ms_per_step": prof["phases_ms_per_step"]}
        dense = prof["phases_ms_per_step"]["dense"]
        row["ceiling"] = round(1000 / speed["before"] / dense, 2) if dense else None
        result["runs"][name] = row
        print(f"{name:10s} before {speed['before']:.2f} -> after {speed['after']:.2f} steps/s ({row['speedup']:.2f}x); "
              f"phases (ms/step) {row['after_phases_ms_per_step']}; ceiling {row['ceiling']}x", flush=True)
    if not args.ablate:
        result["notebooks"] = notebook_speedups(result["runs"])
    suffix = "".join(f"_{x}" for x in (args.tag, args.ablate and f"ablate_{args.ablate}") if x)
    write_result(f"train_speed_{device.type}{suffix}", result, device)


if __name__ == "__main__":
    main()
