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


# ----------------------------------------------------------------------------- the report card
def cert_record(tau, acc, abstain, sigma=0.25, n=100):
    """A record with the fields ``ddcat certify`` writes (certify.json's ``records``)."""
    return {
        "tau": tau, "sigma": sigma, "radius": 0.1686, "n0": 10, "n": n, "alpha": 0.001, "correction": "holm", "seed": 0,
        "certified_pixel_accuracy": acc, "abstain_rate": abstain, "certified_mIoU": acc / 2, "certified_per_class_iou": [acc, None],
        "num_pixels": 1000, "smoothed_pixel_accuracy": 0.8, "smoothed_mIoU": 0.6, "num_images": 2, "model": "run0",
        "threat_model": "L2 ball", "passes_per_image": 10 + n, "seconds": 12.0,
        "images": [{"index": 0, "num_pixels": 500, "certified_pixel_accuracy": acc, "abstain_rate": abstain,
                    "smoothed_pixel_accuracy": 0.8, "certified_mIoU": acc / 2}],
    }


def write_certify(folder, checkpoint, method, seed, records, arch="pspnet", dataset="synthetic"):
    folder.mkdir(parents=True)
    cfg = {"seed": seed, "model": {"arch": arch}, "data": {"name": dataset}, "train": {"method": method}}
    (folder / "certify.json").write_text(json.dumps({"checkpoint": str(checkpoint), "model": checkpoint.parent.name, "split": "val",
                                                     "records": records, "run": {}, "config": cfg}))


def test_report_shows_the_card_of_ddcat_certify_folders(tmp_path):
    ckpt = tmp_path / "runs" / "sat0" / "last.pt"
    write_eval(tmp_path / "runs" / "sat0" / "strong", "sat", 0, [rec("clean", 0.7), rec("bim", 0.5, 7), rec("sea", 0.45, 300)])
    write_certify(tmp_path / "cert-sat0", ckpt, "sat", 0, [cert_record(0.75, 0.6, 0.3)])
    write_certify(tmp_path / "cert-dd0", tmp_path / "runs" / "dd0" / "last.pt", "ddcat", 0, [cert_record(0.75, 0.2, 0.7)])
    results, problems = gather_results([tmp_path])
    assert problems == []
    assert [(c["method"], c["seed"], c["kind"]) for c in results["certifications"]] == [("sat", 0, "certify"), ("ddcat", 0, "certify")]
    sat = results["certifications"][0]
    assert sat["run_id"] == next(e["run_id"] for e in results["evaluations"])  # the same model: its card row joins both
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "rep")]) == 0
    report = (tmp_path / "rep" / "report.md").read_text()
    assert "## Report card" in report and "cert aAcc (L2 0.169, sigma 0.25, tau 0.75)" in report
    assert "| PSPNet SAT (seed 0) | 0.700 | 0.500 | 0.450 | 0.600 | 0.300 |" in report
    assert "| PSPNet DDC-AT (seed 0) | - | - | - | 0.200 | 0.700 |" in report  # certified, never attacked


def test_report_reads_the_experiments_certify_cache(tmp_path):
    run = tmp_path / "runs" / "abc"
    (run / "eval").mkdir(parents=True)
    cfg = {"seed": 1, "model": {"arch": "pspnet"}, "data": {"name": "synthetic"}, "train": {"method": "clean"}}
    (run / "config.yaml").write_text(json.dumps(cfg))  # JSON is YAML
    (run / "run.json").write_text("{}")
    (run / "eval" / "white-box-0123456789.json").write_text(json.dumps({"key": {}, "records": [rec("clean", 0.8), rec("bim", 0.1, 7)]}))
    (run / "eval" / "certify-0123456789.json").write_text(json.dumps({"key": {}, "records": [cert_record(0.75, 0.5, 0.4)]}))
    results, problems = gather_results([tmp_path])
    assert problems == [] and len(results["certifications"]) == 1
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "rep")]) == 0
    assert "| PSPNet No Defense (seed 1) | 0.800 | 0.100 | 0.100 | 0.500 | 0.400 |" in (tmp_path / "rep" / "report.md").read_text()


def test_two_certifications_of_one_model_at_one_sigma_and_tau_are_named(tmp_path):
    ckpt = tmp_path / "r" / "last.pt"
    write_certify(tmp_path / "c1", ckpt, "sat", 0, [cert_record(0.75, 0.6, 0.3)])
    write_certify(tmp_path / "c2", ckpt, "sat", 0, [cert_record(0.75, 0.5, 0.3, n=1000), cert_record(0.9, 0.4, 0.5)])
    results, problems = gather_results([tmp_path])
    assert [r["tau"] for r in results["certifications"][0]["records"]] == [0.75, 0.9]  # merged
    assert results["certifications"][0]["records"][0]["n"] == 100
    assert len(problems) == 1 and "c2/certify.json" in problems[0] and "c1/certify.json" in problems[0] and "tau 0.75" in problems[0]


