"""ddcat.threads: the thread count every command chooses, and that runs record it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ddcat.errors import DdcatError
from ddcat.threads import ENV_THREADS, choose_threads, default_threads, parse_threads

from conftest import train_args


def test_default_shares_the_cores_among_local_ranks():
    assert default_threads(16, 1) == 16
    assert default_threads(16, 4) == 4
    assert default_threads(2, 2) == 1
    assert default_threads(2, 8) == 1  # never zero threads
    assert default_threads(7, 2) == 3


def test_flag_beats_environment_beats_default(monkeypatch):
    monkeypatch.setattr("ddcat.threads.available_cores", lambda: 8)
    assert choose_threads(3, {ENV_THREADS: "5", "LOCAL_WORLD_SIZE": "2"}) == 3
    assert choose_threads(None, {ENV_THREADS: "5", "LOCAL_WORLD_SIZE": "2"}) == 5
    assert choose_threads(None, {"LOCAL_WORLD_SIZE": "2"}) == 4
    assert choose_threads(None, {}) == 8


@pytest.mark.parametrize("bad", ["0", "-1", "two", "1.5", ""])
def test_bad_thread_counts_are_one_line_errors(bad):
    with pytest.raises(DdcatError, match="--threads must be an integer >= 1"):
        parse_threads(bad, "--threads")
    with pytest.raises(DdcatError, match=ENV_THREADS):
        choose_threads(None, {ENV_THREADS: bad or "x"})


def test_cli_threads_reach_torch_and_run_json(tmp_path):
    """A subprocess, so that the wait policy is set before torch loads, as in real use."""
    out = tmp_path / "run"
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    proc = subprocess.run([sys.executable, "-m", "ddcat", *map(str, train_args(out, extra=["--threads", "1"]))],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    run = json.loads((out / "run.json").read_text())
    assert run["threads"] == 1
    assert run["omp_wait_policy"] == "PASSIVE"
    bad = subprocess.run([sys.executable, "-m", "ddcat", *map(str, train_args(tmp_path / "b", extra=["--threads", "0"]))],
                         capture_output=True, text=True, env=env, timeout=300)
    assert bad.returncode == 2 and bad.stderr.strip() == "ddcat: error: --threads must be an integer >= 1, got '0'"
    assert not (tmp_path / "b").exists()
