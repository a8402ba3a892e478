"""The command line: user mistakes are one line on stderr, exit code 2, and no partial output;
plus the clean train -> eval -> resume path end to end."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ddcat.cli import main

from conftest import NUM_CLASSES, train_args, voc_sets

SRC = Path(__file__).resolve().parents[1] / "src"


def run_cli(argv, capsys) -> tuple[int, str]:
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    return rc, capsys.readouterr().err


def assert_user_error(rc: int, err: str, *fragments, out: Path | None = None) -> None:
    assert rc == 2, f"exit code {rc}, stderr: {err!r}"
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {err!r}"
    assert lines[0].startswith("ddcat: error: ")
    assert "Traceback" not in err
    for fragment in fragments:
        assert str(fragment) in lines[0], f"{fragment!r} not in {lines[0]!r}"
    if out is not None:
        assert not out.exists(), f"{out} was left behind"


# ----------------------------------------------------------------------------- config mistakes


def test_missing_config_file(tmp_path, capsys):
    out, cfg = tmp_path / "out", tmp_path / "missing.yaml"
    rc, err = run_cli(["train", "--config", cfg, "--out", out], capsys)
    assert_user_error(rc, err, "config file not found", cfg, out=out)


def test_unknown_config_key(tmp_path, capsys):
    out = tmp_path / "out"
    rc, err = run_cli(train_args(out, extra=["--set", "train.learning_rate=0.1"]), capsys)
    assert_user_error(rc, err, "unknown config key 'train.learning_rate'", "valid keys", "train.lr", out=out)


def test_unknown_key_in_config_file(tmp_path, capsys):
    out, cfg = tmp_path / "out", tmp_path / "run.yaml"
    cfg.write_text("model:\n  depth: 50\n")
    rc, err = run_cli(["train", "--config", cfg, "--out", out], capsys)
    assert_user_error(rc, err, "'model.depth'", cfg, out=out)


def test_wrong_type(tmp_path, capsys):
    out = tmp_path / "out"
    rc, err = run_cli(train_args(out, extra=["--set", "train.iters=many"]), capsys)
    assert_user_error(rc, err, "'train.iters'", "'many'", "integer", out=out)


def test_invalid_method(tmp_path, capsys):
    out = tmp_path / "out"
    rc, err = run_cli(train_args(out, method="trades"), capsys)
    assert_user_error(rc, err, "'train.method'", "'trades'", out=out)


# ----------------------------------------------------------------------------- checkpoint mistakes


def test_missing_checkpoint(tmp_path, capsys):
    out, ck = tmp_path / "out", tmp_path / "nothing.pt"
    rc, err = run_cli(["eval", "--no-progress", "--checkpoint", ck, "--out", out], capsys)
    assert_user_error(rc, err, "checkpoint not found", ck, out=out)


def test_corrupt_checkpoint(tmp_path, capsys, clean_run):
    out = tmp_path / "out"
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x80\x02not a checkpoint\x00" * 16)
    rc, err = run_cli(["eval", "--no-progress", "--checkpoint", garbage, "--out", out], capsys)
    assert_user_error(rc, err, garbage, "corrupt", out=out)
    truncated = tmp_path / "truncated.pt"
    data = (clean_run / "last.pt").read_bytes()
    truncated.write_bytes(data[: len(data) * 2 // 3])
    rc, err = run_cli(["eval", "--no-progress", "--checkpoint", truncated, "--out", out], capsys)
    assert_user_error(rc, err, truncated, out=out)


def test_transfer_from_other_class_count(tmp_path, capsys, runs):
    target = runs.get("clean", NUM_CLASSES) / "last.pt"
    other = runs.get("clean", 3) / "last.pt"
    out = tmp_path / "out"
    argv = ["eval", "--no-progress", "--checkpoint", target, "--attack", "bim", "--steps", "1", "--transfer-from", other, "--out", out]
    rc, err = run_cli(argv, capsys)
    assert_user_error(rc, err, other, "num_classes=3", f"expected {NUM_CLASSES}", out=out)


def test_resume_with_another_model(tmp_path, capsys, clean_run):
    out = tmp_path / "run"
    shutil.copytree(clean_run, out)
    before = (out / "last.pt").read_bytes()
    rc, err = run_cli(train_args(out, extra=["--resume", "--set", "model.arch=deeplabv3"]), capsys)
    assert_user_error(rc, err, out / "last.pt", "another model")
    assert (out / "last.pt").read_bytes() == before  # the existing run is untouched


def test_eval_num_classes_override_disagreeing_with_checkpoint(tmp_path, capsys, clean_run):
    out = tmp_path / "out"
    argv = ["eval", "--no-progress", "--checkpoint", clean_run / "last.pt", "--set", "data.num_classes=5", "--out", out]
    rc, err = run_cli(argv, capsys)
    assert_user_error(rc, err, "num_classes", out=out)


# ----------------------------------------------------------------------------- dataset mistakes


@pytest.fixture
def voc_copy(voc_run, tmp_path) -> Path:
    """A private copy of the session's tiny VOC tree, to damage."""
    root, _ = voc_run
    return Path(shutil.copytree(root, tmp_path / "VOC"))


