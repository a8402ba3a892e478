"""``ddcat report``: results gathered from ``ddcat eval`` folders; the lowest bound per model over
every attack record (any name); records that cannot be placed are named."""

import json

from ddcat.cli import main
from ddcat.reporting.gather import gather_results
from ddcat.reporting.summary import lowest_bounds


def rec(attack, miou, steps=0, eps=0.03, source="self", aacc=None):
    return {"attack": attack, "steps": steps, "eps": eps, "alpha": 0.01, "source": source, "mIoU": miou, "aAcc": aacc if aacc is not None else miou + 0.3}


def write_eval(folder, method, seed, records, arch="pspnet", dataset="synthetic"):
    folder.mkdir(parents=True)
    cfg = {"seed": seed, "model": {"arch": arch}, "data": {"name": dataset}, "train": {"method": method} if method else {}}
    (folder / "metrics.json").write_text(json.dumps({"checkpoint": str(folder.parent / "last.pt"), "config": cfg, "records": records}))


def test_lowest_bound_over_every_attack_by_hand(tmp_path, capsys):
    # SAT seed 0: lowest is a record of an attack the registry does not know (a future one, taken
    # by its name); seed 1: BIM-7
    write_eval(tmp_path / "sat0" / "strong", "sat", 0, [rec("clean", 0.7), rec("bim", 0.50, 7), rec("sea", 0.45, 300), rec("future-attack", 0.40, 300)])
    write_eval(tmp_path / "sat1" / "strong", "sat", 1, [rec("clean", 0.6), rec("bim", 0.30, 7), rec("sea", 0.35, 300)])
    write_eval(tmp_path / "dd0" / "strong", "ddcat", 0, [rec("clean", 0.8), rec("bim", 0.60, 7), rec("sea", 0.20, 300)])
    results, problems = gather_results([tmp_path])
    assert problems == []
    low = {e["method"]: e for e in lowest_bounds(results, "pspnet")}
    assert abs(low["sat"]["lowest"] - 0.35) < 1e-12 and abs(low["sat"]["lowest_std"] - 0.05) < 1e-12  # (0.40 + 0.30) / 2, population std
    assert set(low["sat"]["attacks"]) == {"future-attack", "BIM-7"} and low["ddcat"]["attacks"] == ["SEA-300"]
    assert abs(low["sat"]["clean"] - 0.65) < 1e-12 and abs(low["ddcat"]["lowest"] - 0.20) < 1e-12
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "rep")]) == 0
    report = (tmp_path / "rep" / "report.md").read_text()
    assert "## Lowest bound per model" in report and "| SAT | 0.650 | 0.350 | 0.050 |" in report
    assert "the strongest evaluation present" in report and "DDC-AT does not beat SAT" in report


def test_records_that_cannot_be_placed_are_named(tmp_path, capsys):
    write_eval(tmp_path / "a" / "e", "sat", 0, [rec("clean", 0.7), rec("bim", 0.5, 1), rec("bim", 0.4, 2)])
    write_eval(tmp_path / "b" / "e", None, 0, [rec("clean", 0.7), rec("bim", 0.5, 1)])
    write_eval(tmp_path / "c" / "e", "sat", 1, [rec("clean", 0.7), rec("bim", 0.5, 1), rec("bim", 0.45, 2), rec("bim", 0.1, 2, eps=8 / 255)])
    results, problems = gather_results([tmp_path])
    assert any("b/e/metrics.json" in p and "train.method" in p for p in problems)
    assert any("c/e/metrics.json" in p and "eps" in p and str(8 / 255) in p for p in problems)
    assert results["steps"] == [1, 2] and results["eps"] == 0.03
    kept = [e for e in results["evaluations"] if e["seed"] == 1][0]
    assert all(r["eps"] == 0.03 for r in kept["records"])
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "rep")]) == 0
    assert "not placed:" in capsys.readouterr().err


def test_transfer_records_and_two_datasets(tmp_path):
    write_eval(tmp_path / "p" / "e", "sat", 0, [rec("clean", 0.7), rec("bim", 0.5, 1, source="/x/last.pt")], dataset="voc")
    write_eval(tmp_path / "q" / "e", "sat", 0, [rec("clean", 0.6), rec("bim", 0.4, 1), rec("bim", 0.3, 2)], dataset="ade20k")
    results, _ = gather_results([tmp_path])
    kinds = {(e["arch"], e["kind"]) for e in results["evaluations"]}
    assert kinds == {("voc/pspnet", "transfer"), ("ade20k/pspnet", "white-box")}


def test_missing_input_is_an_error(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope"), "--out", str(tmp_path / "r")]) == 2
    assert "report input not found" in capsys.readouterr().err
