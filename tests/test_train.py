"""The training core: checkpoints, bitwise resume after SIGKILL, atomic writes, NaN stop, EMA, history."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from copy import deepcopy
from pathlib import Path

import pytest
import torch
from torch import nn

from hwlib import train
from hwlib.data import ResidentLoader
from hwlib.train import (EMA, Checkpointer, History, RunMismatch, TrainingDiverged, Warmup, adam, fit, rng_state,
                         seed_everything, set_rng_state)

JOB = Path(__file__).with_name("train_job.py")


def _run_job(run_dir: Path, out: Path, **env: int) -> int:
    full_env = dict(os.environ, **{k: str(v) for k, v in env.items()})
    return subprocess.run([sys.executable, str(JOB), str(run_dir), str(out)], env=full_env,
                          capture_output=True, text=True, timeout=300).returncode


def _assert_same_weights(a: Path, b: Path) -> None:
    sa, sb = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    for part in ("model", "ema"):
        for key in sa[part]:
            assert torch.equal(sa[part][key], sb[part][key]), f"{part}.{key} differs"


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """Weights of one uninterrupted run."""
    folder = tmp_path_factory.mktemp("reference")
    assert _run_job(folder / "run", folder / "final.pt") == 0
    return folder / "final.pt"


def test_resume_after_sigkill_is_bitwise_identical(tmp_path, reference):
    run, out = tmp_path / "run", tmp_path / "final.pt"
    # 24 steps in 3 epochs of 8; checkpoints every 3 steps and at epoch ends.
    # Kill mid-epoch between checkpoints, right after a checkpoint, and on an epoch's first step.
    for kill_at in (5, 7, 17):
        assert _run_job(run, out, KILL_AT_STEP=kill_at) == -signal.SIGKILL
        assert not out.exists()
    assert _run_job(run, out) == 0
    _assert_same_weights(out, reference)
    history = History.from_csv(run / "history.csv")
    assert history["step"].tolist() == list(range(1, 25))  # no step lost or repeated in the log


def test_kill_while_writing_checkpoint_leaves_readable_newest(tmp_path, reference):
    run, out = tmp_path / "run", tmp_path / "final.pt"
    assert _run_job(run, out, KILL_IN_SAVE=3) == -signal.SIGKILL  # dies half-way through its 3rd checkpoint
    ckpt = Checkpointer(run)
    assert [p.name for p in ckpt.paths()] == ["ckpt_000000003.pt", "ckpt_000000006.pt"]
    for path in ckpt.paths():  # every file under a checkpoint name loads
        torch.load(path, weights_only=True)
    assert ckpt.load_latest()["step"] == 6
    # resumed at step 6: it saves the epoch end (step 8), then dies writing step 9's checkpoint
    assert _run_job(run, out, KILL_IN_SAVE=2) == -signal.SIGKILL
    assert ckpt.load_latest()["step"] == 8
    assert _run_job(run, out) == 0
    assert not list(run.glob(".*.tmp"))  # the half-written temporaries are cleaned up
    _assert_same_weights(out, reference)


def _tiny(tmp_path, step_fn_factory, epochs=2, **kwargs):
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = ResidentLoader(torch.randn(32, 4), batch_size=8, seed=1)
    hist = fit(step_fn_factory(model, opt), loader, epochs=epochs, run_dir=tmp_path / "run",
               modules={"m": model}, optimizers={"o": opt}, progress=False, **kwargs)
    return model, hist


def _sgd_step(model, opt):
    def step(batch, i):
        loss = model(batch[0]).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        return {"loss": loss.detach()}
    return step


def _warmup_run(tmp_path, epochs: int, seen: dict[int, float], warmup: bool = True) -> None:
    """Train _tiny's model with SGD(lr 0.1) and, if ``warmup``, a 6-step Warmup; ``seen[step]`` = the lr it used."""
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    inner = _sgd_step(model, opt)

    def step(batch, i):
        seen[i] = opt.param_groups[0]["lr"]
        return inner(batch, i)

    fit(step, ResidentLoader(torch.randn(32, 4), batch_size=8, seed=1), epochs=epochs, run_dir=tmp_path / "run",
        modules={"m": model}, optimizers={"o": opt}, schedulers={"o": Warmup(opt, 6)} if warmup else None,
        config={"epochs": epochs}, progress=False)


