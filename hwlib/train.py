"""The training core shared by every model: device, seeding, EMA, checkpoints and a resumable loop.

``fit`` runs epochs of a user ``step_fn`` over a :class:`~hwlib.data.ResidentLoader` and takes care
of the rest: progress bar, per-step loss history (CSV), per-epoch sample grids and their GIF,
atomic checkpoints with every RNG state, bitwise-exact resume, and a clear stop on NaN/inf.
"""
from __future__ import annotations

import contextlib
import csv
import functools
import hashlib
import itertools
import json
import math
import os
import random
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from copy import deepcopy
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hwlib import cost
from hwlib.files import atomic_write
from hwlib.profiles import is_dry_run
from hwlib.checkpoints import (Checkpointer, RunLock, RunMismatch, check_free_space, identity_diff, split_config,
                               state_nbytes)

# ----------------------------------------------------------------------------- device and seeds


def get_device(prefer: str | None = None) -> torch.device:
    """``prefer`` if given, else CUDA, then Apple MPS, then CPU."""
    if prefer:
        return torch.device(prefer)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed python, numpy and torch (all devices); with ``deterministic``, ask for deterministic kernels
    (:func:`deterministic_kernels`)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        deterministic_kernels()


def deterministic_kernels(on: bool = True) -> None:
    """Ask torch for deterministic kernels (``on``; warnings, not errors, where an op has none) or allow any.

    Without filling fresh memory: with deterministic algorithms torch also fills every tensor it allocates uninitialised
    with NaN (``torch.utils.deterministic.fill_uninitialized_memory``, a debugging aid for programs that read memory
    they never wrote). hwlib's steps write everything they allocate before reading it, so the results are bitwise the
    same without it (a DDPM U-Net's weights, EMA and Adam state after 12 compiled training steps, fp32 and bf16), and
    notebook 02's training step is 1.03-1.05x faster at 2 threads on the Intel Xeon (about 600 fills of 22 us a step)."""
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(on, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = False


_MALLOPT = {"M_TRIM_THRESHOLD": -1, "M_MMAP_THRESHOLD": -3}  # glibc's <malloc.h> parameter numbers
KEEP_MEMORY_MMAP_THRESHOLD = 32 << 20  # glibc's largest (DEFAULT_MMAP_THRESHOLD_MAX on 64-bit machines)


@functools.lru_cache(maxsize=1)
def keep_freed_memory() -> bool:
    """Let the C allocator keep the memory a training or sampling step frees, for the next step: process-wide, once.

    PyTorch allocates every CPU tensor with the C library's ``malloc``. glibc serves large blocks with fresh pages
    from the kernel (``mmap``) and hands freed memory at the top of its heap back (``trim``), so each step pays again
    for page faults on memory the step before had: notebook 02's compiled U-Net took 13,000-19,000 minor page faults
    a step (50-73 MB of pages the kernel zeroed, 27-34 ms of system time at 2 threads). This sets glibc's ``mmap``
    threshold to its maximum (32 MiB: smaller blocks come from the heap) and turns trimming off (``mallopt``), as
    PyTorch's CPU tuning guide gets by preloading jemalloc or tcmalloc. Nothing computed changes; the process keeps
    its peak heap until it exits. Measured on the 2-core Intel Xeon with AMX, separate processes, same thread count:
    that training step 139-145 against 166-168 ms (2 threads, fp32; no page faults left), notebook 04's compiled DDPM
    sampling step 58-62 against 75 ms (1 thread, bf16, batch 100); ``benchmarks/bench_diffusion.py`` times each side
    in its own process so that the diffusers side keeps glibc's defaults.

    Called by :func:`fit` and :class:`SamplingNet`. Returns whether it applied: False where the C library is not glibc
    (macOS, Windows, musl), or with ``$HWLIB_KEEP_MEMORY=0`` (glibc's defaults, e.g. to measure them).
    """
    flag = os.environ.get("HWLIB_KEEP_MEMORY", "1").strip()
    if flag not in ("0", "1"):
        raise ValueError(f"HWLIB_KEEP_MEMORY must be 0 or 1, not {flag!r}")
    if flag == "0" or not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.gnu_get_libc_version  # glibc only (musl has no such function): mallopt's numbers are glibc's
    except (OSError, AttributeError):
        return False
    # mallopt returns 1 on success; a trim threshold of -1 (as size_t: the largest) never trims
    return (libc.mallopt(_MALLOPT["M_MMAP_THRESHOLD"], KEEP_MEMORY_MMAP_THRESHOLD) == 1
            and libc.mallopt(_MALLOPT["M_TRIM_THRESHOLD"], -1) == 1)


def autocast(device: torch.device | str, enabled: bool = True) -> contextlib.AbstractContextManager:
    """bf16 autocast where the hardware computes bf16 faster than fp32, for training and sampling alike: CUDA GPUs
    with bf16 (Ampere and later; a T4 runs in fp32) and CPUs where :func:`cpu_bf16_is_faster` (AMX-BF16, or
    AVX512-BF16 on an AMD CPU). A no-op everywhere else. bf16 needs no grad scaler. ``$HWLIB_CPU_BF16`` on a CPU:
    ``0`` trains in fp32, ``1`` (or unset) in bf16 where it is faster, ``force`` in bf16 on any CPU -- which emulates
    a CUDA run's dtype path but is ~10x slower where the CPU lacks bf16 instructions (PyTorch then falls back to its
    reference convolution) and slower than fp32 on an Intel CPU with AVX512-BF16 but no AMX.

    A dry run (``$HWLIB_DRYRUN``) takes the machine's precision like any run: forcing bf16 on a CPU without it made
    notebook 01's ``full`` Stage-II dry-run step take 87 s instead of 9 s on an AMD EPYC (AVX2, no bf16).

    Measured on an Intel Xeon with AVX512-BF16: with it, the fused :func:`adam` and compilation where a profile asks,
    the ``quick`` models train 1.4-1.8x more steps per second than in fp32 before (``benchmarks/bench_train_speed.py``)
    with their headline numbers inside the earlier spread over three training seeds (README, "Speed on a CPU");
    1,000 DDPM samples have the same FID-MNIST as in fp32 (``benchmarks/bench_sampling.py``).
    """
    device = torch.device(device)
    if not enabled:
        return contextlib.nullcontext()
    if device.type == "cuda" and torch.cuda.is_bf16_supported(including_emulation=False):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if device.type == "cpu" and cpu_bf16_enabled():
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def cpu_bf16_enabled() -> bool:
    """Whether :func:`autocast` uses bf16 on the CPU: ``$HWLIB_CPU_BF16`` is ``force``, or it is not ``0`` and the CPU
    computes bf16 faster than fp32 (:func:`cpu_bf16_is_faster`)."""
    flag = os.environ.get("HWLIB_CPU_BF16", "1").strip().lower()
    if flag not in ("0", "1", "force"):
        raise ValueError(f"HWLIB_CPU_BF16 must be 0, 1 or force, not {flag!r}")
    return flag == "force" or (flag == "1" and cpu_bf16_is_faster())


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """Whether this CPU has bf16 instructions (AVX512-BF16 or AMX-BF16 in ``/proc/cpuinfo``; False elsewhere).
    Without them PyTorch emulates bf16, ~10x slower; with them bf16 may still be slower than fp32
    (:func:`cpu_bf16_is_faster`)."""
    info = _cpuinfo()
    return "avx512_bf16" in info or "amx_bf16" in info


@functools.lru_cache(maxsize=1)
def cpu_bf16_is_faster() -> bool:
    """Whether this CPU computes bf16 faster than fp32, so that :func:`autocast` trains and samples in it: with AMX
    (``amx_bf16``), or AVX512-BF16 on an AMD CPU (Zen 4 and later). An Intel CPU with AVX512-BF16 but without AMX (or
    with AMX hidden by its hypervisor) computes bf16 products no faster than fp32 FMAs and pays the conversions.

    Measured on 2-core machines at 2 threads (``benchmarks/bench_diffusion.py``, notebook 02's ``quick`` U-Net): an
    Intel Xeon with AMX, a 2048² product in bf16 at 2,137 GFLOP/s against 305 in fp32, hwlib's DDPM training 672
    against 437 images/s; an Intel Xeon with AVX512-BF16 and no AMX (model 207), the product at 149 against 298 and
    the training at 289 against 373 images/s (0.78x) and notebook 04's compiled sampler at 98 against 76 ms a call;
    an AMD EPYC with AVX512-BF16, the training at 516 against 402 (1 thread).
    """
    info = _cpuinfo()
    return "amx_bf16" in info or ("avx512_bf16" in info and "AuthenticAMD" in info)


@functools.lru_cache(maxsize=1)
def _cpuinfo() -> str:
    """``/proc/cpuinfo``'s text ("" where there is none)."""
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def adam(params: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), **kwargs: Any) -> torch.optim.Adam:
    """The Adam every hwlib model trains with: :class:`LeanAdam` (``torch.optim.Adam`` with its fused step's Python
    bookkeeping done once) with the fused implementation (one kernel updates every parameter) on the CPU and CUDA,
    PyTorch's default elsewhere. The same update as the per-tensor loop up to
    float rounding (``tests/test_train.py``); with the foreach EMA it makes notebook 03's MLP CGAN, which stays in fp32
    and uncompiled, step 1.5x faster on this project's CPU (``benchmarks/bench_train_speed.py``).
    """
    params = list(params)
    tensors = [p for group in params for p in (group["params"] if isinstance(group, dict) else [group])]
    if "fused" not in kwargs and "foreach" not in kwargs and tensors and all(p.device.type in ("cpu", "cuda") for p in tensors):
        kwargs["fused"] = True
    return LeanAdam(params, lr=lr, betas=tuple(betas), **kwargs)


