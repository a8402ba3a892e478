"""All of ddcat's speed and memory figures in one command (``make bench``).

    python benchmarks/run.py [--quick] [--out bench_out]

Runs, each in its own process (so peak memory is per benchmark):
- bench_models.py   forward / forward+backward ms per image, eval forward ddc/plain ratio
- bench_attacks.py  BIM-7 over 7 x (forward + input-gradient backward), plain and DDC-AT model
- bench_training.py one iteration of clean / SAT / DDC-AT, ratios measured in one run
- DDP scaling       images/s of a short clean training on 1 and 2 gloo processes (CPU)
and prints one table, writing ``OUT/summary.json`` (with the date and the machine).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ENV = {**os.environ, "PYTHONPATH": str(HERE.parent / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}


def run(cmd: list[str], env=None) -> tuple[float, float]:
    """Run a command; return (wall seconds, peak RSS of the child in MiB)."""
    tic = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env or ENV)
    _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak RSS (KiB on Linux)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, cmd)
    return time.perf_counter() - tic, usage.ru_maxrss / 1024


def ddp_scaling(out: Path, iters: int) -> dict:
    """Images/s of clean training (PSPNet-R18 width 16, 64 px, global batch 8) on 1 and 2 processes."""
    res = {}
    for nproc in (1, 2):
        with tempfile.TemporaryDirectory() as tmp:
            args = ["train", "--method", "clean", "--config", str(HERE.parent / "configs" / "synthetic.yaml"),
                    "--set", f"train.iters={iters}", "--set", f"train.save_every={iters}", "--no-progress", "--out", tmp + "/run"]
            threads = {**ENV, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 2) // nproc))}
            if nproc == 1:
                cmd = [sys.executable, "-m", "ddcat", *args]
            else:
                cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m", "ddcat", *args]
            run(cmd, threads)
            log = [json.loads(line) for line in Path(tmp, "run", "train_log.jsonl").read_text().splitlines()]
            steady = [r["time"] for r in log[2:]] or [r["time"] for r in log]
            res[nproc] = 8 / (sum(steady) / len(steady))
    return {"images_per_s": res, "speedup": res[2] / res[1]}


def build_parser() -> argparse.ArgumentParser:
    """The command line of this benchmark (tests/test_docs_commands.py parses the docs' commands with it)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="bench_out")
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for the single-process benchmarks")
    return parser


def main() -> None:
    parser = build_parser()
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    reps = ["--repeats", "2" if args.quick else "5"]
    th = ["--threads", str(args.threads)]
    py = sys.executable
    summary: dict = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.node()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "threads": args.threads,
    }
    wall, mem = run([py, str(HERE / "bench_models.py"), *reps, *th, "--json", str(out / "models.json")])
    summary["models"] = {**json.loads((out / "models.json").read_text()), "peak_rss_mib": mem}
    wall, mem = run([py, str(HERE / "bench_attacks.py"), *reps, *th, "--json", str(out / "attacks.json")])
    summary["attacks"] = {**json.loads((out / "attacks.json").read_text()), "peak_rss_mib": mem}
    wall, mem = run([py, str(HERE / "bench_training.py"), *reps, *th, "--json", str(out / "training.json")])
    summary["training"] = {**json.loads((out / "training.json").read_text()), "peak_rss_mib": mem}
    summary["ddp"] = ddp_scaling(out, 10 if args.quick else 30)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))

    print("\n==== ddcat benchmark summary ====")
    print(f"date {summary['date']}, machine {summary['machine']}, {args.threads} torch thread(s)")
    for r in summary["training"]["training"]:
        print(f"training {r['arch']}-{r['backbone']}: SAT/clean {r['sat_over_clean']:.2f} (<= 2.8), "
              f"DDC-AT/SAT {r['ddcat_over_sat']:.2f} (<= 1.8)")
    print(f"peak RSS (MiB): models {summary['models']['peak_rss_mib']:.0f}, attacks {summary['attacks']['peak_rss_mib']:.0f}, "
          f"training {summary['training']['peak_rss_mib']:.0f}")
    d = summary["ddp"]
    print(f"DDP gloo clean training images/s: 1 proc {d['images_per_s'][1]:.1f}, 2 procs {d['images_per_s'][2]:.1f} "
          f"(speedup {d['speedup']:.2f})")
    print(f"details: {out}/summary.json (models.json, attacks.json, training.json)")


if __name__ == "__main__":
    main()