def test_warmup_is_stepped_after_every_step_and_resumes(tmp_path):
    expected = {k: 0.1 * min(1.0, (k + 1) / 6) for k in range(12)}
    seen: dict[int, float] = {}
    _warmup_run(tmp_path / "a", 2, seen)  # 8 steps in two epochs
    assert seen == {k: expected[k] for k in range(8)}
    seen.clear()
    _warmup_run(tmp_path / "b", 1, seen)  # stop inside the warm-up, then resume for a second epoch
    _warmup_run(tmp_path / "b", 2, seen)
    assert seen == {k: expected[k] for k in range(8)}
    seen.clear()
    _warmup_run(tmp_path / "c", 1, seen, warmup=False)  # a checkpoint written without the scheduler
    _warmup_run(tmp_path / "c", 2, seen)  # the warm-up joins at the checkpoint's step, not at step 0
    assert [seen[k] for k in range(4, 8)] == [expected[k] for k in range(4, 8)]


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    def diverging(model, opt):
        def step(batch, i):
            loss = model(batch[0]).pow(2).mean() * (float("nan") if i >= 6 else 1.0)
            opt.zero_grad()
            loss.backward()
            opt.step()
            return {"loss": loss.detach()}
        return step

    with pytest.raises(TrainingDiverged, match=r"loss 'loss' became nan at step 7.*last good checkpoint"):
        _tiny(tmp_path, diverging, epochs=3)
    state = Checkpointer(tmp_path / "run").load_latest()
    assert state["step"] == 4  # the end of epoch 1; nothing written after the NaN
    assert all(torch.isfinite(v).all() for v in state["modules"]["m"].values())


def test_completed_run_is_restored_not_retrained(tmp_path):
    model, hist = _tiny(tmp_path, _sgd_step, config={"a": 1})
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    calls = []

    def counting(model, opt):
        def step(batch, i):
            calls.append(i)
            return {"loss": torch.tensor(0.0)}
        return step

    model2, hist2 = _tiny(tmp_path, counting, config={"a": 1})
    assert calls == [] and len(hist2) == len(hist) == 8
    assert all(torch.equal(weights[k], v) for k, v in model2.state_dict().items())
    with pytest.raises(RunMismatch, match=r"(?s)run.*a: 1 -> 2.*resume=False"):  # another run: refused, kept
        _tiny(tmp_path, counting, config={"a": 2})
    assert calls == [] and len(Checkpointer(tmp_path / "run").paths()) == 2
    _, hist3 = _tiny(tmp_path, counting, config={"a": 2}, resume=False)  # an explicit restart moves them aside
    # a fresh run first prices one step, warms up (compiles) one and times two (hwlib.cost, all undone afterwards),
    # then trains its 8 steps
    assert calls == [0, 1, 2, 3] + list(range(8)) and len(hist3) == 8
    (old,) = (tmp_path / "run" / "superseded").iterdir()
    assert sorted(p.name for p in old.iterdir()) == ["ckpt_000000004.pt", "ckpt_000000008.pt", "history.csv"]


def test_finished_run_can_be_extended(tmp_path):
    _, hist = _tiny(tmp_path, _sgd_step, epochs=2, config={"a": 1, "epochs": 2})
    _, longer = _tiny(tmp_path, _sgd_step, epochs=3, config={"a": 1, "epochs": 3})
    assert len(hist) == 8 and longer["step"].tolist() == list(range(1, 13))  # 4 more steps, none repeated


def test_training_seconds_add_up_over_resumes(tmp_path):
    def slow(model, opt):
        inner = _sgd_step(model, opt)

        def step(batch, i):
            time.sleep(0.02)
            return inner(batch, i)
        return step

    _, hist = _tiny(tmp_path, slow, epochs=2, config={"a": 1, "epochs": 2})
    assert 8 * 0.02 <= hist.seconds < 8 * 0.02 + 5
    _, restored = _tiny(tmp_path, slow, epochs=2, config={"a": 1, "epochs": 2})  # nothing to train
    assert restored.seconds == pytest.approx(hist.seconds)  # the original cost, not the restore's
    _, longer = _tiny(tmp_path, slow, epochs=3, config={"a": 1, "epochs": 3})
    assert longer.seconds >= hist.seconds + 4 * 0.02


