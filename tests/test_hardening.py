"""Hostile and careless input, interruption, concurrency and full disks (issue 11).

One table row per case: the command (through the real CLI entry point ``ddcat.cli.main``), the
exit code, a phrase the one-line message must contain, and what must (not) exist afterwards. The
cases that need a real process (signals, a second process holding the lock, a file-size limit)
run ``python -m ddcat`` in a subprocess.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import torch

from ddcat.cli import main
from ddcat.config import load_config
from ddcat.errors import MAX_SHOWN
from ddcat.outdir import OutputFolder

from conftest import NUM_CLASSES, train_args

SRC = Path(__file__).resolve().parents[1] / "src"
ENV = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}


def run_cli(argv, capsys) -> tuple[int, str]:
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    return rc, capsys.readouterr().err


def one_line_error(rc: int, err: str, code: int = 2) -> str:
    assert rc == code, f"exit code {rc}, stderr: {err!r}"
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {err!r}"
    assert "Traceback" not in err
    return lines[0]


def mutated_checkpoint(src: Path, dst: Path, change: Callable[[dict], None]) -> Path:
    ckpt = torch.load(src, map_location="cpu", weights_only=True)
    change(ckpt)
    torch.save(ckpt, dst)
    return dst


def nested_shared_list(depth: int = 40, fan: int = 10) -> list:
    """A list whose naive repr has fan**depth items (each level repeats the same object)."""
    node: list = [0]
    for _ in range(depth):
        node = [node] * fan
    return node


# ----------------------------------------------------------------------------- the table


@dataclass
class Case:
    """``setup(tmp, run) -> argv``; ``run`` is a finished tiny training run folder."""

    id: str
    setup: Callable[[Path, Path], list]
    phrase: str
    code: int = 2
    absent: tuple[str, ...] = ("out",)  # paths (relative to tmp) that must not exist afterwards
    present: tuple[str, ...] = ()  # paths that must still exist
    max_len: int = 600  # the message is bounded whatever the input


def train_set(*pairs: str, method: str = "clean") -> Callable[[Path, Path], list]:
    return lambda tmp, run: train_args(tmp / "out", method, extra=[x for p in pairs for x in ("--set", p)])


def config_file(content: bytes) -> Callable[[Path, Path], list]:
    def setup(tmp: Path, run: Path) -> list:
        (tmp / "cfg.yaml").write_bytes(content)
        return ["train", "--no-progress", "--config", tmp / "cfg.yaml", "--out", tmp / "out"]

    return setup


def eval_of(change: Callable[[dict], None] | None = None, extra: tuple = ()) -> Callable[[Path, Path], list]:
    def setup(tmp: Path, run: Path) -> list:
        ckpt = run / "last.pt"
        if change is not None:
            ckpt = mutated_checkpoint(ckpt, tmp / "bad.pt", change)
        return ["eval", "--no-progress", "--checkpoint", ckpt, "--out", tmp / "out", *extra]

    return setup


def resume_of(change: Callable[[dict], None] | None = None, extra: tuple = (), exported: bool = False) -> Callable[[Path, Path], list]:
    def setup(tmp: Path, run: Path) -> list:
        out = tmp / "run"
        shutil.copytree(run, out)
        if exported:
            assert main(["export", str(run / "last.pt"), str(tmp / "exported.pt")]) == 0
            ckpt = tmp / "exported.pt"
        else:
            ckpt = mutated_checkpoint(run / "last.pt", tmp / "bad.pt", change) if change else run / "last.pt"
        return train_args(out, extra=["--resume", str(ckpt), *extra])

    return setup


def output_at(command: str, make: str) -> Callable[[Path, Path], list]:
    """``command`` with its output at a path prepared as ``make``: file | below-file | proc."""

    def setup(tmp: Path, run: Path) -> list:
        (tmp / "afile").write_text("x")
        target = {"file": tmp / "afile", "below-file": tmp / "afile" / "sub", "proc": Path("/proc/ddcat-test/out")}[make]
        if command == "train":
            return train_args(target)
        if command == "eval":
            return ["eval", "--no-progress", "--checkpoint", run / "last.pt", "--out", target]
        if command == "export-dir":
            (tmp / "adir").mkdir()
            return ["export", run / "last.pt", tmp / "adir"]
        if command == "export-below-file":
            return ["export", run / "last.pt", tmp / "afile" / "model.pt"]
        if command == "plot-train":
            return ["plot-train", run, "--out", target]
        if command == "demo":
            return ["demo", "--quick", "--no-progress", "--out", target]
        if command == "experiment":
            return ["experiment", "configs/ablation.yaml", "--no-progress", "--out", target]
        raise AssertionError(command)

    return setup


def _set(path: str, value) -> Callable[[dict], None]:
    def change(ckpt: dict) -> None:
        node = ckpt
        *parents, last = path.split(".")
        for p in parents:
            node = node[p]
        node[last] = value

    return change


def _drop(path: str) -> Callable[[dict], None]:
    def change(ckpt: dict) -> None:
        node = ckpt
        *parents, last = path.split(".")
        for p in parents:
            node = node[p]
        del node[last]

    return change


def _rng(field: str, spoil: Callable) -> Callable[[dict], None]:
    """Replace ``rng[0][field]`` of a checkpoint by ``spoil(the saved value)``."""

    def change(ckpt: dict) -> None:
        ckpt["rng"][0][field] = spoil(ckpt["rng"][0][field])

    return change


def _wrong_shape(ckpt: dict) -> None:
    key = "heads.main.classifier.weight" if "heads.main.classifier.weight" in ckpt["model"] else next(iter(ckpt["model"]))
    ckpt["model"][key] = torch.zeros(3, 3)


CASES = [
    # config values
    Case("lr-nan", train_set("train.lr=.nan"), "'train.lr' (--set) must be a finite number"),
    Case("lr-inf", train_set("train.lr=.inf"), "'train.lr' (--set) must be a finite number"),
    Case("seed-negative", train_set("seed=-1"), "'seed'"),
    Case("workers-negative", train_set("data.workers=-1"), "'data.workers'"),
    Case("width-zero", train_set("model.width=0"), "'model.width'"),
    Case("width-huge", train_set("model.width=100000"), "'model.width' (--set) must lie in [1, 1024]"),
    Case("dropout-above-1", train_set("model.dropout=1.5"), "'model.dropout'"),
    Case("head-channels-negative", train_set("model.head_channels=-4"), "'model.head_channels'"),
    Case("eval-crop-negative", train_set("eval.crop_size=-5"), "'eval.crop_size'"),
    Case("eval-batch-zero", train_set("eval.batch_size=0"), "'eval.batch_size'"),
    Case("attack-steps-zero-for-sat", train_set("attack.steps=0", method="sat"), "'attack.steps' is 0 for --method sat"),
    Case("max-images-negative", eval_of(extra=("--set", "eval.max_images=-1")), "'eval.max_images'"),
    Case("steps-huge", eval_of(extra=("--attack", "bim", "--steps", "1-99999999999")), "--steps"),
    # config files
    Case("config-not-utf8", config_file(b"train:\n  lr: \xff\xfe\n"), "is not UTF-8"),
    Case("config-duplicate-key", config_file(b"train:\n  lr: 0.1\n  lr: 0.2\n"), "duplicate key 'lr'"),
    Case("config-not-a-mapping", config_file(b"- 1\n- 2\n"), "must hold a mapping"),
    Case(
        "config-alias-bomb",
        config_file(  # the naive repr of seed has 9**8 items
            b"seed:\n  - &a [1,1,1,1,1,1,1,1,1]\n  - &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n  - &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
            b"  - &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n  - &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n  - &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n"
            b"  - &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n  - [*g,*g,*g,*g,*g,*g,*g,*g,*g]\n"
        ),
        "'seed'",
        max_len=300,
    ),
    # output locations
    Case("train-out-is-file", output_at("train", "file"), "exists and is not a folder", absent=()),
    Case("train-out-below-file", output_at("train", "below-file"), "which is a file", absent=()),
    Case("train-out-in-proc", output_at("train", "proc"), "/proc/ddcat-test", absent=()),
    Case("eval-out-is-file", output_at("eval", "file"), "exists and is not a folder", absent=()),
    Case("eval-out-below-file", output_at("eval", "below-file"), "which is a file", absent=()),
    Case("export-onto-folder", output_at("export-dir", "file"), "is a folder", absent=()),
    Case("export-below-file", output_at("export-below-file", "file"), "which is a file", absent=()),
    Case("plot-train-out-is-file", output_at("plot-train", "file"), "exists and is not a folder", absent=()),
    Case("demo-out-is-file", output_at("demo", "file"), "exists and is not a folder", absent=()),
    Case("experiment-out-below-file", output_at("experiment", "below-file"), "which is a file", absent=()),
    # checkpoints: missing or mistyped fields, crafted specs
    Case("spec-options-missing", eval_of(_drop("model_spec.options")), "'model_spec' lacks options"),
    Case("spec-is-a-string", eval_of(_set("model_spec", "pspnet")), "'model_spec' must be a mapping"),
    Case("spec-num-classes-string", eval_of(_set("model_spec.num_classes", "4")), "'data.num_classes'"),
    Case("model-is-a-list", eval_of(_set("model", [1, 2])), "'model' must be a state dict"),
    Case("spec-width-huge", eval_of(_set("model_spec.options.width", 100000)), "'model.width' in checkpoint"),
    Case("state-dict-shape", eval_of(_wrong_shape), "has shape (3, 3), the model needs"),
    Case("config-seed-bomb", eval_of(_set("config.seed", nested_shared_list())), "'seed'", max_len=400),
    # --resume
    Case("resume-exported-model", resume_of(exported=True), "is an exported model (ddcat export)", absent=(), present=("run/last.pt",)),
    Case("resume-no-rng", resume_of(_drop("rng")), "'rng'", absent=(), present=("run/last.pt",)),
    Case("resume-iteration-text", resume_of(_set("iteration", "abc")), "'iteration' must be an integer >= 0, got 'abc'", absent=()),
    Case("resume-iteration-negative", resume_of(_set("iteration", -5)), "got -5", absent=()),
    # --resume with a crafted random-number state (issue 20 section 3): the shapes, then the contents
    Case("resume-rng-three-small-tensors", resume_of(_set("rng", [torch.zeros(3, dtype=torch.uint8)] * 3)), "'rng[0]' must be a mapping", absent=(), present=("run/last.pt",)),
    Case("resume-rng-cpu-zeros", resume_of(_rng("torch", lambda s: torch.zeros_like(s))), "'rng[0].torch' is refused by the generator", absent=(), present=("run/last.pt",)),
    Case("resume-rng-cpu-short", resume_of(_rng("torch", lambda s: s[:100])), "'rng[0].torch' must be a uint8 tensor of", absent=(), present=("run/last.pt",)),
    Case("resume-rng-numpy-words", resume_of(_rng("numpy", lambda s: [s[0], s[1][:10], *s[2:]])), "'rng[0].numpy' must hold 624 int64 words", absent=(), present=("run/last.pt",)),
    Case("resume-rng-numpy-name", resume_of(_rng("numpy", lambda s: ["PCG64", *s[1:]])), "'rng[0].numpy' names generator 'PCG64'", absent=(), present=("run/last.pt",)),
    Case("resume-rng-python-index", resume_of(_rng("python", lambda s: (s[0], (*s[1][:-1], 625), s[2]))), "'rng[0].python' index must lie in", absent=(), present=("run/last.pt",)),
    Case("resume-rng-python-short", resume_of(_rng("python", lambda s: (3, (1, 2, 3), None))), "'rng[0].python' must hold 625 integers", absent=(), present=("run/last.pt",)),
    Case("resume-past-iters", resume_of(extra=("--set", "train.iters=1")), "past train.iters=1", absent=(), present=("run/last.pt",)),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_user_mistake_is_one_line(case: Case, tmp_path, capsys, clean_run, monkeypatch):
    monkeypatch.chdir(Path(__file__).resolve().parents[1])  # experiment rows name configs/ relative to the repo
    argv = case.setup(tmp_path, clean_run)
    before = {p: p.read_bytes() for p in (tmp_path / "run").glob("*") if p.is_file()} if (tmp_path / "run").exists() else {}
    rc, err = run_cli(argv, capsys)
    line = one_line_error(rc, err, case.code)
    assert line.startswith("ddcat: error: ")
    assert case.phrase in line, f"{case.phrase!r} not in {line!r}"
    own = line.replace(str(tmp_path), "TMP")  # the bound is on the message, not on the test's tmp folder (longer under xdist)
    assert len(own) <= case.max_len, f"message of {len(own)} characters: {own[:200]!r}"
    for rel in case.absent:
        assert not (tmp_path / rel).exists(), f"{rel} was left behind"
    for rel in case.present:
        assert (tmp_path / rel).exists(), f"{rel} is gone"
    for path, data in before.items():  # a refused resume writes nothing (config.yaml, run.json, log)
        assert path.read_bytes() == data, f"{path.name} was changed by a refused resume"


# ----------------------------------------------------------------------------- rows that need more


def test_empty_config_file_means_defaults(tmp_path):
    (tmp_path / "empty.yaml").write_text("")
    assert load_config(tmp_path / "empty.yaml") == load_config(None)


def test_config_that_is_a_directory(tmp_path, capsys):
    rc, err = run_cli(["train", "--config", tmp_path, "--out", tmp_path / "out"], capsys)
    assert "is a directory, not a file" in one_line_error(rc, err)


def test_refused_pickle_says_why_and_warns_nothing(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "ddcat", "model": {}, "model_spec": {}, "x": Path("/")}, path)
    proc = subprocess.run([sys.executable, "-m", "ddcat", "eval", "--checkpoint", str(path), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, env=ENV, timeout=120)  # fmt: skip
    line = one_line_error(proc.returncode, proc.stderr)
    assert "contains Python objects that are not allowed" in line and "was not loaded" in line
    assert not (tmp_path / "o").exists()


def test_eval_refuses_to_overwrite_metrics(tmp_path, capsys, clean_run):
    out = tmp_path / "ev"
    argv = ["eval", "--no-progress", "--checkpoint", clean_run / "last.pt", "--out", out]
    assert run_cli(argv, capsys)[0] == 0
    first = (out / "metrics.json").read_bytes()
    rc, err = run_cli(argv, capsys)
    assert "--overwrite" in one_line_error(rc, err)
    assert (out / "metrics.json").read_bytes() == first
    rc, err = run_cli([*argv, "--overwrite"], capsys)
    assert rc == 0, err
    assert not (out / ".ddcat.lock").exists()


def test_export_refuses_to_overwrite(tmp_path, capsys, clean_run):
    dst = tmp_path / "model.pt"
    dst.write_bytes(b"precious")
    rc, err = run_cli(["export", clean_run / "last.pt", dst], capsys)
    assert "--overwrite" in one_line_error(rc, err)
    assert dst.read_bytes() == b"precious"
    rc, err = run_cli(["export", clean_run / "last.pt", dst, "--overwrite"], capsys)
    assert rc == 0, err and dst.read_bytes() != b"precious"


def test_train_refuses_a_folder_holding_only_the_previous_checkpoint(tmp_path, capsys, clean_run):
    run = tmp_path / "run"
    shutil.copytree(clean_run, run)
    os.replace(run / "last.pt", run / "last.prev.pt")
    prev = (run / "last.prev.pt").read_bytes()
    rc, err = run_cli(train_args(run), capsys)
    assert "last.prev.pt" in one_line_error(rc, err) and "--resume" in err
    assert (run / "last.prev.pt").read_bytes() == prev
    # --resume picks the previous checkpoint up
    rc, err = run_cli(train_args(run, extra=["--resume", "--set", "train.iters=3"]), capsys)
    assert rc == 0, err
    assert torch.load(run / "last.pt", weights_only=True)["iteration"] == 3


def test_torn_log_line_and_stale_temporaries_on_resume(tmp_path, capsys, clean_run):
    run = tmp_path / "run"
    shutil.copytree(clean_run, run)
    with open(run / "train_log.jsonl", "a") as fh:
        fh.write('{"iter": 3, "lo')  # a kill mid-write
    stale = run / ".last.pt.new.abc123.tmp"
    stale.write_bytes(b"half a checkpoint")
    rc, err = run_cli(train_args(run, extra=["--resume", "--set", "train.iters=3"]), capsys)
    assert rc == 0, err
    assert not stale.exists()
    iters = [json.loads(line)["iter"] for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert iters == [1, 2, 3]


def test_second_process_is_refused_by_the_lock(tmp_path):
    out = tmp_path / "shared"
    with OutputFolder(out):
        proc = subprocess.run([sys.executable, "-m", "ddcat", *map(str, train_args(out))],
                              capture_output=True, text=True, env=ENV, timeout=120)  # fmt: skip
        line = one_line_error(proc.returncode, proc.stderr)
        assert "is in use by another ddcat process" in line and f"pid {os.getpid()}" in line
        assert out.is_dir() and not (out / "config.yaml").exists()
    assert not (out / ".ddcat.lock").exists()


def test_full_disk_mid_run_keeps_the_first_checkpoint(tmp_path, capsys, monkeypatch):
    """The second checkpoint write fails with ENOSPC inside torch.save: one line, the first
    checkpoint, the config and the log stay, no temporary is left."""
    real = torch.save
    calls = {"n": 0}

    def failing_second(obj, f, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", failing_second)
    out = tmp_path / "run"
    rc, err = run_cli(train_args(out, extra=["--set", "train.iters=3", "--set", "train.save_every=1"]), capsys)
    assert "no space left on device" in one_line_error(rc, err) and "last.pt" in err
    monkeypatch.undo()
    assert (out / "last.pt").is_file() and torch.load(out / "last.pt", weights_only=True)["iteration"] == 1
    assert (out / "config.yaml").is_file() and (out / "train_log.jsonl").is_file()
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))


def test_any_write_failing_for_lack_of_space_is_one_line(tmp_path, capsys, monkeypatch):
    """An OSError outside the checkpoint writer (here: the training log) reaches the command line
    as one line naming the reason and the file, exit code 2."""
    from ddcat import trainlog

    def full(self, record):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "run" / "train_log.jsonl"))

    monkeypatch.setattr(trainlog.LogWriter, "write", full)
    rc, err = run_cli(train_args(tmp_path / "run"), capsys)
    line = one_line_error(rc, err)
    assert line == f"ddcat: error: no space left on device: {tmp_path / 'run' / 'train_log.jsonl'}"


def test_ctrl_c_during_a_checkpoint_write_waits_for_the_write():
    """SIGINT inside sigint_deferred() is held until the block ends, then raised."""
    from ddcat.checkpoint import sigint_deferred

    # Python's own handler, whatever the launching shell left (a background job starts with SIGINT ignored)
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        finished = False
        with pytest.raises(KeyboardInterrupt):
            with sigint_deferred():
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.05)  # the handler runs here; without the deferral KeyboardInterrupt is raised now
                finished = True
        assert finished
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler before the block, restored
    finally:
        signal.signal(signal.SIGINT, before)


def test_evaluation_over_zero_labelled_pixels_is_an_error(tmp_path, capsys, voc_run):
    """An all-ignore validation set used to report mIoU 0.0 with exit 0."""
    import numpy as np
    from PIL import Image

    root, run = voc_run
    copy = Path(shutil.copytree(root, tmp_path / "VOC"))
    for line in (copy / "list" / "val.txt").read_text().splitlines():
        label = copy / line.split()[1]
        Image.fromarray(np.full_like(np.array(Image.open(label)), 255)).save(label)
    argv = ["eval", "--no-progress", "--checkpoint", run / "last.pt", "--set", f"data.root={copy}", "--out", tmp_path / "o"]
    rc, err = run_cli(argv, capsys)
    assert "no labelled pixel" in one_line_error(rc, err)
    assert not (tmp_path / "o").exists()


def test_atomic_save_under_a_file_size_limit(tmp_path):
    """A real short write: RLIMIT_FSIZE makes write() fail with EFBIG once the file is 64 kB."""
    script = textwrap.dedent(f"""
        import resource, signal, sys, torch
        from ddcat.checkpoint import atomic_save
        from ddcat.errors import DdcatError
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 16, 1 << 16))
        try:
            atomic_save({{"w": torch.zeros(1 << 16)}}, {str(tmp_path / "big.pt")!r})
        except DdcatError as exc:
            print(exc)
            sys.exit(2)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=ENV, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "cannot write" in proc.stdout and "big.pt" in proc.stdout
    assert "file too large" in proc.stdout or "no space" in proc.stdout or "write failed" in proc.stdout
    assert list(tmp_path.iterdir()) == []  # no temporary left behind


