"""SEA at a chosen budget on a set of checkpoints, with BIM-n next to it ("claimed vs. remaining").

    python benchmarks/sea_on_checkpoints.py CKPT [CKPT ...] --iters 300 --eps 0.03 --json OUT.json [--device cuda]

For each checkpoint: clean, BIM 1..7 (the paper's sweep) and SEA (APGD with masked CE, balanced
masked CE and JS, red-eps, ``--iters`` iterations each) on its validation set, through ddcat's one
evaluation entry point; prints one line per model and writes every record to ``--json``. Used to
give docs/results.md the full-budget SEA figures on the demo's models (on a GPU: minutes).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ddcat.evaluation import AttackPlan, evaluate_checkpoint


def build_parser() -> argparse.ArgumentParser:
    """The command line of this benchmark (tests/test_docs_commands.py parses the docs' commands with it)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--iters", type=int, default=300)
    parser.add_argument("--eps", type=float, default=0.03)
    parser.add_argument("--device", default=None)
    parser.add_argument("--cache", default="bench_out/sea_cache", help="folder for the training class counts")
    parser.add_argument("--json", required=True)
    return parser


def main() -> None:
    parser = build_parser()
    args = parser.parse_args()
    rows = []
    plan = AttackPlan(attacks=("bim", "sea"), steps=tuple(range(1, 8)), eps=(args.eps,), alpha=0.01, iters=args.iters)
    Path(args.cache).mkdir(parents=True, exist_ok=True)
    for path in args.checkpoints:
        tic = time.perf_counter()
        result = evaluate_checkpoint(path, plan, device=args.device, progress=False, cache_dir=args.cache)
        seconds = time.perf_counter() - tic
        records = result.summary["records"]
        sea = next(r for r in records if r["attack"] == "sea")
        bim = {r["steps"]: r for r in records if r["attack"] == "bim"}
        rows.append({"checkpoint": str(path), "seconds": seconds, "records": records})
        print(f"{Path(path).stem:<40} clean {records[0]['mIoU']:.3f}  BIM-3 {bim[3]['mIoU']:.3f}  BIM-7 {bim[7]['mIoU']:.3f}  "
              f"SEA-{args.iters} {sea['mIoU']:.3f} (aAcc {sea['aAcc']:.3f})  {seconds:.0f} s", flush=True)  # fmt: skip
        # after every model, so that an interrupted run keeps what it measured
        Path(args.json).write_text(json.dumps({"iters": args.iters, "eps": args.eps, "models": rows}, indent=2))


if __name__ == "__main__":
    main()
