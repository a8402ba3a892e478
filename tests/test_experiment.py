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
        timing = json.loads((folder / "timing.json").read_text())  # what ddcat report reads for the labels
        assert timing["label"] == run["arch"] and timing["method"] == run["method"]
    older = Path(results["runs"][0]["dir"]) / "timing.json"  # as an older ddcat wrote it: no method label
    older.write_text(json.dumps({"train_seconds": 1.5, "label": results["runs"][0]["arch"]}))

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
    assert json.loads(older.read_text()) == {"train_seconds": 1.5, "label": results["runs"][0]["arch"], "method": results["runs"][0]["method"]}
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
    assert load_experiment(packaged_config("demo.yaml"))["evaluation"]["strong"][-2:] == ["sea", "ensemble"]
    assert load_experiment(packaged_config("demo.yaml"), quick=True)["evaluation"]["strong"][-2:] == ["sea", "ensemble"]
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
    grid = load_experiment(path)["runs"]
    assert len(lines) == 2 and all(line.count("\t") == 1 for line in lines)  # one line per run: ID<TAB>commands
    ids = [line.split("\t")[0] for line in lines]
    assert ids == [r.id for r in grid]  # line I + 1 is the run of index I (sed -n "$((SLURM_ARRAY_TASK_ID+1))p")
    commands = [line.split("\t")[1].split(" && ") for line in lines]
    for run_id, cmds in zip(ids, commands):
        assert cmds[0] == f"ddcat train --config {out / 'configs' / run_id}.yaml --out {out / 'runs' / run_id}"
        assert [c.split()[1] for c in cmds] == ["train", "eval", "eval"] and "--transfer-from" in cmds[2]
    assert all((out / "configs" / f"{i}.yaml").is_file() for i in ids) and not (out / "runs").exists()
    from ddcat.cli import build_parser
    from ddcat.config import load_config

    runs = {r.id: r for r in grid}
    assert all(load_config(out / "configs" / f"{i}.yaml") == runs[i].cfg for i in ids)  # `ddcat train --config` trains the same run
    for cmds in commands:
        for cmd in cmds:
            _, unknown = build_parser().parse_known_args(cmd.split()[1:])
            assert not unknown, cmd
    assert main(["experiment", str(path), "--out", str(out), "--shard", "1/2", "--no-progress"]) == 0
    assert "transfer evaluation skipped" in capsys.readouterr().err
    assert (out / "runs" / ids[1] / "last.pt").is_file() and not (out / "runs" / ids[0]).exists()
    assert main(["experiment", str(path), "--out", str(out), "--shard", "0/2", "--no-progress"]) == 0
    assert list((out / "runs" / ids[0] / "eval").glob("transfer-*.json"))
    for bad in ("2/2", "x", "1/0"):
        assert main(["experiment", str(path), "--out", str(out), "--shard", bad]) == 2


def _grid(tmp_path: Path, **evaluation) -> Path:
    """A 2-run grid (pspnet and deeplabv3 SAT, seed 0, 1 iteration) of tiny_experiment."""
    spec = yaml.safe_load(tiny_experiment(tmp_path).read_text())
    spec.update(models={"pspnet": {"model": {"arch": "pspnet"}}, "deeplabv3": {"model": {"arch": "deeplabv3"}}}, methods=["sat"], seeds=[0])
    spec["set"]["train"]["iters"] = 1
    spec["evaluation"].update({"strong": [], "steps": [1], "qualitative": 0, **evaluation})
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.parametrize("mode", [[], ["--list"], ["--shard", "0/2"]], ids=["grid", "list", "shard"])
def test_unknown_strong_attack_is_refused_before_anything_runs(mode, tmp_path, capsys):
    """Every mode checks evaluation.strong against the attack registry: no shard trains first."""
    path = _grid(tmp_path, strong=["pgd", "no-such-attack"])
    out = tmp_path / "out"
    capsys.readouterr()
    assert main(["experiment", str(path), "--out", str(out), "--no-progress", *mode]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "'evaluation.strong' in" in err and str(path) in err and "'no-such-attack'" in err
    assert not out.exists()


@pytest.mark.parametrize("mode", [[], ["--list"], ["--shard", "0/2"]], ids=["grid", "list", "shard"])
def test_certify_of_an_unknown_run_is_refused_before_anything_runs(mode, tmp_path, capsys):
    path = _grid(tmp_path, certify={"runs": ["pspnet/ddcat"], "n": 10})
    out = tmp_path / "out"
    capsys.readouterr()
    assert main(["experiment", str(path), "--out", str(out), "--no-progress", *mode]) == 2
    err = capsys.readouterr().err
    assert "evaluation.certify.runs in" in err and "pspnet/ddcat" in err and not out.exists()


def test_invalid_run_config_names_file_and_run(tmp_path, capsys):
    spec = yaml.safe_load(_grid(tmp_path).read_text())
    spec["methods"] = {"sat-bad": {"train": {"method": "sat"}, "attack": {"steps": 0}}}
    spec["evaluation"]["transfer_from"] = None
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(spec))
    capsys.readouterr()
    assert main(["experiment", str(path), "--out", str(tmp_path / "out"), "--list"]) == 2
    err = capsys.readouterr().err
    assert "'attack.steps' is 0" in err and f"in {path} (run deeplabv3/sat-bad, seed 0)" in err, err  # safe_dump sorts: deeplabv3 first


