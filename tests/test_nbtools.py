"""hwlib.nbtools: the Markdown numbers that no output prints."""
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
