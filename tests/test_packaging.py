"""The project's set-up files agree with each other."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[ ;]", req.strip(), maxsplit=1)[0].lower()


def test_environment_yml_lists_the_pyproject_dependencies():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_name(r) for r in project["dependencies"]}
    for extra in project["optional-dependencies"].values():
        wanted |= {_name(r) for r in extra}
    text = (ROOT / "environment.yml").read_text().split("dependencies:", 1)[1]
    listed = {_name(line.strip()[2:]) for line in text.splitlines()
              if line.strip().startswith("- ") and not line.strip().startswith("- -e")}
    listed -= {"python", "pip", "pip:"}
    assert wanted == listed, f"only in pyproject: {wanted - listed}; only in environment.yml: {listed - wanted}"


def test_ci_runs_make_test_and_make_catches_no_tests():
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    makefile = (ROOT / "Makefile").read_text()
    assert "rc -eq 5" in makefile and "--nbval-lax" in makefile and "HWLIB_PROFILE=smoke" in makefile
    assert "HWLIB_FIGURES=$$tmp/figures" in makefile  # smoke runs never overwrite the committed figures


def test_notebooks_follow_conventions():
    import json

    from hwlib.nbtools import problems

    found = [p for nb in sorted((ROOT / "notebooks").glob("*.ipynb")) for p in problems(json.loads(nb.read_text()), nb.name)]
    assert not found, "\n".join(found)
    # the check itself catches a cell without an id (nbformat 4.5), e.g. one inserted by a script
    nb = json.loads((ROOT / "notebooks" / "03_cgan_mnist.ipynb").read_text())
    del nb["cells"][5]["id"]
    assert any("without an id" in p for p in problems(nb, "x.ipynb"))


def test_publish_removes_injected_parameters_and_check_catches_them_and_failed_claims():
    import json

    from hwlib.nbtools import clean, problems

    nb = json.loads((ROOT / "notebooks" / "03_cgan_mnist.ipynb").read_text())
    injected = {"cell_type": "code", "id": "inj", "metadata": {"tags": ["injected-parameters"]}, "outputs": [],
                "execution_count": None, "source": ['profile = "quick"\n']}
    nb["cells"].insert(3, injected)
    assert any("injected-parameters" in p for p in problems(nb, "x.ipynb"))
    assert not any("injected" in p for p in problems(clean(nb), "x.ipynb"))
    code = next(c for c in nb["cells"][4:] if c["cell_type"] == "code")
    code["outputs"] = [{"output_type": "stream", "name": "stdout", "text": ["✓ C holds\n", "✗ A beats B (0.1 vs 0.2)\n"]}]
    assert any("claim does not hold" in p and "A beats B" in p for p in problems(nb, "x.ipynb"))


def test_report_embeds_figures_from_outside_the_notebook_folder(tmp_path):
    import json

    from hwlib.nbtools import report

    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "dot.gif").write_bytes(b"GIF89a\x01\x00\x01\x00\x00\x00\x00;")
    (tmp_path / "notebooks").mkdir()
    nb = {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [
        {"cell_type": "markdown", "id": "a", "metadata": {}, "source": ["# Title\n", "![a dot](../figures/dot.gif)"]},
        {"cell_type": "code", "id": "b", "metadata": {}, "execution_count": 1, "source": ["print(1)"],
         "outputs": [{"output_type": "stream", "name": "stdout", "text": ["1\n"]}]}]}
    src = tmp_path / "notebooks" / "x.ipynb"
    src.write_text(json.dumps(nb))
    html = report(src, tmp_path / "reports").read_text()
    assert "data:image/gif;base64,R0lGOD" in html and "../figures/dot.gif" not in html and "Title" in html


def test_publish_drops_progress_bar_residue_and_keeps_the_text():
    from hwlib.nbtools import clean

    bars = "mlp:   0%|          | 0/3125 [00:00<?, ?it/s]\rmlp: 100%|#####| 3125/3125 [01:00<00:00]\n"
    nb = {"cells": [{"cell_type": "code", "metadata": {}, "source": "", "outputs": [
        {"output_type": "stream", "name": "stdout", "text": "hwlib: cost of mlp: 1 GFLOP\n" + bars + "mlp: 3125 steps\n"},
        {"output_type": "stream", "name": "stderr", "text": "lin:  50%|███| 2/4 [01:48<01:48, 54.31s/it]\n"}]}],
        "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    (out,) = clean(nb)["cells"][0]["outputs"]
    assert out["text"] == "hwlib: cost of mlp: 1 GFLOP\nmlp: 3125 steps\n"
