"""Training cost per iteration of every recipe of configs/recipes.yaml, as a ratio to clean training,
measured interleaved in one run.

    python benchmarks/bench_recipes.py [--file configs/recipes.yaml] [--size 64] [--batch 8]
        [--width 0] [--repeats 20] [--warmup 2] [--device cpu] [--precision fp32|bf16] [--json PATH]
    python benchmarks/bench_recipes.py --costs COSTS.json --results runs/recipes/results.json \
        --plot docs/img/recipes_front.png      # the table and plot of docs/results.md, no timing

Each recipe is built from its run config in the experiment file (seed 0, the file's model and
method overrides; --size / --batch / --width override the config when given). One round times one
training iteration of every recipe back to back (attack, training forward and backward, optimiser
step: what the loop does between two log lines); the ratio to clean is the median over rounds of
the per-round ratio, which cancels most of a shared machine's load drift. A ``free`` iteration is
one replay (``train.iters`` counts replays), so its ratio is the cost of a free run against a clean
run of the same ``train.iters``. The robustness watch is off here (its cost is every N iterations,
see training/watch.py). ``--precision bf16`` sets ``train.amp=bf16`` and ``attack.precision=bf16``
(on CPU bf16 is usually slower: it is meant for a GPU).

With ``--results`` (the ``results.json`` of ``ddcat experiment configs/recipes.yaml``) it prints the
Markdown table of docs/results.md (cost ratio, clean mIoU, BIM-7 mIoU and the lowest mIoU over every white-box attack of the run (the ensemble, SEA, ...) per recipe and seed; the results.json of `ddcat report` merges evaluations made by separate jobs)
and, with ``--plot``, draws robust mIoU under the strongest evaluation against cost (one point per
recipe and seed, the Pareto front as a step line); ``--costs`` reuses the ``--json`` of a timing run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from ddcat.checkpoint import build_from_spec, spec_from_config
from ddcat.config import apply_sets
from ddcat.experiment_file import load_experiment
from ddcat.training import build_method, optimizer_for

ROOT = Path(__file__).resolve().parent.parent


def one_iteration(method, model, optimizer, images, labels, device, amp: bool) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    tic = time.perf_counter()
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        loss, _ = method.loss(model, model, images, labels, seed=0)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - tic


def recipes(args) -> dict[str, dict]:
    """label -> run config (seed 0) of the experiment file, with the command line's overrides."""
    exp = load_experiment(args.file)
    sets = ["train.robust_check_every=0"]
    if args.size:
        sets += [f"train.crop_size={args.size}"]
    if args.batch:
        sets += [f"train.batch_size={args.batch}"]
    if args.width:
        sets += [f"model.width={args.width}"]
    if args.precision == "bf16":
        sets += ["train.amp=bf16", "attack.precision=bf16"]
    seed = min(r.seed for r in exp["runs"])
    return {r.method: apply_sets(r.cfg, sets) for r in exp["runs"] if r.seed == seed}


def lowest(records: list[dict]) -> dict:
    """The white-box record with the lowest mIoU (the lowest bound of the run over every attack it
    was evaluated with: the ensemble, SEA, BIM, any other); transfer records are another threat model."""
    attacked = [r for r in records if r["attack"] != "clean" and r.get("source", "self") == "self"]
    if not attacked:
        raise SystemExit("results hold no attacked record: evaluate with strong: [sea, ensemble]")
    return min(attacked, key=lambda r: r["mIoU"])