def first_pair(root: Path, list_name: str) -> tuple[Path, Path]:
    image, label = (root / "list" / list_name).read_text().splitlines()[0].split()
    return root / image, root / label


def eval_voc(voc_run, data_root: Path, out: Path) -> list:
    _, run = voc_run
    return ["eval", "--no-progress", "--checkpoint", run / "last.pt", "--set", f"data.root={data_root}", "--out", out]


def train_voc(data_root: Path, out: Path) -> list:
    return ["train", "--no-progress", "--out", out, *voc_sets(data_root)]


def test_voc_training_on_the_fixture_works(voc_run):
    root, run = voc_run
    assert (run / "last.pt").is_file()
    assert json.loads((run / "train_log.jsonl").read_text().splitlines()[-1])["iter"] == 1


def test_voc_missing_root(tmp_path, capsys, voc_run):
    out = tmp_path / "out"
    argv = ["train", "--no-progress", "--out", out, *voc_sets(Path("/nonexistent"))]
    rc, err = run_cli(argv, capsys)
    assert_user_error(rc, err, "data root not found: /nonexistent", out=out)
    rc, err = run_cli(eval_voc(voc_run, Path("/nonexistent"), out), capsys)
    assert_user_error(rc, err, "data root not found: /nonexistent", out=out)


def test_voc_wrong_class_count(tmp_path, capsys, voc_copy):
    out = tmp_path / "out"
    argv = ["train", "--no-progress", "--out", out, *voc_sets(voc_copy), "--set", "data.num_classes=5"]
    rc, err = run_cli(argv, capsys)
    assert_user_error(rc, err, "'data.num_classes' is 5", "voc has 21", out=out)


def test_empty_list_file(tmp_path, capsys, voc_run, voc_copy):
    out = tmp_path / "out"
    (voc_copy / "list" / "train_aug.txt").write_text("\n\n")
    rc, err = run_cli(train_voc(voc_copy, out), capsys)
    assert_user_error(rc, err, "list file is empty", voc_copy / "list" / "train_aug.txt", out=out)
    (voc_copy / "list" / "val.txt").write_text("")
    rc, err = run_cli(eval_voc(voc_run, voc_copy, out), capsys)
    assert_user_error(rc, err, "list file is empty", voc_copy / "list" / "val.txt", out=out)


def test_list_names_a_missing_file(tmp_path, capsys, voc_run, voc_copy):
    out = tmp_path / "out"
    image, _ = first_pair(voc_copy, "val.txt")
    image.unlink()
    rc, err = run_cli(eval_voc(voc_run, voc_copy, out), capsys)
    assert_user_error(rc, err, "line 1", "image file not found", image, out=out)


def test_label_values_out_of_range(tmp_path, capsys, voc_run, voc_copy):
    out = tmp_path / "out"
    for list_name in ("train_aug.txt", "val.txt"):
        _, label = first_pair(voc_copy, list_name)
        array = np.array(Image.open(label))
        array[0, :5] = 30
        array[1, :5] = 77
        Image.fromarray(array).save(label)
    _, train_label = first_pair(voc_copy, "train_aug.txt")
    rc, err = run_cli(train_voc(voc_copy, out), capsys)
    assert_user_error(rc, err, train_label, "30, 77", "0..20", out=out)
    _, val_label = first_pair(voc_copy, "val.txt")
    rc, err = run_cli(eval_voc(voc_run, voc_copy, out), capsys)
    assert_user_error(rc, err, val_label, "30, 77", out=out)


def test_image_label_size_mismatch(tmp_path, capsys, voc_run, voc_copy):
    out = tmp_path / "out"
    image, label = first_pair(voc_copy, "val.txt")
    Image.open(label).resize((40, 24), Image.NEAREST).save(label)
    rc, err = run_cli(eval_voc(voc_run, voc_copy, out), capsys)
    assert_user_error(rc, err, image, label, "32x32", "40x24", out=out)
    image, label = first_pair(voc_copy, "train_aug.txt")
    Image.open(image).resize((20, 32)).save(image)
    rc, err = run_cli(train_voc(voc_copy, out), capsys)
    assert_user_error(rc, err, image, label, "20x32", out=out)


