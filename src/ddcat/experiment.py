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
from ddcat.checkpoint import load_checkpoint
from ddcat.data import build_dataset
from ddcat.distributed import DistContext, pick_device
from ddcat.errors import DdcatError
from ddcat.evaluation import AttackPlan, evaluate_model, load_inference_model
from ddcat.evaluation.engine import image_batches, predict
from ddcat.experiment_file import Run, load_experiment, packaged_config
from ddcat.runinfo import versions

__all__ = ["Run", "load_experiment", "packaged_config", "run_experiment", "run_experiment_file", "run_demo"]


def _finished(last: Path, iters: int) -> bool:
    if not last.exists():
        return False
    try:
        return int(load_checkpoint(last).get("iteration", -1)) >= iters
    except DdcatError:
        return False


def ensure_trained(run: Run, root: Path, device: str | None, progress: bool) -> dict[str, Any]:
    """Train ``run`` unless its folder holds a finished checkpoint of the same config."""
    from ddcat.training import train

    folder = root / "runs" / run.id
    last = folder / "last.pt"
    timing = folder / "timing.json"
    if _finished(last, run.cfg["train"]["iters"]) and timing.exists():
        seconds = json.loads(timing.read_text())["train_seconds"]
        reused = True
    else:
        tic = time.perf_counter()
        train(run.cfg, folder, resume=last.exists(), device=device, progress=progress)
        seconds = time.perf_counter() - tic
        timing.write_text(json.dumps({"train_seconds": seconds}) + "\n")
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
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"key": key, "records": records}, indent=1))
    tmp.replace(path)
    return records


def run_experiment(spec: dict[str, Any], out: Path, device: str | None = None, progress: bool = True) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    dev = pick_device(device)
    ev = spec["evaluation"]
    runs: list[Run] = spec["runs"]
    started = time.time()
    say = (lambda msg: print(msg, flush=True)) if progress else (lambda msg: None)

    infos: dict[str, dict[str, Any]] = {}
    for i, run in enumerate(runs, 1):
        say(f"[train {i}/{len(runs)}] {run.label} {run.method} seed {run.seed}")
        infos[run.id] = ensure_trained(run, out, device, progress)
        if infos[run.id]["reused"]:
            say(f"  reused {infos[run.id]['dir']}")

    models = {run.id: load_inference_model(infos[run.id]["checkpoint"], run.cfg, dev) for run in runs}
    ctx = DistContext(device=dev)
    evaluations = []
    for i, run in enumerate(runs, 1):
        say(f"[eval {i}/{len(runs)}] {run.label} {run.method} seed {run.seed}")
        folder = out / "runs" / run.id

        def measure(plan: AttackPlan, sources: list[tuple[str, Any]], desc: str) -> list[dict[str, Any]]:
            return evaluate_model(models[run.id], run.cfg, plan, sources, "val", ctx, progress, desc, cache_dir=out, seed=run.seed, max_images=ev["max_images"])

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
        if ev["transfer_from"]:
            subs = [r for r in runs if r.method == ev["transfer_from"] and r.label != run.label]
            if subs:
                sources = [(s.id, models[s.id]) for s in subs]
                transfer = _cached(folder, "transfer", {**base_key, "steps": ev["steps"], "sources": [s.id for s in subs]},
                                   lambda: measure(sweep, sources, "black-box transfer"))
                evaluations.append(_evaluation(run, "transfer", transfer))

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
    }
    if ev["qualitative"]:
        results["qualitative"] = write_qualitative(runs, models, out, ev, dev)
    results["wall_seconds"] = time.time() - started
    return results


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
    np.savez_compressed(out / "qualitative.npz", **arrays)
    return "qualitative.npz"


def finish(results: dict[str, Any], out: Path) -> None:
    from ddcat.reporting.report import print_tables, write_report

    tmp = out / "results.json.tmp"
    tmp.write_text(json.dumps(results, indent=1) + "\n")
    tmp.replace(out / "results.json")
    report = write_report(results, out)
    print(print_tables(results))
    print(f"\nwrote {out / 'results.json'} and {report}")


def run_experiment_file(path: str | Path, out: Path, sets: list[str] | None = None, device: str | None = None, progress: bool = True, quick: bool = False) -> dict[str, Any]:
    spec = load_experiment(path, quick=quick, sets=sets)
    results = run_experiment(spec, out, device, progress)
    finish(results, out)
    return results


def run_demo(out: Path, quick: bool = False, device: str | None = None, progress: bool = True) -> dict[str, Any]:
    return run_experiment_file(packaged_config("demo.yaml"), out, device=device, progress=progress, quick=quick)