class LeanAdam(torch.optim.Adam):
    """``torch.optim.Adam`` whose fused step gathers its per-parameter lists once: PyTorch's step walks every parameter
    in Python each time (its state, its gradient, checks) and then calls one fused kernel; this one keeps each group's
    parameters and their state tensors from the first step and, every step after, reads only the gradients and calls
    the same ``_foreach_add_`` on the step counters and the same ``_fused_adam_``, with the same arguments: the same
    update bit for bit (``tests/test_train.py``). Notebook 02's U-Net (167 tensors) 1.26 against 0.85 ms a step, 03's
    MLP CGAN step 1.033x in an A/B probe (2 threads, Intel Xeon without AMX). Anything else
    (not fused, amsgrad, capturable, a tensor learning rate, a parameter without a gradient, mixed devices or dtypes,
    a closure, a grad scaler's attributes) takes PyTorch's step; loading a state dict or adding a group starts over."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lists: list[tuple[list, list, list, list]] | None = None

    def _gather(self) -> list[tuple[list, list, list, list]] | None:
        """Per group: (params, exp_avgs, exp_avg_sqs, steps), or None where a group is not the simple fused case."""
        lists = []
        for group in self.param_groups:
            ps = group["params"]
            simple = (group["fused"] and not (group["amsgrad"] or group["capturable"] or group["differentiable"]
                                              or group["decoupled_weight_decay"])
                      and not isinstance(group["lr"], torch.Tensor) and ps
                      and len({(p.device, p.dtype) for p in ps}) == 1 and all(self.state.get(p) for p in ps))
            if not simple:
                return None
            states = [self.state[p] for p in ps]
            lists.append((list(ps), [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states],
                          [s["step"] for s in states]))
        return lists

    def _torch_step(self, closure: Callable[[], Any] | None = None) -> Any:
        """PyTorch's Adam step, without the step hooks and profiler scope its class may be wrapped in once an Adam has
        been made (this class's own step runs them)."""
        step = torch.optim.Adam.step
        return (step.__wrapped__ if getattr(step, "hooked", False) else step)(self, closure)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._lists = None
        super().load_state_dict(state_dict)

    def __setstate__(self, state: dict[str, Any]) -> None:  # a copy or unpickled optimiser gathers its own lists
        super().__setstate__(state)
        self._lists = None

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        self._lists = None
        super().add_param_group(param_group)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        if closure is not None or getattr(self, "grad_scale", None) is not None or getattr(self, "found_inf", None) is not None:
            return self._torch_step(closure)
        if self._lists is None:
            loss = self._torch_step()  # the first step creates the state
            self._lists = self._gather() or []  # []: not the simple fused case, PyTorch's step from now on
            return loss
        if not self._lists:
            return self._torch_step()
        grads = [[p.grad for p in ps] for ps, *_ in self._lists]
        if any(g is None for gs in grads for g in gs):
            return self._torch_step()
        for group, (ps, exp_avgs, exp_avg_sqs, steps), gs in zip(self.param_groups, self._lists, grads):
            beta1, beta2 = group["betas"]
            torch._foreach_add_(steps, 1)
            torch._fused_adam_(ps, gs, exp_avgs, exp_avg_sqs, [], steps, amsgrad=False, lr=group["lr"],
                               beta1=float(beta1), beta2=float(beta2), weight_decay=group["weight_decay"],
                               eps=group["eps"], maximize=group["maximize"], grad_scale=None, found_inf=None)
        return None


def maybe_compile(module: nn.Module, enabled: bool, dynamic: bool | None = None) -> nn.Module:
    """``torch.compile(module)`` when ``enabled`` (a profile's ``compile``), else the module itself; also the module
    itself in a dry run on the CPU, whose few steps would not pay back the compilation.

    Pass the result to a step factory and keep the original for ``fit``, the EMA and sampling: both share the
    weights. On the 2-core CPU compilation takes 20-75 s per network the first time (cached by torch for later
    runs); the compiled ``quick`` U-Nets, DCGAN and conv CGAN then step 1.7-1.8x faster than before the fast core
    (with bf16 and the fused Adam, ``benchmarks/bench_train_speed.py``). Notebook 03's MLP CGAN ran slower compiled
    in a probe, so its profile leaves it off. ``dynamic``: ``torch.compile``'s (``False``: one graph per input shape,
    as a sampler that draws a few batch sizes wants; ``None``: a graph with symbolic sizes after the second shape)."""
    if not enabled or (is_dry_run() and not torch.cuda.is_available()):
        return module
    import logging

    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # "No CUDA runtime is found" on a CPU
    return torch.compile(module, dynamic=dynamic)


class SamplingNet(nn.Module):
    """``module`` as a sampler calls it: without gradients, in :func:`autocast` (bf16 where the hardware computes it
    faster than fp32, else fp32) and, with ``compile``, through :func:`maybe_compile` (``dynamic=False``: one graph
    per batch size).

    The one way every notebook samples a network many times over (DDPM chains): pass it where the network goes, e.g.
    ``Diffusion.sample(SamplingNet(ema.module), n)``. It shares ``module``'s weights (its ``state_dict`` is
    ``module``'s under ``module.``), puts ``module`` in eval mode, and reads every other attribute
    (``num_classes``, ``in_channels``, ``image_size``) from ``module``. Outputs come in autocast's dtype (bf16 where
    it is on); :meth:`hwlib.diffusion.Diffusion.predict` takes them to float32.

    Measured on the 2-core Intel Xeon with AMX, 2 threads (``benchmarks/bench_sampling_02.py``): notebook 02's sampling
    and evaluation from its trained networks take 62.5 s in bf16 against 103.7 s in fp32 (1.66x), every number within
    sampling noise of fp32's (FID-MNIST 11.32 against 11.31); compiled as well they took 224 s from an empty inductor
    cache, a graph for each of its batch sizes, so notebook 02 samples eagerly. Re-run with freed memory kept for every
    row (:func:`keep_freed_memory`, which fp32's large batches gain most from) in a slower hour: 84.5 against 111.2 s
    (1.32x), compiled 340 s, the same numbers. Notebook 04 draws two batch sizes and compiles
    (``benchmarks/bench_sampling.py``).
    """

    def __init__(self, module: nn.Module, compile: bool = False) -> None:
        super().__init__()
        keep_freed_memory()
        self.module = module.eval()
        object.__setattr__(self, "net", maybe_compile(module, compile, dynamic=False))  # not a second submodule
        self.compiled = self.net is not module  # False also where maybe_compile declines (a dry run on the CPU)

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        with torch.no_grad(), autocast(x.device):
            return self.net(x, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.module, name)


def unwrap(module: nn.Module) -> nn.Module:
    """The original module behind ``torch.compile``."""
    return getattr(module, "_orig_mod", module)


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def rng_state() -> dict[str, Any]:
    """Every RNG state (python, numpy, torch CPU and CUDA) in a form ``torch.load(weights_only=True)`` reads."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------- learning-rate warm-up


class Warmup(torch.optim.lr_scheduler.LRScheduler):
    """Linear learning-rate warm-up: at optimiser step k (0-based) every group's lr is ``base · min(1, (k + 1) / steps)``;
    with ``total``, a cosine decay over ``total`` steps caps it: ``base · min((k + 1) / steps, (1 + cos(π k / total)) / 2)``.

    A per-step scheduler (``per_step = True``): :func:`fit` steps it after every optimiser step, where it steps
    epoch schedulers (e.g. ``StepLR``) at each epoch end. ``steps <= 1`` and no ``total`` leave the lr at its base.
    """

    per_step = True

    def __init__(self, optimizer: torch.optim.Optimizer, steps: int, total: int | None = None,
                 last_epoch: int = -1) -> None:
        self.steps, self.total = max(1, int(steps)), total
        super().__init__(optimizer, last_epoch)

    def factor(self, k: int) -> float:
        if self.total:
            return min((k + 1) / self.steps, 0.5 * (1 + math.cos(math.pi * k / self.total)))
        return min(1.0, (k + 1) / self.steps)

    def get_lr(self) -> list[float]:
        return [base * self.factor(self.last_epoch) for base in self.base_lrs]

    _get_closed_form_lr = get_lr


# ----------------------------------------------------------------------------- EMA


def _slots(module: nn.Module, kind: str) -> list[tuple[nn.Module, str]]:
    """(owning module, attribute name) of each of ``module``'s ``kind`` ("parameters" or "buffers"), in the order
    ``named_parameters()`` / ``named_buffers()`` list them (a shared tensor once)."""
    named = module.named_parameters() if kind == "parameters" else module.named_buffers()
    return [(module.get_submodule(owner), name) for owner, _, name in (key.rpartition(".") for key, _ in named)]


def _read(slots: list[tuple[nn.Module, str]], kind: str) -> list[torch.Tensor]:
    """The tensors in ``slots`` (from :func:`_slots`) as the modules hold them now."""
    return [getattr(module, "_" + kind)[name] for module, name in slots]


class EMA:
    """Exponential moving average of a model's weights: ``shadow = decay * shadow + (1 - decay) * weights``.

    ``ema.module`` is the averaged copy (eval mode, no grads) to sample from. Buffers are copied.
    With ``warmup``, the decay ramps as ``min(decay, (1 + n) / (10 + n))`` over the first updates.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = True) -> None:
        self.module = deepcopy(unwrap(model)).eval().requires_grad_(False)
        self.decay, self.warmup, self.updates = decay, warmup, 0
        self._slots: tuple | None = None

    def _tensors(self, src: nn.Module) -> dict[str, tuple[list[torch.Tensor], list[torch.Tensor]]]:
        """The averaged copy's parameters and buffers beside the model's, read through (module, name) slots found once
        per model: walking both module trees every update (``parameters()``, ``buffers()``) took 0.6 of the 0.9 ms an
        update of notebook 02's U-Net (167 tensors) cost. The slots are read every time, so a tensor that a module
        replaces is the one averaged."""
        if self._slots is None or self._slots[0] is not src:
            self._slots = (src, {kind: (_slots(self.module, kind), _slots(src, kind)) for kind in ("parameters", "buffers")})
        return {kind: (_read(mine, kind), _read(theirs, kind)) for kind, (mine, theirs) in self._slots[1].items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates)) if self.warmup else self.decay
        with torch.profiler.record_function("hwlib.ema"):  # one kernel per list, bitwise the per-tensor lerp_ / copy_
            tensors = self._tensors(unwrap(model))
            torch._foreach_lerp_(*tensors["parameters"], 1.0 - d)
            if tensors["buffers"][0]:
                torch._foreach_copy_(*tensors["buffers"])

    def state_dict(self) -> dict[str, Any]:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])


