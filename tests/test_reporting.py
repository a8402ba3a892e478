"""Reporting layer: the paper's tables, findings, plots and report.md from a hand-built results dict.

The numbers are chosen so that every mean / std can be checked by hand (two seeds x and y give
mean (x + y) / 2 and population std |x - y| / 2), and so that DDC-AT wins some comparisons and
loses others: the findings must follow the numbers both ways.
"""

from __future__ import annotations

import copy
import json
import math
import re
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest

from ddcat.cli import main as cli_main
from ddcat.errors import DdcatError
from ddcat.reporting.plots import (
    colorize,
    moving_average,
    plot_qualitative,
    plot_routing,
    plot_strong,
    plot_sweep,
    plot_training,
)
from ddcat.reporting.report import print_tables, write_report
from ddcat.reporting.summary import findings, paper_table, strong_rows, strong_table, sweep_stats
from ddcat.reporting.tables import paper_markdown

STEPS = [1, 2, 3, 4, 5, 6, 7]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# White-box mIoU per (arch, method): (seed 0 row, seed 1 row), columns clean, 1..7.
WHITE = {
    "pspnet": {
        "clean": ([0.76, 0.37, 0.19, 0.11, 0.08, 0.06, 0.05, 0.04], [0.78, 0.39, 0.21, 0.13, 0.10, 0.08, 0.07, 0.06]),
        # means 0.60 0.53 0.65 0.61 0.42 0.42 0.25 0.25; stds 0.10 0.02 0.05 0.01 0.02 0.02 0.05 0.05
        "sat": ([0.50, 0.51, 0.60, 0.60, 0.40, 0.40, 0.20, 0.20], [0.70, 0.55, 0.70, 0.62, 0.44, 0.44, 0.30, 0.30]),
        # means 0.73 0.54 0.71 0.71 0.51 0.31 0.31 0.33; stds 0.01 0.01 0.01 0.01 0.01 0.01 0.01 0.03
        "ddcat": ([0.72, 0.53, 0.70, 0.70, 0.50, 0.30, 0.30, 0.30], [0.74, 0.55, 0.72, 0.72, 0.52, 0.32, 0.32, 0.36]),
    },
    "deeplabv3": {
        # No Defense is *better* than SAT at n = 7 here (0.30 vs 0.25): "SAT does not beat No Defense".
        "clean": ([0.76, 0.36, 0.19, 0.11, 0.07, 0.05, 0.04, 0.29], [0.78, 0.38, 0.21, 0.13, 0.09, 0.07, 0.06, 0.31]),
        "sat": ([0.71, 0.49, 0.61, 0.63, 0.42, 0.37, 0.27, 0.24], [0.73, 0.51, 0.63, 0.65, 0.44, 0.39, 0.29, 0.26]),
        # DDC-AT = SAT + 0.05 everywhere, std 0.005: a clear win at every column.
        "ddcat": ([0.765, 0.545, 0.665, 0.685, 0.475, 0.425, 0.325, 0.295], [0.775, 0.555, 0.675, 0.695, 0.485, 0.435, 0.335, 0.305]),
    },
}
# Transfer: target value = base + (-0.2, +0.2)[seed] + (-0.1, +0.1)[substitute]; base 0.5 for SAT ->
# 0.2, 0.4, 0.6, 0.8: mean 0.5, population std sqrt(0.05) over the 4 pairs (0.2 over seed means).
TRANSFER_BASE = {"clean": 0.3, "sat": 0.5, "ddcat": 0.55}
# Stronger attacks at n = 7, per seed +-0.01 around these means; aAcc = mIoU + 0.3.
STRONG = {
    "clean": {"bim": 0.05, "pgd": 0.05, "segpgd": 0.05, "cospgd": 0.05, "worst": 0.05},
    "sat": {"bim": 0.30, "pgd": 0.20, "segpgd": 0.15, "cospgd": 0.18, "worst": 0.10},
    "ddcat": {"bim": 0.35, "pgd": 0.22, "segpgd": 0.12, "cospgd": 0.20, "worst": 0.05},
}


def run_id(arch: str, method: str, seed: int) -> str:
    return f"{arch}-{method}-s{seed}-abcd1234"


