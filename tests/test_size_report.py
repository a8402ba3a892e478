"""Image-wise mIoU and size-resolved recall in the report (issue 16 section 5): the table's means
over seeds by hand, the figure, and the report section; absent keys leave the report as it was."""

from __future__ import annotations

import pytest

from ddcat.reporting.plots import plot_size_recall
from ddcat.reporting.report import write_report
from ddcat.reporting.summary import size_rows, size_table

from test_reporting import make_results, png_shape

BINS = ["<1%", "1-5%", "5-20%", ">20%"]


def with_sizes(results: dict) -> dict:
    """Every strong record gets size_recall (recall = base - 0.1 per bin, base = mIoU + seed offset)
    and mIoU_imagewise = mIoU - 0.05."""
    for ev in results["evaluations"]:
        if ev["kind"] != "strong":
            continue
        for r in ev["records"]:
            r["mIoU_imagewise"] = r["mIoU"] - 0.05
            r["size_recall"] = [{"bin": b, "recall": max(0.0, r["mIoU"] + 0.1 * i), "pixels": 10 * (i + 1)} for i, b in enumerate(BINS)]
            r["size_recall"][0]["recall"] = None if ev["seed"] == 1 else r["size_recall"][0]["recall"]  # an empty bin
    return results


def test_size_table_means_over_seeds_by_hand():
    results = with_sizes(make_results())
    table = size_table(results, "pspnet")
    sat_pgd = next(e for e in table if e["method"] == "sat" and e["attack"] == "pgd")
    # the two seeds' pgd mIoU are 0.20 -/+ 0.01: the mean is 0.20
    assert sat_pgd["mIoU_imagewise"] == pytest.approx(0.20 - 0.05)
    assert sat_pgd["recall"]["1-5%"] == pytest.approx(0.30)
    assert sat_pgd["recall"]["<1%"] == pytest.approx(0.19)  # seed 1's bin is empty: only seed 0 counts
    assert [e["attack"] for e in table if e["method"] == "sat"][0] == "clean"
    cols, rows = size_rows(table)
    assert cols == ["mIoU (image-wise)", *(f"recall {b}" for b in BINS)]
    assert rows[0][0].endswith("clean") and len(rows) == len(table)


def test_report_has_the_size_section_and_figure(tmp_path):
    results = with_sizes(make_results())
    assert png_shape(plot_size_recall(results, tmp_path / "s.png"))[:2] == (600, 1200)  # 2 archs x 3 methods
    report = write_report(results, tmp_path).read_text()
    assert "## Objects by size" in report and "size_recall.png" in report and (tmp_path / "size_recall.png").is_file()
    plain = write_report(make_results(), tmp_path / "plain").read_text()
    assert "Objects by size" not in plain
