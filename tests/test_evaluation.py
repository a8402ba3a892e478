"""The evaluation layer: eps fractions and several eps on the command line, SEA in the engine (per
member, per-image worst aAcc, greedy worst mIoU, reuse of member results), the training class
counts of the balanced loss, and the layering rule (evaluation never imports reporting)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch

from ddcat.attacks import SEA, WorstCase, build_attack
from ddcat.checkpoint import load_model
from ddcat.cli import build_parser, eval_plan, main
from ddcat.config import DEFAULTS, merge
from ddcat.data import build_dataset
from ddcat.errors import DdcatError
from ddcat.evaluation import AttackPlan, Setting, attack_settings, evaluate
from ddcat.evaluation.class_counts import count_classes, training_class_counts
from ddcat.metrics import metrics_from_confusion
from ddcat.parsing import parse_fraction, parse_steps

from conftest import NUM_CLASSES

SRC = Path(__file__).resolve().parents[1] / "src" / "ddcat"


# ----------------------------------------------------------------------------- layering


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_the_evaluation_layer_never_imports_reporting():
    files = sorted((SRC / "evaluation").glob("*.py"))
    assert len(files) >= 5  # the scan sees the package
    for path in files:
        bad = sorted(m for m in imported_modules(path) if m == "ddcat.reporting" or m.startswith("ddcat.reporting."))
        assert not bad, f"{path.name} imports {bad}"
    # the scan does find an import where there is one
    assert "ddcat.reporting.tables" in imported_modules(SRC / "reporting" / "summary.py")


# ----------------------------------------------------------------------------- command line


def plan_of(*argv: str) -> AttackPlan:
    return eval_plan(build_parser().parse_args(["eval", "--checkpoint", "x.pt", "--out", "o", *argv]))


def test_eps_and_alpha_accept_fractions_and_decimals():
    assert parse_fraction("4/255") == 4 / 255
    assert parse_fraction(" 0.03 ") == 0.03
    assert parse_fraction(0.5) == 0.5
    assert parse_fraction("8 / 255") == 8 / 255
    for bad in ("four", "4/0", "-0.1", "inf", "1/2/3", True):
        with pytest.raises(DdcatError, match="--eps"):
            parse_fraction(bad)
    assert parse_steps("1-3,7") == [1, 2, 3, 7]


def test_several_eps_in_one_call_and_the_other_options():
    plan = plan_of("--attack", "sea", "--eps", "4/255", "--eps", "8/255", "--iters", "300", "--alpha", "2/255")
    assert plan.attacks == ("sea",) and plan.eps == (4 / 255, 8 / 255) and plan.iters == 300 and plan.alpha == 2 / 255
    default = plan_of()
    assert default.eps == (DEFAULTS["attack"]["eps"],) and default.attacks == () and default.steps == ()
    plan = plan_of("--attack", "pgd", "--attack", "apgd", "--restarts", "3", "--seed", "7", "--steps", "2,5", "--eps", "0.03", "--eps", "0.03")
    assert plan.eps == (0.03,) and plan.steps == (2, 5) and plan.restarts == 3 and plan.seed == 7
    settings = attack_settings(plan, [("self", None)])
    pgd = [s for s in settings if s.attack_name == "pgd"]
    apgd = [s for s in settings if s.attack_name == "apgd"]
    assert [s.steps for s in pgd] == [2, 5] and all(s.attack.restarts == 3 and s.attack.seed == 7 for s in pgd)
    assert len(apgd) == 1 and apgd[0].steps == 300 and apgd[0].attack.restarts == 3 and apgd[0].attack.seed == 7


def test_one_setting_per_attack_iterations_and_eps():
    plan = AttackPlan(("bim", "sea"), (1, 2), (4 / 255, 8 / 255), iters=5, class_counts=(10, 20, 30, 40))
    settings = attack_settings(plan, [("self", None)], seed=3)
    keys = [s.key() for s in settings]
    assert keys == [("clean", 0, 0.0, "self"),
                    ("bim", 1, 4 / 255, "self"), ("bim", 1, 8 / 255, "self"), ("bim", 2, 4 / 255, "self"), ("bim", 2, 8 / 255, "self"),
                    ("sea", 5, 4 / 255, "self"), ("sea", 5, 8 / 255, "self")]
    sea = settings[-1].attack
    assert isinstance(sea, SEA) and sea.eps == 8 / 255 and sea.steps == 5 and sea.seed == 3
    assert all(m.steps == 5 for m in sea.members)
    # the counts reach the member whose loss uses them (the others stay equal to standalone APGD values)
    assert [m.class_counts for m in sea.members] == [None, (10.0, 20.0, 30.0, 40.0), None]


def test_bad_eval_options_are_one_line_errors(tmp_path, capsys, clean_run):
    for argv, words in (
        (["--eps", "4/0"], "--eps"),
        (["--attack", "sea", "--iters", "0"], "--iters"),
        (["--attack", "pgd", "--restarts", "0"], "--restarts"),
        (["--attack", "cw"], "cw"),
        (["--attack", "sea", "--class-counts", "1,x"], "--class-counts"),
    ):
        out = tmp_path / "out"
        rc = main(["eval", "--no-progress", "--checkpoint", str(clean_run / "last.pt"), "--out", str(out), *argv])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and err[0].startswith("ddcat: error:") and words in err[0], (argv, err)
        assert not out.exists()


# ----------------------------------------------------------------------------- SEA in the engine


class CountingModel(torch.nn.Module):
    """Counts forward passes (with and without gradient) of the wrapped model."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.model(x)


