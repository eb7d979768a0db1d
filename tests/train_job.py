"""A tiny training run for the kill-and-resume tests, run as a subprocess.

``python tests/train_job.py RUN_DIR OUT_FILE`` trains a small MLP with dropout (so the RNG
matters) on fixed random data through ``hwlib.train.fit`` and saves the final weights to OUT_FILE.
Environment: ``KILL_AT_STEP=N`` sends SIGKILL to itself inside step N; ``KILL_IN_SAVE=K`` kills
itself half-way through writing the K-th checkpoint of this process.
"""
from __future__ import annotations

import os
import signal
import sys

import torch
from torch import nn

from hwlib.data import ResidentLoader
from hwlib.train import EMA, fit, seed_everything

CONFIG = {"epochs": 3, "batch": 8, "lr": 0.05}


def main(run_dir: str, out_file: str) -> None:
    torch.set_num_threads(1)
    data_gen = torch.Generator().manual_seed(123)
    x = torch.randn(64, 10, generator=data_gen)
    y = (x[:, :1] > 0).float()
    kill_at = int(os.environ.get("KILL_AT_STEP", "-1"))
    kill_in_save = int(os.environ.get("KILL_IN_SAVE", "-1"))
    if kill_in_save > 0:
        real_save, count = torch.save, {"n": 0}

        def dying_save(obj, f, *args, **kwargs):
            count["n"] += 1
            if count["n"] == kill_in_save:
                import io

                buf = io.BytesIO()
                real_save(obj, buf)
                f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
                f.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            return real_save(obj, f, *args, **kwargs)

        torch.save = dying_save

    seed_everything(0)  # before building the model: its initial weights are part of the run
    model = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, 1))
    opt = torch.optim.Adam(model.parameters(), lr=CONFIG["lr"])
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    ema = EMA(model, decay=0.9)
    loader = ResidentLoader(x, y, batch_size=CONFIG["batch"], seed=7)

    def step_fn(batch, step):
        if step + 1 == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        xb, yb = batch
        noise = torch.randn_like(xb) * 0.01  # global RNG inside the step
        loss = nn.functional.binary_cross_entropy_with_logits(model(xb + noise), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        ema.update(model)
        return {"loss": loss.detach()}

    fit(step_fn, loader, epochs=CONFIG["epochs"], run_dir=run_dir, modules={"model": model},
        optimizers={"opt": opt}, emas={"model": ema}, schedulers={"lr": sched}, seed=0,
        config=CONFIG, checkpoint_every=3, progress=False)
    torch.save({"model": model.state_dict(), "ema": ema.module.state_dict()}, out_file)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