def record(attack: str, steps: int, value: float, source: str = "self", aacc: float | None = None) -> dict:
    return {
        "attack": attack, "steps": steps, "eps": 0.0 if attack == "clean" else 0.03, "source": source,
        "mIoU": value, "mIoU_all": value - 0.01, "mAcc": value + 0.1, "aAcc": value + 0.3 if aacc is None else aacc,
        "per_class_iou": [value] * 4, "num_images": 8,
    }


def write_log(path: Path, ddcat: bool, iters: int = 40) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for i in range(1, iters + 1):
            rec = {"iter": i, "lr": 0.01 * (1 - i / iters) ** 0.9, "loss": 3.0 / i, "loss_main": 2.0 / i, "loss_deep_sup": 0.5 / i}
            if ddcat:
                rec.update(loss_aux=0.3 / i, loss_mask=0.2 / i, routed_aux_clean=0.1 + 0.2 * i / iters,
                           routed_aux_adv=0.01, mask_pos_clean=0.15 + 0.2 * i / iters, mask_pos_adv=0.0)
            f.write(json.dumps(rec) + "\n")
    return path


def write_npz(path: Path, size: int = 16, rows: int = 2) -> str:
    rng = np.random.default_rng(0)
    label = rng.integers(0, 4, (rows, size, size))
    label[:, :2] = 255
    arrays = {"image": rng.random((rows, size, size, 3)), "label": label}
    arrays["adversarial"] = arrays["image"]
    for arch in WHITE:
        for method in WHITE[arch]:
            arrays[f"adversarial/{arch}/{method}"] = np.clip(arrays["image"] + 0.03, 0, 1)
            arrays[f"pred_clean/{arch}/{method}"] = rng.integers(0, 4, (rows, size, size))
            arrays[f"pred_adv/{arch}/{method}"] = rng.integers(0, 4, (rows, size, size))
    np.savez_compressed(path, **arrays)
    return path.name


def make_results(root: Path | None = None) -> dict:
    """The fixed results dict: 2 archs x 3 methods x 2 seeds; logs under ``root`` when given."""
    runs, evals = [], []
    for arch, per_method in WHITE.items():
        other = "deeplabv3" if arch == "pspnet" else "pspnet"
        for method, seed_rows in per_method.items():
            for seed, row in enumerate(seed_rows):
                rid = run_id(arch, method, seed)
                log = str(root / "runs" / rid / "train_log.jsonl") if root else f"runs/{rid}/train_log.jsonl"
                if root:
                    write_log(Path(log), method.startswith("ddcat"))
                runs.append({"id": rid, "arch": arch, "method": method, "seed": seed, "dir": str(Path(log).parent),
                             "train_seconds": 60.0 + seed, "log": log})
                white = [record("clean", 0, row[0])] + [record("bim", n, row[n]) for n in STEPS]
                evals.append({"run_id": rid, "arch": arch, "method": method, "seed": seed, "kind": "white-box", "records": white})
                transfer = [record("clean", 0, row[0])]
                for n in STEPS:
                    for k in range(2):
                        value = TRANSFER_BASE[method] + (-0.2, 0.2)[seed] + (-0.1, 0.1)[k]
                        transfer.append(record("bim", n, value, source=run_id(other, "sat", k)))
                evals.append({"run_id": rid, "arch": arch, "method": method, "seed": seed, "kind": "transfer", "records": transfer})
                strong = [record("clean", 0, row[0])]
                for attack, value in STRONG[method].items():
                    strong.append(record(attack, 7, value + (-0.01, 0.01)[seed]))
                evals.append({"run_id": rid, "arch": arch, "method": method, "seed": seed, "kind": "strong", "records": strong})
    return {
        "experiment": "unit", "date": "2026-11-24T20:00:00", "machine": "test box", "command": "ddcat demo --out x",
        "steps": STEPS, "eps": 0.03, "alpha": 0.01,
        "miou_convention": "mIoU: mean over classes with a non-empty union",
        "runs": runs, "evaluations": evals,
    }


@pytest.fixture()
def results() -> dict:
    return make_results()


def png_shape(path: Path) -> tuple[int, ...]:
    assert path.is_file() and path.stat().st_size > 1000
    assert path.read_bytes()[:8] == PNG_MAGIC
    return mpimg.imread(path).shape


# ------------------------------------------------------------------------------------------------
# summary


