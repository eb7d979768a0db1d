"""HWLIB_DRYRUN: every notebook's ``gpu`` (what ``auto`` picks on Colab) and ``full`` profiles run end to end on this
CPU, as a GPU user's run would.

The paper-size networks, timestep counts and code paths run unchanged, on a few batches of 2 with two optimiser
steps per training call, in the machine's precision (hwlib.profiles). Every training run the profile plans
(``training_calls``) reports its FLOPs to the cost ledger. Each dry run is a class of its own, so that
``make test``'s workers (pytest-xdist, ``--dist loadscope``: one class or module per work unit) share them out.
"""
from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

import hwlib
from hwlib import cost, nbtools
from hwlib.models.attributes import TRAIN_BATCH

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def test_dry_run_settings_cut_data_and_keep_architectures(monkeypatch):
    monkeypatch.setenv("HWLIB_DRYRUN", "1")
    dry = hwlib.get_profile("02_diffusion_mnist", "full", verbose=False)
    monkeypatch.delenv("HWLIB_DRYRUN")
    real = hwlib.get_profile("02_diffusion_mnist", "full", verbose=False)
    assert dry.batch_size == 2 and dry.train_subset == 8 and dry.unet == real.unet and dry.T == real.T
    assert dry.step_counts == real.step_counts


class _DryRun:
    notebook: str
    profile: str

    def test_dry_run(self, tmp_path, monkeypatch):
        notebook, profile = self.notebook, self.profile
        ledger = tmp_path / "ledger.jsonl"
        run = nbtools.execute(notebook, tmp_path / "out.ipynb", tmp_path, {"profile": profile}, check=False,
                              env={"HWLIB_DRYRUN": "1", "HWLIB_COST_LEDGER": str(ledger)})
        assert run.returncode == 0, run.stderr[-3000:]
        trained = {e["name"]: e for e in cost.read_ledger(ledger)}
        module = importlib.import_module(f"hwlib.profiles.{notebook.split('_', 1)[1]}")
        planned = module.training_calls(hwlib.get_profile(notebook, profile, verbose=False))
        assert set(planned) <= set(trained), f"planned {sorted(planned)}, trained {sorted(trained)}"
        # batches of 2, or a dry run's whole training set in one batch where a network's batch is capped by its data
        # (notebook 01's part judge: min(TRAIN_BATCH, n_train), its 20 birds)
        monkeypatch.setenv("HWLIB_DRYRUN", "1")
        capped = min(TRAIN_BATCH, hwlib.get_profile(notebook, profile, verbose=False).get("n_train", 2))
        assert all(e["batch"] in (2, capped) and e["steps"] <= 2 and e["flops"] > 0 for e in trained.values()), trained


for _notebook in NOTEBOOKS:  # TestDryRun01Gpu, TestDryRun01Full, ...: one work unit each for make test's workers
    for _profile in ("gpu", "full"):
        _name = f"TestDryRun{_notebook[:2]}{_profile.title()}"
        globals()[_name] = type(_name, (_DryRun,), {"notebook": _notebook, "profile": _profile})


def test_notebook_01_trains_on_the_real_cub_layout(tmp_path):
    """``dataset="cub"``: the notebook reads CUB-200-2011 + StackGAN's birds/ (a fixture in the real formats, with
    Python-2 pickles and 1024-d char-CNN-RNN embeddings) and skips the SynthBirds-only attribute measurements."""
    sys.path.insert(0, str(Path(__file__).parent))
    from fixtures_cub import make_cub_fixture

    make_cub_fixture(tmp_path / "data" / "cub")
    out = tmp_path / "out.ipynb"
    run = nbtools.execute("01_stackgan_cub", out, tmp_path, {"profile": "smoke", "dataset": "cub"}, check=False,
                          env={"HWLIB_DRYRUN": "1", "HWLIB_DATA": str(tmp_path / "data")})
    assert run.returncode == 0, run.stderr[-3000:]
    cells = json.loads(out.read_text())["cells"]
    text = "".join("".join(o.get("text", "")) for c in cells for o in c.get("outputs", []))
    assert "data: cub, caption embeddings: char-CNN-RNN" in text and "embeddings (10, 1024)" in text
    assert "Inception Score" in text and "attribute classifier:" not in text
