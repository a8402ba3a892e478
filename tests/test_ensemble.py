"""``--attack ensemble`` (issue 16 section 4): the member loop and its early skip, the records
(members, per-image worst aAcc, greedy mIoU over the whole evaluation, winners, version), the
guarantees (never above any member), determinism, and sharding over two processes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ddcat.attacks import BIM, PGD, Ensemble, build_attack, member_loop
from ddcat.attacks.registry import member_names
from ddcat.checkpoint import load_model
from ddcat.config import DEFAULTS, merge
from ddcat.data import build_dataset
from ddcat.evaluation import Setting, evaluate
from ddcat.metrics import metrics_from_counts, per_image_counts

from conftest import NUM_CLASSES

SRC = Path(__file__).resolve().parents[1] / "src" / "ddcat"
EPS = 8 / 255


@pytest.fixture(scope="module")
def tiny(clean_run):
    model, ckpt = load_model(clean_run / "last.pt")
    cfg = merge(DEFAULTS, ckpt["config"])
    return model.eval(), build_dataset(cfg, "val")


def run_engine(model, dataset, settings, batch_size=4):
    return evaluate(model, dataset, settings, NUM_CLASSES, torch.device("cpu"), batch_size=batch_size, progress=False)


def small_net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 1)).eval()


def test_early_skip_runs_later_members_only_on_images_not_yet_at_accuracy_zero():
    """Member 0 (BIM with 0 steps) returns the clean images; images 0 and 2 get labels that the clean
    prediction misses everywhere, so the later members skip them and keep the clean result there,
    and attack the others exactly as they attack that sub-batch alone."""
    net = small_net()
    images = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        clean_pred = net(images).argmax(1)
    labels = clean_pred.clone()
    labels[0] = (clean_pred[0] + 1) % 4
    labels[2] = (clean_pred[2] + 1) % 4
    members = (BIM(0.05, 0.01, 0), BIM(0.05, 0.01, 2), PGD(0.05, 0.01, 2, seed=3))
    results = list(member_loop(members, net, images, labels, early_skip=True))
    todo = torch.tensor([False, True, False, True])
    assert not bool(results[0].skipped.any())
    for r, member in zip(results[1:], members[1:]):
        assert torch.equal(r.skipped, ~todo)
        assert torch.equal(r.x[~todo], images[~todo])  # the kept 0-accuracy (clean) result
        alone = member(net, images[todo], labels[todo])
        assert torch.equal(r.x[todo], alone)
        assert r.score.bad[~todo].tolist() == [0, 0]
    # without the skip every member runs on every image; the per-image worst accuracy is the same
    full = list(member_loop(members, net, images, labels, early_skip=False))
    assert not any(bool(r.skipped.any()) for r in full)
    worst_skip = torch.stack([r.score.bad for r in results]).min(0).values
    worst_full = torch.stack([r.score.bad for r in full]).min(0).values
    assert worst_skip[~todo].tolist() == worst_full[~todo].tolist() == [0, 0]
    assert torch.equal(worst_skip[todo], torch.stack([r.score.bad[todo] for r in results]).min(0).values)
    # Ensemble.run is that per-image worst case
    adv = Ensemble(members, ("a", "b", "c"))(net, images, labels)
    with torch.no_grad():
        hits = ((net(adv).argmax(1) == labels).reshape(4, -1).sum(1))
    assert torch.equal(hits, worst_skip)


def test_ensemble_record_never_above_any_member_and_counts_winners(tiny):
    model, dataset = tiny
    ens = build_attack("ensemble", eps=EPS, alpha=2 / 255, steps=2, seed=1)
    bim = build_attack("bim", eps=EPS, alpha=2 / 255, steps=2)
    settings = [Setting(), Setting("bim", bim, 2, EPS, alpha=2 / 255), Setting("ensemble", ens, 2, EPS)]
    records = run_engine(model, dataset, settings, batch_size=3)  # two batches (3 + 1)
    clean, bim_rec, rec = records
    assert rec["ensemble"] == {"version": "ddcat-ensemble-1", "members": list(member_names()), "early_skip": True, "box": "project"}
    assert rec["box"] == "project" and rec["norm"] == "linf"
    assert [m["name"] for m in rec["members"]] == list(member_names())
    # greedy over every attack of the evaluation: the members and the BIM sweep
    assert rec["greedy_pool"][: len(member_names())] == list(member_names()) and "bim-2" in rec["greedy_pool"]
    for other in [*rec["members"], bim_rec]:
        assert rec["mIoU"] <= other["mIoU"] + 1e-12
    for member in rec["members"]:
        assert rec["aAcc"] <= member["aAcc"] + 1e-12
        assert member["skipped_images"] >= 0
        assert rec["mIoU_imagewise"] <= member["mIoU_imagewise"] + 1e-12
    assert rec["mIoU_imagewise"] <= bim_rec["mIoU_imagewise"] + 1e-12
    assert rec["mIoU"] == rec["greedy"]["mIoU"] and rec["aAcc"] == rec["per_image_worst"]["aAcc"]
    assert sum(rec["winners"]["aAcc"].values()) == rec["num_images"] == 4
    assert sum(rec["winners"]["mIoU"].values()) == 4
    assert set(rec["winners"]["mIoU"]) <= set(rec["greedy_pool"])
    assert set(rec["winners"]["aAcc"]) <= set(member_names())
    assert rec["mIoU"] <= clean["mIoU"] + 1e-12


def test_ensemble_members_numbers_are_their_own_when_nothing_is_skipped(tiny):
    """With the early skip off, member a's numbers are those of its attack alone on the same batches."""
    model, dataset = tiny
    ens = build_attack("ensemble", eps=EPS, alpha=2 / 255, steps=1, seed=0, early_skip=False)
    rec = run_engine(model, dataset, [Setting(), Setting("ensemble", ens, 1, EPS)], batch_size=4)[1]
    assert "skipped_images" not in rec["members"][0] and rec["ensemble"]["early_skip"] is False
    images = torch.stack([dataset[i][0] for i in range(4)])
    labels = torch.stack([dataset[i][1] for i in range(4)])
    for a in (0, 5):
        with torch.no_grad():
            pred = model(ens.members[a](model, images, labels)).argmax(1)
        own = metrics_from_counts(per_image_counts(pred, labels, NUM_CLASSES).sum(0))
        for key in ("mIoU", "aAcc", "mAcc"):
            assert rec["members"][a][key] == pytest.approx(own[key], abs=1e-12)


