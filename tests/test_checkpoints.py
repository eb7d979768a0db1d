"""hwlib.checkpoints and fit's use of it: nothing a user might want is deleted, bad settings are named."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from hwlib.checkpoints import Checkpointer, RunLock, RunLocked, RunMismatch, is_schedule_key, split_config
from hwlib.data import ResidentLoader
from hwlib.train import fit


def _fit(run_dir, epochs=2, lr=0.1, config=None, resume=True, scheduler=False, step_calls=None, **kw):
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    sched = {"o": torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)} if scheduler else None
    lrs = []

    def step(batch, i):
        lrs.append(opt.param_groups[0]["lr"])
        if step_calls is not None:
            step_calls.append(i)
        loss = model(batch[0]).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        return {"loss": loss.detach()}

    loader = ResidentLoader(torch.randn(32, 4), batch_size=8, seed=1)
    hist = fit(step, loader, epochs=epochs, run_dir=run_dir, modules={"m": model}, optimizers={"o": opt},
               schedulers=sched, config=config, resume=resume, progress=False, **kw)
    return hist, lrs


def test_schedule_keys():
    assert all(map(is_schedule_key, ["epochs", "epochs2", "lr", "lr_d", "lr_decay_epochs", "compare_epochs", "steps",
                                     "stage.epochs"]))
    assert not any(map(is_schedule_key, ["gf", "seed", "n_train", "batch_size", "recipe.loss", "slr"]))
    identity, schedule = split_config({"gf": 8, "epochs2": 3, "recipe": {"loss": "bce", "lr_d": 2}})
    assert identity == {"gf": 8, "recipe.loss": "bce"} and schedule == {"epochs2": 3, "recipe.lr_d": 2}


@pytest.mark.parametrize("bad, where", [({"a": {1, 2}}, "config.a is a set"), ({"f": len}, "config.f is a builtin"),
                                        ({"x": float("nan")}, "config.x is nan")])
def test_config_that_is_not_plain_json_is_refused(tmp_path, bad, where):
    with pytest.raises(TypeError, match=where):
        _fit(tmp_path / "run", config=bad)
    assert not list((tmp_path / "run").glob("ckpt_*"))


def test_schedule_change_resumes_with_the_new_learning_rate(tmp_path):
    # TrainingDiverged's advice: lower the learning rate and resume. Nothing is deleted, the new rate applies.
    _fit(tmp_path / "run", epochs=1, lr=0.1, config={"gf": 8, "lr": 0.1})
    hist, lrs = _fit(tmp_path / "run", epochs=2, lr=0.01, config={"gf": 8, "lr": 0.01})
    assert hist["step"].tolist() == list(range(1, 9)) and lrs == [0.01] * 4
    # with a scheduler: the new base rate and the old position (halved once per epoch)
    _fit(tmp_path / "run2", epochs=1, lr=0.1, config={"lr": 0.1}, scheduler=True)
    _, lrs = _fit(tmp_path / "run2", epochs=2, lr=0.04, config={"lr": 0.04}, scheduler=True)
    assert lrs == pytest.approx([0.02] * 4)


def test_identity_change_refuses_and_restart_moves_files_aside(tmp_path):
    run = tmp_path / "run"
    _fit(run, config={"gf": 8, "seed": 0, "epochs1": 2})
    before = sorted(p.name for p in run.glob("ckpt_*"))
    with pytest.raises(RunMismatch, match=r"(?s)" + str(run) + r".*gf: 8 -> 16.*seed: 0 -> 1"):
        _fit(run, config={"gf": 16, "seed": 1, "epochs1": 2})
    assert sorted(p.name for p in run.glob("ckpt_*")) == before
    _fit(run, config={"gf": 16, "seed": 1, "epochs1": 2}, resume=False)
    (old,) = (run / "superseded").iterdir()
    assert sorted(p.name for p in old.glob("ckpt_*")) == before


def test_unreadable_newer_checkpoints_are_quarantined_not_pruned_over(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    for step in (900, 901):
        (run / f"ckpt_{step:09d}.pt").write_bytes(b"garbage, not a checkpoint")
    hist, _ = _fit(run, epochs=2)
    assert len(hist) == 8
    assert [p.name for p in Checkpointer(run).paths()] == ["ckpt_000000004.pt", "ckpt_000000008.pt"]
    assert sorted(p.name for p in (run / "corrupt").iterdir()) == ["ckpt_000000900.pt", "ckpt_000000901.pt"]
    assert "corrupt" in capsys.readouterr().err


def test_pruning_keeps_the_checkpoint_just_written():
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        ckpt = Checkpointer(d, keep=2)
        torch.save({"step": 50}, Path(d) / "ckpt_000000050.pt")  # a readable later step: left alone
        ckpt.save({"step": 3}, 3)
        ckpt.save({"step": 4}, 4)
        ckpt.save({"step": 5}, 5)
        assert [p.name for p in ckpt.paths()] == ["ckpt_000000004.pt", "ckpt_000000005.pt", "ckpt_000000050.pt"]


def test_second_process_on_a_run_directory_fails_at_once(tmp_path):
    run = tmp_path / "run"
    with RunLock(run):
        calls: list[int] = []
        with pytest.raises(RunLocked, match=rf"{run} is in use by another process \(host .*pid"):
            _fit(run, step_calls=calls)
        assert calls == []
    # and from another process while this one holds it
    with RunLock(run):
        code = textwrap.dedent(f"""
            from hwlib.checkpoints import RunLock, RunLocked
            try:
                RunLock({str(run)!r}).__enter__()
            except RunLocked as e:
                print("locked:", e)
        """)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout
        assert out.startswith("locked:")
    _fit(run)  # released: trains


def test_unwritable_or_full_run_directory_is_reported_before_training(tmp_path, monkeypatch):
    calls: list[int] = []
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(PermissionError, match="cannot write in the run directory"):
        _fit(blocker / "run", step_calls=calls)
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(100, 100, 10))
    with pytest.raises(OSError, match=r"has 0 MiB free, but its checkpoints need"):
        _fit(tmp_path / "run", step_calls=calls)
    assert calls == []


@pytest.mark.parametrize("epochs, err", [(0, ValueError), (-1, ValueError), ("3", TypeError), (2.0, TypeError)])
def test_bad_epochs_are_refused(tmp_path, epochs, err):
    with pytest.raises(err, match="epochs"):
        _fit(tmp_path / "run", epochs=epochs)


def test_history_temporaries_are_unique_per_process(tmp_path):
    from hwlib.train import History

    h = History()
    h.append({"step": 1})
    (tmp_path / "history.csv.tmp").mkdir()  # the old fixed temporary name is taken: no clash any more
    assert History.from_csv(h.to_csv(tmp_path / "history.csv"))["step"].tolist() == [1.0]


@pytest.mark.parametrize("batch_size", [0, -4])
def test_bad_batch_size_is_refused(batch_size):
    with pytest.raises(ValueError, match=f"batch_size {batch_size} does not fit"):
        ResidentLoader(torch.randn(32, 4), batch_size=batch_size)