@torch.no_grad()
def standing_stats(module: nn.Module, forward: Callable[[int], Any], n_batches: int = 16) -> nn.Module:
    """Re-estimate every BatchNorm's running mean and variance in ``module`` as the plain average over ``n_batches``
    calls ``forward(i)`` (which run ``module`` on a batch) in train mode: BigGAN's "standing statistics" (Brock et
    al. 2019). An EMA of a generator's weights needs them: the statistics :class:`EMA` copies from the live network
    belong to other weights. Restores each BN's momentum and the module's mode; returns ``module``."""
    bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    momenta, training = [m.momentum for m in bns], module.training
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    module.train()
    for i in range(n_batches):
        forward(i)
    for m, momentum in zip(bns, momenta):
        m.momentum = momentum
    return module.train(training)


# ----------------------------------------------------------------------------- checkpoints


# ----------------------------------------------------------------------------- loss history


class History:
    """Per-step scalars (``step``, ``epoch`` and whatever the step function returns), column-wise.

    ``seconds``: the wall-clock time :func:`fit` has spent training this run, summed over resumed
    sessions (restored from the checkpoint, so a run restored without training reports its original cost).
    """

    def __init__(self, columns: dict[str, list[float]] | None = None, seconds: float = 0.0) -> None:
        self.columns: dict[str, list[float]] = {k: list(v) for k, v in (columns or {}).items()}
        self.seconds = float(seconds)

    def append(self, row: dict[str, float]) -> None:
        n = len(self)
        for key in row:
            if key not in self.columns:
                self.columns[key] = [math.nan] * n
        for key, col in self.columns.items():
            col.append(float(row.get(key, math.nan)))

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()), []))

    def __getitem__(self, key: str) -> np.ndarray:
        return np.asarray(self.columns[key])

    def keys(self) -> list[str]:
        return list(self.columns)

    def truncate(self, n: int) -> None:
        for col in self.columns.values():
            del col[n:]

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: torch.tensor(v, dtype=torch.float64) for k, v in self.columns.items()}

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> History:
        return cls({k: v.tolist() for k, v in state.items()})

    def to_csv(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        with atomic_write(path, "w") as f:  # a temporary name unique per process, renamed when complete
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(self.keys())
            writer.writerows(zip(*self.columns.values()))
        return path

    @classmethod
    def from_csv(cls, path: str | os.PathLike) -> History:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
        return cls({k: [float(r[i]) for r in rows[1:]] for i, k in enumerate(rows[0])})


# ----------------------------------------------------------------------------- the loop


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite; the last good checkpoint is kept."""


def _progress(total: int, initial: int, desc: str, enabled: bool):
    mode = os.environ.get("HWLIB_PROGRESS", "auto")
    if not enabled or mode == "off":
        from tqdm import tqdm

        return tqdm(total=total, initial=initial, disable=True)
    if mode == "plain":  # batch runs (make run): a text bar that updates rarely
        from tqdm import tqdm

        return tqdm(total=total, initial=initial, desc=desc, mininterval=15, file=sys.stdout, dynamic_ncols=False, ncols=100)
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc)


def config_fingerprint(config: Any) -> str:
    """The short hash of a configuration that checkpoints held before they stored the run's identity.

    Only read, to check a resume from such an older checkpoint; a top-level ``epochs`` key is left out as then.
    """
    if isinstance(config, dict):
        config = {k: v for k, v in config.items() if k != "epochs"}
    return hashlib.sha1(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:12]


def fit(
    step_fn: Callable[[tuple[torch.Tensor, ...], int], dict[str, torch.Tensor | float]],
    loader: Any,
    *,
    epochs: int,
    run_dir: str | os.PathLike,
    modules: dict[str, nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    emas: dict[str, EMA] | None = None,
    schedulers: dict[str, Any] | None = None,
    seed: int = 0,
    deterministic: bool = True,
    resume: bool = True,
    config: Any = None,
    checkpoint_every: int | None = None,
    sample_fn: Callable[[], torch.Tensor] | None = None,
    grid_dir: str | os.PathLike | None = None,
    grid_nrow: int = 10,
    on_epoch_end: Callable[[int], None] | None = None,
    log_every: int = 25,
    progress: bool = True,
    desc: str = "train",
) -> History:
    """Train for ``epochs`` epochs; return the per-step :class:`History` (``.seconds``: training wall time, over resumes).

    Args:
        step_fn: ``step_fn(batch, step) -> {"loss_name": scalar, ...}``: one optimisation step on
            ``batch`` (the tuple the loader yields). Returned tensors are logged lazily (no sync per step).
        loader: a :class:`~hwlib.data.ResidentLoader` (``len`` and ``epoch(e, start)``).
        run_dir: folder for ``ckpt_*.pt`` and ``history.csv``.
        modules, optimizers, emas, schedulers: everything whose state a checkpoint must hold. Schedulers are
            keyed by the name of the optimiser they drive and stepped by ``fit``: after every optimiser step when
            they are per-step (``per_step = True``, e.g. :class:`Warmup`), else at each epoch end (``StepLR``).
        seed: seeds every RNG at the start of a fresh run (a resume restores them instead).
        resume: continue from the newest checkpoint in ``run_dir`` (if its ``config`` matches).
        checkpoint_every: also checkpoint every this many steps (default: at each epoch end only).
        sample_fn: returns images (B, C, H, W) in [-1, 1]; saved after each epoch as
            ``grid_dir/epoch_XXX.png`` and, at the end, gathered into ``grid_dir/progress.gif``.
        on_epoch_end: called with the finished epoch's number (1-based) before the checkpoint. After it (and the
            grid) every module of ``modules`` is back in the mode it trained in, whatever the callback set (e.g.
            ``eval()`` to score a generator without an EMA copy).
    """
    from hwlib import viz  # local import: viz pulls in matplotlib

    _check_settings(epochs, loader)
    keep_freed_memory()
    emas, schedulers = emas or {}, schedulers or {}
    identity, schedule = split_config(config)  # refuses configs that are not plain JSON
    run_dir = Path(run_dir)
    with RunLock(run_dir):
        return _fit_locked(step_fn, loader, epochs=epochs, run_dir=run_dir, modules=modules, optimizers=optimizers,
                           emas=emas, schedulers=schedulers, seed=seed, deterministic=deterministic, resume=resume,
                           config=config, identity=identity, schedule=schedule, checkpoint_every=checkpoint_every,
                           sample_fn=sample_fn, grid_dir=grid_dir, grid_nrow=grid_nrow, on_epoch_end=on_epoch_end,
                           log_every=log_every, progress=progress, desc=desc, viz=viz)


def _check_settings(epochs: Any, loader: Any) -> None:
    if isinstance(epochs, bool) or not isinstance(epochs, int):
        raise TypeError(f"epochs must be a whole number, not {epochs!r} ({type(epochs).__name__})")
    if epochs <= 0:
        raise ValueError(f"epochs must be at least 1, not {epochs}")
    if len(loader) == 0:
        raise ValueError("the loader yields no batch: the data set is smaller than one batch (lower batch_size or "
                         "use drop_last=False)")


def _restore(state: dict[str, Any], *, run_dir: Path, config: Any, identity: dict, schedule: dict, initial_lrs: dict,
             modules: dict, optimizers: dict, emas: dict, schedulers: dict) -> None:
    """Load a checkpoint's state into the run's objects, refusing another run's and applying a changed schedule.

    ``initial_lrs``: {optimizer: [lr per group]} of the freshly built optimizers, before anything is loaded."""
    stored = state.get("identity")
    if stored is None:  # written before identities were stored: compare the old whole-config hash
        if state.get("fingerprint") != config_fingerprint(config):
            raise RunMismatch(f"the checkpoints in {run_dir} were written by an older hwlib for another configuration. "
                              "To start afresh, run with resume=False (the old files are moved to "
                              f"{run_dir}/superseded/<time>/, not deleted), or train into another run directory.")
    else:
        diff = identity_diff(json.loads(stored), identity)
        if diff:
            raise RunMismatch(f"the checkpoints in {run_dir} belong to another run; these settings differ:\n  "
                              + "\n  ".join(diff) + "\nTo keep training that run, restore its settings. To start a new "
                              "run here, call with resume=False: the old files are moved to "
                              f"{run_dir}/superseded/<time>/, never deleted. Or train into another run directory.")
    fresh_sched = {k: s.state_dict() for k, s in schedulers.items()}
    for name, m in modules.items():
        unwrap(m).load_state_dict(state["modules"][name])
    for name, o in optimizers.items():
        o.load_state_dict(state["optimizers"][name])
    for name, e in emas.items():
        e.load_state_dict(state["emas"][name])
    for name, s in schedulers.items():
        if name in state["schedulers"]:
            s.load_state_dict(state["schedulers"][name])
        else:  # a checkpoint from before this scheduler existed: move it to the checkpoint's position
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "scheduler.step() before optimizer.step()"
                for _ in range(state["step"] if getattr(s, "per_step", False) else state["epoch"]):
                    s.step()
    old_schedule = json.loads(state.get("schedule", "null") or "null")
    if old_schedule is not None and old_schedule != schedule:
        changes = identity_diff(old_schedule, schedule)
        print(f"hwlib: the schedule of {run_dir.name} changed ({'; '.join(changes)}); resuming with the new one")
        old_lrs = state.get("initial_lrs", {})
        for name, o in optimizers.items():
            s = schedulers.get(name)
            if s is not None:  # the new scheduler's settings, the old one's position
                counters = {k: v for k, v in s.state_dict().items() if k in ("last_epoch", "_step_count")}
                s.load_state_dict({**fresh_sched[name], **counters})
            closed = getattr(s, "_get_closed_form_lr", None) if s is not None else None
            for i, g in enumerate(o.param_groups):
                g["initial_lr"] = initial_lrs[name][i]
                if closed is not None:
                    g["lr"] = closed()[i]
                elif name in old_lrs and old_lrs[name][i]:
                    g["lr"] *= initial_lrs[name][i] / old_lrs[name][i]
            if s is not None:
                s._last_lr = [g["lr"] for g in o.param_groups]  # noqa: SLF001 - what get_last_lr reports


DRY_RUN_STEPS = 2  # optimiser steps per training call in a dry run ($HWLIB_DRYRUN)


class _Grids:
    """Per-epoch sample grids (``grid_dir/epoch_XXX.png``) and, at the end, their GIF: an epoch-end callback."""

    def __init__(self, sample_fn: Callable[[], torch.Tensor], grid_dir: str | os.PathLike, nrow: int, viz: Any) -> None:
        self.sample_fn, self.dir, self.nrow, self.viz = sample_fn, Path(grid_dir), nrow, viz

    def __call__(self, epoch: int) -> None:
        with torch.no_grad():
            images = self.sample_fn()  # may put modules in eval mode: fit restores their modes after the callbacks
        self.viz.save_grid(images, self.dir / f"epoch_{epoch:03d}.png", nrow=self.nrow)

    def finish(self, epochs: int) -> None:
        """The GIF of this run's grids, epochs 1 to ``epochs`` (grids of a longer earlier run in the folder left out)."""
        frames = [self.dir / f"epoch_{e:03d}.png" for e in range(1, epochs + 1)]
        self.viz.make_gif([f for f in frames if f.is_file()], self.dir / "progress.gif")