# ----------------------------------------------------------------------------- several jobs, one model
def test_two_eval_jobs_of_one_model_merge(tmp_path):
    # SEA in one job, the worst case in another, both "strong"; both have BIM-7: a true duplicate, named
    write_eval(tmp_path / "r" / "e-sea", "sat", 0, [rec("clean", 0.7), rec("bim", 0.5, 7), rec("sea", 0.40, 300)])
    write_eval(tmp_path / "r" / "e-worst", "sat", 0, [rec("clean", 0.7), rec("bim", 0.5, 7), rec("worst", 0.45, 7)])
    results, problems = gather_results([tmp_path])
    strong = [e for e in results["evaluations"] if e["kind"] == "strong"]
    assert len(strong) == 1
    assert [r["attack"] for r in strong[0]["records"]] == ["clean", "bim", "sea", "worst"]
    assert len(problems) == 1 and "BIM-7" in problems[0]
    assert "e-worst/metrics.json" in problems[0] and "e-sea/metrics.json" in problems[0]
    from ddcat.reporting.summary import strong_table

    entry = strong_table(results, "pspnet")[0]
    assert entry["mIoU"]["sea"] == 0.40 and entry["mIoU"]["worst"] == 0.45 and entry["seeds"] == 1


def test_different_clean_numbers_of_one_model_are_named(tmp_path):
    write_eval(tmp_path / "r" / "a", "sat", 0, [rec("clean", 0.7), rec("sea", 0.40, 300)])
    write_eval(tmp_path / "r" / "b", "sat", 0, [rec("clean", 0.6), rec("apgd", 0.45, 100)])
    results, problems = gather_results([tmp_path])
    assert len(problems) == 1 and "clean" in problems[0] and "r/b/metrics.json" in problems[0] and "r/a/metrics.json" in problems[0]
    assert [r["attack"] for r in results["evaluations"][0]["records"]] == ["clean", "sea", "apgd"]


def write_run(folder, method, seed, bim7):
    (folder / "eval").mkdir(parents=True)
    cfg = {"seed": seed, "model": {"arch": "pspnet"}, "data": {"name": "synthetic"}, "train": {"method": method}}
    (folder / "config.yaml").write_text(json.dumps(cfg))
    (folder / "run.json").write_text("{}")
    (folder / "eval" / "white-box-0000000000.json").write_text(json.dumps({"records": [rec("clean", 0.7), rec("bim", bim7, 7)]}))


def test_same_named_run_folders_under_two_paths_stay_two_models(tmp_path):
    write_run(tmp_path / "grid1" / "runs" / "run0", "sat", 0, 0.5)
    write_run(tmp_path / "grid2" / "runs" / "run0", "sat", 1, 0.3)
    results, problems = gather_results([tmp_path / "grid1", tmp_path / "grid2"])
    assert problems == []
    assert sorted(r["seed"] for r in results["runs"]) == [0, 1] and [r["id"] for r in results["runs"]] == ["run0", "run0"]
    from ddcat.reporting.summary import sweep_stats

    mean, std, n = sweep_stats(results, "pspnet", "sat")[7]
    assert n == 2 and abs(mean - 0.4) < 1e-12 and abs(std - 0.1) < 1e-12
    # an eval folder's checkpoint path finds its run folder by resolved path, not by the bare name
    write_eval(tmp_path / "grid2" / "runs" / "run0" / "strong", "sat", 1, [rec("clean", 0.7), rec("sea", 0.2, 300)])
    results, _ = gather_results([tmp_path / "grid1", tmp_path / "grid2"])
    runs = {e["run_id"] for e in results["evaluations"] if e["seed"] == 1}
    assert len(runs) == 1 and runs == {str((tmp_path / "grid2" / "runs" / "run0").resolve())}


def test_records_are_classed_one_by_one(tmp_path):
    # a BIM sweep plus SEA: the sweep feeds Table 1 (white-box), SEA the strong table (with BIM-7);
    # a single BIM step: Table 1 too
    write_eval(tmp_path / "a" / "e", "sat", 0, [rec("clean", 0.7), rec("bim", 0.6, 1), rec("bim", 0.5, 7), rec("sea", 0.4, 300)])
    write_eval(tmp_path / "b" / "e", "ddcat", 0, [rec("clean", 0.8), rec("bim", 0.55, 7)])
    results, problems = gather_results([tmp_path])
    assert problems == []
    kinds = {(e["method"], e["kind"]): [(r["attack"], r["steps"]) for r in e["records"]] for e in results["evaluations"]}
    assert kinds == {
        ("sat", "white-box"): [("clean", 0), ("bim", 1), ("bim", 7)],
        ("sat", "strong"): [("clean", 0), ("bim", 7), ("sea", 300)],
        ("ddcat", "white-box"): [("clean", 0), ("bim", 7)],
    }
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "rep")]) == 0
    report = (tmp_path / "rep" / "report.md").read_text()
    table1 = report[report.index("## Table 1"):]
    table1 = table1[:table1.index("\n## ", 4)]
    assert "Mean SAT" in table1 and "Mean DDC-AT" in table1


