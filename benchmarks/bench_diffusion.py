"""Training throughput (images/s): hwlib's DDPM loop vs the diffusers training recipe, same batch, same device.

hwlib: ``hwlib.models.unet.UNet`` + ``hwlib.diffusion.make_diffusion_step`` + ``hwlib.train.fit`` over a resident
loader, with the fused ``hwlib.train.adam`` and ``torch.compile`` as the profile sets it (``compile``: on in
``quick``), as notebook 02 trains it. diffusers: the recipe of its ``train_unconditional.py`` example —
``UNet2DModel`` (width chosen to match hwlib's parameter count), ``DDPMScheduler.add_noise``, AdamW, gradient
clipping, ``EMAModel``, a ``torch.utils.data.DataLoader``. Both train the same class-conditional ε-prediction task
on MNIST, measured in one run:

- ``fp32``: both in fp32 (diffusers' example without ``--mixed_precision``);
- ``bf16`` (where the device has bf16 instructions): hwlib with bf16 autocast (``hwlib.train.autocast`` with
  ``HWLIB_CPU_BF16=force``; hwlib's default only where bf16 is the faster, :func:`hwlib.train.cpu_bf16_is_faster`;
  the fp32 rows set ``HWLIB_CPU_BF16=0``), diffusers with its example's ``--mixed_precision bf16`` (accelerate wraps
  the forward in ``torch.autocast(bf16)``);
- ``best``: each side at whichever of the two was faster for it in this run.

Each library trains in its own process, as its users run it: hwlib's with deterministic kernels and the C
allocator keeping freed memory (``hwlib.train.keep_freed_memory``, which ``fit`` sets), the diffusers recipe with
PyTorch's and glibc's defaults (both settings are process-wide, and glibc's cannot be undone once changed). Every
side is built and warmed up (compiled) once, then timed ``--rounds`` times, the two processes taking turns (one
runs while the other waits) and the sides interleaved in every round: each ratio is taken within a round and the
median over rounds is reported with its range, so that a shared machine whose speed drifts over the run (about 15 %
from hour to hour on the 2-core CPU) moves both sides of a ratio alike. hwlib's time is ``History.seconds`` (the
training loop, not the cost measurement ``fit`` makes before it); the diffusers loop's includes its ``DataLoader``,
as ``fit``'s includes hwlib's loader. Each side's minor page faults per timed step (memory the kernel had to map
afresh) are recorded beside its speed. With ``--profile-ops`` each side's step is split into dense work
(convolutions, matrix products) and the rest, and the dense work's GFLOP/s is set beside this device's ceiling, a
2048² matrix product at the same precision (:func:`hwlib.bench.gemm_gflop_per_s`): how much of a side's time its
dense work could still give back, and how much must come from the rest.

    python benchmarks/bench_diffusion.py                 # the profile's network of this device (quick on a CPU)
    python benchmarks/bench_diffusion.py --size full --steps 50
    python benchmarks/bench_diffusion.py --steps 50 --rounds 3 --tag intel_xeon
    python benchmarks/bench_diffusion.py --steps 20 --tag amd_epyc   # another machine: its own result file
    python benchmarks/bench_diffusion.py --steps 30 --rounds 8 --profile-ops 20   # and where each side's step goes
"""
from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from typing import Any
from unittest import mock

import torch
import torch.nn.functional as F

import hwlib
from hwlib import cost
from hwlib.bench import Worker, gemm_gflop_per_s, is_dense, minor_page_faults, ratio_summary, write_result
from hwlib.data import ResidentLoader, load_mnist
from hwlib.diffusion import Diffusion, make_diffusion_step
from hwlib.models.unet import UNet, build as build_unet
from hwlib.train import (EMA, adam, count_parameters, cpu_has_native_bf16, deterministic_kernels, fit, get_device,
                         keep_freed_memory, maybe_compile)


def hwlib_unet(size: str, device: torch.device) -> UNet:
    return build_unet(hwlib.get_profile("02_diffusion_mnist", size, verbose=False).unet, num_classes=10).to(device)