class _Run:
    """One locked run: its checkpoints, history, position (step, epoch, batch in epoch) and logs not yet read."""

    def __init__(self, run_dir: Path, modules: dict, optimizers: dict, emas: dict, schedulers: dict,
                 identity: dict, schedule: dict) -> None:
        self.dir, self.ckpt = run_dir, Checkpointer(run_dir)
        self.modules, self.optimizers, self.emas, self.schedulers = modules, optimizers, emas, schedulers
        self.identity, self.schedule = identity, schedule
        self.initial_lrs = {k: [g.get("initial_lr", g["lr"]) for g in o.param_groups] for k, o in optimizers.items()}
        self.history, self.step, self.epoch, self.batch = History(), 0, 0, 0
        self.pending: list[tuple[int, int, dict[str, Any]]] = []
        self.clock, self.spent = time.perf_counter(), 0.0

    def start(self, step_fn, loader, *, epochs: int, seed: int, deterministic: bool, resume: bool, config: Any,
              desc: str, dry_run: bool) -> None:
        """Restore the newest checkpoint (``resume``), or start afresh: seed every RNG and print the run's cost."""
        params = sum(state_nbytes(dict(unwrap(m).state_dict())) for m in self.modules.values())
        check_free_space(self.dir, 3 * params + sum(state_nbytes(e.state_dict()) for e in self.emas.values()))
        device = next(next(iter(self.modules.values())).parameters()).device
        state = self.ckpt.load_latest(map_location=device) if resume else None
        if not resume:
            self.ckpt.supersede()
        if state is None:
            seed_everything(seed, deterministic)
            steps = min(DRY_RUN_STEPS, len(loader)) if dry_run else epochs * len(loader)
            step_cost = cost.measure_step(step_fn, next(iter(loader.epoch(0))), modules=self.modules,
                                          optimizers=self.optimizers, emas=self.emas)
            cost.record(desc, step_cost, steps)
            print("hwlib: " + cost.describe(desc, step_cost, steps))
        else:
            if deterministic:
                seed_everything(seed, deterministic)  # sets the deterministic flags; RNG states follow
            _restore(state, run_dir=self.dir, config=config, identity=self.identity, schedule=self.schedule,
                     initial_lrs=self.initial_lrs, modules=self.modules, optimizers=self.optimizers, emas=self.emas,
                     schedulers=self.schedulers)
            set_rng_state(state["rng"])
            self.history = History.from_state_dict(state["history"])
            self.history.seconds = float(state.get("seconds", 0.0))  # checkpoints written before this field: 0
            self.step, self.epoch, self.batch = int(state["step"]), int(state["epoch"]), int(state["batch"])
            print(f"hwlib: resumed {self.dir.name} at epoch {self.epoch + 1 if self.batch else self.epoch}, step {self.step}")
        self.clock, self.spent = time.perf_counter(), self.history.seconds

    def log(self, logs: dict[str, Any]) -> None:
        self.pending.append((self.step, self.epoch + 1, logs))

    def flush(self) -> None:
        """Move the pending logs into the history (one host sync per ``log_every`` steps); stop on NaN / inf."""
        for s, e, logs in self.pending:
            row = {"step": s, "epoch": e}
            for key, value in logs.items():
                v = float(value.detach().float().cpu()) if torch.is_tensor(value) else float(value)
                if not math.isfinite(v):
                    self.pending.clear()
                    raise TrainingDiverged(
                        f"loss {key!r} became {v} at step {s} (epoch {e}); training stopped. The last good "
                        f"checkpoint is kept in {self.dir}: lower the learning rate or check the inputs, "
                        "then run again (resume=True continues from it)."
                    )
                row[key] = v
            self.history.append(row)
        self.pending.clear()

    @torch.profiler.record_function("hwlib.checkpoint")
    def save(self) -> None:
        """An atomic checkpoint of everything, and ``history.csv``."""
        self.history.seconds = self.spent + time.perf_counter() - self.clock
        self.ckpt.save({
            "modules": {k: unwrap(m).state_dict() for k, m in self.modules.items()},
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "emas": {k: e.state_dict() for k, e in self.emas.items()},
            "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
            "rng": rng_state(), "history": self.history.state_dict(),
            "identity": json.dumps(self.identity, sort_keys=True), "schedule": json.dumps(self.schedule, sort_keys=True),
            "initial_lrs": self.initial_lrs,
            "step": self.step, "epoch": self.epoch, "batch": self.batch, "seconds": self.history.seconds,
        }, self.step)
        self.history.to_csv(self.dir / "history.csv")