@pytest.fixture(scope="module")
def tiny(clean_run):
    model, ckpt = load_model(clean_run / "last.pt")
    cfg = merge(DEFAULTS, ckpt["config"])
    return model.eval(), build_dataset(cfg, "val"), cfg


def run_engine(model, dataset, settings, batch_size=4):
    return evaluate(model, dataset, settings, NUM_CLASSES, torch.device("cpu"), batch_size=batch_size, progress=False)


def test_sea_reports_members_per_image_worst_aacc_and_greedy_miou(tiny):
    model, dataset, _ = tiny
    sea = SEA(eps=8 / 255, steps=3, class_counts=(50, 20, 20, 10), seed=1)
    records = run_engine(model, dataset, [Setting(), Setting("sea", sea, 3, sea.eps)], batch_size=3)  # two batches (3 + 1)
    rec = records[1]
    assert rec["attack"] == "sea" and rec["steps"] == 3 and rec["num_images"] == 4
    assert [m["name"] for m in rec["members"]] == ["apgd-masked-ce", "apgd-balanced-masked-ce", "apgd-js"]

    # independent reference: every member alone, per image, on the same images
    images = torch.stack([dataset[i][0] for i in range(4)])
    labels = torch.stack([dataset[i][1] for i in range(4)])
    preds = []
    for member in sea.members:  # same batches as the engine: the random start depends on the batch
        adv = torch.cat([member(model, images[:3], labels[:3]), member(model, images[3:], labels[3:])])
        with torch.no_grad():
            preds.append(model(adv).argmax(1))
    valid = labels != 255
    per_image = []
    for a, pred in enumerate(preds):
        matrix = torch.bincount((labels[valid] * NUM_CLASSES + pred[valid]).long(), minlength=NUM_CLASSES**2).reshape(NUM_CLASSES, NUM_CLASSES)
        own = metrics_from_confusion(matrix)
        for key in ("mIoU", "aAcc", "mAcc", "mIoU_all"):
            assert rec["members"][a][key] == pytest.approx(own[key], abs=1e-12), (a, key)
        per_image.append(((pred == labels) & valid).reshape(4, -1).sum(1))
    worst_correct = torch.stack(per_image).min(0).values.sum().item()
    assert rec["aAcc"] == pytest.approx(worst_correct / valid.sum().item(), abs=1e-12)
    # the guarantees: never above any member
    assert rec["aAcc"] <= min(m["aAcc"] for m in rec["members"]) + 1e-12
    assert rec["mIoU"] <= min(m["mIoU"] for m in rec["members"]) + 1e-12
    assert rec["mIoU"] == rec["greedy"]["mIoU"] and rec["greedy"]["aAcc"] >= rec["aAcc"] - 1e-12
    assert rec["mIoU"] <= records[0]["mIoU"] + 1e-12


def test_the_worst_case_reuses_sea_members_and_matches_its_per_image_worst(tiny):
    model, dataset, _ = tiny
    sea = SEA(eps=8 / 255, steps=2, seed=0)
    bim = build_attack("bim", eps=8 / 255, alpha=2 / 255, steps=2)
    worst = WorstCase((*sea.members, bim))
    counting = CountingModel(model).eval()
    sea_only = [Setting(), Setting("sea", sea, 2, sea.eps)]
    run_engine(counting, dataset, sea_only)
    alone = counting.calls
    counting.calls = 0
    both = sea_only + [Setting("bim", bim, 2, bim.eps), Setting("worst", worst, 2, worst.eps)]
    records = run_engine(counting, dataset, both)
    # one batch: BIM's 2 steps + its prediction; the worst case reuses every member's result and the target's
    # prediction on it (the shared cache), so it costs no forward at all
    assert counting.calls - alone == 2 + 1
    sea_rec, bim_rec, worst_rec = records[1], records[2], records[3]
    # per-image worst over the members (plus BIM) is never above SEA's own per-image worst, nor above BIM
    assert worst_rec["aAcc"] <= sea_rec["aAcc"] + 1e-12 and worst_rec["aAcc"] <= bim_rec["aAcc"] + 1e-12