def test_sweep_stats_white_box_mean_std_by_hand(results):
    s = sweep_stats(results, "pspnet", "sat")
    assert list(s) == ["clean", *STEPS]
    mean, std, n = s["clean"]
    assert (mean, std, n) == (pytest.approx(0.6), pytest.approx(0.1), 2)
    expected = {1: (0.53, 0.02), 2: (0.65, 0.05), 3: (0.61, 0.01), 4: (0.42, 0.02), 5: (0.42, 0.02), 6: (0.25, 0.05), 7: (0.25, 0.05)}
    for col, (m, sd) in expected.items():
        assert s[col][0] == pytest.approx(m) and s[col][1] == pytest.approx(sd) and s[col][2] == 2
    d = sweep_stats(results, "pspnet", "ddcat")
    assert d[7][0] == pytest.approx(0.33) and d[7][1] == pytest.approx(0.03)
    # aAcc is record value + 0.3 -> the mean shifts, the std does not.
    a = sweep_stats(results, "pspnet", "sat", metric="aAcc")
    assert a["clean"][0] == pytest.approx(0.9) and a["clean"][1] == pytest.approx(0.1)
    # absent method: n = 0 and NaN
    missing = sweep_stats(results, "pspnet", "ddcat-m")
    assert missing["clean"][2] == 0 and math.isnan(missing["clean"][0])


def test_transfer_pools_seed_substitute_pairs(results):
    s = sweep_stats(results, "pspnet", "sat", kind="transfer")
    for n in STEPS:
        mean, std, count = s[n]
        assert count == 4  # 2 seeds x 2 substitutes
        assert mean == pytest.approx(0.5)
        assert std == pytest.approx(math.sqrt(0.05))  # over pairs 0.2, 0.4, 0.6, 0.8, not 0.2 over seed means
    assert s["clean"][2] == 2 and s["clean"][0] == pytest.approx(0.6)  # clean: over seeds


def test_paper_table_rows_in_paper_order(results):
    shuffled = copy.deepcopy(results)
    shuffled["evaluations"].reverse()  # DDC-AT first in the file: the table must still follow the paper
    rows = paper_table(shuffled, "pspnet", "white-box")
    assert [name for name, _ in rows] == ["Mean No Defense", "Mean SAT", "Mean DDC-AT", "Std No Defense", "Std SAT", "Std DDC-AT"]
    values = dict(rows)
    assert values["Mean SAT"] == pytest.approx([0.60, 0.53, 0.65, 0.61, 0.42, 0.42, 0.25, 0.25])
    assert values["Std SAT"] == pytest.approx([0.10, 0.02, 0.05, 0.01, 0.02, 0.02, 0.05, 0.05])
    assert values["Mean DDC-AT"] == pytest.approx([0.73, 0.54, 0.71, 0.71, 0.51, 0.31, 0.31, 0.33])
    # one seed of No Defense only: its Std row goes (as in the paper)
    one_seed = copy.deepcopy(results)
    one_seed["evaluations"] = [e for e in one_seed["evaluations"] if not (e["method"] == "clean" and e["seed"] == 1)]
    names = [name for name, _ in paper_table(one_seed, "pspnet", "white-box")]
    assert "Std No Defense" not in names and "Std SAT" in names
    # ablation variants slot in between SAT and DDC-AT
    abl = copy.deepcopy(results)
    for e in list(abl["evaluations"]):
        if e["method"] == "sat" and e["kind"] == "white-box":
            abl["evaluations"].append({**copy.deepcopy(e), "method": "ddcat-n"})
            abl["evaluations"].insert(0, {**copy.deepcopy(e), "method": "ddcat-m"})
    names = [name for name, _ in paper_table(abl, "pspnet", "white-box")][:5]
    assert names == ["Mean No Defense", "Mean SAT", "Mean DDC-AT-M", "Mean DDC-AT-N", "Mean DDC-AT"]
    # transfer table: std rows over the 4 pairs
    t = dict(paper_table(results, "deeplabv3", "transfer"))
    assert t["Std SAT"][1:] == pytest.approx([math.sqrt(0.05)] * 7)