def _scoped(items: Iterator[Any], name: str) -> Iterator[Any]:
    """``items``, each fetched inside ``torch.profiler.record_function(name)`` (free when no profiler runs)."""
    it = iter(items)
    while True:
        with torch.profiler.record_function(name):
            item = next(it, _END)
        if item is _END:
            return
        yield item


_END = object()


def _fit_locked(step_fn, loader, *, epochs, run_dir, modules, optimizers, emas, schedulers, seed, deterministic, resume,
                config, identity, schedule, checkpoint_every, sample_fn, grid_dir, grid_nrow, on_epoch_end, log_every,
                progress, desc, viz) -> History:
    dry_run = is_dry_run()
    run = _Run(run_dir, modules, optimizers, emas, schedulers, identity, schedule)
    run.start(step_fn, loader, epochs=epochs, seed=seed, deterministic=deterministic, resume=resume, config=config,
              desc=desc, dry_run=dry_run)
    grids = _Grids(sample_fn, grid_dir, grid_nrow, viz) if sample_fn is not None and grid_dir is not None else None
    callbacks = [c for c in (grids, on_epoch_end) if c is not None]
    per_step = [s for s in schedulers.values() if getattr(s, "per_step", False)]
    per_epoch = [s for s in schedulers.values() if not getattr(s, "per_step", False)]
    total = epochs * len(loader)
    bar = _progress(total, min(run.step, total), desc, progress)
    try:
        for module in modules.values():
            module.train()
        while run.epoch < epochs:
            batches = loader.epoch(run.epoch, start=run.batch)
            if dry_run:  # every code path once, two optimiser steps: the profile's models, settings and dtypes
                batches, epochs = itertools.islice(batches, DRY_RUN_STEPS), run.epoch + 1
            for batch in _scoped(batches, "hwlib.data"):
                with torch.profiler.record_function("hwlib.step"):
                    logs = step_fn(batch, run.step)
                for s in per_step:
                    s.step()
                run.step += 1
                run.batch += 1
                run.log(logs)
                bar.update(1)
                if len(run.pending) >= log_every:
                    with torch.profiler.record_function("hwlib.log"):
                        run.flush()
                    bar.set_postfix({k: f"{run.history.columns[k][-1]:.3g}" for k in run.history.keys()[2:6]}, refresh=False)
                if checkpoint_every and run.step % checkpoint_every == 0 and run.batch < len(loader):
                    run.flush()
                    run.save()
            run.flush()
            run.epoch, run.batch = run.epoch + 1, 0
            for s in per_epoch:
                s.step()
            with torch.profiler.record_function("hwlib.callbacks"):
                modes = {k: m.training for k, m in modules.items()}
                for callback in callbacks:
                    callback(run.epoch)
                for k, m in modules.items():  # a callback that scores or samples in eval mode leaves training as it was
                    m.train(modes[k])
            run.save()
    finally:
        bar.close()
    if grids is not None:
        grids.finish(run.epoch)
    return run.history


