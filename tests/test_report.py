"""hwlib.report: claims printed with their verdict, benchmark ladders grouped over seeds."""
from __future__ import annotations

from hwlib import report


def test_claim_prints_its_verdict(capsys):
    assert report.claim(2 > 1, "two beats one") is None  # a statement: a cell ending in one shows no stray True
    assert report.claim(False, "pigs fly") is None
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


def test_print_ladder_widens_its_name_column_to_the_longest_name(capsys):
    long = "quick_caption_paper_diffaug-translation+cutout_ema-0.99_projection-True_ca_logvar_init--4.0"
    records = [{"benchmark": f"stackgan_ladder/{name}_train0", "train_seed": 0,
                "curve": [{"step": 896, "unseen": {"body": 0.2, "wing": 0.1, "crown": 0.1, "belly": 0.1, "fid": 9.0}}]}
               for name in ("quick_caption_paper", long)]
    report.print_ladder(records, "unseen")
    header, *rows = capsys.readouterr().out.splitlines()
    end = header.index("seeds") + len("seeds")  # every row's seed count ends under the header's "seeds"
    assert [row[:end].rstrip()[-1] for row in rows] == ["1", "1"] and all(row[end] == " " for row in rows)
    assert any(row.startswith(long + " @ 896 ") for row in rows)


def test_print_grouped_reads_dotted_keys_and_groups_seeds(capsys):
    records = [{"benchmark": f"stackgan_stage2/quick_stable_train{s}", "train_seed": s, "stage2": {"body": b}, "hf": h}
               for s, b, h in ((0, 0.4, 0.002), (1, 0.6, 0.004))]
    table = report.print_grouped(records, {"S-II body": "stage2.body", "HF": "hf"}, digits=3)
    assert table == {"quick_stable": {"seeds": [0, 1], "S-II body": [0.4, 0.6], "HF": [0.002, 0.004]}}
    out = capsys.readouterr().out
    assert "0.500 (0.400–0.600)" in out and "0.003 (0.002–0.004)" in out