def test_list_and_shard_include_the_certification(tmp_path, capsys):
    """A run evaluation.certify names gets a `ddcat certify` command in --list, and its shard
    certifies it (cached as the grid does); the command computes the same certificate."""

    from ddcat.cli import build_parser

    path = _grid(tmp_path, certify={"runs": ["deeplabv3/sat"], "n0": 4, "n": 20, "tau": [0.6], "alpha": 0.1, "batch_size": 10, "max_images": 1})
    out = tmp_path / "out"
    capsys.readouterr()
    assert main(["experiment", str(path), "--out", str(out), "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    certify = [c for line in lines for c in line.split("\t")[1].split(" && ") if c.startswith("ddcat certify")]
    runs = load_experiment(path)["runs"]
    target = next(r for r in runs if r.label == "deeplabv3")
    folder = out / "runs" / target.id
    assert certify == [f"ddcat certify --checkpoint {folder / 'last.pt'} --sigma 0.25 --n0 4 --num-samples 20 --alpha 0.1 --tau 0.6 "
                       f"--correction holm --batch-size 10 --seed 0 --max-images 1 --out {folder / 'certify'}"]
    args = build_parser().parse_args(certify[0].split()[1:])
    assert (args.n, args.n0, args.tau, args.batch_size) == (20, 4, ["0.6"], 10)
    index = runs.index(target)
    assert main(["experiment", str(path), "--out", str(out), "--shard", f"{index}/2", "--no-progress"]) == 0
    cached = list((folder / "eval").glob("certify-*.json"))
    assert len(cached) == 1
    records = json.loads(cached[0].read_text())["records"]
    assert main(certify[0].split()[1:] + ["--no-progress"]) == 0  # the listed command: the same numbers
    summary = json.loads((folder / "certify" / "certify.json").read_text())
    keys = ("certified_pixel_accuracy", "abstain_rate", "radius")
    assert [{k: r[k] for k in keys} for r in records] == [{k: r[k] for k in keys} for r in summary["records"]]
    other = next(r for r in runs if r is not target)
    assert not list((out / "runs" / other.id).glob("eval/certify-*.json"))


@pytest.mark.parametrize("listed", ["train_aug", "val"])
def test_corrupt_label_in_a_grid_creates_no_run_folder(listed, tmp_path, capsys):
    """The data check runs over the train and val lists of every distinct data config before the
    first write: a grid (and a shard) over a list with one label cut short (its IEND chunk gone,
    which the loader itself does not notice: without the check the grid would run to the end) is one
    line naming it and leaves no output folder."""
    from conftest import voc_sets
    from ddcat.data import make_voc_fixture

    root = make_voc_fixture(tmp_path / "VOC", n_train=4, n_val=2, size=32, seed=0)
    label = root / (root / "list" / f"{listed}.txt").read_text().splitlines()[-1].split()[1]
    label.write_bytes(label.read_bytes()[:-12])
    sets = dict(pair.split("=", 1) for pair in voc_sets(root)[1::2])
    spec = yaml.safe_load(_grid(tmp_path).read_text())
    spec.pop("base")
    spec["set"] = {}
    for key, value in sets.items():
        section, name = key.split(".")
        spec["set"].setdefault(section, {})[name] = yaml.safe_load(value)
    path = tmp_path / "voc-grid.yaml"
    path.write_text(yaml.safe_dump(spec))
    for mode in ([], ["--shard", "0/2"]):
        out = tmp_path / f"out{len(mode)}"
        capsys.readouterr()
        assert main(["experiment", str(path), "--out", str(out), "--no-progress", *mode]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and str(label) in err and "the file is truncated (no IEND chunk)" in err, err
        assert not out.exists()