def test_paper_markdown_header_and_bold_best(results):
    rows = paper_table(results, "pspnet", "white-box")
    md = paper_markdown(["clean", *map(str, STEPS)], rows, bold_rows=[n for n, _ in rows if n.startswith("Mean")])
    assert md.splitlines()[0] == "| | clean | 1 | 2 | 3 | 4 | 5 | 6 | 7 |"
    ddcat_line = next(line for line in md.splitlines() if line.startswith("| Mean DDC-AT |"))
    assert "**0.780**" not in ddcat_line and "**0.540**" in ddcat_line  # DDC-AT best at n=1
    assert "**0.770**" in next(line for line in md.splitlines() if line.startswith("| Mean No Defense |"))


def test_findings_follow_the_numbers(results):
    text = findings(results)
    joined = "\n".join(text)
    # PSPNet: clean, clear win (0.73 vs 0.60, gap 0.13 > std 0.10)
    clean = next(s for s in text if s.startswith("PSPNet, clean mIoU"))
    assert "DDC-AT beats SAT by 0.130" in clean and "larger than the larger std (0.100)" in clean
    # n=1: wins by 0.01, within the larger std 0.02
    n1 = next(s for s in text if s.startswith("PSPNet, white-box BIM n=1:"))
    assert "beats SAT by 0.010" in n1 and "within the larger std (0.020)" in n1
    # n=5: loses (0.31 vs 0.42)
    n5 = next(s for s in text if s.startswith("PSPNet, white-box BIM n=5:"))
    assert "DDC-AT does not beat SAT" in n5 and "0.110 lower" in n5
    assert "DDC-AT does not beat SAT at n=5." in joined
    # DeepLabv3: DDC-AT wins everywhere under BIM, clearly
    assert not any(s.startswith("DeepLabv3") and "DDC-AT does not beat SAT" in s for s in text if "strongest evaluation" not in s)
    # ... but not under the strongest evaluation present: the per-image worst case, 0.05 +- 0.01 vs 0.10 +- 0.01
    strongest = next(s for s in text if s.startswith("DeepLabv3, the strongest evaluation present"))
    assert "DDC-AT does not beat SAT; it is 0.050 lower (DDC-AT 0.050 \u00b1 0.010 vs SAT 0.100 \u00b1 0.010)" in strongest
    assert "DeepLabv3, white-box summary: DDC-AT beats SAT at 7 of 7 step counts (by more than the larger std at n=1, 2, 3, 4, 5, 6, 7)." in text
    # SAT vs No Defense at n=7: wins on PSPNet, loses on DeepLabv3
    assert any(s.startswith("PSPNet, white-box BIM n=7: SAT beats No Defense by 0.200") for s in text)
    assert any(s.startswith("DeepLabv3, white-box BIM n=7: SAT does not beat No Defense") for s in text)
    # worst case vs BIM
    assert any(s.startswith("PSPNet, SAT, n=7") and "BIM alone overstates robustness by 0.200" in s for s in text)
    assert any(s.startswith("PSPNet, No Defense, n=7") and "is not lower than BIM-7" in s for s in text)


def test_findings_flip_when_the_numbers_flip(results):
    flipped = copy.deepcopy(results)
    for e in flipped["evaluations"]:
        if e["arch"] == "pspnet" and e["kind"] == "white-box" and e["method"] == "ddcat":
            for r in e["records"]:
                if r["steps"] in (5, 6):
                    r["mIoU"] = 0.9
    text = findings(flipped)
    assert not any(s.startswith("PSPNet") and "DDC-AT does not beat SAT" in s for s in text if "strongest evaluation" not in s)
    assert "PSPNet, white-box summary: DDC-AT beats SAT at 7 of 7 step counts" in "\n".join(text)
    # and the other way round: DDC-AT equal to SAT is not a win
    tied = copy.deepcopy(results)
    sat = {e["seed"]: e for e in tied["evaluations"] if e["arch"] == "deeplabv3" and e["kind"] == "white-box" and e["method"] == "sat"}
    for e in tied["evaluations"]:
        if e["arch"] == "deeplabv3" and e["kind"] == "white-box" and e["method"] == "ddcat":
            e["records"] = copy.deepcopy(sat[e["seed"]]["records"])
    text = findings(tied)
    assert any(s.startswith("DeepLabv3, white-box BIM n=3: DDC-AT does not beat SAT; they are equal") for s in text)
    assert "DeepLabv3, white-box summary: DDC-AT does not beat SAT at any of the 7 step counts (n=1, 2, 3, 4, 5, 6, 7)." in text


