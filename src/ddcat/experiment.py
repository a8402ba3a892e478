"""``ddcat experiment FILE`` and ``ddcat demo``: a grid of trainings and the paper's evaluations.

An experiment file (read by :mod:`ddcat.experiment_file`, see ``configs/demo.yaml``) names a base
config, model variants, methods and seeds, and the evaluations; every evaluation goes through
:func:`ddcat.evaluation.evaluate_model`. For every (model, method, seed) the run's full config is hashed;
a run whose folder already holds a finished ``last.pt`` for that exact config is reused, an
interrupted one is resumed, and evaluations are cached the same way. The result is
``results.json`` plus the report (tables, plots, findings) in the output folder.
"""

from __future__ import annotations

import hashlib
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ddcat.attacks import BIM
from ddcat.certification import CertifyPlan, certify_model
from ddcat.checkpoint import load_checkpoint
from ddcat.data import build_dataset
from ddcat.distributed import DistContext, pick_device
from ddcat.errors import DdcatError
from ddcat.evaluation import AttackPlan, evaluate_model, load_inference_model
from ddcat.evaluation.engine import image_batches, predict
from ddcat.experiment_file import Run, load_experiment, packaged_config
from ddcat.models.user import Trust
from ddcat.outdir import cannot_write, write_text
from ddcat.runinfo import versions

__all__ = ["Run", "load_experiment", "packaged_config", "run_experiment", "run_experiment_file", "run_demo"]


def _finished(last: Path, iters: int) -> bool:
    if not last.exists():
        return False
    try:
        return int(load_checkpoint(last).get("iteration", -1)) >= iters
    except DdcatError:
        return False


def run_model(run: Run, checkpoint: str | Path, dev: torch.device) -> Any:
    """The run's trained model on its inference path. The experiment file is the user's own
    config: the model.factory the run's config names may run, no other (a checkpoint put in the
    run folder that names other code is refused)."""
    return load_inference_model(checkpoint, run.cfg, dev, trust=Trust().with_configs(run.cfg))


def ensure_trained(run: Run, root: Path, device: str | None, progress: bool) -> dict[str, Any]:
    """Train ``run`` unless its folder holds a finished checkpoint of the same config."""
    from ddcat.training import train

    folder = root / "runs" / run.id
    last = folder / "last.pt"
    timing = folder / "timing.json"
    if _finished(last, run.cfg["train"]["iters"]):  # also a run trained by the `ddcat train` line of --list
        recorded = json.loads(timing.read_text()) if timing.exists() else {}
        seconds = recorded.get("train_seconds")
        if timing.exists() and recorded.get("method") != run.method:  # written by an older ddcat: add the labels
            write_text(timing, json.dumps({"train_seconds": seconds, "label": run.label, "method": run.method}) + "\n")
        reused = True
    else:
        tic = time.perf_counter()
        train(run.cfg, folder, resume=last.exists(), device=device, progress=progress)
        seconds = time.perf_counter() - tic
        # the run's model label and method label (e.g. "sat-bim1" for a train.method sat run): ddcat report reads both
        write_text(timing, json.dumps({"train_seconds": seconds, "label": run.label, "method": run.method}) + "\n")
        reused = False
    return {
        "id": run.id,
        "arch": run.label,
        "method": run.method,
        "seed": run.seed,
        "dir": str(folder),
        "checkpoint": str(last),
        "log": str(folder / "train_log.jsonl"),
        "train_seconds": seconds,
        "reused": reused,
    }


def _cached(folder: Path, kind: str, key: dict[str, Any], compute) -> list[dict[str, Any]]:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]
    path = folder / "eval" / f"{kind}-{digest}.json"
    if path.exists():
        return json.loads(path.read_text())["records"]
    records = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps({"key": key, "records": records}, indent=1))
    return records


def load_checked(path: str | Path, quick: bool = False, sets: list[str] | None = None) -> dict[str, Any]:
    """The experiment file read and checked whole before anything runs (every ``ddcat experiment``
    mode: a grid, ``--list``, ``--shard``), ``evaluation.strong`` against the attack registry
    (:data:`ddcat.attacks.registry.ATTACK_NAMES`); each mode then builds ``evaluation.certify``'s
    plan (:func:`certify_plan`, which checks it) before its first write."""
    from ddcat.attacks.registry import ATTACK_NAMES

    return load_experiment(path, quick=quick, sets=sets, attacks=ATTACK_NAMES)