def test_ensemble_is_deterministic_given_a_seed(tiny):
    model, dataset = tiny

    def once(seed):
        ens = build_attack("ensemble", eps=EPS, alpha=2 / 255, steps=1, seed=seed)
        return run_engine(model, dataset, [Setting(), Setting("ensemble", ens, 1, EPS)])[1]

    a, b = once(5), once(5)
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


@pytest.mark.slow
def test_ensemble_over_two_processes_equals_one_process(tmp_path, clean_run):
    """As SEA's test: each rank fills its own images' class counts; the sums give every rank the whole
    dataset, so members, per-image worst case, greedy selection and winners are those of one process
    (batch size 1: every image gets the same random start and the same early skip in both runs)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(SRC.parent)}
    argv = ["-m", "ddcat", "eval", "--no-progress", "--checkpoint", str(clean_run / "last.pt"), "--attack", "ensemble",
            "--iters", "1", "--eps", "8/255", "--set", "eval.batch_size=1", "--set", "data.num_val=5"]
    torchrun = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    for name, prefix in (("one", []), ("two", torchrun)):
        proc = subprocess.run([sys.executable, *prefix, *argv, "--out", str(tmp_path / name)], capture_output=True, text=True, env=env, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
    one, two = (json.loads((tmp_path / n / "metrics.json").read_text())["records"] for n in ("one", "two"))
    assert [r["num_images"] for r in two] == [5, 5]
    e1, e2 = one[1], two[1]
    for key in ("mIoU", "aAcc", "mAcc", "mIoU_all", "mIoU_imagewise"):
        assert e2[key] == pytest.approx(e1[key], abs=1e-12), key
        for m1, m2 in zip(e1["members"], e2["members"]):
            assert m2[key] == pytest.approx(m1[key], abs=1e-12), (m1["name"], key)
    assert e2["winners"] == e1["winners"] and e2["size_recall"] == e1["size_recall"]
    assert [m["skipped_images"] for m in e2["members"]] == [m["skipped_images"] for m in e1["members"]]
    assert "ensemble" in (tmp_path / "two" / "table.txt").read_text()


def test_the_ensemble_greedy_starts_from_the_pooled_ensembles_selections():
    """Hand-made per-image counts (tests/test_metrics.py's GREEDY_TRAP, labels image 0 = [1, 1, 0],
    image 1 = [1, 0, 0]): a member-pool ensemble "sea" with members (a2, a1) and the whole-evaluation
    "ensemble" with the one member a0. SEA's per-image aAcc worst case is a2 on both images (ties:
    the earlier member), mIoU 0.325; its greedy search from a2 switches image 0 to a1: 0.25. From the
    ensemble's best single candidate a0 (0.325) no single switch helps, so without SEA's selection as
    a start its greedy mIoU would stay 0.325 > SEA's 0.25."""
    from ddcat.evaluation.engine import EnsembleAccumulator, PerImage, ensemble_record, greedy_selections
    from ddcat.metrics import greedy_miou_selection, miou_of_counts

    labels = torch.tensor([[[1, 1, 0]], [[1, 0, 0]]])
    preds = {"a0": [[1, 0, 1], [1, 0, 1]], "a1": [[0, 0, 0], [1, 0, 0]], "a2": [[1, 0, 1], [0, 0, 0]]}

    def acc_of(name):
        acc = PerImage(2, 2)
        acc.counts = per_image_counts(torch.tensor(preds[name]).view(2, 1, 3), labels, 2)
        return acc

    sea = Setting("sea", build_attack("sea", eps=EPS, steps=1), 1, EPS)
    ens = Setting("ensemble", build_attack("ensemble", eps=EPS, steps=1), 1, EPS)
    ensembles = {}
    for s, names in ((sea, ["a2", "a1"]), (ens, ["a0"])):
        ensembles[s.key()] = EnsembleAccumulator(names, 2, 2)
        ensembles[s.key()].members = [acc_of(n) for n in names]
    per_image = {sea.key(): acc_of("a2"), ens.key(): acc_of("a0")}  # the per-image aAcc worst cases
    settings = [Setting(), ens, sea]  # the ensemble listed first: the order of the selections is the engine's
    per_image[Setting().key()] = acc_of("a1")
    selections = greedy_selections(settings, per_image, ensembles)  # key -> (pool, choice)
    labelled = torch.tensor([True, True])
    sea_rec, ens_rec = (ensemble_record(s.attack, ensembles[s.key()], selections[s.key()][0], labelled, selections[s.key()][1])
                        for s in (sea, ens))
    assert sea_rec["mIoU"] == pytest.approx(0.25) and sea_rec["winners"]["mIoU"] == {"a2": 1, "a1": 1}
    pool, choice = selections[ens.key()]
    assert [n for n, _ in pool] == ["a0", "sea-1", "sea-1/a2", "sea-1/a1"]
    assert [pool[i][0] for i in choice.tolist()] == ["sea-1/a1", "sea-1/a2"]
    assert ens_rec["mIoU"] == pytest.approx(0.25) and ens_rec["mIoU"] <= sea_rec["mIoU"]
    # the trap: the same pool searched from its best single candidate alone stays at 0.325
    _, alone = greedy_miou_selection(torch.stack([p.counts for _, p in pool]), 10, 0)
    assert alone == pytest.approx(0.325) and float(miou_of_counts(per_image[sea.key()].counts.sum(0))) == pytest.approx(0.325)


