"""Training throughput (images/s): hwlib's DDPM loop vs the diffusers training recipe, same batch, same device.

hwlib: ``hwlib.models.unet.UNet`` + ``hwlib.diffusion.make_diffusion_step`` + ``hwlib.train.fit`` over a resident
loader, with the fused ``hwlib.train.adam`` and ``torch.compile`` as the profile sets it (``compile``: on in
``quick``), as notebook 02 trains it. diffusers: the recipe of its ``train_unconditional.py`` example —
``UNet2DModel`` (width chosen to match hwlib's parameter count), ``DDPMScheduler.add_noise``, AdamW, gradient
clipping, ``EMAModel``, a ``torch.utils.data.DataLoader``. Both train the same class-conditional ε-prediction task
on MNIST, measured in one run:

- ``fp32``: both in fp32 (diffusers' example without ``--mixed_precision``);
- ``bf16`` (where the device has native bf16): hwlib with bf16 autocast (``hwlib.train.autocast``, its default on
  such a device; the fp32 rows set ``HWLIB_CPU_BF16=0``), diffusers with its example's ``--mixed_precision bf16``
  (accelerate wraps the forward in ``torch.autocast(bf16)``);
- ``best``: each side at whichever of the two was faster for it in this run.

hwlib's time is ``History.seconds`` (the training loop, not the cost measurement ``fit`` makes before it).

    python benchmarks/bench_diffusion.py                 # the profile's network of this device (quick on a CPU)
    python benchmarks/bench_diffusion.py --size full --steps 50
    python benchmarks/bench_diffusion.py --steps 20 --tag amd_epyc   # another machine: its own result file
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from unittest import mock

import torch
import torch.nn.functional as F

import hwlib
from hwlib.bench import write_result
from hwlib.data import ResidentLoader, load_mnist
from hwlib.diffusion import Diffusion, make_diffusion_step
from hwlib.models.unet import UNet, build as build_unet
from hwlib.train import EMA, adam, count_parameters, cpu_has_native_bf16, fit, get_device, maybe_compile


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


def bench_hwlib(x, y, batch: int, steps: int, size: str, device: torch.device, bf16: bool) -> tuple[float, int]:
    with mock.patch.dict(os.environ, {"HWLIB_CPU_BF16": "1" if bf16 else "0"}):
        return _bench_hwlib(x, y, batch, steps, size, device)


def _bench_hwlib(x, y, batch: int, steps: int, size: str, device: torch.device) -> tuple[float, int]:
    model = hwlib_unet(size, device)
    n_params = count_parameters(model)
    diffusion = Diffusion(prediction="eps").to(device)
    opt = adam(model.parameters(), lr=2e-4)
    ema = EMA(model, 0.9999)
    compile_ = hwlib.get_profile("02_diffusion_mnist", size, verbose=False).compile or device.type == "cuda"
    step_fn = make_diffusion_step(maybe_compile(model, compile_), diffusion, opt, ema)
    warm = ResidentLoader(x[: 3 * batch], y[: 3 * batch], batch_size=batch, device=device)
    for i, b in enumerate(warm.epoch(0)):  # warm-up (and compilation)
        step_fn(b, i)
    loader = ResidentLoader(x[: steps * batch], y[: steps * batch], batch_size=batch, device=device)
    with tempfile.TemporaryDirectory() as run_dir:
        history = fit(step_fn, loader, epochs=1, run_dir=run_dir, modules={"model": model}, optimizers={"opt": opt},
                      emas={"ema": ema}, progress=False, resume=False)
    seconds = history.seconds
    return steps * batch / seconds, n_params


def bench_diffusers(x, y, batch: int, steps: int, target_params: int, size: str, device: torch.device,
                    bf16: bool) -> tuple[float, int]:
    from diffusers import DDPMScheduler
    from diffusers.training_utils import EMAModel

    model = diffusers_unet(target_params, size, device)
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    opt = torch.optim.AdamW(model.parameters(), lr=2e-4)
    ema = EMAModel(model.parameters(), decay=0.9999)
    data = torch.utils.data.TensorDataset(x[: (steps + 3) * batch], y[: (steps + 3) * batch])
    loader = torch.utils.data.DataLoader(data, batch_size=batch, shuffle=True, drop_last=True)

    def step(images, labels):
        images, labels = images.to(device), labels.to(device)
        drop = torch.rand(labels.shape, device=device) < 0.1
        labels = torch.where(drop, torch.full_like(labels, 10), labels)
        noise = torch.randn_like(images)
        t = torch.randint(0, 1000, (images.shape[0],), device=device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):  # accelerate's --mixed_precision bf16
            pred = model(scheduler.add_noise(images, noise, t), t, class_labels=labels).sample
        loss = F.mse_loss(pred.float(), noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema.step(model.parameters())
        return loss.detach()

    it = iter(loader)
    for _ in range(3):
        step(*next(it))
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step(*next(it))
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - t0), count_parameters(model)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default=None, help="profile whose U-Net to train (default: full on CUDA, quick otherwise)")
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--tag", default="", help="a run on another machine: write diffusion_train_throughput_<tag>.json")
    args = parser.parse_args()
    device = get_device()
    size = args.size or ("full" if device.type == "cuda" else "quick")
    cfg = hwlib.get_profile("02_diffusion_mnist", size, verbose=False)
    batch = args.batch or cfg.batch_size
    steps = args.steps or (50 if device.type == "cuda" else 5)
    x, y = load_mnist("train")
    bf16 = torch.cuda.is_bf16_supported(including_emulation=False) if device.type == "cuda" else cpu_has_native_bf16()
    result = {"network": size, "batch": batch, "timed_steps": steps, "torch_threads": torch.get_num_threads(),
              "bf16_native": bf16}
    speed: dict[str, dict[str, float]] = {}
    for precision in ("fp32", "bf16") if bf16 else ("fp32",):
        torch.manual_seed(0)
        ours, n_ours = bench_hwlib(x, y, batch, steps, size, device, precision == "bf16")
        theirs, n_theirs = bench_diffusers(x, y, batch, steps, n_ours, size, device, precision == "bf16")
        speed[precision] = {"hwlib": ours, "diffusers": theirs}
        result[precision] = {"hwlib_params": n_ours, "diffusers_params": n_theirs, "hwlib_images_per_s": round(ours, 2),
                             "diffusers_images_per_s": round(theirs, 2), "speedup": round(ours / theirs, 3)}
        print(f"{precision}: hwlib {ours:.1f} vs diffusers {theirs:.1f} images/s -> {ours / theirs:.2f}x", flush=True)
    # best vs best: each side at whichever precision was faster for it in this run
    best = {side: max(speed, key=lambda p: speed[p][side]) for side in ("hwlib", "diffusers")}
    result["best"] = {"hwlib_precision": best["hwlib"], "diffusers_precision": best["diffusers"],
                      "speedup": round(speed[best["hwlib"]]["hwlib"] / speed[best["diffusers"]]["diffusers"], 3)}
    print(f"best vs best: hwlib ({best['hwlib']}) / diffusers ({best['diffusers']}) -> {result['best']['speedup']:.2f}x")
    result["hwlib"] = "UNet + make_diffusion_step + fit, resident loader, fused Adam, foreach EMA, torch.compile"
    result["diffusers"] = "UNet2DModel + DDPMScheduler.add_noise + AdamW + EMAModel + DataLoader"
    write_result("diffusion_train_throughput", result, device, tag=args.tag)


if __name__ == "__main__":
    main()
