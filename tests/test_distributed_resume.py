"""DDP on CPU (gloo) against one process, and resume after a hard kill."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ddcat.checkpoint import load_checkpoint

TINY = [
    "--set", "model.width=8",
    "--set", "data.image_size=32",
    "--set", "train.crop_size=32",
    "--set", "data.num_train=32",
    "--set", "data.num_val=8",
    "--set", "data.num_classes=4",
    "--set", "train.batch_size=8",
    "--no-progress",
]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def ddcat(*args, nproc=1, check=True):
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m", "ddcat", *args]
    else:
        cmd = [sys.executable, "-m", "ddcat", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return proc


def weights(path):
    return load_checkpoint(path)["model"]


def max_diff(a, b):
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].is_floating_point())


@pytest.mark.slow
@pytest.mark.parametrize("method", ["sat", "ddcat"])
def test_two_gloo_processes_equal_one_process_with_the_same_shards(tmp_path, method):
    """2 ranks x 4 images == 1 process x 2 micro-batches of 4 (same global batch of 8).

    On CPU each rank normalises with its own shard's BatchNorm statistics (SyncBatchNorm needs a
    GPU), so the single-process reference splits the batch into the same two shards
    (train.accum_steps=2). What remains is the order of float additions in gloo's all-reduce
    against sequential accumulation: tolerance 1e-5 absolute on weights of size ~0.1-1.
    """
    args = ["train", "--method", method, *TINY, "--set", "train.iters=3"]
    ddcat(*args, "--out", str(tmp_path / "ddp"), nproc=2)
    ddcat(*args, "--set", "train.accum_steps=2", "--out", str(tmp_path / "single"))
    a, b = weights(tmp_path / "ddp" / "last.pt"), weights(tmp_path / "single" / "last.pt")
    assert a.keys() == b.keys()
    assert max_diff(a, b) < 1e-5
    # and the weights did move: the comparison is not between two untouched models
    ddcat("train", "--method", method, *TINY, "--set", "train.iters=1", "--out", str(tmp_path / "one"))
    assert max_diff(a, weights(tmp_path / "one" / "last.pt")) > 1e-4
    # rank 0 alone wrote the outputs
    log = (tmp_path / "ddp" / "train_log.jsonl").read_text().splitlines()
    assert [json.loads(line)["iter"] for line in log] == [1, 2, 3]
    assert json.loads((tmp_path / "ddp" / "run.json").read_text())["world_size"] == 2


@pytest.mark.slow
def test_sharded_evaluation_reduces_confusion_matrices_exactly(tmp_path):
    ddcat("train", "--method", "clean", *TINY, "--set", "train.iters=2", "--out", str(tmp_path / "run"))
    ckpt = str(tmp_path / "run" / "last.pt")
    ev = ["eval", "--checkpoint", ckpt, "--attack", "bim", "--steps", "1,2", "--set", "data.num_val=7", "--no-progress"]
    ddcat(*ev, "--out", str(tmp_path / "e2"), nproc=2)
    ddcat(*ev, "--out", str(tmp_path / "e1"))
    r2 = json.loads((tmp_path / "e2" / "metrics.json").read_text())["records"]
    r1 = json.loads((tmp_path / "e1" / "metrics.json").read_text())["records"]
    assert [r["num_images"] for r in r2] == [7, 7, 7]
    for x, y in zip(r1, r2):
        assert x["num_pixels"] == y["num_pixels"]
        assert x["mIoU"] == pytest.approx(y["mIoU"], abs=1e-12)
        assert x["aAcc"] == pytest.approx(y["aAcc"], abs=1e-12)


def _wait_for_log(path: Path, lines: int, proc, timeout=300):
    end = time.time() + timeout
    while time.time() < end:
        if path.exists() and len(path.read_text().splitlines()) >= lines:
            return
        if proc.poll() is not None:
            raise AssertionError("training ended before it could be killed")
        time.sleep(0.01)
    raise AssertionError("training too slow")


@pytest.mark.slow
def test_resume_after_sigkill_ends_with_the_same_weights(tmp_path):
    args = ["train", "--method", "sat", *TINY, "--set", "train.iters=12", "--set", "train.save_every=3", "--set", "attack.steps=1"]
    ddcat(*args, "--out", str(tmp_path / "full"))

    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "ddcat", *args, "--out", str(out)], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for_log(out / "train_log.jsonl", 5, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = load_checkpoint(out / "last.pt")["iteration"]
    assert 3 <= saved < 12, "the kill must land between the first save and the end"
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))

    ddcat(*args, "--out", str(out), "--resume")
    assert max_diff(weights(tmp_path / "full" / "last.pt"), weights(out / "last.pt")) == 0.0
    iters = [json.loads(line)["iter"] for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert iters == list(range(1, 13))  # the lost iterations are logged once, after the resume


@pytest.mark.slow
def test_truncated_last_checkpoint_is_reported_and_the_previous_one_still_works(tmp_path):
    out = tmp_path / "run"
    args = ["train", "--method", "clean", *TINY, "--set", "train.iters=4", "--set", "train.save_every=2"]
    ddcat(*args, "--set", "train.iters=4", "--out", str(out))
    assert (out / "last.prev.pt").exists()
    data = (out / "last.pt").read_bytes()
    (out / "last.pt").write_bytes(data[: len(data) // 2])
    proc = ddcat(*args, "--set", "train.iters=6", "--out", str(out), "--resume", check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "last.pt" in lines[0] and "last.prev.pt" in lines[0] and "Traceback" not in proc.stderr
    ddcat(*args, "--set", "train.iters=6", "--out", str(out), "--resume", str(out / "last.prev.pt"))
    assert load_checkpoint(out / "last.pt")["iteration"] == 6