def test_fit_trains_on_in_train_mode_after_a_callback_that_scores_in_eval_mode(tmp_path):
    modes, nets = [], []

    def step_fn(model, opt):
        nets.append(model)
        inner = _sgd_step(model, opt)

        def step(batch, i):
            modes.append(model.training)
            return inner(batch, i)
        return step

    def to_eval(_epoch):
        nets[0].eval()

    model, _ = _tiny(tmp_path, step_fn, epochs=3, on_epoch_end=to_eval, grid_dir=tmp_path / "grids",
                     sample_fn=lambda: nets[0].eval()(torch.rand(4, 4)).view(4, 1, 1, 1).tanh())
    assert len(modes) >= 12 and all(modes)  # every step of epochs 2 and 3 too (fit times a few before training)
    assert model.training


def test_sample_grids_and_gif(tmp_path):
    _tiny(tmp_path, _sgd_step, sample_fn=lambda: torch.rand(4, 1, 8, 8) * 2 - 1, grid_dir=tmp_path / "grids", grid_nrow=2)
    names = sorted(p.name for p in (tmp_path / "grids").iterdir())
    assert names == ["epoch_001.png", "epoch_002.png", "progress.gif"]
    import imageio.v3 as iio

    frames = iio.imread(tmp_path / "grids" / "progress.gif", index=None)
    assert frames.shape[0] == 2  # one frame per epoch
    assert (frames[-1][..., :3] == iio.imread(tmp_path / "grids" / "epoch_002.png")[..., :3]).mean() > 0.99
    # a grid left by a longer earlier run in the same folder is not part of this run's GIF
    (tmp_path / "grids" / "epoch_002.png").replace(tmp_path / "grids" / "epoch_005.png")
    _tiny(tmp_path / "again", _sgd_step, sample_fn=lambda: torch.rand(4, 1, 8, 8) * 2 - 1, grid_dir=tmp_path / "grids",
          grid_nrow=2)
    assert iio.imread(tmp_path / "grids" / "progress.gif", index=None).shape[0] == 2


def test_seed_everything_asks_for_deterministic_kernels_without_filling_fresh_memory():
    before = torch.are_deterministic_algorithms_enabled(), torch.utils.deterministic.fill_uninitialized_memory
    try:
        weights = {}
        for fill in (True, False):  # torch's NaN fill of fresh memory, then hwlib's setting
            seed_everything(0)
            assert torch.are_deterministic_algorithms_enabled()
            assert torch.utils.deterministic.fill_uninitialized_memory is False
            torch.utils.deterministic.fill_uninitialized_memory = fill
            net = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.GroupNorm(2, 8), nn.SiLU(), nn.ConvTranspose2d(8, 3, 4, 2, 1))
            opt = adam(net.parameters(), lr=1e-2)
            for _ in range(3):
                loss = (net(torch.randn(4, 3, 16, 16)) - 1).square().mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            weights[fill] = [p.detach().clone() for p in net.parameters()]
        assert all(torch.equal(a, b) for a, b in zip(weights[True], weights[False]))  # the fill changes no result
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=True)
        torch.utils.deterministic.fill_uninitialized_memory = before[1]