def diffusers_unet(target_params: int, size: str, device: torch.device):
    """A ``UNet2DModel`` with the same layout (3 levels, attention at 7×7) whose width best matches ``target_params``."""
    from diffusers import UNet2DModel

    u = hwlib.get_profile("02_diffusion_mnist", size, verbose=False).unet
    best = None
    for ch in range(8, 257, 8):
        m = UNet2DModel(sample_size=28, in_channels=1, out_channels=1, layers_per_block=u.num_res_blocks,
                        block_out_channels=tuple(ch * k for k in u.channel_mult), norm_num_groups=8,
                        down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
                        up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"), num_class_embeds=11)
        gap = abs(count_parameters(m) - target_params)
        if best is None or gap < best[0]:
            best = (gap, m)
        if count_parameters(m) > target_params:
            break
    return best[1].to(device)


class _Side:
    """What both sides hold: ``model``, ``opt`` and ``ema``, passed by name to ``fit`` and ``hwlib.cost.measure_step``."""

    def state(self) -> dict[str, dict[str, Any]]:
        return {"modules": {"model": self.model}, "optimizers": {"opt": self.opt}, "emas": {"ema": self.ema}}

    def as_trained(self) -> contextlib.AbstractContextManager:
        """The settings this side trains with that differ between the sides of one process (none by default)."""
        return contextlib.nullcontext()


class HwlibSide(_Side):
    """hwlib's loop, built and compiled once; :meth:`images_per_s` trains ``steps`` more steps through ``fit``. With
    deterministic kernels and freed memory kept for the next step, as ``fit`` trains the notebooks."""

    def __init__(self, x, y, batch: int, steps: int, size: str, device: torch.device, bf16: bool) -> None:
        deterministic_kernels()  # as seed_everything sets them for the notebooks
        keep_freed_memory()  # as fit sets it
        self.x, self.y, self.batch, self.steps, self.device = x, y, batch, steps, device
        self.env = {"HWLIB_CPU_BF16": "force" if bf16 else "0"}  # force: also where bf16 is slower
        self.model = hwlib_unet(size, device)
        self.n_params = count_parameters(self.model)
        self.opt = adam(self.model.parameters(), lr=2e-4)
        self.ema = EMA(self.model, 0.9999)
        compile_ = hwlib.get_profile("02_diffusion_mnist", size, verbose=False).compile or device.type == "cuda"
        self.step_fn = make_diffusion_step(maybe_compile(self.model, compile_), Diffusion(prediction="eps").to(device),
                                           self.opt, self.ema)
        warm = ResidentLoader(x[: 3 * batch], y[: 3 * batch], batch_size=batch, device=device)
        with self.as_trained():
            for i, b in enumerate(warm.epoch(0)):  # warm-up (and compilation)
                self.step_fn(b, i)

    @contextlib.contextmanager
    def as_trained(self) -> Iterator[None]:
        """This side's precision (``HWLIB_CPU_BF16``)."""
        with mock.patch.dict(os.environ, self.env):
            yield

    def flop_step(self, batch: tuple[torch.Tensor, ...], i: int) -> None:
        with self.as_trained():
            self.step_fn(batch, i)

    def images_per_s(self) -> float:
        """``fit`` over ``steps`` batches in a fresh run folder; its ``History.seconds`` (the loop, not the cost
        measurement before it)."""
        loader = ResidentLoader(self.x[: self.steps * self.batch], self.y[: self.steps * self.batch],
                                batch_size=self.batch, device=self.device)
        with self.as_trained(), tempfile.TemporaryDirectory() as run_dir:
            history = fit(self.step_fn, loader, epochs=1, run_dir=run_dir, progress=False, resume=False,
                          **self.state())
        return self.steps * self.batch / history.seconds


class DiffusersSide(_Side):
    """The diffusers recipe, built once; :meth:`images_per_s` times ``steps`` more steps."""

    def __init__(self, x, y, batch: int, steps: int, target_params: int, size: str, device: torch.device,
                 bf16: bool) -> None:
        from diffusers import DDPMScheduler
        from diffusers.training_utils import EMAModel

        self.device, self.bf16 = device, bf16
        self.model = diffusers_unet(target_params, size, device)
        self.n_params = count_parameters(self.model)
        self.scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=2e-4)
        self.ema = EMAModel(self.model.parameters(), decay=0.9999)
        data = torch.utils.data.TensorDataset(x[: steps * batch], y[: steps * batch])
        self.loader = torch.utils.data.DataLoader(data, batch_size=batch, shuffle=True, drop_last=True)
        for images, labels in zip(x[: 3 * batch].split(batch), y[: 3 * batch].split(batch)):  # warm-up
            self.step(images, labels)

    def step(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        device = self.device
        images, labels = images.to(device), labels.to(device)
        drop = torch.rand(labels.shape, device=device) < 0.1
        labels = torch.where(drop, torch.full_like(labels, 10), labels)
        noise = torch.randn_like(images)
        t = torch.randint(0, 1000, (images.shape[0],), device=device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.bf16):  # accelerate's --mixed_precision bf16
            pred = self.model(self.scheduler.add_noise(images, noise, t), t, class_labels=labels).sample
        loss = F.mse_loss(pred.float(), noise)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        self.ema.step(self.model.parameters())
        return loss.detach()

    def flop_step(self, batch: tuple[torch.Tensor, ...], _: int) -> None:
        self.step(*batch)

    def images_per_s(self) -> float:
        """The recipe's loop, its ``DataLoader`` included (as ``fit``'s clock includes hwlib's loader)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        t0, images_seen = time.perf_counter(), 0
        with self.as_trained():
            for images, labels in self.loader:
                self.step(images, labels)
                images_seen += images.shape[0]
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return images_seen / (time.perf_counter() - t0)


def op_profile(side: _Side, x: torch.Tensor, y: torch.Tensor, batch: int, steps: int) -> dict[str, float]:
    """Milliseconds per step of ``steps`` profiled steps of one side (``torch.profiler``, self CPU time, which is
    wall time on the calling thread with the intra-op threads' work inside it), in four parts: oneDNN's
    ``convolutions`` (forward and backward) and ``matrix products`` (dense work as :func:`hwlib.bench.is_dense` counts
    it), ``compiled graphs`` (inductor's fused kernels and their Python wrapper: the self time of each compiled-graph
    call) and ``other`` (every other op and the Python between them: loss, optimiser, EMA, data). Run it at 1 and at 2
    threads to see which parts use the second core."""
    from torch.profiler import ProfilerActivity, profile

    batches = [(x[i * batch:(i + 1) * batch], y[i * batch:(i + 1) * batch]) for i in range(steps)]
    with side.as_trained():
        side.flop_step(batches[0], 0)  # warm-up outside the profile
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            t0 = time.perf_counter()
            for i, b in enumerate(batches):
                side.flop_step(b, i + 1)
            wall = time.perf_counter() - t0
    parts = dict.fromkeys(("convolutions", "matrix products", "compiled graphs"), 0.0)
    for event in prof.key_averages():
        key = ("compiled graphs" if event.key.startswith("## Call CompiledFxGraph") else  # first: a hash may hold "mm"
               ("convolutions" if "convolution" in event.key else "matrix products") if is_dense(event.key) else None)
        if key:
            parts[key] += event.self_cpu_time_total / 1e3 / steps
    parts["other"] = wall * 1e3 / steps - sum(parts.values())
    return {"step_ms": round(wall * 1e3 / steps, 2), **{k: round(v, 2) for k, v in parts.items()}}


class Library:
    """One library's sides, one per precision, built in a process of their own (``hwlib.bench.Worker``): ``n_params``,
    ``speed`` (images/s and minor page faults per timed step), ``gflop`` (the work of one step: forward and backward,
    matrix products and convolutions) and ``ops`` (:func:`op_profile`)."""

    def __init__(self, library: str, device: str, batch: int, steps: int, size: str, precisions: tuple[str, ...],
                 target_params: int = 0) -> None:
        self.batch, self.steps = batch, steps
        self.x, self.y = load_mnist("train")
        self.sides: dict[str, _Side] = {}
        for precision in precisions:
            torch.manual_seed(0)
            bf16 = precision == "bf16"
            self.sides[precision] = (
                HwlibSide(self.x, self.y, batch, steps, size, torch.device(device), bf16) if library == "hwlib" else
                DiffusersSide(self.x, self.y, batch, steps, target_params, size, torch.device(device), bf16))

    def n_params(self) -> dict[str, int]:
        return {p: side.n_params for p, side in self.sides.items()}

    def speed(self, precision: str) -> tuple[float, float]:
        faults = minor_page_faults()
        images_per_s = self.sides[precision].images_per_s()
        return images_per_s, (minor_page_faults() - faults) / self.steps

    def gflop(self, precision: str) -> float:
        side = self.sides[precision]
        return cost.measure_step(side.flop_step, (self.x[:self.batch], self.y[:self.batch]), timed=0,
                                 **side.state()).flops / 1e9

    def ops(self, precision: str, steps: int) -> dict[str, float]:
        return op_profile(self.sides[precision], self.x, self.y, self.batch, steps)

    def gemm_peak(self, precision: str) -> float:
        """GFLOP/s of a large matrix product at ``precision`` in this process (:func:`hwlib.bench.gemm_gflop_per_s`)."""
        return gemm_gflop_per_s(self.sides[precision].device, torch.bfloat16 if precision == "bf16" else torch.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default=None, help="profile whose U-Net to train (default: full on CUDA, quick otherwise)")
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None, help="timed steps per side and round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every side, interleaved (median reported)")
    parser.add_argument("--tag", default="", help="a run on another machine: write diffusion_train_throughput_<tag>.json")
    parser.add_argument("--profile-ops", type=int, default=0, metavar="N",
                        help="after the rounds, profile N steps of every side: ms per step in convolutions, matrix "
                             "products, compiled graphs and the rest, and the dense work's GFLOP/s against a large "
                             "matrix product's (the JSON's `ops` and `gemm_peak_gflop_per_s`)")
    args = parser.parse_args()
    device = get_device()
    size = args.size or ("full" if device.type == "cuda" else "quick")
    cfg = hwlib.get_profile("02_diffusion_mnist", size, verbose=False)
    batch = args.batch or cfg.batch_size
    steps = args.steps or (50 if device.type == "cuda" else 5)
    bf16 = torch.cuda.is_bf16_supported(including_emulation=False) if device.type == "cuda" else cpu_has_native_bf16()
    rounds = args.rounds
    result = {"network": size, "batch": batch, "timed_steps": steps, "rounds": rounds, "torch_threads": torch.get_num_threads(),
              "bf16_native": bf16}
    precisions = ("fp32", "bf16") if bf16 else ("fp32",)
    settings = {"device": str(device), "batch": batch, "steps": steps, "size": size, "precisions": precisions}
    libraries = {"hwlib": Worker(Library, "the hwlib side", library="hwlib", **settings)}
    n_params = {"hwlib": libraries["hwlib"]("n_params")}
    libraries["diffusers"] = Worker(Library, "the diffusers side", library="diffusers", **settings,
                                    target_params=n_params["hwlib"][precisions[0]])
    n_params["diffusers"] = libraries["diffusers"]("n_params")
    try:
        work = {side: libraries[side]("gflop", precisions[0]) for side in ("hwlib", "diffusers")}
        result["gflop_per_step"] = {k: round(v, 3) for k, v in work.items()}
        print(f"work per step: hwlib {work['hwlib']:.2f} GFLOP, diffusers {work['diffusers']:.2f} GFLOP", flush=True)
        # rounds: every side once per round, in the same order, so that a machine that speeds up or slows down over
        # the run moves both sides of each ratio alike; the result is the median ratio over rounds, with its range
        speed = {p: {"hwlib": [], "diffusers": []} for p in precisions}
        faults = {p: {"hwlib": [], "diffusers": []} for p in precisions}
        for r in range(rounds):
            for precision in precisions:
                for side in ("hwlib", "diffusers"):
                    images_per_s, faults_per_step = libraries[side]("speed", precision)
                    speed[precision][side].append(images_per_s)
                    faults[precision][side].append(faults_per_step)
            print(f"round {r + 1}: " + ", ".join(f"{p} hwlib {speed[p]['hwlib'][-1]:.1f} diffusers "
                                                  f"{speed[p]['diffusers'][-1]:.1f}" for p in precisions), flush=True)

        for precision in precisions:
            ours, theirs = speed[precision]["hwlib"], speed[precision]["diffusers"]
            result[precision] = {"hwlib_params": n_params["hwlib"][precision],
                                 "diffusers_params": n_params["diffusers"][precision],
                                 "hwlib_images_per_s": round(statistics.median(ours), 2),
                                 "diffusers_images_per_s": round(statistics.median(theirs), 2),
                                 **ratio_summary([a / b for a, b in zip(ours, theirs)])}
            result[precision].update({f"{side}_page_faults_per_step": round(statistics.median(faults[precision][side]))
                                      for side in ("hwlib", "diffusers")})
            result[precision]["hwlib_gflop_per_s"] = round(work["hwlib"] * statistics.median(ours) / batch, 1)
            result[precision]["diffusers_gflop_per_s"] = round(work["diffusers"] * statistics.median(theirs) / batch, 1)
            print(f"{precision}: hwlib {result[precision]['hwlib_images_per_s']:.1f} vs diffusers "
                  f"{result[precision]['diffusers_images_per_s']:.1f} images/s -> {result[precision]['speedup']:.2f}x "
                  f"(rounds {result[precision]['speedup_min']:.2f}-{result[precision]['speedup_max']:.2f}); minor page faults "
                  f"per step: hwlib {result[precision]['hwlib_page_faults_per_step']}, diffusers "
                  f"{result[precision]['diffusers_page_faults_per_step']}", flush=True)
        # best vs best: each side at whichever precision was faster for it over the run (medians), paired per round
        best = {side: max(precisions, key=lambda p: statistics.median(speed[p][side])) for side in ("hwlib", "diffusers")}
        result["best"] = {"hwlib_precision": best["hwlib"], "diffusers_precision": best["diffusers"],
                          **ratio_summary([a / b for a, b in zip(speed[best["hwlib"]]["hwlib"],
                                                           speed[best["diffusers"]]["diffusers"])])}
        print(f"best vs best: hwlib ({best['hwlib']}) / diffusers ({best['diffusers']}) -> {result['best']['speedup']:.2f}x "
              f"(rounds {result['best']['speedup_min']:.2f}-{result['best']['speedup_max']:.2f})")
        if args.profile_ops:
            result["ops"] = {f"{side} {p}": libraries[side]("ops", p, args.profile_ops)
                             for p in precisions for side in ("hwlib", "diffusers")}
            for name, parts in result["ops"].items():
                print(f"{name:15s} " + ", ".join(f"{k} {v:.1f}" for k, v in parts.items()) + " (ms per step)")
            # how close each side's dense work runs to the device's matrix-product ceiling, measured in the hwlib
            # process right after the profiles (both sides do the same FLOPs per step in either precision)
            result["gemm_peak_gflop_per_s"] = {p: round(libraries["hwlib"]("gemm_peak", p), 1) for p in precisions}
            for name, parts in result["ops"].items():
                side, p = name.split()
                dense_ms = parts["convolutions"] + parts["matrix products"]
                parts["dense_gflop_per_s"] = round(work[side] / dense_ms * 1e3, 1)
                parts["dense_share_of_gemm_peak"] = round(parts["dense_gflop_per_s"] / result["gemm_peak_gflop_per_s"][p], 3)
                print(f"{name:15s} dense work at {parts['dense_gflop_per_s']:.0f} GFLOP/s, "
                      f"{100 * parts['dense_share_of_gemm_peak']:.0f} % of a {p} 2048² matrix product here "
                      f"({result['gemm_peak_gflop_per_s'][p]:.0f} GFLOP/s)")
    finally:
        for library in libraries.values():
            library.close()
    result["hwlib"] = ("UNet + make_diffusion_step + fit, resident loader, fused Adam, foreach EMA, torch.compile; "
                       "its own process, freed memory kept (keep_freed_memory)")
    result["diffusers"] = ("UNet2DModel + DDPMScheduler.add_noise + AdamW + EMAModel + DataLoader; its own process, "
                           "PyTorch's and glibc's defaults")
    write_result("diffusion_train_throughput", result, device, tag=args.tag)


if __name__ == "__main__":
    main()
