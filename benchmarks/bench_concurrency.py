"""Two ddcat processes on one machine: the slowdown of each next to one process alone.

    python benchmarks/bench_concurrency.py [--iters 60] [--procs 2] [--policy default] [--json PATH]

Runs ``ddcat train`` of the demo's config (``configs/synthetic.yaml``, clean training, PSPNet,
batch 8 of 64 px images) for ``--iters`` iterations, first alone, then ``--procs`` copies at once,
and prints the median time of one iteration (from each run's ``train_log.jsonl``, the first 10
iterations dropped as warm-up) and the ratio concurrent / alone. Goal: at most 2.5x with two
processes on two cores (a fair share is 2x).

``--threads`` is passed to every process (0 = ddcat's default, which shares the machine);
``--env KEY=VALUE`` sets the environment of every process, e.g. ``--env OMP_WAIT_POLICY=ACTIVE``
with ``--threads 2`` reproduces the old behaviour (each process as many spinning OpenMP threads
as there are cores).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WARMUP = 10


def launch(out: Path, iters: int, threads: int, env: dict[str, str]) -> subprocess.Popen:
    argv = [sys.executable, "-m", "ddcat", "train", "--no-progress", "--method", "clean", "--out", str(out),
            "--set", f"train.iters={iters}", "train.log_every=1", f"train.save_every={iters}"]
    if threads:
        argv += ["--threads", str(threads)]
    return subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def iteration_times(out: Path) -> list[float]:
    records = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines() if line.strip()]
    return [r["time"] for r in records[WARMUP:]]


def run_together(root: Path, n: int, iters: int, threads: int, env: dict[str, str]) -> list[float]:
    """Start ``n`` trainings at once; the median iteration time of each."""
    outs = [root / f"p{len(list(root.iterdir()))}_{i}" for i in range(n)]
    procs = [launch(out, iters, threads, env) for out in outs]
    for proc in procs:
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"a training failed (exit {proc.returncode}): {err.strip()}")
    return [statistics.median(iteration_times(out)) for out in outs]


def build_parser() -> argparse.ArgumentParser:
    """The command line of this benchmark (tests/test_docs_commands.py parses the docs' commands with it)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iters", type=int, default=60)
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="--threads of every process (0 = ddcat's default)")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--json", default=None)
    return parser


def main() -> None:
    parser = build_parser()
    args = parser.parse_args()
    env = dict(os.environ)
    for pair in args.env:
        key, _, value = pair.partition("=")
        env[key] = value
    with tempfile.TemporaryDirectory(prefix="ddcat-conc-") as tmp:
        root = Path(tmp)
        tic = time.perf_counter()
        alone = run_together(root, 1, args.iters, args.threads, env)[0]
        together = run_together(root, args.procs, args.iters, args.threads, env)
        wall = time.perf_counter() - tic
        threads_used = json.loads(next(root.glob("p0_0/run.json")).read_text()).get("threads")
    ratios = [t / alone for t in together]
    print(f"clean training iteration of configs/synthetic.yaml, {os.cpu_count()} cores, threads per process: "
          f"{threads_used}, env: {' '.join(args.env) or '(inherited)'}")
    print(f"alone: {alone * 1000:.1f} ms/iter; {args.procs} at once: "
          + ", ".join(f"{t * 1000:.1f} ms ({r:.2f}x)" for t, r in zip(together, ratios)))
    print(f"worst slowdown {max(ratios):.2f}x (goal <= 2.5x for 2 processes on 2 cores); {wall:.0f} s in all")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"alone_s": alone, "together_s": together, "ratios": ratios,
                                               "threads": threads_used, "env": args.env, "procs": args.procs}, indent=2) + "\n")


if __name__ == "__main__":
    main()
