"""The ``ddcat`` command line.

    ddcat train --config FILE [--method M] [--set key=value ...] --out DIR [--resume [CKPT]]
    ddcat eval --checkpoint CKPT [--attack bim --steps 1-7] [--attack sea --iters 300 --eps 4/255 ...]
               [--transfer-from CKPT ...] --out DIR
    ddcat export CKPT OUT
    ddcat plot-train DIR
    ddcat experiment FILE.yaml --out DIR
    ddcat demo [--quick] --out DIR

User mistakes print ``ddcat: error: <one line>`` and exit with code 2, leaving no partial output.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Callable

from ddcat.errors import DdcatError


def _out_guard(out: Path, fn: Callable[[], Any]) -> Any:
    """Run ``fn``; if it fails and ``out`` did not exist before, remove what it created."""
    existed = out.exists()
    try:
        return fn()
    except BaseException:
        if not existed and out.exists():
            shutil.rmtree(out, ignore_errors=True)
        raise


def cmd_train(args: argparse.Namespace) -> int:
    from ddcat.config import load_config
    from ddcat.training import train

    sets = list(args.set or [])
    if args.method:
        sets.append(f"train.method={args.method}")
    cfg = load_config(args.config, sets)
    out = Path(args.out)
    if (out / "last.pt").exists() and args.resume is None:
        raise DdcatError(f"{out} already holds a training run (last.pt); pass --resume to continue it or choose another --out")
    resume: Any = False
    if args.resume is not None:
        resume = True if args.resume == "" else args.resume
    last = _out_guard(out, lambda: train(cfg, out, resume=resume, device=args.device, progress=not args.no_progress))
    if os.environ.get("RANK", "0") == "0":
        print(f"checkpoint: {last}")
    return 0


def eval_plan(args: argparse.Namespace):
    """The attacks ``ddcat eval`` runs, from its arguments (eps and alpha accept ``4/255``)."""
    from ddcat.config import DEFAULTS
    from ddcat.evaluation import AttackPlan
    from ddcat.evaluation.settings import DEFAULT_ITERS
    from ddcat.parsing import parse_fraction, parse_steps

    attacks = tuple(args.attack or ())
    eps = tuple(parse_fraction(e, "--eps") for e in (args.eps or [DEFAULTS["attack"]["eps"]]))
    counts = None
    if args.class_counts:
        counts = tuple(read_class_counts(args.class_counts))
    return AttackPlan(
        attacks=attacks,
        steps=tuple(parse_steps(args.steps)) if attacks else (),
        eps=tuple(dict.fromkeys(eps)),  # repeats once
        alpha=parse_fraction(args.alpha if args.alpha is not None else DEFAULTS["attack"]["alpha"], "--alpha"),
        iters=args.iters if args.iters is not None else DEFAULT_ITERS,
        restarts=args.restarts,
        seed=args.seed,
        class_counts=counts,
    )


def read_class_counts(text: str) -> list[int]:
    """``--class-counts``: a comma list ``120,30,5`` or a JSON file holding a list (or ``{"counts": [...]}``)."""
    import json

    path = Path(text)
    try:
        if path.is_file():
            data = json.loads(path.read_text())
            values = data["counts"] if isinstance(data, dict) else data
        else:
            values = [v for v in text.split(",") if v.strip()]
        counts = [int(v) for v in values]
    except (ValueError, KeyError, TypeError):
        raise DdcatError(f"--class-counts expects a comma list like 120,30,5 or a JSON file with a list, got '{text}'") from None
    if not counts or any(c < 0 for c in counts):
        raise DdcatError(f"--class-counts must be non-negative pixel counts, one per class, got '{text}'")
    return counts


def cmd_eval(args: argparse.Namespace) -> int:
    import json

    from ddcat.evaluation import evaluate_checkpoint
    from ddcat.reporting.eval_tables import eval_tables

    plan = eval_plan(args)
    out = Path(args.out)

    def run() -> None:
        result = evaluate_checkpoint(
            args.checkpoint, plan, args.transfer_from, args.set or [], args.split, args.device,
            progress=not args.no_progress, cache_dir=out,
        )
        if not result.ctx.is_main:
            return
        table = eval_tables(result.summary)
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / ".metrics.json.tmp"
        tmp.write_text(json.dumps(result.summary, indent=2) + "\n")
        tmp.replace(out / "metrics.json")
        (out / "table.txt").write_text(table + "\n")
        print(table)
        print(f"wrote {out / 'metrics.json'}")

    _out_guard(out, run)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from ddcat.checkpoint import export_main_branch

    export_main_branch(args.checkpoint, args.output)
    print(f"wrote {args.output} (main branch only, loads into the plain model)")
    return 0


def cmd_plot_train(args: argparse.Namespace) -> int:
    from ddcat.reporting.plots import plot_training

    paths = plot_training(Path(args.run), Path(args.out) if args.out else None)
    for p in paths:
        print(f"wrote {p}")
    return 0


def cmd_experiment(args: argparse.Namespace) -> int:
    from ddcat.experiment import run_experiment_file

    run_experiment_file(args.file, Path(args.out), sets=args.set or [], device=args.device, progress=not args.no_progress, quick=args.quick)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from ddcat.experiment import run_demo

    run_demo(Path(args.out), quick=args.quick, device=args.device, progress=not args.no_progress)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ddcat", description="Adversarial training and robustness evaluation for semantic segmentation (DDC-AT).")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (repeatable)")
        p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
        p.add_argument("--no-progress", action="store_true", help="no progress bars")

    p = sub.add_parser("train", help="train a model (clean, sat, ddcat, ddcat-m, ddcat-n)")
    p.add_argument("--config", default=None, help="YAML config file (default: built-in synthetic defaults)")
    p.add_argument("--method", default=None, help="clean | sat | ddcat | ddcat-m | ddcat-n (same as --set train.method=...)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--resume", nargs="?", const="", default=None, metavar="CKPT", help="continue from OUT/last.pt (or CKPT)")
    common(p)
    p.set_defaults(fn=cmd_train)

    p = sub.add_parser("eval", help="evaluate a checkpoint: clean, white-box sweep, transfer, stronger attacks")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--attack", action="append", default=None,
                   help="fgsm | bim | pgd | segpgd | cospgd | masked-ce | js | worst | apgd | sea (repeatable)")
    p.add_argument("--steps", default="1-7", help="step counts of the sweep attacks, e.g. 1-7 or 3,7 (default 1-7)")
    p.add_argument("--iters", type=int, default=None, help="iterations of apgd and of each sea member (default 300)")
    p.add_argument("--eps", action="append", default=None, metavar="EPS",
                   help="L-inf radius, e.g. 0.03 or 4/255; repeat for several (default 0.03)")
    p.add_argument("--alpha", default=None, help="step size of the sweep attacks, e.g. 0.01 or 2/255 (default 0.01)")
    p.add_argument("--restarts", type=int, default=1, help="random restarts of pgd, segpgd, cospgd, masked-ce, js, apgd, sea")
    p.add_argument("--seed", type=int, default=None, help="seed of the randomized attacks (default: the checkpoint's seed)")
    p.add_argument("--class-counts", default=None, metavar="COUNTS",
                   help="training pixels per class for sea's balanced loss: 120,30,5 or a JSON file (default: counted from the data)")
    p.add_argument("--transfer-from", nargs="+", default=None, metavar="CKPT", help="substitute models for black-box transfer")
    p.add_argument("--split", default="val", choices=("train", "val"))
    p.add_argument("--out", required=True)
    common(p)
    p.set_defaults(fn=cmd_eval)

    p = sub.add_parser("export", help="write the main branch alone as a plain-model checkpoint")
    p.add_argument("checkpoint")
    p.add_argument("output")
    p.set_defaults(fn=cmd_export)

    p = sub.add_parser("plot-train", help="plot losses and DDC-AT routing shares of a training run")
    p.add_argument("run", help="training output folder (holds train_log.jsonl)")
    p.add_argument("--out", default=None, help="folder for the PNGs (default: the run folder)")
    p.set_defaults(fn=cmd_plot_train)

    p = sub.add_parser("experiment", help="run a grid of (method, model, seed) trainings and evaluations")
    p.add_argument("file")
    p.add_argument("--out", required=True)
    p.add_argument("--quick", action="store_true", help="apply the file's quick: section (a smoke run)")
    common(p)
    p.set_defaults(fn=cmd_experiment)

    p = sub.add_parser("demo", help="the paper's experiments at laptop scale on the synthetic data")
    p.add_argument("--quick", action="store_true", help="a few-minute smoke run")
    p.add_argument("--out", default="demo_out")
    common(p)
    p.set_defaults(fn=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.fn(args)
    except DdcatError as exc:
        print(f"ddcat: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ddcat: interrupted", file=sys.stderr)
        return 130
    finally:
        from ddcat.distributed import shutdown

        shutdown()
