"""What every run records next to its outputs: config, seed, versions, git commit, command."""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import ddcat
from ddcat.config import dump
from ddcat.outdir import write_text


def git_commit() -> str | None:
    """The commit of the ddcat source tree (``-dirty`` when it has uncommitted changes)."""
    root = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True, timeout=5)
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "ddcat": ddcat.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "cuda": torch.version.cuda or "none",
    }


def run_record(cfg: dict[str, Any], kind: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "kind": kind,
        "seed": cfg.get("seed"),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": sys.argv,
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "versions": versions(),
        "threads": torch.get_num_threads(),  # ddcat.threads chose it (--threads / DDCAT_THREADS)
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "git_commit": git_commit(),
        **(extra or {}),
    }


def write_run_files(out: Path, cfg: dict[str, Any], kind: str, extra: dict[str, Any] | None = None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "config.yaml", dump(cfg))  # a full disk names the file (issue 20)
    write_text(out / "run.json", json.dumps(run_record(cfg, kind, extra), indent=2) + "\n")
