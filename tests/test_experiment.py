"""`ddcat experiment` / `ddcat demo` end to end at a tiny setting, and run reuse."""

import json
from pathlib import Path

import pytest
import yaml

from ddcat.cli import main
from ddcat.errors import DdcatError
from ddcat.experiment_file import load_experiment, packaged_config

TINY_SET = {
    "model": {"width": 8},
    "data": {"image_size": 32, "num_train": 16, "num_val": 4, "num_classes": 4},
    "train": {"iters": 3, "batch_size": 4, "crop_size": 32, "save_every": 3},
    "eval": {"batch_size": 4},
}


def tiny_experiment(tmp_path: Path, **evaluation) -> Path:
    spec = yaml.safe_load(packaged_config("demo.yaml").read_text())
    spec["base"] = str(packaged_config("synthetic.yaml"))
    spec["set"] = TINY_SET
    spec["evaluation"].update({"steps": [1, 2], "strong": ["pgd", "worst", "sea"], "strong_steps": 2, "sea_iters": 2, "qualitative": 2, **evaluation})
    spec.pop("quick")
    spec.pop("extra_runs", None)  # the noise-trained run and its certification: tests/test_certification.py
    if "certify" not in evaluation:
        spec["evaluation"].pop("certify", None)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.slow
def test_demo_grid_end_to_end_and_reuse(tmp_path, capsys):
    path = tiny_experiment(tmp_path)
    out = tmp_path / "out"
    assert main(["experiment", str(path), "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "Table 1" in printed and "Table 2" in printed

    results = json.loads((out / "results.json").read_text())
    assert len(results["runs"]) == 2 * 3 * 2
    assert {(r["arch"], r["method"]) for r in results["runs"]} == {
        (a, m) for a in ("pspnet", "deeplabv3") for m in ("clean", "sat", "ddcat")
    }
    kinds = {}
    for e in results["evaluations"]:
        kinds.setdefault(e["kind"], []).append(e)
    assert len(kinds["white-box"]) == 12 and len(kinds["strong"]) == 12 and len(kinds["transfer"]) == 12
    white = kinds["white-box"][0]["records"]
    assert [(r["attack"], r["steps"]) for r in white] == [("clean", 0), ("bim", 1), ("bim", 2)]
    # transfer: each PSPNet model attacked through both DeepLabv3 SAT seeds, and vice versa
    for e in kinds["transfer"]:
        sources = {r["source"] for r in e["records"] if r["attack"] == "bim"}
        assert len(sources) == 2 and all(("deeplabv3" if e["arch"] == "pspnet" else "pspnet") in s and "-sat-" in s for s in sources)
    strong = {r["attack"] for r in kinds["strong"][0]["records"]}
    assert strong == {"clean", "bim", "pgd", "worst", "sea"}
    for e in kinds["strong"]:
        sea = next(r for r in e["records"] if r["attack"] == "sea")
        assert sea["steps"] == 2 and len(sea["members"]) == 3
        assert sea["mIoU"] <= min(m["mIoU"] for m in sea["members"]) + 1e-12
        assert sea["aAcc"] <= min(m["aAcc"] for m in sea["members"]) + 1e-12
    assert len(list(out.glob("class_counts-*.json"))) == 1  # one data config: counted once for all 12 runs

    report = (out / "report.md").read_text()
    assert "| clean | 1 | 2 |" in report.replace("|  |", "| |")
    assert "Claimed vs. remaining" in report and "remaining (SEA-2)" in report and "claimed (BIM-2)" in report
    assert "Claimed vs. remaining (mIoU, BIM vs SEA)" in printed
    for png in ("sweep_white_box.png", "sweep_transfer.png", "routing.png", "strong_attacks.png", "claimed_vs_remaining.png", "qualitative_pspnet.png"):
        assert (out / png).stat().st_size > 1000, png
        assert png in report
    for run in results["runs"]:
        folder = Path(run["dir"])
        assert (folder / "config.yaml").exists() and (folder / "run.json").exists() and (folder / "last.pt").exists()

    # ddcat report over the run folders writes the same report (header and training-time order aside)
    assert main(["report", str(out / "runs"), str(out / "qualitative.npz"), "--out", str(tmp_path / "rep")]) == 0
    gathered = (tmp_path / "rep" / "report.md").read_text()

    def body(text: str) -> str:
        text = text[text.index("## Table 1"):]
        return text[:text.index("## Training time")] + text[text.index("## Appendix"):]

    assert body(gathered) == body(report)
    assert "## Lowest bound per model" in report and "the strongest evaluation present" in report

    # a rerun reuses every training run and every cached evaluation
    assert main(["experiment", str(path), "--out", str(out), "--no-progress"]) == 0
    again = json.loads((out / "results.json").read_text())
    assert all(r["reused"] for r in again["runs"])
    assert again["evaluations"] == results["evaluations"]


def test_changed_config_is_a_new_run(tmp_path):
    path = tiny_experiment(tmp_path)
    a = load_experiment(path)["runs"]
    b = load_experiment(path, sets=["train.lr=0.02"])["runs"]
    assert [r.id for r in a] != [r.id for r in b]
    assert len({r.id for r in a}) == len(a)


def test_quick_section_applies(tmp_path):
    quick = load_experiment(packaged_config("demo.yaml"), quick=True)
    full = load_experiment(packaged_config("demo.yaml"))
    assert quick["runs"][0].cfg["train"]["iters"] < full["runs"][0].cfg["train"]["iters"]
    assert {r.method for r in full["runs"]} == {"clean", "sat", "ddcat"}
    assert {r.seed for r in full["runs"]} == {0, 1}
    ablation = load_experiment(packaged_config("ablation.yaml"))
    assert {r.method for r in ablation["runs"]} == {"sat", "ddcat-m", "ddcat-n", "ddcat"}


def test_experiment_eps_accepts_fractions(tmp_path):
    path = tiny_experiment(tmp_path, eps="8/255", alpha="2/255")
    ev = load_experiment(path)["evaluation"]
    assert ev["eps"] == 8 / 255 and ev["alpha"] == 2 / 255
    assert load_experiment(packaged_config("demo.yaml"))["evaluation"]["strong"][-1] == "sea"
    assert load_experiment(packaged_config("demo.yaml"), quick=True)["evaluation"]["strong"][-1] == "sea"
    with pytest.raises(DdcatError, match="evaluation.eps"):
        load_experiment(tiny_experiment(tmp_path, eps="a lot"))
    with pytest.raises(DdcatError, match="sea_iters"):
        load_experiment(tiny_experiment(tmp_path, sea_iters=0))


def test_bad_experiment_files(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: {pspnet: {}}\nmethods: [clean]\nseeds: [0]\nfoo: 1\n")
    with pytest.raises(DdcatError, match="foo"):
        load_experiment(bad)
    bad.write_text("models: {pspnet: {model: {arch: resnet}}}\nmethods: [clean]\nseeds: [0]\n")
    with pytest.raises(DdcatError, match="model.arch"):
        load_experiment(bad)
    bad.write_text("models: {pspnet: {}}\nmethods: []\nseeds: [0]\n")
    with pytest.raises(DdcatError, match="methods"):
        load_experiment(bad)


def test_list_and_shard(tmp_path, capsys):
    """--list names every run with its commands; --shard I/N trains only the runs with index I mod N,
    under the lock of each run folder; the transfer evaluation waits for its substitutes."""
    spec = yaml.safe_load(tiny_experiment(tmp_path).read_text())
    spec.update(models={"pspnet": {"model": {"arch": "pspnet"}}, "deeplabv3": {"model": {"arch": "deeplabv3"}}}, methods=["sat"], seeds=[0])
    spec["set"]["train"]["iters"] = 1
    spec["evaluation"].update(strong=[], steps=[1], qualitative=0)
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = tmp_path / "out"
    assert main(["experiment", str(path), "--out", str(out), "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    heads = [line for line in lines if not line.startswith(" ")]
    assert [h.split()[0] for h in heads] == ["0", "1"]
    ids = [h.split()[1] for h in heads]
    assert sum("ddcat train --config" in line for line in lines) == 2 and sum("--transfer-from" in line for line in lines) == 2
    assert all((out / "configs" / f"{i}.yaml").is_file() for i in ids) and not (out / "runs").exists()
    from ddcat.cli import build_parser
    from ddcat.config import load_config

    runs = {r.id: r for r in load_experiment(path)["runs"]}
    assert all(load_config(out / "configs" / f"{i}.yaml") == runs[i].cfg for i in ids)  # `ddcat train --config` trains the same run
    for line in lines:
        if line.startswith("  ddcat "):
            _, unknown = build_parser().parse_known_args(line.split()[1:])
            assert not unknown, line
    assert main(["experiment", str(path), "--out", str(out), "--shard", "1/2", "--no-progress"]) == 0
    assert "transfer evaluation skipped" in capsys.readouterr().err
    assert (out / "runs" / ids[1] / "last.pt").is_file() and not (out / "runs" / ids[0]).exists()
    assert main(["experiment", str(path), "--out", str(out), "--shard", "0/2", "--no-progress"]) == 0
    assert list((out / "runs" / ids[0] / "eval").glob("transfer-*.json"))
    for bad in ("2/2", "x", "1/0"):
        assert main(["experiment", str(path), "--out", str(out), "--shard", bad]) == 2
