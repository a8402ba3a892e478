"""The ``ddcat`` command line.

    ddcat train --config FILE [--method M] [--set key=value ...] --out DIR [--resume [CKPT]]
    ddcat eval --checkpoint CKPT | --config FILE [--attack bim --steps 1-7] [--attack sea --iters 300 --eps 4/255 ...]
               [--transfer-from CKPT ...] --out DIR
    ddcat certify --checkpoint CKPT | --config FILE [--sigma 0.25 --n0 10 --n 100 --alpha 0.001 --tau 0.75 ...] --out DIR
    ddcat export CKPT OUT
    ddcat convert PAPER_CKPT OUT [--dataset voc|cityscapes|ade20k | --config FILE] [--set key=value ...]
    ddcat report PATH... --out DIR
    ddcat plot-train DIR
    ddcat experiment FILE.yaml --out DIR [--list | --shard I/N]
    ddcat demo [--quick] --out DIR

User mistakes print ``ddcat: error: <one line>`` and exit with code 2, leaving no partial output.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from pathlib import Path

from ddcat.constants import ALPHA, EPS, SWEEP_STEPS
from ddcat.errors import DdcatError, Interrupted
from ddcat.outdir import RUN_CHECKPOINTS, OutputFolder, check_writable_file, check_writable_folder, write_text

def cmd_train(args: argparse.Namespace) -> int:
    from ddcat.config import load_config
    from ddcat.training import train

    sets = list(args.set or [])
    if args.method:
        sets.append(f"train.method={args.method}")
    cfg = load_config(args.config, sets)
    out = Path(args.out)
    held = [name for name in RUN_CHECKPOINTS if (out / name).exists()]
    if held and args.resume is None:
        raise DdcatError(f"{out} already holds a training run ({held[0]}); pass --resume to continue it or choose another --out")
    resume: bool | str = False
    if args.resume is not None:
        resume = True if args.resume == "" else args.resume
    check_writable_folder(out)
    from ddcat.data.check import check_config_data

    check_config_data(cfg, "train", progress=not args.no_progress)  # bad data: no run folder (issue 20)
    with OutputFolder(out):
        try:
            last = train(cfg, out, resume=resume, device=args.device, progress=not args.no_progress)
        except KeyboardInterrupt:
            raise Interrupted(resume_hint(out, args)) from None
    if os.environ.get("RANK", "0") == "0":
        print(f"checkpoint: {last}")
    return 0


def resume_hint(out: Path, args: argparse.Namespace) -> str:
    """How to continue an interrupted training run (or that nothing was saved yet)."""
    if not any((out / name).exists() for name in RUN_CHECKPOINTS):
        return "no checkpoint had been written yet"
    command = ["ddcat", "train"]
    if args.config:
        command += ["--config", str(args.config)]
    if args.method:
        command += ["--method", args.method]
    for pair in args.set or []:
        command += ["--set", pair]
    command += ["--out", str(out), "--resume"]
    return f"the run is saved in {out / 'last.pt'}; continue it with: {' '.join(command)}"


def eval_plan(args: argparse.Namespace):
    """The attacks ``ddcat eval`` runs, from its arguments (eps and alpha accept ``4/255``)."""
    from ddcat.config import DEFAULTS
    from ddcat.evaluation import AttackPlan
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
        alpha=parse_fraction(args.alpha, "--alpha", positive=True) if args.alpha is not None else None,  # None: the norm's default
        iters=args.iters,  # None: each attack's own default budget (evaluation.settings.default_iters)
        restarts=args.restarts,
        seed=args.seed,
        class_counts=counts,
        norm=args.norm,
        min_norm_box=args.box,
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
    if (out / "metrics.json").exists() and not args.overwrite:
        raise DdcatError(f"{out} already holds an evaluation (metrics.json); pass --overwrite to replace it or choose another --out")
    with OutputFolder(out):
        checkpoint, trust = model_source(args, out)
        result = evaluate_checkpoint(
            checkpoint, plan, args.transfer_from, args.set or [], args.split, args.device,
            progress=not args.no_progress, cache_dir=out, trust=trust,
        )
        if result.ctx.is_main:
            table = eval_tables(result.summary)
            write_text(out / "table.txt", table + "\n")  # metrics.json last: it marks a finished evaluation
            write_text(out / "metrics.json", json.dumps(result.summary, indent=2) + "\n")
            print(table)
            print(f"wrote {out / 'metrics.json'}")
    return 0


def model_source(args: argparse.Namespace, out: Path):
    """The checkpoint ``ddcat eval`` / ``ddcat certify`` score and whose code may run to rebuild it:
    ``--checkpoint``, or the model ``--config`` describes written to OUT/model.pt (untrained or
    from model.weights). The factory of the user's own config runs; a factory a checkpoint names
    runs only with ``--trust-factory``."""
    from ddcat.models.user import Trust

    trust = Trust(everything=args.trust_factory)
    if not args.config:
        return args.checkpoint, trust
    from ddcat.checkpoint import checkpoint_from_config
    from ddcat.config import load_config

    cfg = load_config(args.config, args.set or [])
    return str(checkpoint_from_config(cfg, out / "model.pt")), trust.with_configs(cfg)


def cmd_certify(args: argparse.Namespace) -> int:
    """``ddcat certify``: SegCertify's randomized smoothing on a checkpoint (or a config's model)."""
    import json

    from ddcat.certification import CertifyPlan, certify_checkpoint
    from ddcat.parsing import parse_fraction
    from ddcat.reporting.card import certify_table

    plan = CertifyPlan(
        sigma=parse_fraction(args.sigma, "--sigma", positive=True), n0=args.n0, n=args.n,
        alpha=parse_fraction(args.alpha, "--alpha", positive=True),
        taus=tuple(dict.fromkeys(parse_fraction(t, "--tau") for t in (args.tau or ["0.75"]))),
        correction=args.correction, batch_size=args.batch_size, seed=args.seed, max_images=args.max_images,
    )
    out = Path(args.out)
    if (out / "certify.json").exists() and not args.overwrite:
        raise DdcatError(f"{out} already holds a certification (certify.json); pass --overwrite to replace it or choose another --out")
    with OutputFolder(out):
        checkpoint, trust = model_source(args, out)
        result = certify_checkpoint(checkpoint, plan, args.set or [], args.split, args.device, progress=not args.no_progress, trust=trust)
        if result.ctx.is_main:
            table = certify_table(result.records, result.summary["model"])
            write_text(out / "table.txt", table + "\n")  # certify.json last: it marks a finished certification
            write_text(out / "certify.json", json.dumps(result.summary, indent=1) + "\n")
            print(table)
            print(f"wrote {out / 'certify.json'}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from ddcat.checkpoint import export_main_branch, export_note
    from ddcat.models.user import Trust

    output = Path(args.output)
    check_writable_file(output, "export output")
    if output.exists() and not args.overwrite:
        raise DdcatError(f"export output {output} exists; pass --overwrite to replace it")
    written = export_main_branch(args.checkpoint, output, trust=Trust(everything=args.trust_factory))
    print(f"wrote {output} ({export_note(written)})")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from ddcat.checkpoint import OwnModelSpec
    from ddcat.convert import convert_paper_checkpoint

    output = Path(args.output)
    check_writable_file(output, "convert output")
    if output.exists() and not args.overwrite:
        raise DdcatError(f"convert output {output} exists; pass --overwrite to replace it")
    ckpt = convert_paper_checkpoint(args.source, output, args.set or [], config=args.config, dataset=args.dataset)
    cfg = ckpt["config"]
    print(f"wrote {output} ({OwnModelSpec(ckpt['model_spec']).describe()}; "
          f"config from {ckpt['converted_from']['base_config']}: {cfg['data']['name']}, protocol: {cfg['protocol']}, crop {cfg['train']['crop_size']})")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    import json

    from ddcat.reporting.gather import gather_results
    from ddcat.reporting.report import print_tables, write_report

    check_writable_folder(Path(args.out))
    results, problems = gather_results([Path(p) for p in args.paths])
    for line in problems:
        print(f"not placed: {line}", file=sys.stderr)
    results["command"] = " ".join(["ddcat", *sys.argv[1:]])
    with OutputFolder(args.out):
        report = write_report(results, Path(args.out))
        write_text(Path(args.out) / "results.json", json.dumps(results, indent=1) + "\n")
    print(print_tables(results))
    print(f"\nwrote {report}")
    return 0


def cmd_plot_train(args: argparse.Namespace) -> int:
    from ddcat.reporting.plots import plot_training

    if args.out:
        check_writable_folder(Path(args.out))
    paths = plot_training(Path(args.run), Path(args.out) if args.out else None)
    for p in paths:
        print(f"wrote {p}")
    return 0


def cmd_experiment(args: argparse.Namespace) -> int:
    from ddcat.experiment import list_runs, run_experiment_file, run_shard
    from ddcat.parsing import parse_shard

    if args.list:
        print(list_runs(args.file, Path(args.out), sets=args.set or [], quick=args.quick))
        return 0
    if args.shard:
        index, count = parse_shard(args.shard)
        run_shard(args.file, Path(args.out), index, count, sets=args.set or [], device=args.device, progress=not args.no_progress, quick=args.quick)
        return 0
    with OutputFolder(args.out):
        run_experiment_file(args.file, Path(args.out), sets=args.set or [], device=args.device, progress=not args.no_progress, quick=args.quick)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from ddcat.experiment import run_demo

    with OutputFolder(args.out):
        run_demo(Path(args.out), quick=args.quick, device=args.device, progress=not args.no_progress)
    return 0


def sweep_default() -> str:
    """``--steps``'s default, the paper's sweep :data:`ddcat.constants.SWEEP_STEPS` (``1-7``)."""
    steps = list(SWEEP_STEPS)
    contiguous = steps == list(range(steps[0], steps[-1] + 1))
    return f"{steps[0]}-{steps[-1]}" if contiguous else ",".join(map(str, steps))


def iters_defaults() -> str:
    """``--iters``'s default as help text: each iteration attack's own budget, from the registry
    (e.g. ``300: apgd, ..., ensemble; 200: padam-ce, ...``)."""
    from ddcat.attacks.registry import build_attack, names

    groups: dict[int, list[str]] = {}
    for name in names(budget="iters"):
        groups.setdefault(int(build_attack(name).steps), []).append(name)
    return "; ".join(f"{n}: {', '.join(group)}" for n, group in groups.items())


def build_parser() -> argparse.ArgumentParser:
    from ddcat.attacks.registry import ATTACK_NAMES, BOXES, NORMS, names

    parser = argparse.ArgumentParser(prog="ddcat", description="Adversarial training and robustness evaluation for semantic segmentation (DDC-AT).")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--set", action="extend", nargs="+", metavar="KEY=VALUE", help="override config keys: --set a=1 b=2 (repeatable)")
        p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
        p.add_argument("--no-progress", action="store_true", help="no progress bars")
        threads(p)

    def threads(p: argparse.ArgumentParser) -> None:
        p.add_argument("--threads", default=None, metavar="N",
                       help="CPU threads of this process (default: $DDCAT_THREADS, else the available cores divided by torchrun's local ranks)")

    p = sub.add_parser("train", help="train a model (clean, sat, ddcat, ddcat-m, ddcat-n, fgsm-rs, free)")
    p.add_argument("--config", default=None, help="YAML config file (default: built-in synthetic defaults)")
    p.add_argument("--method", default=None, help="clean | sat | ddcat | ddcat-m | ddcat-n | fgsm-rs | free (same as --set train.method=...)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--resume", nargs="?", const="", default=None, metavar="CKPT", help="continue from OUT/last.pt (or CKPT)")
    common(p)
    p.set_defaults(fn=cmd_train)

    p = sub.add_parser("eval", help="evaluate a checkpoint: clean, white-box sweep, transfer, stronger attacks")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint")
    source.add_argument("--config", help="evaluate the model a config describes (e.g. model.factory + model.weights) without training")
    p.add_argument("--attack", action="append", default=None,
                   help=f"{' | '.join(ATTACK_NAMES)} (repeatable; docs/design.md: the registry)")
    p.add_argument("--steps", default=sweep_default(),
                   help=f"step counts of {', '.join(names(budget='steps'))}, e.g. 1-7 or 3,7 (default {sweep_default()})")
    p.add_argument("--iters", type=int, default=None,
                   help=f"iteration budget of the iteration attacks (of each member of sea and ensemble); "
                        f"default: each attack's own ({iters_defaults()})")
    p.add_argument("--eps", action="append", default=None, metavar="EPS",
                   help=f"radius (L-inf; per-image L2 with --norm l2), e.g. 0.03 or 4/255; repeat for several (default {EPS})")
    p.add_argument("--alpha", default=None, help=f"step size of the sweep attacks, e.g. 0.01 or 2/255 (default {ALPHA}; with --norm l2: eps/4)")
    p.add_argument("--norm", default=None, choices=NORMS,
                   help="threat model of every attack: linf (default, or the config's eval.norm) or l2 (eps = L2 radius per image, e.g. 0.5)")
    p.add_argument("--restarts", type=int, default=1, help=f"random restarts of {', '.join(names(randomized=True))}")
    p.add_argument("--box", choices=BOXES, default="project",
                   help="how dag, dag-003, pdpgd and alma-prox meet --eps: project (iterates kept in the eps-box; default) "
                        "or clip (as rse: run unconstrained, clip the result)")
    p.add_argument("--seed", type=int, default=None, help="seed of the randomized attacks (default: the checkpoint's seed)")
    p.add_argument("--class-counts", default=None, metavar="COUNTS",
                   help="training pixels per class for sea's balanced loss: 120,30,5 or a JSON file (default: counted from the data)")
    p.add_argument("--transfer-from", nargs="+", default=None, metavar="CKPT", help="substitute models for black-box transfer")
    p.add_argument("--split", default="val", choices=("train", "val"))
    p.add_argument("--out", required=True)
    p.add_argument("--overwrite", action="store_true", help="replace an evaluation already in --out")
    p.add_argument("--trust-factory", action="store_true", help="run the model.factory a user-model checkpoint names (it is code)")
    common(p)
    p.set_defaults(fn=cmd_eval)

    p = sub.add_parser("certify", help="certified robustness by randomized smoothing (SegCertify): L2 radius per pixel")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint")
    source.add_argument("--config", help="certify the model a config describes (e.g. model.factory + model.weights)")
    p.add_argument("--sigma", default="0.25", help="noise std in [0, 1] pixel units, e.g. 0.25 or 64/255 (default 0.25)")
    p.add_argument("--n0", type=int, default=10, help="selection samples per image (default 10)")
    p.add_argument("--n", "--num-samples", dest="n", type=int, default=100,
                   help="estimation samples per image (default 100); under torchrun write --num-samples (torchrun reads --n as its own)")
    p.add_argument("--alpha", default="0.001", help="family-wise error level per image (default 0.001)")
    p.add_argument("--tau", action="append", default=None, help="threshold in (0.5, 1); repeat for several (default 0.75)")
    p.add_argument("--correction", default="holm", help="holm | bonferroni: the multiple-testing correction over an image's pixels")
    p.add_argument("--batch-size", type=int, default=16, help="noisy samples per forward pass (bounds memory; results do not depend on it)")
    p.add_argument("--seed", type=int, default=None, help="noise seed (default: the checkpoint's seed)")
    p.add_argument("--max-images", type=int, default=0, help="certify the first N images only (0 = all)")
    p.add_argument("--split", default="val", choices=("train", "val"))
    p.add_argument("--out", required=True)
    p.add_argument("--overwrite", action="store_true", help="replace a certification already in --out")
    p.add_argument("--trust-factory", action="store_true", help="run the model.factory a user-model checkpoint names (it is code)")
    common(p)
    p.set_defaults(fn=cmd_certify)

    p = sub.add_parser("export", help="write the main branch alone as a plain-model checkpoint")
    p.add_argument("checkpoint")
    p.add_argument("output")
    p.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    p.add_argument("--trust-factory", action="store_true", help="run the model.factory a user-model checkpoint names (it is code)")
    threads(p)
    p.set_defaults(fn=cmd_export)

    p = sub.add_parser("plot-train", help="plot losses, DDC-AT routing shares and the robustness watch (robustness.png) of a training run")
    p.add_argument("run", help="training output folder (holds train_log.jsonl)")
    p.add_argument("--out", default=None, help="folder for the PNGs (default: the run folder)")
    threads(p)
    p.set_defaults(fn=cmd_plot_train)

    p = sub.add_parser("experiment", help="run a grid of (method, model, seed) trainings and evaluations")
    p.add_argument("file")
    p.add_argument("--out", required=True)
    p.add_argument("--quick", action="store_true", help="apply the file's quick: section (a smoke run)")
    p.add_argument("--list", action="store_true", help="print one line per run (line I+1: the run of index I): its id, a tab, then its ddcat train, eval and certify commands joined with ' && '")
    p.add_argument("--shard", default=None, metavar="I/N", help="run only the runs whose index is I mod N (a SLURM array task); then: ddcat report OUT")
    common(p)
    p.set_defaults(fn=cmd_experiment)

    p = sub.add_parser("convert", help="convert a checkpoint of the paper's public code into a ddcat checkpoint")
    p.add_argument("source", help="the paper code's checkpoint ({'epoch', 'state_dict', 'optimizer'} or a state dict)")
    p.add_argument("output")
    p.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    p.add_argument("--dataset", default=None, metavar="NAME", help="voc | cityscapes | ade20k: the packaged config the converted checkpoint's config starts from (default: read from the class count, 21 / 19 / 150)")
    p.add_argument("--config", default=None, metavar="FILE", help="your own base config instead (another dataset); model keys and data.num_classes are the checkpoint's")
    p.add_argument("--set", action="extend", nargs="+", metavar="KEY=VALUE", help="config keys of the converted checkpoint, e.g. data.root=/data/VOC2012 train.method=sat")
    threads(p)
    p.set_defaults(fn=cmd_convert)

    p = sub.add_parser("report", help="the report of ddcat demo from any run folders and evaluation folders (metrics.json)")
    p.add_argument("paths", nargs="+", metavar="PATH", help="experiment output folders, run folders, evaluation folders (searched recursively)")
    p.add_argument("--out", required=True, help="folder for report.md, results.json and the figures")
    threads(p)
    p.set_defaults(fn=cmd_report)

    p = sub.add_parser("demo", help="the paper's experiments at laptop scale on the synthetic data")
    p.add_argument("--quick", action="store_true", help="a few-minute smoke run")
    p.add_argument("--out", default="demo_out")
    common(p)
    p.set_defaults(fn=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from ddcat import activity  # imports nothing that loads torch

    activity.clear()
    try:
        from ddcat.threads import configure_threads

        configure_threads(args.threads)  # before anything imports torch: see ddcat/threads.py
        return args.fn(args)
    except DdcatError as exc:
        print(f"ddcat: error: {exc}", file=sys.stderr)
        return 2
    except (RuntimeError, MemoryError) as exc:  # CPU / CUDA allocation failures: what ran out and what to change
        if not activity.is_out_of_memory(exc):
            raise
        print(f"ddcat: error: {activity.out_of_memory_message(exc)}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, Interrupted) as exc:
        hint = exc.hint if isinstance(exc, Interrupted) else ""
        print(f"ddcat: interrupted{'; ' + hint if hint else ''}", file=sys.stderr)
        return 130
    except OSError as exc:  # a full disk, a vanished folder, permissions: the user's environment
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            reason = "no space left on device"
        else:
            reason = exc.strerror or type(exc).__name__
        # every write of ddcat names its file itself (ddcat.outdir.cannot_write); an OSError without a
        # file name that still gets here came from elsewhere (a library's write): name the output it was under
        below = getattr(args, "out", None) or getattr(args, "output", None)
        where = f": {exc.filename}" if exc.filename else (f" (while writing below {below})" if below else "")  # paths: at most PATH_MAX
        print(f"ddcat: error: {reason}{where}", file=sys.stderr)
        return 2
    finally:
        from ddcat.distributed import shutdown

        shutdown()
