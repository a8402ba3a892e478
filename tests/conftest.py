"""Shared fixtures: tiny end-to-end training runs, a tiny VOC tree, one-thread torch.

Everything here is sized for a busy 2-core CPU: width-8 networks, 32x32 images, 2 iterations.
The training runs are session-scoped and must be treated as read-only by the tests; a test
that changes a run (``--resume``) copies it to its own ``tmp_path`` first.
"""

from __future__ import annotations

import os

# One thread per test process (pytest-xdist runs one worker per core), set before torch loads so
# that the OpenMP runtime sees it; subprocesses of the tests inherit it. See ddcat/threads.py.
os.environ["DDCAT_THREADS"] = "1"
os.environ["OMP_NUM_THREADS"] = "1"
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import shutil
from pathlib import Path

import pytest
import torch

from ddcat.cli import main as cli_main

NUM_CLASSES = 4  # of the synthetic runs


def tiny_sets(num_classes: int = NUM_CLASSES, iters: int = 2) -> list[str]:
    """``--set`` arguments of a tiny synthetic run (width 8, 32x32, 8 train / 4 val images)."""
    pairs = {
        "model.width": 8,
        "train.iters": iters,
        "train.batch_size": 4,
        "data.num_train": 8,
        "data.num_val": 4,
        "data.image_size": 32,
        "train.crop_size": 32,
        "data.num_classes": num_classes,
        "eval.batch_size": 4,
    }
    args: list[str] = []
    for key, value in pairs.items():
        args += ["--set", f"{key}={value}"]
    return args


def train_args(out: Path, method: str = "clean", num_classes: int = NUM_CLASSES, extra: list[str] | None = None) -> list[str]:
    return ["train", "--no-progress", "--method", method, "--out", str(out), *tiny_sets(num_classes), *(extra or [])]


@pytest.fixture(autouse=True, scope="session")
def _data_check_cache(tmp_path_factory):
    """The data check's cache (ddcat.data.check.cache_path) under the session's temporary folder, not ~/.cache."""
    import os

    old = os.environ.get("DDCAT_CACHE")
    os.environ["DDCAT_CACHE"] = str(tmp_path_factory.mktemp("ddcat-cache"))
    yield
    if old is None:
        os.environ.pop("DDCAT_CACHE", None)
    else:
        os.environ["DDCAT_CACHE"] = old


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Tiny tensors on a shared 2-core machine: intra-op threads only cost."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Runs:
    """Lazily trained tiny runs, keyed by (method, num_classes); each trained at most once."""

    def __init__(self, root: Path):
        self.root = root
        self._done: dict[tuple[str, int], Path] = {}

    def get(self, method: str = "clean", num_classes: int = NUM_CLASSES) -> Path:
        """The run folder (holding ``last.pt``) of a finished 2-iteration run."""
        key = (method, num_classes)
        if key not in self._done:
            out = self.root / f"{method}-k{num_classes}"
            if out.exists():
                shutil.rmtree(out)
            rc = cli_main(train_args(out, method, num_classes))
            assert rc == 0, f"fixture training run {key} failed with exit code {rc}"
            assert (out / "last.pt").is_file()
            self._done[key] = out
        return self._done[key]


@pytest.fixture(scope="session")
def runs(tmp_path_factory) -> Runs:
    return Runs(tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="session")
def clean_run(runs) -> Path:
    return runs.get("clean")


@pytest.fixture(scope="session")
def ddcat_run(runs) -> Path:
    return runs.get("ddcat")


def voc_sets(root: Path, iters: int = 1) -> list[str]:
    """``--set`` arguments of a tiny run on a VOC tree written by ``make_voc_fixture(size=32)``."""
    pairs = {
        "model.width": 8,
        "train.iters": iters,
        "train.batch_size": 4,
        "train.crop_size": 32,
        "data.name": "voc",
        "data.root": str(root),
        "data.num_classes": 21,
        "eval.batch_size": 2,
    }
    args: list[str] = []
    for key, value in pairs.items():
        args += ["--set", f"{key}={value}"]
    return args


@pytest.fixture(scope="session")
def voc_run(tmp_path_factory) -> tuple[Path, Path]:
    """(VOC fixture root, finished 1-iteration run on it): a 21-class checkpoint with a VOC config."""
    from ddcat.data import make_voc_fixture

    base = tmp_path_factory.mktemp("voc")
    root = make_voc_fixture(base / "VOC", n_train=4, n_val=2, size=32, seed=0)
    out = base / "run"
    rc = cli_main(["train", "--no-progress", "--out", str(out), *voc_sets(root)])
    assert rc == 0
    return root, out


def pytest_collection_modifyitems(session, config, items):
    """Files holding ``slow`` tests first, the longest pole (the trained-network integration
    tests) at the head: pytest-xdist (``--dist loadfile``) hands out files in this order, so the
    long ones start at once instead of leaving one worker busy after the other has finished."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}

    def rank(item):
        if item.path.name == "test_robustness_integration.py":
            return 0
        return 1 if item.path in slow_files else 2

    items.sort(key=rank)  # stable: the order inside each group stays pytest's