_FREED_MEMORY = """
import os, torch
from hwlib.train import keep_freed_memory
applied = keep_freed_memory()
def resident_mb():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
start = resident_mb()
blocks = [torch.ones(2 << 20) for _ in range(8)]  # a step's 64 MB in eight 8-MB tensors, written
peak = resident_mb()
del blocks
print(applied, peak - start, resident_mb() - start)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator, /proc")
def test_keep_freed_memory_keeps_a_steps_memory_for_the_next():
    """glibc hands the 64 MB back to the kernel when they are freed (the next step would fault every page in again);
    after :func:`hwlib.train.keep_freed_memory` the process keeps them. Each case in its own process: the setting is
    process-wide and cannot be undone."""
    def run(flag: str) -> tuple[str, float, float]:
        out = subprocess.run([sys.executable, "-c", _FREED_MEMORY], capture_output=True, text=True, check=True,
                             env={**os.environ, "HWLIB_KEEP_MEMORY": flag}).stdout.split()
        return out[0], float(out[1]), float(out[2])

    applied, peak, kept = run("1")
    if applied == "False":
        pytest.skip("the C library is not glibc")
    default_applied, default_peak, default_kept = run("0")
    assert default_applied == "False" and min(peak, default_peak) > 60
    assert default_kept < 16  # returned to the kernel
    assert kept > 60  # kept for the next step


def test_fit_and_sampling_net_keep_freed_memory(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(train, "keep_freed_memory", lambda: calls.append(1) or True)
    train.SamplingNet(nn.Linear(2, 2))
    model = nn.Linear(2, 1)
    opt = adam(model.parameters(), lr=1e-2)

    def step(batch, _):
        loss = model(batch[0]).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        return {"loss": loss.detach()}

    fit(step, ResidentLoader(torch.randn(8, 2), batch_size=4), epochs=1, run_dir=tmp_path, modules={"m": model},
        optimizers={"m": opt}, progress=False)
    assert len(calls) == 2


def test_checkpoint_round_trip_with_rng(tmp_path):
    seed_everything(3)
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    state = {"model": model.state_dict(), "opt": opt.state_dict(), "rng": rng_state(), "step": 1}
    ckpt = Checkpointer(tmp_path, keep=2)
    for step in (1, 2, 3):
        ckpt.save(state, step)
    assert [p.name for p in ckpt.paths()] == ["ckpt_000000002.pt", "ckpt_000000003.pt"]
    expected = (torch.rand(3), __import__("numpy").random.rand(), __import__("random").random())
    loaded = ckpt.load_latest()
    set_rng_state(loaded["rng"])
    again = (torch.rand(3), __import__("numpy").random.rand(), __import__("random").random())
    assert torch.equal(expected[0], again[0]) and expected[1:] == again[1:]
    model2 = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
    model2.load_state_dict(loaded["model"])
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), model2.state_dict().values()))
    opt2 = torch.optim.Adam(model2.parameters())
    opt2.load_state_dict(loaded["opt"])
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])


def test_ema_matches_formula():
    model = nn.Linear(2, 1, bias=False)
    ema = EMA(model, decay=0.5, warmup=False)
    w0 = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)
    assert torch.allclose(ema.module.weight, 0.5 * w0 + 0.5 * (w0 + 1))
    assert not ema.module.weight.requires_grad


def test_history_csv_round_trip(tmp_path):
    h = History()
    h.append({"step": 1, "loss_d": 0.5})
    h.append({"step": 2, "loss_d": 0.25, "loss_g": 2.0})
    back = History.from_csv(h.to_csv(tmp_path / "h.csv"))
    assert back.keys() == ["step", "loss_d", "loss_g"]
    assert back["loss_d"].tolist() == [0.5, 0.25] and back["loss_g"][1] == 2.0 and back["loss_g"][0] != back["loss_g"][0]


def test_warmup_with_total_decays_on_a_cosine():
    opt = torch.optim.SGD(nn.Linear(2, 1).parameters(), lr=2.0)
    sched = Warmup(opt, 4, total=20)
    lrs = []
    for k in range(20):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    import math
    assert lrs == [2.0 * min((k + 1) / 4, 0.5 * (1 + math.cos(math.pi * k / 20))) for k in range(20)]


def test_ema_update_is_bitwise_the_per_tensor_lerp():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    ema = EMA(model, decay=0.9, warmup=False)
    reference = [p.detach().clone() for p in ema.module.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    model(torch.randn(8, 3))  # moves the batch-norm buffers
    ema.update(model)
    for r, p in zip(reference, model.parameters()):
        r.lerp_(p.detach(), 0.1)
    assert all(torch.equal(r, e) for r, e in zip(reference, ema.module.parameters()))
    assert all(torch.equal(b, e) for b, e in zip(model.buffers(), ema.module.buffers()))


def test_ema_averages_the_tensors_the_modules_hold_now_and_shared_ones_once():
    """EMA finds each tensor's (module, name) slot once and reads the slots at every update: a parameter or buffer a
    module replaces after the first update is the one averaged or copied; a weight two modules share is averaged once."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3), nn.Linear(3, 3))
    model[2].weight = model[0].weight  # tied
    ema = EMA(model, decay=0.5, warmup=False)
    assert len(list(ema.module.parameters())) == 5  # the shared weight once
    ema.update(model)
    model[0].bias = nn.Parameter(torch.full((3,), 4.0))
    model[1].running_mean = torch.full((3,), 7.0)
    before = ema.module[0].bias.detach().clone()
    w = ema.module[0].weight.detach().clone()
    ema.update(model)
    assert torch.equal(ema.module[0].bias, before.lerp(torch.full((3,), 4.0), 0.5))
    assert torch.equal(ema.module[1].running_mean, torch.full((3,), 7.0))
    assert torch.equal(ema.module[0].weight, w.lerp(model[0].weight.detach(), 0.5))  # the shared weight once, not twice
    assert ema.module[2].weight is ema.module[0].weight