def test_strong_table_and_bim_overstatement(results):
    table = strong_table(results, "pspnet")
    assert [e["method"] for e in table] == ["clean", "sat", "ddcat"]
    sat = table[1]
    assert sat["steps"] == 7 and sat["seeds"] == 2
    assert sat["attacks"] == ["clean", "bim", "pgd", "segpgd", "cospgd", "worst"]
    assert sat["labels"]["bim"] == "BIM-7" and sat["labels"]["segpgd"] == "SegPGD"
    assert sat["mIoU"]["bim"] == pytest.approx(0.30) and sat["mIoU_std"]["bim"] == pytest.approx(0.01)
    assert sat["aAcc"]["worst"] == pytest.approx(0.40)
    assert sat["bim_overstatement"] == pytest.approx(0.20)
    assert table[2]["bim_overstatement"] == pytest.approx(0.30)
    assert table[0]["bim_overstatement"] == pytest.approx(0.0)
    cols, rows = strong_rows(table)
    assert cols == ["clean", "BIM-7", "PGD", "SegPGD", "CosPGD", "worst", "BIM - worst"]
    assert rows[1][0] == "SAT" and rows[1][1][-1] == pytest.approx(0.20)
    # no worst case run -> no overstatement
    no_worst = copy.deepcopy(results)
    for e in no_worst["evaluations"]:
        e["records"] = [r for r in e["records"] if r["attack"] != "worst"]
    assert all(e["bim_overstatement"] is None for e in strong_table(no_worst, "pspnet"))


# ------------------------------------------------------------------------------------------------
# plots


def test_plot_sweep_and_strong_write_pngs(results, tmp_path):
    p = plot_sweep(results, tmp_path / "sweep.png")
    assert p == tmp_path / "sweep.png"
    assert png_shape(p)[:2] == (400, 1000)  # 5 x 4 inches per arch at 100 dpi
    assert png_shape(plot_sweep(results, tmp_path / "t.png", kind="transfer"))[:2] == (400, 1000)
    assert png_shape(plot_strong(results, tmp_path / "strong.png"))[:2] == (400, 1200)


def test_plot_routing_and_training(tmp_path):
    a = write_log(tmp_path / "a" / "train_log.jsonl", ddcat=True)
    b = write_log(tmp_path / "b" / "train_log.jsonl", ddcat=True, iters=25)
    sat = write_log(tmp_path / "sat" / "train_log.jsonl", ddcat=False)
    p = plot_routing({"PSPNet DDC-AT": [a, b], "SAT (no routing)": [sat]}, tmp_path / "routing.png")
    assert png_shape(p)[:2] == (400, 1100)
    with pytest.raises(DdcatError, match="routing"):
        plot_routing({"SAT": [sat]}, tmp_path / "none.png")

    out = plot_training(tmp_path / "a")
    assert [q.name for q in out] == ["losses.png", "routing.png"]
    for q in out:
        assert q.parent == tmp_path / "a" and png_shape(q)[:2] == (450, 800)
    only = plot_training(tmp_path / "sat", tmp_path / "plots")
    assert [q.name for q in only] == ["losses.png"] and only[0].parent == tmp_path / "plots"
    # through the command line
    assert cli_main(["plot-train", str(tmp_path / "b"), "--out", str(tmp_path / "cli")]) == 0
    assert (tmp_path / "cli" / "routing.png").is_file()


def test_plot_training_missing_or_empty_log(tmp_path):
    with pytest.raises(DdcatError, match=re.escape(str(tmp_path / "nothing" / "train_log.jsonl"))):
        plot_training(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "train_log.jsonl").write_text("")
    with pytest.raises(DdcatError, match="no records"):
        plot_training(tmp_path / "empty")
    assert cli_main(["plot-train", str(tmp_path / "nothing")]) == 2


def test_plot_qualitative_grid(tmp_path):
    npz = tmp_path / write_npz(tmp_path / "qualitative.npz")
    p = plot_qualitative(npz, tmp_path / "q.png", "pspnet")
    # 2 rows; columns image, adversarial, ground truth, No Defense, SAT, DDC-AT: 2 inches each
    assert png_shape(p)[:2] == (440, 1200)
    with pytest.raises(DdcatError, match="resnet"):
        plot_qualitative(npz, tmp_path / "x.png", "resnet")
    rgb = colorize(np.array([[0, 1, 255]]))
    assert rgb.shape == (1, 3, 3) and rgb[0, 2].tolist() == [1.0, 1.0, 1.0] and rgb[0, 0].tolist() == [0.0, 0.0, 0.0]