def test_corrupt_image(tmp_path, capsys, voc_run, voc_copy):
    out = tmp_path / "out"
    for list_name in ("train_aug.txt", "val.txt"):
        image, _ = first_pair(voc_copy, list_name)
        image.write_bytes(image.read_bytes()[:40])  # a truncated JPEG
    image, _ = first_pair(voc_copy, "train_aug.txt")
    rc, err = run_cli(train_voc(voc_copy, out), capsys)
    assert_user_error(rc, err, "cannot read image", image, out=out)
    image, _ = first_pair(voc_copy, "val.txt")
    rc, err = run_cli(eval_voc(voc_run, voc_copy, out), capsys)
    assert_user_error(rc, err, "cannot read image", image, out=out)


def test_subprocess_exit_code_and_single_stderr_line(tmp_path, voc_copy):
    """``python -m ddcat``: a label error found mid-training is exit 2 and one stderr line."""
    _, label = first_pair(voc_copy, "train_aug.txt")
    array = np.array(Image.open(label))
    array[3, 3] = 42
    Image.fromarray(array).save(label)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "ddcat", *map(str, train_voc(voc_copy, out))],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("ddcat: error: ") and str(label) in lines[0] and "42" in lines[0]
    assert "Traceback" not in proc.stderr
    assert not out.exists()


# ----------------------------------------------------------------------------- end to end


def test_train_eval_resume_end_to_end(tmp_path, capsys, clean_run, ddcat_run):
    out = tmp_path / "eval"
    argv = ["eval", "--no-progress", "--checkpoint", clean_run / "last.pt", "--attack", "bim", "--steps", "1,2", "--out", out]
    rc, err = run_cli(argv, capsys)
    assert rc == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"mIoU", "mAcc", "aAcc", "per_class_iou", "num_images", "mIoU_all", "records"} <= set(metrics)
    assert metrics["num_images"] == 4  # data.num_val
    assert len(metrics["per_class_iou"]) == NUM_CLASSES
    for key in ("mIoU", "mAcc", "aAcc"):
        assert 0.0 <= metrics[key] <= 1.0
    records = metrics["records"]
    assert [(r["attack"], r["steps"]) for r in records] == [("clean", 0), ("bim", 1), ("bim", 2)]
    assert records[0]["mIoU"] == metrics["mIoU"] and records[0]["num_images"] == 4
    assert (out / "table.txt").is_file()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]

    # transfer from a substitute of the same class count works and reports a summary
    out2 = tmp_path / "transfer"
    argv = ["eval", "--no-progress", "--checkpoint", clean_run / "last.pt", "--attack", "bim", "--steps", "1",
            "--transfer-from", ddcat_run / "last.pt", "--out", out2]  # fmt: skip
    rc, err = run_cli(argv, capsys)
    assert rc == 0, err
    transfer = json.loads((out2 / "metrics.json").read_text())
    assert transfer["transfer_summary"][0]["num_sources"] == 1
    assert transfer["records"][1]["source"] == str(ddcat_run / "last.pt")


def test_resume_of_a_finished_run_is_a_no_op(tmp_path, capsys, clean_run):
    run = tmp_path / "run"
    shutil.copytree(clean_run, run)
    checkpoint = (run / "last.pt").read_bytes()
    log = (run / "train_log.jsonl").read_text()
    rc, err = run_cli(train_args(run, extra=["--resume"]), capsys)
    assert rc == 0, err
    assert (run / "last.pt").read_bytes() == checkpoint
    assert (run / "train_log.jsonl").read_text() == log
    assert len(log.splitlines()) == 2


def test_out_with_a_run_needs_resume(tmp_path, capsys, clean_run):
    run = tmp_path / "run"
    shutil.copytree(clean_run, run)
    before = sorted(p.name for p in run.iterdir())
    checkpoint = (run / "last.pt").read_bytes()
    rc, err = run_cli(train_args(run), capsys)
    assert_user_error(rc, err, run, "--resume")
    assert sorted(p.name for p in run.iterdir()) == before  # nothing removed or added
    assert (run / "last.pt").read_bytes() == checkpoint


def test_failed_run_into_an_existing_folder_keeps_it(tmp_path, capsys, voc_copy):
    """The no-partial-output guard removes only folders it created (the error comes mid-training)."""
    _, label = first_pair(voc_copy, "train_aug.txt")
    Image.open(label).resize((16, 16), Image.NEAREST).save(label)
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    rc, err = run_cli(train_voc(voc_copy, out), capsys)
    assert_user_error(rc, err, label, "16x16")
    assert (out / "notes.txt").read_text() == "keep me"
    assert not (out / "last.pt").exists()