def test_adam_is_fused_and_makes_the_loop_update():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 1))
    ref = deepcopy(net)
    opt, ref_opt = adam(net.parameters(), lr=1e-2, betas=(0.5, 0.999)), torch.optim.Adam(ref.parameters(), lr=1e-2,
                                                                                          betas=(0.5, 0.999), foreach=False)
    assert opt.defaults["fused"] is True
    for _ in range(20):
        x = torch.randn(32, 5)
        for m, o in ((net, opt), (ref, ref_opt)):
            o.zero_grad()
            m(x).pow(2).mean().backward()
            o.step()
    for p, r in zip(net.parameters(), ref.parameters()):
        torch.testing.assert_close(p, r, rtol=1e-5, atol=1e-6)  # the same update up to float rounding


def test_lean_adam_is_bitwise_torchs_fused_adam():
    """``adam``'s LeanAdam keeps its per-parameter lists after the first step and calls the same fused kernel: the
    same weights and state bit for bit as ``torch.optim.Adam(fused=True)`` through a schedule, weight decay, changed
    betas, a state-dict round trip and a step where one parameter has no gradient (PyTorch's step then); the step
    hooks run once per step."""
    torch.manual_seed(0)
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])  # an Adam made first wraps the Adam class's step in hooks
    net = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 1))
    ref = deepcopy(net)
    opt = adam(net.parameters(), lr=1e-2, betas=(0.5, 0.999), weight_decay=0.01)
    ref_opt = torch.optim.Adam(ref.parameters(), lr=1e-2, betas=(0.5, 0.999), weight_decay=0.01, fused=True)
    scheds = [torch.optim.lr_scheduler.LambdaLR(o, lambda k: 1 / (1 + k)) for o in (opt, ref_opt)]
    hooks = []
    opt.register_step_pre_hook(lambda *_: hooks.append(1))
    for k in range(12):
        x = torch.randn(32, 5)
        for m, o in ((net, opt), (ref, ref_opt)):
            o.zero_grad()
            m(x).pow(2).mean().backward()
            if k == 7:
                m[2].bias.grad = None
            if k == 9:
                o.param_groups[0]["betas"] = (0.9, 0.99)
            o.step()
        for sched in scheds:
            sched.step()
        if k == 4:
            opt.load_state_dict(deepcopy(opt.state_dict()))
    assert len(hooks) == 12 and opt._lists
    twin = deepcopy(opt)  # a copy gathers its own lists (of its own copied parameters)
    assert twin._lists is None
    twin.step()
    assert all(torch.equal(p, r) for p, r in zip(net.parameters(), ref.parameters()))
    for p, r in zip(net.parameters(), ref.parameters()):
        assert all(torch.equal(opt.state[p][key], ref_opt.state[r][key]) for key in ("step", "exp_avg", "exp_avg_sq"))


def test_autocast_is_bf16_on_a_cpu_where_bf16_is_faster_unless_turned_off(monkeypatch):
    monkeypatch.delenv("HWLIB_DRYRUN", raising=False)
    monkeypatch.delenv("HWLIB_CPU_BF16", raising=False)
    monkeypatch.setattr(train, "cpu_bf16_is_faster", lambda: True)
    with train.autocast("cpu"):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    with train.autocast("cpu", enabled=False):
        assert not torch.is_autocast_enabled("cpu")
    monkeypatch.setenv("HWLIB_CPU_BF16", "0")
    with train.autocast("cpu"):
        assert not torch.is_autocast_enabled("cpu")
    monkeypatch.delenv("HWLIB_CPU_BF16")
    monkeypatch.setattr(train, "cpu_bf16_is_faster", lambda: False)
    with train.autocast("cpu"):
        assert not torch.is_autocast_enabled("cpu")
    monkeypatch.setenv("HWLIB_CPU_BF16", "force")  # emulated bf16 on any CPU
    with train.autocast("cpu"):
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16 and torch.is_autocast_enabled("cpu")
    monkeypatch.setenv("HWLIB_CPU_BF16", "yes")
    with pytest.raises(ValueError, match="HWLIB_CPU_BF16"):
        train.autocast("cpu")