def test_moving_average():
    assert moving_average([1, 2, 3, 4], 2).tolist() == [1.0, 1.5, 2.5, 3.5]
    assert moving_average([1.0, float("nan"), 3.0], 2).tolist() == [1.0, 1.0, 3.0]


# ------------------------------------------------------------------------------------------------
# report


def test_write_report_tables_figures_and_findings(tmp_path):
    out = tmp_path / "exp"
    out.mkdir()
    results = make_results(out)
    results["qualitative"] = write_npz(out / "qualitative.npz")
    path = write_report(results, out)
    assert path == out / "report.md"
    md = path.read_text()
    assert "| | clean | 1 | 2 | 3 | 4 | 5 | 6 | 7 |" in md
    assert "## Table 1" in md and "## Table 2" in md and "## Table 3" not in md
    assert "**Model: PSPNet**" in md and "**Model: DeepLabv3**" in md
    assert "| Mean SAT | 0.600 | 0.530 |" in md
    assert "| Std SAT | 0.100 | 0.020 |" in md
    assert "BIM - worst" in md and "per-image worst case" in md
    assert results["miou_convention"] in md and "test box" in md and "ddcat demo --out x" in md
    assert "DDC-AT does not beat SAT at n=5" in md
    assert "pspnet-sat-s1-abcd1234" in md and "61.0" in md  # training time per run
    links = re.findall(r"\]\(([^)]+\.png)\)", md)
    assert set(links) == {"sweep_white_box.png", "sweep_transfer.png", "strong_attacks.png", "routing.png",
                          "qualitative_pspnet.png", "qualitative_deeplabv3.png"}
    for link in links:
        assert png_shape(out / link)
    assert "Figures not drawn" not in md


def test_write_report_sparse_results(tmp_path):
    """White-box only, one seed, logs missing, an ablation variant: still a report, no dead links."""
    results = make_results()
    results["evaluations"] = [e for e in results["evaluations"] if e["kind"] == "white-box" and e["seed"] == 0]
    extra = [{**copy.deepcopy(e), "method": "ddcat-m"} for e in results["evaluations"] if e["method"] == "sat"]
    results["evaluations"] += extra
    results["qualitative"] = "missing.npz"
    md = write_report(results, tmp_path).read_text()
    assert "## Table 3" in md and "Mean DDC-AT-M" in md and "Std " not in md.split("## Table 3")[1].split("##")[0]
    assert "## Table 2" not in md
    links = re.findall(r"\]\(([^)]+\.png)\)", md)
    assert links == ["sweep_white_box.png"]
    assert all((tmp_path / link).is_file() for link in links)
    assert "only one seed" in md
    # DDC-AT-M is a copy of SAT here: the ablation sentence follows the SAT comparison (loses at n=5)
    assert "PSPNet, ablation (white-box): DDC-AT beats DDC-AT-M at 6 of 7 step counts; DDC-AT does not beat DDC-AT-M at n=5." in md
    assert "missing.npz does not exist" in md


def test_print_tables(results):
    text = print_tables(results)
    assert "Table 1 (white-box BIM, mIoU): PSPNet" in text and "Table 2 (black-box transfer, mIoU): DeepLabv3" in text
    assert "Mean DDC-AT" in text and "Std SAT" in text and "Stronger attacks" in text
    assert print_tables({"evaluations": []}) == "no evaluations to tabulate"


def test_reporting_knows_exactly_the_configs_methods():
    """Display order, labels and colours cover the training methods the config lists (one source:
    config.CHOICES), no more, no fewer."""
    from ddcat.config import CHOICES
    from ddcat.reporting.plots import METHOD_COLORS
    from ddcat.reporting.report import ABLATION
    from ddcat.reporting.summary import METHOD_NAMES, METHOD_ORDER

    methods = set(CHOICES["train.method"])
    assert set(METHOD_ORDER) == set(METHOD_NAMES) == set(METHOD_COLORS) == methods
    assert len(METHOD_ORDER) == len(methods) and set(ABLATION) <= methods
