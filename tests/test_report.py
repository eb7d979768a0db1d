"""hwlib.report: claims printed with their verdict, benchmark ladders grouped over seeds."""
from __future__ import annotations

from hwlib import report


def test_claim_prints_its_verdict(capsys):
    assert report.claim(2 > 1, "two beats one") is True
    assert report.claim(False, "pigs fly") is False
    assert capsys.readouterr().out.splitlines() == ["✓ two beats one", "✗ pigs fly"]


def test_spread_and_ladder_group_runs_over_seeds(capsys):
    assert report.spread([0.1, 0.3, 0.2]) == "0.20 (0.10–0.30, n = 3)"

    def run(name, seed, body, step=896):
        scores = {"body": body, "wing": 0.1, "crown": 0.1, "belly": 0.1, "fid": 200.0}
        return {"benchmark": f"stackgan_ladder/{name}_train{seed}", "train_seed": seed,
                "curve": [{"step": 448, "unseen": dict(scores, body=0.0)}, {"step": step, "unseen": scores}]}

    records = [run("quick_caption_paper", 0, 0.2), run("quick_caption_paper", 1, 0.4), run("quick_species_paper", 0, 0.5)]
    table = report.ladder_table(records, "unseen")
    assert table["quick_caption_paper @ 896"]["body"] == [0.2, 0.4] and table["quick_caption_paper @ 896"]["seeds"] == [0, 1]
    assert report.ladder_table(records, "unseen", step=448)["quick_caption_paper @ 448"]["body"] == [0.0, 0.0]
    assert report.ladder_table(records, "seen") == {}
    report.print_ladder(records, "unseen")
    out = capsys.readouterr().out
    assert "quick_caption_paper @ 896" in out and "0.30 (0.20–0.40)" in out