def test_bf16_is_the_faster_with_amx_or_on_amd_avx512_bf16_not_on_intel_without_amx(monkeypatch):
    """The flags of the four 2-core machines measured (``benchmarks/results/diffusion_train_throughput_*.json``)."""
    machines = {  # /proc/cpuinfo's vendor and the flags that matter: (bf16 instructions, bf16 faster than fp32)
        "GenuineIntel avx2 avx512f avx512_bf16 amx_bf16 amx_tile": (True, True),  # Intel Xeon with AMX
        "GenuineIntel avx2 avx512f avx512_bf16 avx512_fp16": (True, False),  # Intel Xeon, AMX not exposed: 0.78x
        "AuthenticAMD avx2 avx512f avx512_bf16": (True, True),  # AMD EPYC (Zen 4)
        "AuthenticAMD avx2": (False, False),  # AMD EPYC with AVX2 only
    }
    for info, expected in machines.items():
        monkeypatch.setattr(train, "_cpuinfo", lambda info=info: f"vendor_id\t: {info.split()[0]}\nflags\t\t: {info}")
        assert (train.cpu_has_native_bf16.__wrapped__(), train.cpu_bf16_is_faster.__wrapped__()) == expected, info


def test_a_dry_run_takes_the_machines_precision(monkeypatch):
    """A dry run on a CPU without bf16 trains in fp32: emulated bf16 convolutions are ~10x slower there."""
    monkeypatch.setenv("HWLIB_DRYRUN", "1")
    monkeypatch.delenv("HWLIB_CPU_BF16", raising=False)
    for faster in (False, True):
        monkeypatch.setattr(train, "cpu_bf16_is_faster", lambda faster=faster: faster)
        with train.autocast("cpu"):
            assert torch.is_autocast_enabled("cpu") == faster


def test_maybe_compile_only_when_enabled_and_not_in_a_cpu_dry_run(monkeypatch):
    net = nn.Linear(2, 2)
    assert train.maybe_compile(net, False) is net
    monkeypatch.setenv("HWLIB_DRYRUN", "1")
    if not torch.cuda.is_available():
        assert train.maybe_compile(net, True) is net
    monkeypatch.delenv("HWLIB_DRYRUN")
    compiled = train.maybe_compile(net, True)
    assert compiled is not net and train.unwrap(compiled) is net  # compiles lazily: nothing runs here


def test_standing_stats_are_the_plain_average_over_the_batches():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)).eval()
    net[1].running_mean.fill_(5.0)  # stale statistics, e.g. copied from another network's weights
    batches = [torch.randn(8, 3) * (i + 1) for i in range(3)]
    train.standing_stats(net, lambda i: net(batches[i]), n_batches=3)
    with torch.no_grad():
        pre = [net[0](x) for x in batches]
    torch.testing.assert_close(net[1].running_mean, torch.stack([h.mean(0) for h in pre]).mean(0))
    torch.testing.assert_close(net[1].running_var, torch.stack([h.var(0) for h in pre]).mean(0))
    assert not net.training and net[1].momentum == 0.1 and int(net[1].num_batches_tracked) == 3


def test_sampling_net_is_the_module_under_autocast_with_its_attributes_and_weights(monkeypatch):
    from hwlib.diffusion import Diffusion
    from hwlib.models.unet import build

    monkeypatch.delenv("HWLIB_DRYRUN", raising=False)
    monkeypatch.setenv("HWLIB_CPU_BF16", "force")  # bf16 on any CPU, as where it is native
    torch.manual_seed(0)
    unet = build({"ch": 8, "channel_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [14], "dropout": 0.0},
                 num_classes=10).train()
    net = train.SamplingNet(unet)
    assert not unet.training and net.num_classes == 10 and net.image_size == unet.image_size
    assert list(net.state_dict()) == [f"module.{k}" for k in unet.state_dict()]  # the weights once, shared
    x, t, y = torch.randn(4, 1, 28, 28), torch.tensor([0, 10, 500, 999]), torch.tensor([1, 2, 3, 10])
    out = net(x, t, y)
    with torch.no_grad(), train.autocast("cpu"):
        ref = unet(x, t, y)
    assert out.dtype == torch.bfloat16 and not out.requires_grad
    assert torch.equal(out, ref)
    diffusion = Diffusion(T=1000, prediction="v", zero_snr=True, spacing="trailing", guidance=3.0, guidance_rescale=0.7)
    draw = lambda m: diffusion.sample(m, 4, steps=3, labels=y[:4] % 10, generator=torch.Generator().manual_seed(1))
    with train.autocast("cpu"):
        assert torch.equal(draw(net), draw(unet))  # sampling through it = sampling the module under autocast
    monkeypatch.setenv("HWLIB_CPU_BF16", "0")
    assert net(x, t, y).dtype == torch.float32
    assert torch.equal(draw(net), draw(unet))  # no autocast: the module itself