def test_bounded_message_for_huge_values():
    from ddcat.errors import show

    assert len(show(nested_shared_list())) <= MAX_SHOWN
    assert len(show("x" * 10**6)) <= MAX_SHOWN


# ----------------------------------------------------------------------------- interruption


LONG = ["--set", "train.iters=60", "--set", "train.save_every=1", "--set", "train.log_every=1"]


def _start(out: Path, extra: list[str] = ()) -> subprocess.Popen:
    argv = [sys.executable, "-m", "ddcat", *map(str, train_args(out, extra=[*LONG, *extra]))]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)


def _wait_for_iterations(out: Path, n: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    log = out / "train_log.jsonl"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"training ended early: {proc.communicate()}")
        if log.exists() and len(log.read_text().splitlines()) >= n:
            return
        time.sleep(0.02)
    raise AssertionError("training did not reach the iteration")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("straight") / "run"
    proc = _start(out)
    assert proc.wait(timeout=300) == 0, proc.communicate()
    return torch.load(out / "last.pt", weights_only=True)["model"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["sigint", "sigkill"])
def test_interrupted_run_resumes_to_the_same_weights(sig, tmp_path, uninterrupted):
    out = tmp_path / "run"
    proc = _start(out)
    _wait_for_iterations(out, 7, proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    if sig == signal.SIGINT:
        line = one_line_error(proc.returncode, err, code=130)
        assert line.startswith("ddcat: interrupted") and "--resume" in line and str(out) in line
    assert (out / "last.pt").is_file() and (out / "config.yaml").is_file()
    resumed = subprocess.run([sys.executable, "-m", "ddcat", *map(str, train_args(out, extra=[*LONG, "--resume"]))],
                             capture_output=True, text=True, env=ENV, timeout=300)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    final = torch.load(out / "last.pt", weights_only=True)
    assert final["iteration"] == 60
    for key, value in uninterrupted.items():
        assert torch.equal(final["model"][key], value), key
    iters = [json.loads(line)["iter"] for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert iters == list(range(1, 61))


# ----------------------------------------------------------------------------- wrong results with exit 0


@pytest.mark.parametrize("attack", ["bim", "pgd"])
def test_ddcat_mask_labels_under_bf16_are_zero_at_eps_0(attack):
    """At eps = 0 the adversarial image is the clean one, so no pixel may get mask label 1; under
    bf16 autocast B_adv used to be predicted in bf16 and B_clean in fp32 (0.07 % label-1 pixels)."""
    from ddcat.attacks import build_attack
    from ddcat.models import build_model
    from ddcat.training.ddcat import DivideAndConquerTraining

    torch.manual_seed(0)
    cfg = load_config(None, ["train.method=ddcat", f"data.num_classes={NUM_CLASSES}"])
    model = build_model("pspnet", "resnet18", NUM_CLASSES, ddc=True, width=8).train()
    t = cfg["train"]
    method = DivideAndConquerTraining(
        build_attack(attack, eps=0.0, alpha=0.01, steps=1),
        division="ddcat",
        adv_fraction=t["adv_fraction"],
        deep_sup_weight=t["deep_sup_weight"],
        lambdas=(t["lambda_main"], t["lambda_aux"], t["lambda_mask"]),
        mask_ignore=t["mask_ignore"],
    )
    g = torch.Generator().manual_seed(0)
    images, labels = torch.rand(4, 3, 48, 48, generator=g), torch.randint(0, NUM_CLASSES, (4, 48, 48), generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, targets = method.mask_targets(model, images, labels, 2)
    assert int(targets.sum()) == 0


def test_list_file_paths_must_stay_below_the_root(tmp_path, capsys, voc_run):
    root, run = voc_run
    copy = Path(shutil.copytree(root, tmp_path / "VOC"))
    val = copy / "list" / "val.txt"
    image, label = val.read_text().splitlines()[0].split()
    for n, bad in enumerate((str(copy / image), f"../VOC/{image}")):
        val.write_text(f"{bad} {label}\n")
        argv = ["eval", "--no-progress", "--checkpoint", run / "last.pt", "--set", f"data.root={copy}", "--out", tmp_path / f"o{n}"]
        rc, err = run_cli(argv, capsys)
        line = one_line_error(rc, err)
        assert "leaves the data root" in line and "data.allow_outside_root" in line and str(val) in line
        assert not (tmp_path / f"o{n}").exists()
        rc, err = run_cli([*argv, "--set", "data.allow_outside_root=true"], capsys)
        assert rc == 0, err


@pytest.mark.parametrize(
    "body, phrase",
    [
        ("models: [pspnet]\nmethods: [clean]\nseeds: [0]\n", "'models' in"),
        ("models: {pspnet: {}}\nmethods: [clean]\nseeds: 3\n", "'seeds' in"),
        ("models: {pspnet: {}}\nmethods: [clean]\nseeds: [abc]\n", "'seeds' in"),
        ("models: {pspnet: {}}\nmethods: [clean]\nseeds: [0]\nquick: [1]\n", "'quick' in"),
        ("models: {pspnet: {}}\nmethods: clean\nseeds: [0]\n", "'methods' in"),
        ("models: {pspnet: {}}\nmethods: [clean]\nseeds: [0]\nquick: {seeds: [x]}\n", "'quick.seeds' in"),
    ],
    ids=["models-list", "seeds-int", "seeds-text", "quick-list", "methods-string", "quick-seeds-text"],
)
def test_experiment_file_mistakes(body, phrase, tmp_path, capsys):
    (tmp_path / "exp.yaml").write_text(body)
    rc, err = run_cli(["experiment", tmp_path / "exp.yaml", "--no-progress", "--out", tmp_path / "out"], capsys)
    assert phrase in one_line_error(rc, err)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flag, value, phrase", [("--eps", "-1", "--eps must be"), ("--eps", "4/0", "--eps expects"), ("--alpha", "0", "--alpha must be a finite number > 0")])
def test_eps_and_alpha_errors_name_the_flag(flag, value, phrase, tmp_path, capsys, clean_run):
    argv = ["eval", "--no-progress", "--checkpoint", clean_run / "last.pt", "--attack", "bim", "--steps", "1", flag, value, "--out", tmp_path / "o"]
    rc, err = run_cli(argv, capsys)
    assert phrase in one_line_error(rc, err)
    assert not (tmp_path / "o").exists()


def test_rng_contents_are_restored_into_throwaway_generators():
    """restore_problem: a saved state passes and the process's generators are untouched; each
    field a generator refuses is named (also those the shape check would have caught first)."""
    import random

    import numpy as np

    from ddcat.rngstate import check_rng_state, restore_problem, rng_state_problem

    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
             "python": random.getstate(), "cuda": None}
    before = (torch.get_rng_state().clone(), np.random.get_state()[1].copy(), random.getstate())
    assert rng_state_problem(state) is None and restore_problem(state) is None
    check_rng_state([state], "ck.pt")
    zeros = {**state, "torch": torch.zeros_like(state["torch"])}
    assert rng_state_problem(zeros) is None  # the right size: only restoring finds it
    assert restore_problem(zeros)[0] == "torch"
    with pytest.raises(Exception, match=r"checkpoint ck.pt: 'rng\[0\].torch' is refused by the generator"):
        check_rng_state([zeros], "ck.pt")
    assert restore_problem({**state, "numpy": ["PCG64", *state["numpy"][1:]]})[0] == "numpy"
    assert restore_problem({**state, "python": (3, (0,) * 624 + (625,), None)})[0] == "python"
    assert restore_problem({**state, "python": (9, state["python"][1], None)})[0] == "python"
    after = (torch.get_rng_state(), np.random.get_state()[1], random.getstate())
    assert torch.equal(before[0], after[0]) and (before[1] == after[1]).all() and before[2] == after[2]


# ----------------------------------------------------------------------------- full disk: the file is named


class _FullDisk:
    """A file object whose writes fail as a full disk's do: OSError(ENOSPC) without a file name."""

    def __init__(self, fh):
        self._fh = fh

    def write(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    def flush(self):
        pass

    def close(self):
        self._fh.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _full_disk_for(name: str):
    real = open

    def fake_open(path, *args, **kwargs):
        fh = real(path, *args, **kwargs)
        return _FullDisk(fh) if Path(path).name.startswith(f".{name}") or Path(path).name == name else fh

    return fake_open


@pytest.mark.parametrize("command, module, name", [
    ("eval", "ddcat.outdir", "metrics.json"),
    ("report", "ddcat.outdir", "report.md"),
    ("train", "ddcat.trainlog", "train_log.jsonl"),
])
def test_full_disk_names_the_file(command, module, name, tmp_path, capsys, monkeypatch, clean_run):
    """A write failing with ENOSPC and no file name (what write() raises on a full disk) is one line
    naming the file and the cause; the output folder the command created is gone."""
    import importlib

    monkeypatch.setattr(importlib.import_module(module), "open", _full_disk_for(name), raising=False)
    out = tmp_path / "out"
    argv = {"eval": ["eval", "--no-progress", "--checkpoint", clean_run / "last.pt", "--out", out],
            "report": ["report", clean_run, "--out", out],
            "train": train_args(out)}[command]
    rc, err = run_cli(argv, capsys)
    line = one_line_error(rc, err)
    assert line == f"ddcat: error: cannot write {out / name}: no space left on device", line
    assert not out.exists()


def test_an_unnamed_write_failure_names_the_output(tmp_path, capsys, monkeypatch, clean_run):
    """An OSError without a file name from outside ddcat's writers: the output it was writing below."""
    from ddcat import evaluation

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(evaluation, "evaluate_checkpoint", full)
    out = tmp_path / "out"
    rc, err = run_cli(["eval", "--no-progress", "--checkpoint", clean_run / "last.pt", "--out", out], capsys)
    assert one_line_error(rc, err) == f"ddcat: error: no space left on device (while writing below {out})"


@pytest.mark.parametrize("existed", [True, False], ids=["folder-existed", "folder-created"])
def test_lock_file_is_removed_when_flock_fails(existed, tmp_path, monkeypatch):
    """flock unsupported (ENOLCK, e.g. some network file systems): one line, and the lock file this
    command created is not left behind, in a folder that existed or one it made."""
    import fcntl

    from ddcat.errors import DdcatError

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    out = tmp_path / "out"
    if existed:
        out.mkdir()
    monkeypatch.setattr(fcntl, "flock", no_locks)
    with pytest.raises(DdcatError, match="cannot lock --out .*No locks available"):
        with OutputFolder(out):
            pass
    assert not (out / ".ddcat.lock").exists()
    assert out.exists() == existed


# ----------------------------------------------------------------------------- out of memory


OOM_ERRORS = {
    "cpu-allocator": (lambda: RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: "
                                           "you tried to allocate 68719476736 bytes. Error code 12 (Cannot allocate memory)"), "CPU"),
    "cuda": (lambda: torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 64.00 GiB. GPU 0 has a total capacity of 79.10 GiB"), "GPU"),
}


@pytest.mark.parametrize("error", list(OOM_ERRORS))
@pytest.mark.parametrize("command", ["eval", "certify"])
def test_out_of_memory_in_the_forward_is_one_line(command, error, tmp_path, capsys, monkeypatch, clean_run):
    """An allocation failure in the model's forward (activity.py): exit 2, one line saying what was
    being done at which batch and image size and what to lower; no metrics.json / certify.json."""
    from ddcat.models.segmenter import Segmenter

    make, kind = OOM_ERRORS[error]

    def out_of_memory(self, *args, **kwargs):
        raise make()

    monkeypatch.setattr(Segmenter, "forward", out_of_memory)
    monkeypatch.setattr(Segmenter, "forward_heads", out_of_memory)
    out = tmp_path / "out"
    if command == "eval":
        argv = ["eval", "--no-progress", "--checkpoint", clean_run / "last.pt", "--set", "eval.batch_size=2", "--out", out]
        expected = (f"ddcat: error: out of {kind} memory while evaluating (", "(batch size 2, images 32x32); "
                    "lower eval.batch_size, or set eval.mode=slide with a smaller eval.crop_size")
    else:
        argv = ["certify", "--no-progress", "--checkpoint", clean_run / "last.pt", "--n0", "3", "--num-samples", "60",
                "--alpha", "0.01", "--batch-size", "5", "--max-images", "1", "--out", out]
        expected = (f"ddcat: error: out of {kind} memory while certifying image 0 (", "3 + 60 noisy samples) (batch size 5, images 32x32); "
                    "lower --batch-size, the noisy samples per forward pass")
    rc, err = run_cli(argv, capsys)
    line = one_line_error(rc, err)
    assert line.startswith(expected[0]) and expected[1] in line, line
    assert not (out / "metrics.json").exists() and not (out / "certify.json").exists() and not out.exists()
