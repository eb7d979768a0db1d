"""hwlib.nbtools: the Markdown numbers that no output prints; running notebooks side by side (``make run``)."""
import json
from pathlib import Path

from hwlib import nbtools
from hwlib.nbtools import unprinted_numbers


def _nb(markdown: str, printed: str, table: str = "") -> dict:
    out = [{"output_type": "stream", "name": "stdout", "text": [printed]}]
    if table:
        out.append({"output_type": "display_data", "data": {"text/markdown": [table]}, "metadata": {}})
    return {"cells": [{"cell_type": "code", "source": [], "outputs": out, "metadata": {}},
                      {"cell_type": "markdown", "source": [markdown], "metadata": {}}]}


def test_prose_numbers_match_printed_ones_up_to_rounding_and_percent():
    nb = _nb("FID 11.3 against 54.09, accuracy 43.7 %, recall 0.52, error 0.1367; in §5.3 with `lr = 0.002` "
             "and $\\beta = 0.02$; 12,800.5 digits",
             "fid 11.3178 54.0869 accuracy 0.437 recall 0.5150 error 0.13665 n 12800.49",
             "| a | 1.0 |")
    assert unprinted_numbers(nb) == []


def test_a_stale_number_is_reported_with_its_cell_and_context():
    nb = _nb("In this run FID-MNIST fell to 11.31 against 54.09.", "FID-MNIST 11.32 (Lin et al.), 53.80 (baseline)")
    found = unprinted_numbers(nb)
    assert [(i, n) for i, n, _ in found] == [(1, "11.31"), (1, "54.09")]
    assert "fell to 11.31" in found[0][2]


def test_two_lanes_on_a_cpu_one_on_a_gpu_and_the_environment_overrides(monkeypatch):
    monkeypatch.delenv("HWLIB_LANES", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert nbtools.lanes_and_threads(2, gpu=False) == (2, 1)
    assert nbtools.lanes_and_threads(16, gpu=False) == (2, 8)
    assert nbtools.lanes_and_threads(1, gpu=False) == (1, 1)
    assert nbtools.lanes_and_threads(16, gpu=True) == (1, 16)
    monkeypatch.setenv("HWLIB_LANES", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert nbtools.lanes_and_threads(2, gpu=False) == (1, 3)


def _script_notebook(path: Path, source: str) -> Path:
    """A notebook of a parameters cell and ``source``."""
    nb = {"nbformat": 4, "nbformat_minor": 5,
          "metadata": {"kernelspec": dict(nbtools.KERNELSPEC)},
          "cells": [{"cell_type": "code", "id": "c1", "metadata": {"tags": ["parameters"]}, "execution_count": None,
                     "outputs": [], "source": 'profile = "auto"'},
                    {"cell_type": "code", "id": "c2", "metadata": {}, "execution_count": None, "outputs": [],
                     "source": source}]}
    path.write_text(json.dumps(nb))
    return path


def test_run_all_runs_two_at_a_time_in_order_and_a_failure_stops_no_other(tmp_path, capsys):
    record = tmp_path / "record.txt"
    write = f"import os, time\nopen({str(record)!r}, 'a').write(os.environ['OMP_NUM_THREADS'] + ' {{}}\\n')\n"
    short = _script_notebook(tmp_path / "short.ipynb", write.format("short"))
    long = _script_notebook(tmp_path / "long.ipynb", write.format("long") + "time.sleep(1)")
    bad = _script_notebook(tmp_path / "bad.ipynb", "raise RuntimeError('broken on purpose')")
    out = tmp_path / "out"
    summary = nbtools.run_all([long, bad, short], out, {"profile": "smoke"}, lanes=2, threads=1)
    assert summary["lanes"] == 2 and summary["threads"] == 1
    assert list(summary["notebooks"]) == ["long", "bad", "short"]  # in the order given
    codes = {name: r["returncode"] for name, r in summary["notebooks"].items()}
    assert codes["long"] == 0 and codes["short"] == 0 and codes["bad"] != 0
    assert sorted(record.read_text().split("\n")[:-1]) == ["1 long", "1 short"]  # each at the lanes' thread count
    assert (out / "long.ipynb").is_file() and "broken on purpose" in (out / "bad.log").read_text()
    printed = capsys.readouterr().out
    assert "long: started" in printed and "bad: FAILED" in printed and "short: done" in printed