def check_data(runs: list[Run], progress: bool = True) -> None:
    """The data check (:func:`ddcat.data.check.check_config_data`, issue 20) of the train and val
    lists of every distinct data config of ``runs``, before anything is written: a corrupt file is
    a one-line error naming it, and no run folder is created. Cached per data root, so a rerun only
    ``stat``s the files."""
    from ddcat.data.check import check_config_data

    seen: set[str] = set()
    for run in runs:
        key = json.dumps(run.cfg["data"], sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        for split in ("train", "val"):
            check_config_data(run.cfg, split, progress=progress)


def certify_run(run: Run, plan: CertifyPlan, ev: dict[str, Any], out: Path, model: Any, ctx: DistContext, progress: bool) -> list[dict[str, Any]]:
    """``evaluation.certify`` of one run, cached in ``OUT/runs/ID/eval/certify-HASH.json``."""
    key = {"run": run.id, "certify_version": plan.version, **{k: v for k, v in ev["certify"].items() if k not in ("runs", "seeds")}}
    return _cached(out / "runs" / run.id, "certify", key,
                   lambda: certify_model(model, run.cfg, plan, "val", ctx, progress, "certify", seed=run.seed))


def certify_plan(spec: dict[str, Any]) -> tuple[CertifyPlan | None, list[Run]]:
    """The plan of ``evaluation.certify`` and the runs it certifies, checked before any training."""
    c = spec["evaluation"].get("certify")
    if not c:
        return None, []
    plan = CertifyPlan(sigma=c["sigma"], n0=c["n0"], n=c["n"], alpha=c["alpha"], taus=tuple(c["tau"]), correction=c["correction"],
                       batch_size=c["batch_size"], max_images=c["max_images"], prefix=f"evaluation.certify in {spec['file']}: ")
    runs: list[Run] = spec["runs"]
    order = {name: i for i, name in enumerate(c["runs"])}  # the card lists them as the file does
    chosen = sorted((r for r in runs if f"{r.label}/{r.method}" in order and r.seed in c["seeds"]),
                    key=lambda r: (order[f"{r.label}/{r.method}"], r.seed))
    named = {f"{r.label}/{r.method}" for r in runs}
    missing = [name for name in c["runs"] if name not in named]
    if missing:
        raise DdcatError(f"evaluation.certify.runs in {spec['file']} names {', '.join(missing)}, which the experiment does not train; "
                         f"its runs: {', '.join(sorted(named))}")
    return plan, chosen


def run_experiment(spec: dict[str, Any], out: Path, device: str | None = None, progress: bool = True) -> dict[str, Any]:
    plan, to_certify = certify_plan(spec)
    runs: list[Run] = spec["runs"]
    check_data(runs, progress)  # before the first write: bad data leaves no run folder
    out.mkdir(parents=True, exist_ok=True)
    dev = pick_device(device)
    ev = spec["evaluation"]
    started = time.time()
    say = (lambda msg: print(msg, flush=True)) if progress else (lambda msg: None)

    infos: dict[str, dict[str, Any]] = {}
    for i, run in enumerate(runs, 1):
        say(f"[train {i}/{len(runs)}] {run.label} {run.method} seed {run.seed}")
        infos[run.id] = ensure_trained(run, out, device, progress)
        if infos[run.id]["reused"]:
            say(f"  reused {infos[run.id]['dir']}")

    models = {run.id: run_model(run, infos[run.id]["checkpoint"], dev) for run in runs}
    ctx = DistContext(device=dev)
    evaluations = []
    for i, run in enumerate(runs, 1):
        say(f"[eval {i}/{len(runs)}] {run.label} {run.method} seed {run.seed}")
        evaluations += evaluate_run(run, substitutes_of(run, runs, ev), out, ev, lambda r: models[r.id], ctx, progress)

    certifications = []
    for i, run in enumerate(to_certify, 1):
        say(f"[certify {i}/{len(to_certify)}] {run.label} {run.method} seed {run.seed}")
        certifications.append(_evaluation(run, "certify", certify_run(run, plan, ev, out, models[run.id], ctx, progress)))

    results: dict[str, Any] = {
        "experiment": spec["name"],
        "file": spec["file"],
        "quick": spec["quick"],
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": f"{platform.node()} ({platform.machine()}, {torch.get_num_threads()} torch threads, device {dev})",
        "command": " ".join(sys.argv),
        "versions": versions(),
        "steps": list(ev["steps"]),
        "eps": ev["eps"],
        "alpha": ev["alpha"],
        "evaluation": ev,
        "miou_convention": "mIoU: mean IoU over classes with a non-empty union (mIoU_all: over all K, as the paper's code)",
        "runs": [infos[r.id] for r in runs],
        "evaluations": evaluations,
        "certifications": certifications,
    }
    if ev["qualitative"]:
        results["qualitative"] = write_qualitative(runs, models, out, ev, dev)
    results["wall_seconds"] = time.time() - started
    return results


def substitutes_of(run: Run, runs: list[Run], ev: dict[str, Any]) -> list[Run]:
    """The substitute runs of ``run``'s transfer evaluation: the other architectures' runs of the
    method ``evaluation.transfer_from`` names (none when it names none)."""
    if not ev["transfer_from"]:
        return []
    return [r for r in runs if r.method == ev["transfer_from"] and r.label != run.label]


def evaluate_run(run: Run, subs: list[Run], out: Path, ev: dict[str, Any], model_of, ctx: DistContext, progress: bool) -> list[dict[str, Any]]:
    """White-box sweep, stronger attacks and transfer (from ``subs``) of one run, each cached in
    ``OUT/runs/ID/eval/KIND-HASH.json``; ``model_of(run)`` gives a run's model on its inference path."""
    folder = out / "runs" / run.id
    evaluations = []

    def measure(plan: AttackPlan, sources: list[tuple[str, Any]], desc: str) -> list[dict[str, Any]]:
        return evaluate_model(model_of(run), run.cfg, plan, sources, "val", ctx, progress, desc, cache_dir=out, seed=run.seed, max_images=ev["max_images"])

    base_key = {"run": run.id, "eps": ev["eps"], "alpha": ev["alpha"], "max_images": ev["max_images"]}
    sweep = AttackPlan(("bim",), tuple(ev["steps"]), (ev["eps"],), ev["alpha"])
    white = _cached(folder, "white-box", {**base_key, "steps": ev["steps"]}, lambda: measure(sweep, [("self", None)], "white-box BIM"))
    evaluations.append(_evaluation(run, "white-box", white))
    if ev["strong"]:
        n = ev["strong_steps"]
        strong_plan = AttackPlan(("bim", *ev["strong"]), (n,), (ev["eps"],), ev["alpha"], iters=ev["sea_iters"])
        key = {**base_key, "attacks": ev["strong"], "steps": n}
        if strong_plan.needs_budget:
            key["iters"] = ev["sea_iters"]
        strong = _cached(folder, "strong", key, lambda: measure(strong_plan, [("self", None)], "stronger attacks"))
        evaluations.append(_evaluation(run, "strong", strong))
    if subs:
        sources = [(s.id, model_of(s)) for s in subs]
        transfer = _cached(folder, "transfer", {**base_key, "steps": ev["steps"], "sources": [s.id for s in subs]},
                           lambda: measure(sweep, sources, "black-box transfer"))
        evaluations.append(_evaluation(run, "transfer", transfer))
    return evaluations


def _evaluation(run: Run, kind: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    return {"run_id": run.id, "arch": run.label, "method": run.method, "seed": run.seed, "kind": kind, "records": records}


def write_qualitative(runs: list[Run], models: dict[str, Any], out: Path, ev: dict[str, Any], dev: torch.device) -> str:
    """Images, their adversarial versions (BIM, the sweep's largest n, against each model) and predictions."""
    first = {}
    for run in runs:
        first.setdefault((run.label, run.method), run)
    any_run = runs[0]
    dataset = build_dataset(any_run.cfg, "val")
    images, labels = next(image_batches(dataset, ev["qualitative"]))
    images, labels = images.to(dev), labels.to(dev)
    attack = BIM(ev["eps"], ev["alpha"], max(ev["steps"]))
    arrays: dict[str, np.ndarray] = {
        "image": images.permute(0, 2, 3, 1).cpu().numpy(),
        "label": labels.cpu().numpy(),
    }
    for (arch, method), run in first.items():
        model = models[run.id]
        adv = attack(model, images, labels)
        arrays[f"adversarial/{arch}/{method}"] = adv.permute(0, 2, 3, 1).cpu().numpy()
        arrays[f"pred_clean/{arch}/{method}"] = predict(model, images).cpu().numpy()
        arrays[f"pred_adv/{arch}/{method}"] = predict(model, adv).cpu().numpy()
        arrays.setdefault("adversarial", arrays[f"adversarial/{arch}/{method}"])
    try:
        np.savez_compressed(out / "qualitative.npz", **arrays)
    except OSError as exc:
        raise cannot_write(out / "qualitative.npz", exc) from None
    return "qualitative.npz"


def finish(results: dict[str, Any], out: Path) -> None:
    from ddcat.reporting.report import print_tables, write_report

    write_text(out / "results.json", json.dumps(results, indent=1) + "\n")
    report = write_report(results, out)
    print(print_tables(results))
    print(f"\nwrote {out / 'results.json'} and {report}")


def run_experiment_file(path: str | Path, out: Path, sets: list[str] | None = None, device: str | None = None, progress: bool = True, quick: bool = False) -> dict[str, Any]:
    spec = load_checked(path, quick=quick, sets=sets)
    results = run_experiment(spec, out, device, progress)
    finish(results, out)
    return results


def select_shard(runs: list[Run], index: int, count: int) -> list[Run]:
    """The runs of shard ``index`` of ``count``: those whose position in the grid is ``index`` mod ``count``."""
    return [run for i, run in enumerate(runs) if i % count == index]


def eval_commands(run: Run, runs: list[Run], out: Path, ev: dict[str, Any]) -> list[str]:
    """The ``ddcat eval`` lines that compute what :func:`evaluate_run` caches, into
    ``OUT/runs/ID/eval-KIND/metrics.json`` (``ddcat report`` reads either)."""
    folder = out / "runs" / run.id
    ckpt = folder / "last.pt"
    common = f"--eps {ev['eps']} --alpha {ev['alpha']}" + (f" --set eval.max_images={ev['max_images']}" if ev["max_images"] else "")
    steps = ",".join(str(n) for n in ev["steps"])
    lines = [f"ddcat eval --checkpoint {ckpt} --attack bim --steps {steps} {common} --out {folder / 'eval-white-box'}"]
    if ev["strong"]:
        attacks = " ".join(f"--attack {a}" for a in ("bim", *ev["strong"]))
        lines.append(f"ddcat eval --checkpoint {ckpt} {attacks} --steps {ev['strong_steps']} --iters {ev['sea_iters']} --seed {run.seed} {common} --out {folder / 'eval-strong'}")
    subs = substitutes_of(run, runs, ev)
    if subs:
        sources = " ".join(str(out / "runs" / s.id / "last.pt") for s in subs)
        lines.append(f"ddcat eval --checkpoint {ckpt} --attack bim --steps {steps} {common} --transfer-from {sources} --out {folder / 'eval-transfer'}")
    return lines


def certify_command(run: Run, plan: CertifyPlan, out: Path) -> str:
    """The ``ddcat certify`` line of a run ``evaluation.certify`` names, into ``OUT/runs/ID/certify``
    (``--num-samples``: ``--n`` is torchrun's own flag)."""
    folder = out / "runs" / run.id
    taus = " ".join(f"--tau {t!r}" for t in plan.taus)
    return (f"ddcat certify --checkpoint {folder / 'last.pt'} --sigma {plan.sigma!r} --n0 {plan.n0} --num-samples {plan.n} "
            f"--alpha {plan.alpha!r} {taus} --correction {plan.correction} --batch-size {plan.batch_size} --seed {run.seed} "
            f"--max-images {plan.max_images} --out {folder / 'certify'}")


def list_runs(path: str | Path, out: Path, sets: list[str] | None = None, quick: bool = False) -> str:
    """``ddcat experiment FILE --out OUT --list``: one line per run, in grid order (line I + 1 is the
    run of index I: a SLURM array task picks its own with ``sed -n "$((SLURM_ARRAY_TASK_ID+1))p"``):
    the run id, a tab, then its exact ``ddcat train``, ``ddcat eval`` and (for the runs
    ``evaluation.certify`` names) ``ddcat certify`` commands joined with `` && ``. The train command
    reads the run's full config, written to ``OUT/configs/ID.yaml`` (the only file --list writes)."""
    import yaml

    spec = load_checked(path, quick=quick, sets=sets)
    plan, to_certify = certify_plan(spec)
    certified = {r.id for r in to_certify}
    runs, ev = spec["runs"], spec["evaluation"]
    lines = []
    for run in runs:
        config = out / "configs" / f"{run.id}.yaml"
        config.parent.mkdir(parents=True, exist_ok=True)
        write_text(config, yaml.safe_dump(run.cfg, sort_keys=False))
        commands = [f"ddcat train --config {config} --out {out / 'runs' / run.id}", *eval_commands(run, runs, out, ev)]
        if plan is not None and run.id in certified:
            commands.append(certify_command(run, plan, out))
        lines.append(f"{run.id}\t{' && '.join(commands)}")
    return "\n".join(lines)


def run_shard(path: str | Path, out: Path, index: int, count: int, sets: list[str] | None = None,
              device: str | None = None, progress: bool = True, quick: bool = False) -> list[str]:
    """``ddcat experiment FILE --out OUT --shard I/N``: train and evaluate (and certify, for the runs
    ``evaluation.certify`` names) the runs of shard I (see :func:`select_shard`), each under the lock
    of its own run folder, so shards share ``OUT``. The whole file (attacks against the registry,
    the certification's plan) and the shard's data are checked before the first write. A
    transfer evaluation whose substitutes are not trained yet is skipped and named: run the shards
    again once all have trained (finished runs and evaluations are reused), then ``ddcat report OUT``.
    Returns the ids of the runs this shard handled."""
    from ddcat.outdir import OutputFolder

    spec = load_checked(path, quick=quick, sets=sets)
    plan, to_certify = certify_plan(spec)  # an unknown attack or certify run: refused before any training
    certified = {r.id for r in to_certify}
    runs, ev = spec["runs"], spec["evaluation"]
    mine = select_shard(runs, index, count)
    check_data(mine, progress)  # before the first write: bad data leaves no run folder
    dev = pick_device(device)
    ctx = DistContext(device=dev)
    say = (lambda msg: print(msg, flush=True)) if progress else (lambda msg: None)
    models: dict[str, Any] = {}

    def model_of(r: Run) -> Any:
        if r.id not in models:
            models[r.id] = run_model(r, out / "runs" / r.id / "last.pt", dev)
        return models[r.id]

    for run in mine:
        say(f"[shard {index}/{count}] {run.id}")
        with OutputFolder(out / "runs" / run.id):
            ensure_trained(run, out, device, progress)
            subs = substitutes_of(run, runs, ev)
            waiting = [s.id for s in subs if not _finished(out / "runs" / s.id / "last.pt", s.cfg["train"]["iters"])]
            if waiting:
                print(f"{run.id}: transfer evaluation skipped, substitute(s) not trained yet: {', '.join(waiting)}; "
                      "run this shard again when every shard has trained", file=sys.stderr)
                subs = []
            evaluate_run(run, subs, out, ev, model_of, ctx, progress)
            if plan is not None and run.id in certified:
                certify_run(run, plan, ev, out, model_of(run), ctx, progress)
    return [r.id for r in mine]


def run_demo(out: Path, quick: bool = False, device: str | None = None, progress: bool = True) -> dict[str, Any]:
    return run_experiment_file(packaged_config("demo.yaml"), out, device=device, progress=progress, quick=quick)