def test_sea_record_in_the_same_pass_equals_a_separate_pass(tiny):
    """Sharing work inside a batch changes nothing: a standalone APGD equal to a member reports the member's numbers."""
    model, dataset, _ = tiny
    sea = SEA(eps=4 / 255, steps=2, seed=2)
    member = sea.members[2]
    together = run_engine(model, dataset, [Setting(), Setting("sea", sea, 2, sea.eps), Setting("apgd", member, 2, member.eps)])
    alone = run_engine(model, dataset, [Setting(), Setting("apgd", member, 2, member.eps)])
    assert together[2]["mIoU"] == alone[1]["mIoU"] and together[2]["aAcc"] == alone[1]["aAcc"]
    assert together[1]["members"][2]["mIoU"] == alone[1]["mIoU"]


# ----------------------------------------------------------------------------- class counts


def test_training_class_counts_by_hand_and_cached(tmp_path, tiny):
    _, _, cfg = tiny
    train = build_dataset(cfg, "train")
    expected = [0] * NUM_CLASSES
    for i in range(len(train)):
        _, label = train.raw(i)
        for c in range(NUM_CLASSES):
            expected[c] += int((label == c).sum())
    assert count_classes(train, NUM_CLASSES) == expected
    assert sum(expected) == len(train) * cfg["data"]["image_size"] ** 2  # the synthetic labels ignore nothing
    first = training_class_counts(cfg, tmp_path)
    assert first == expected
    (path,) = tmp_path.glob("class_counts-*.json")
    stored = json.loads(path.read_text())
    stored["counts"] = [1, 2, 3, 4]
    path.write_text(json.dumps(stored))
    assert training_class_counts(cfg, tmp_path) == [1, 2, 3, 4]  # read back, not recounted
    other = merge(cfg, {"data": {"num_train": 3}})
    assert training_class_counts(other, tmp_path) != [1, 2, 3, 4] and len(list(tmp_path.glob("class_counts-*.json"))) == 2
    augmented = merge(cfg, {"data": {"rotate": 3.0}})  # augmentation does not change the raw labels: same cache
    assert training_class_counts(augmented, tmp_path) == [1, 2, 3, 4]


# ----------------------------------------------------------------------------- ddcat eval end to end


def test_eval_sea_and_apgd_at_two_eps_end_to_end(tmp_path, capsys, clean_run):
    out = tmp_path / "sea"
    argv = ["eval", "--no-progress", "--checkpoint", str(clean_run / "last.pt"), "--attack", "sea", "--attack", "apgd",
            "--iters", "2", "--eps", "4/255", "--eps", "8/255"]
    assert main([*argv, "--out", str(out)]) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "member apgd-js" in printed
    records = json.loads((out / "metrics.json").read_text())["records"]
    assert [(r["attack"], r["steps"], r["eps"]) for r in records] == [
        ("clean", 0, 0.0), ("sea", 2, 4 / 255), ("sea", 2, 8 / 255), ("apgd", 2, 4 / 255), ("apgd", 2, 8 / 255)]
    for r in records[1:3]:
        assert len(r["members"]) == 3 and all(0 <= m["mIoU"] <= 1 for m in r["members"])
        assert r["mIoU"] <= min(m["mIoU"] for m in r["members"]) + 1e-12
        assert r["aAcc"] <= min(m["aAcc"] for m in r["members"]) + 1e-12
    assert len(list(out.glob("class_counts-*.json"))) == 1  # counted from the training split, cached with the output
    out2 = tmp_path / "given"
    assert main([*argv, "--out", str(out2), "--class-counts", "5,1,1,1"]) == 0
    assert not list(out2.glob("class_counts-*.json"))  # given by the caller: nothing counted


@pytest.mark.slow
def test_sea_over_two_processes_equals_one_process(tmp_path, clean_run):
    """Each rank fills its own images' confusion matrices; the sum gives every rank the whole dataset,
    so the greedy selection and the per-image worst case are those of one process (batch size 1:
    every image gets the same random start in both runs; 5 images: the ranks hold 3 and 2)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(SRC.parent)}
    argv = ["-m", "ddcat", "eval", "--no-progress", "--checkpoint", str(clean_run / "last.pt"), "--attack", "sea", "--iters", "2",
            "--eps", "8/255", "--set", "eval.batch_size=1", "--set", "data.num_val=5"]
    torchrun = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    for name, prefix in (("one", []), ("two", torchrun)):
        proc = subprocess.run([sys.executable, *prefix, *argv, "--out", str(tmp_path / name)], capture_output=True, text=True, env=env, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
    one, two = (json.loads((tmp_path / n / "metrics.json").read_text())["records"] for n in ("one", "two"))
    assert [r["num_images"] for r in two] == [5, 5]
    sea1, sea2 = one[1], two[1]
    for key in ("mIoU", "aAcc", "mAcc", "mIoU_all"):
        assert sea2[key] == pytest.approx(sea1[key], abs=1e-12), key
        assert sea2["greedy"][key] == pytest.approx(sea1["greedy"][key], abs=1e-12), key
        for m1, m2 in zip(sea1["members"], sea2["members"]):
            assert m2[key] == pytest.approx(m1[key], abs=1e-12), (m1["name"], key)