def test_a_strong_evaluation_keeps_the_bim_record_at_the_other_attacks_steps(tmp_path):
    write_eval(tmp_path / "a" / "e", "sat", 0, [rec("clean", 0.7), rec("bim", 0.6, 1), rec("bim", 0.5, 7), rec("bim", 0.45, 10),
                                               rec("pgd", 0.48, 7), rec("sea", 0.4, 300)])
    results, _ = gather_results([tmp_path])
    strong = next(e for e in results["evaluations"] if e["kind"] == "strong")
    assert [(r["attack"], r["steps"]) for r in strong["records"]] == [("clean", 0), ("bim", 7), ("pgd", 7), ("sea", 300)]


def test_a_noise_trained_model_is_not_pooled_with_the_plain_one(tmp_path):
    write_eval(tmp_path / "plain" / "e", "clean", 0, [rec("clean", 0.7), rec("bim", 0.2, 7)])
    write_eval(tmp_path / "noise" / "e", "clean", 0, [rec("clean", 0.6), rec("bim", 0.3, 7)])
    data = json.loads((tmp_path / "noise" / "e" / "metrics.json").read_text())
    data["config"]["train"]["noise_sigma"] = 0.25
    (tmp_path / "noise" / "e" / "metrics.json").write_text(json.dumps(data))
    results, problems = gather_results([tmp_path])
    assert problems == [] and sorted(e["arch"] for e in results["evaluations"]) == ["pspnet", "pspnet-noise0.25"]


def test_ensemble_winners_are_summed_over_seeds_and_reported(tmp_path):
    """Which member found each image's worst case: the ensemble records' `winners`, summed over the
    seeds of a method (worked by hand), in the report with the registry's labels."""
    from ddcat.reporting.summary import ensemble_winners

    def ens(miou, winners_miou, winners_acc):
        r = rec("ensemble", miou, 10)
        r.update(num_images=4, winners={"mIoU": winners_miou, "aAcc": winners_acc})
        return r

    write_eval(tmp_path / "s0" / "strong", "sat", 0, [rec("clean", 0.7), ens(0.40, {"cospgd": 3, "bim-7": 1}, {"cospgd": 4})])
    write_eval(tmp_path / "s1" / "strong", "sat", 1, [rec("clean", 0.6), ens(0.35, {"apgd-js": 3, "cospgd": 1}, {"apgd-js": 2, "pgd": 2})])
    write_eval(tmp_path / "c0" / "strong", "clean", 0, [rec("clean", 0.8), rec("bim", 0.3, 7)])  # no ensemble: no entry
    results, problems = gather_results([tmp_path])
    assert problems == []
    (entry,) = ensemble_winners(results, "pspnet")
    assert entry["method"] == "sat" and entry["images"] == 8
    assert entry["mIoU"] == [("CosPGD", 4), ("APGD-JS", 3), ("bim-7", 1)]
    assert entry["aAcc"] == [("CosPGD", 4), ("APGD-JS", 2), ("PGD", 2)]
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "rep")]) == 0
    report = (tmp_path / "rep" / "report.md").read_text()
    assert "## Which attack found the worst case (the ensemble)" in report
    assert "- SAT, mIoU (8 images): CosPGD 4, APGD-JS 3, bim-7 1" in report


def test_an_experiment_s_method_labels_keep_its_runs_apart(tmp_path):
    """Two runs of train.method sat under different experiment labels (configs/recipes.yaml's sat and
    sat-bim1) are two methods in the report, as in the experiment's own; without timing.json's
    method label they would be pooled as two seeds of one."""
    import yaml

    for label, seed, miou in (("sat", 0, 0.45), ("sat-bim1", 0, 0.30)):
        run = tmp_path / "runs" / f"pspnet-{label}-s{seed}-abc"
        write_eval(run / "eval-strong", "sat", seed, [rec("clean", 0.7), rec("bim", miou, 7), rec("sea", miou - 0.01, 100)])
        cfg = {"seed": seed, "model": {"arch": "pspnet"}, "data": {"name": "synthetic"}, "train": {"method": "sat"}}
        (run / "config.yaml").write_text(yaml.safe_dump(cfg))
        (run / "run.json").write_text("{}")
        (run / "timing.json").write_text(json.dumps({"train_seconds": 1.0, "label": "pspnet", "method": label}))
    results, problems = gather_results([tmp_path])
    assert problems == []
    low = {e["method"]: e for e in lowest_bounds(results, "pspnet")}
    assert set(low) == {"sat", "sat-bim1"} and low["sat"]["seeds"] == 1
    assert abs(low["sat"]["lowest"] - 0.44) < 1e-12 and abs(low["sat-bim1"]["lowest"] - 0.29) < 1e-12