def fit_minibatches(net: nn.Module, loss_fn: Callable[[torch.Tensor], torch.Tensor], n: int, *, name: str, epochs: int,
                    batch_size: int, lr: float, run_dir: str | os.PathLike, seed: int = 0, resume: bool = True,
                    device: torch.device | str = "cpu", config: Any = None, desc: str = "train",
                    progress: bool = True) -> History:
    """Minimise ``loss_fn(idx)`` -- a scalar for a batch of dataset indices ``idx`` (B,) -- over shuffled mini-batches
    of ``batch_size`` (capped at ``n``) of ``n`` samples, with Adam(``lr``) and a cosine schedule over ``epochs``,
    through :func:`fit` (``net`` checkpointed under ``name`` in ``run_dir``, resumable). The one supervised loop of
    hwlib's helper networks (the attribute classifier, the image-caption matcher)."""
    from hwlib.data.cub import index_loader

    opt = torch.optim.Adam(net.parameters(), lr=lr)

    def step(batch: tuple[torch.Tensor, ...], _: int) -> dict[str, torch.Tensor]:
        (idx,) = batch
        loss = loss_fn(idx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {"loss": loss.detach()}

    return fit(step, index_loader(n, min(batch_size, n), seed=seed, device=device), epochs=epochs, run_dir=run_dir,
               modules={name: net}, optimizers={name: opt},
               schedulers={name: torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)}, seed=seed, resume=resume,
               config=config, desc=desc, progress=progress)


@contextlib.contextmanager
def timer() -> Iterator[dict[str, float]]:
    """``with timer() as t: ...`` then ``t["seconds"]``; synchronises CUDA around the block."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    out: dict[str, float] = {}
    start = time.perf_counter()
    try:
        yield out
    finally:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        out["seconds"] = time.perf_counter() - start