def test_ensemble_mIoU_is_at_most_worst_s_sea_s_and_every_other_record_s(tiny):
    """worst, SEA, the ensemble and the BIM sweep in one evaluation: the ensemble's (greedy) mIoU is
    no higher than any other attacked record's, and its aAcc no higher than any of its members'."""
    model, dataset = tiny
    settings = [Setting()]
    for name, steps in (("bim", 2), ("worst", 2), ("sea", 2), ("ensemble", 2)):
        attack = build_attack(name, eps=EPS, alpha=2 / 255, steps=steps, seed=1)
        settings.append(Setting(name, attack, steps, EPS, alpha=2 / 255 if name in ("bim", "worst") else None))
    records = run_engine(model, dataset, settings, batch_size=2)
    by_name = {r["attack"]: r for r in records}
    ens = by_name["ensemble"]
    for other in ("clean", "bim", "worst", "sea"):
        assert ens["mIoU"] <= by_name[other]["mIoU"] + 1e-12, other
    for other in ("worst", "sea"):  # and than each of their members'
        for member in by_name[other]["members"]:
            assert ens["mIoU"] <= member["mIoU"] + 1e-12, (other, member["name"])
    assert {"worst-2", "sea-2", "bim-2"} <= set(ens["greedy_pool"])
    assert any(n.startswith("sea-2/") for n in ens["greedy_pool"]) and any(n.startswith("worst-2/") for n in ens["greedy_pool"])


MIN_NORM = {"dag", "dag-003", "pdpgd", "alma-prox"}


def test_box_reaches_the_minimum_norm_members_and_the_record(tiny):
    """``--box clip`` inside the ensemble: the minimum-norm members run as rse (clip the result), the
    others are the same values; the record says it (top level and the ensemble's entry)."""
    import dataclasses

    from ddcat.errors import DdcatError
    from ddcat.evaluation.settings import AttackPlan, attack_settings

    clip = build_attack("ensemble", eps=EPS, steps=1, box="clip")
    project = build_attack("ensemble", eps=EPS, steps=1)
    assert clip.names == project.names and MIN_NORM <= set(clip.names)
    for name, c, p in zip(clip.names, clip.members, project.members):
        if name in MIN_NORM:
            assert (c.box, p.box) == ("clip", "project") and dataclasses.replace(c, box="project") == p, name
        else:
            assert c == p, name
    assert (clip.box, project.box) == ("clip", "project")
    assert build_attack("ensemble", eps=0.5, steps=1, norm="l2", box="clip").box is None  # no L2 minimum-norm member
    with pytest.raises(DdcatError, match="box must be one of clip, project, got 'wrap'"):
        build_attack("ensemble", box="wrap")
    model, dataset = tiny
    plan = AttackPlan(("ensemble",), eps=(EPS,), iters=1, seed=0, min_norm_box="clip")
    settings = attack_settings(plan, [("self", None)])
    assert settings[1].attack == clip  # the plan's --box reaches build_ensemble
    rec = evaluate(model, dataset, settings, NUM_CLASSES, torch.device("cpu"), batch_size=2, max_images=2, progress=False)[1]
    assert rec["box"] == "clip" and rec["ensemble"]["box"] == "clip" and rec["steps"] == 1