def front_table(results_path: str, costs: dict[str, float], plot: str | None) -> None:
    """The table and plot of docs/results.md from an experiment's ``results.json`` or ``ddcat
    report``'s (which merges the evaluations of one run made by separate jobs, e.g. a SEA-100 run
    added later): per run, clean mIoU, BIM-7 and the lowest bound over every attack present."""
    results = json.loads(Path(results_path).read_text())
    per_run: dict = {}
    for ev in results["evaluations"]:
        if ev["kind"] not in ("strong", "white-box"):
            continue
        run = per_run.setdefault((ev["method"], ev["seed"]), [])
        run += ev["records"]
    rows, points = [], []
    for (method, seed), recs in per_run.items():
        clean = next(r for r in recs if r["attack"] == "clean")
        bim = max((r for r in recs if r["attack"] == "bim"), key=lambda r: r["steps"])
        low = lowest(recs)
        cost = costs.get(method, float("nan"))
        name = f"{low['attack']}-{low['steps']}"
        rows.append((method, seed, cost, clean["mIoU"], bim["mIoU"], bim["steps"], low["mIoU"], name))
        points.append((method, seed, cost, low["mIoU"]))
    rows.sort(key=lambda r: (r[2], r[0], r[1]))
    print(f"| recipe | seed | cost (x clean) | clean mIoU | BIM-{rows[0][5]} mIoU | lowest mIoU | by |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for method, seed, cost, c, b, _, low_miou, name in rows:
        print(f"| {method} | {seed} | {cost:.2f} | {c:.3f} | {b:.3f} | {low_miou:.3f} | {name} |")
    if plot:
        from ddcat.reporting.plots import plot_cost_front

        plot_cost_front(points, plot, f"lowest mIoU over every attack (eps {results.get('eps')})",
                        "robustness under the strongest evaluation against training cost")
        print(f"wrote {plot}")


def build_parser() -> argparse.ArgumentParser:
    """The command line of this benchmark (tests/test_docs_commands.py parses the docs' commands with it)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--file", default=str(ROOT / "configs" / "recipes.yaml"))
    parser.add_argument("--size", type=int, default=0, help="crop size (0 = the config's)")
    parser.add_argument("--batch", type=int, default=0, help="batch size (0 = the config's)")
    parser.add_argument("--width", type=int, default=0, help="ResNet width (0 = the config's)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--json", default=None)
    parser.add_argument("--results", default=None, help="results.json of the recipes experiment: print the table")
    parser.add_argument("--costs", default=None, help="the --json of an earlier timing run (skip the timing)")
    parser.add_argument("--plot", default=None, help="with --results: PNG of robust mIoU against cost")
    return parser


def main() -> None:
    parser = build_parser()
    args = parser.parse_args()
    if args.costs:
        costs = {r["recipe"]: r["over_clean"] for r in json.loads(Path(args.costs).read_text())["rows"]}
        if not args.results:
            raise SystemExit("--costs needs --results")
        front_table(args.results, costs, args.plot)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    setups = {}
    for label, cfg in recipes(args).items():
        torch.manual_seed(0)
        method = build_method(cfg)
        model = build_from_spec(spec_from_config(cfg, ddc=method.needs_ddc_heads)).to(device).train()
        setups[label] = (method, model, optimizer_for(model, cfg["train"]), cfg)
    any_cfg = next(iter(setups.values()))[3]
    k, size, batch = any_cfg["data"]["num_classes"], any_cfg["train"]["crop_size"], any_cfg["train"]["batch_size"]
    g = torch.Generator().manual_seed(0)
    images = torch.rand(batch, 3, size, size, generator=g).to(device)
    labels = torch.randint(0, k, (batch, size, size), generator=g).to(device)
    amp = args.precision == "bf16"
    times: dict[str, list[float]] = {label: [] for label in setups}
    for r in range(args.warmup + args.repeats):
        for label, (method, model, opt, _) in setups.items():
            t = one_iteration(method, model, opt, images, labels, device, amp)
            if r >= args.warmup:
                times[label].append(t)
    clean = times["clean"]
    rows = []
    for label, ts in times.items():
        rows.append({
            "recipe": label,
            "ms_per_iter": 1000 * statistics.median(ts),
            "over_clean": statistics.median(t / c for t, c in zip(ts, clean)),
            "images_per_s": batch / statistics.median(ts),
        })
    m = any_cfg["model"]
    print(f"training iteration per recipe ({args.file}), {m['arch']} {m['backbone']} width {m['width']}, {size}x{size}, "
          f"batch {batch}, {args.precision}, {device}, {torch.get_num_threads()} threads, median of {args.repeats} interleaved rounds")
    print(f"{'recipe':<14}{'ms/iter':>10}{'x clean':>9}{'images/s':>10}")
    for row in rows:
        print(f"{row['recipe']:<14}{row['ms_per_iter']:>10.1f}{row['over_clean']:>9.2f}{row['images_per_s']:>10.1f}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"rows": rows, "size": size, "batch": batch, "precision": args.precision,
                                               "device": str(device), "threads": torch.get_num_threads()}, indent=2))
    if args.results:
        front_table(args.results, {r["recipe"]: r["over_clean"] for r in rows}, args.plot)


if __name__ == "__main__":
    main()
