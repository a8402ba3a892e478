"""``ddcat experiment FILE`` and ``ddcat demo``: a grid of trainings and the paper's evaluations.

An experiment file names a base config, model variants, methods and seeds, and the evaluations
(see ``configs/demo.yaml``). For every (model, method, seed) the run's full config is hashed;
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
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ddcat.attacks import BIM
from ddcat.checkpoint import load_checkpoint, load_model
from ddcat.config import DEFAULTS, load_yaml, merge
from ddcat.data import build_dataset
from ddcat.distributed import DistContext, pick_device
from ddcat.errors import DdcatError
from ddcat.evaluation.engine import evaluate, image_batches, predict
from ddcat.evaluation.protocol import attack_settings, inference_path
from ddcat.runinfo import versions

EXPERIMENT_KEYS = ("name", "base", "set", "models", "methods", "seeds", "evaluation", "quick")
EVAL_DEFAULTS: dict[str, Any] = {
    "eps": 0.03,
    "alpha": 0.01,
    "steps": [1, 2, 3, 4, 5, 6, 7],
    "transfer_from": None,
    "strong": [],
    "strong_steps": 7,
    "max_images": 0,
    "qualitative": 0,
}


@dataclass
class Run:
    label: str  # the model variant's name in the experiment file
    method: str
    seed: int
    cfg: dict[str, Any]

    @property
    def arch(self) -> str:
        return self.label

    @property
    def id(self) -> str:
        digest = hashlib.sha256(json.dumps(self.cfg, sort_keys=True).encode()).hexdigest()[:8]
        return f"{self.label}-{self.method}-s{self.seed}-{digest}"


def packaged_config(name: str) -> Path:
    return Path(str(resources.files("ddcat") / "configs" / name))


def load_experiment(path: str | Path, quick: bool = False, sets: list[str] | None = None) -> dict[str, Any]:
    """Read and check an experiment file; ``quick`` applies its ``quick:`` section."""
    path = Path(path)
    spec = load_yaml(path)
    unknown = set(spec) - set(EXPERIMENT_KEYS)
    if unknown:
        raise DdcatError(f"unknown key(s) {', '.join(sorted(unknown))} in {path}; valid: {', '.join(EXPERIMENT_KEYS)}")
    for key in ("models", "methods", "seeds"):
        if not spec.get(key):
            raise DdcatError(f"experiment file {path} needs a non-empty '{key}'")
    base = merge(DEFAULTS, {})
    if spec.get("base"):
        base_path = (path.parent / spec["base"]).resolve()
        base = merge(base, load_yaml(base_path), where=f" in {base_path}")
    base = merge(base, spec.get("set") or {}, where=f" in {path} (set)")
    evaluation = dict(EVAL_DEFAULTS)
    bad = set(spec.get("evaluation") or {}) - set(EVAL_DEFAULTS)
    if bad:
        raise DdcatError(f"unknown evaluation key(s) {', '.join(sorted(bad))} in {path}; valid: {', '.join(EVAL_DEFAULTS)}")
    evaluation.update(spec.get("evaluation") or {})
    seeds = list(spec["seeds"])
    if quick and spec.get("quick"):
        q = spec["quick"]
        base = merge(base, q.get("set") or {}, where=f" in {path} (quick.set)")
        seeds = list(q.get("seeds", seeds))
        evaluation.update(q.get("evaluation") or {})
    if sets:
        from ddcat.config import apply_sets

        base = apply_sets(base, sets)
    runs = []
    for label, overrides in spec["models"].items():
        for method in spec["methods"]:
            for seed in seeds:
                cfg = merge(base, overrides or {}, where=f" in {path} (models.{label})")
                cfg = merge(cfg, {"seed": int(seed), "train": {"method": method}}, where=f" in {path}")
                runs.append(Run(label, method, int(seed), cfg))
    return {"name": spec.get("name", path.stem), "file": str(path), "runs": runs, "evaluation": evaluation, "quick": quick}


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
        "arch": run.arch,
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

    models = {}
    for run in runs:
        model, _ = load_model(infos[run.id]["checkpoint"])
        models[run.id] = inference_path(model.to(dev).eval(), run.cfg)

    evaluations = []
    for i, run in enumerate(runs, 1):
        say(f"[eval {i}/{len(runs)}] {run.label} {run.method} seed {run.seed}")
        dataset = build_dataset(run.cfg, "val")
        folder = out / "runs" / run.id
        k = run.cfg["data"]["num_classes"]

        def measure(settings, desc):
            return evaluate(models[run.id], dataset, settings, k, dev, run.cfg["eval"]["batch_size"], ev["max_images"], DistContext(device=dev), progress, desc)

        base_key = {"run": run.id, "eps": ev["eps"], "alpha": ev["alpha"], "max_images": ev["max_images"]}
        white = _cached(folder, "white-box", {**base_key, "steps": ev["steps"]},
                        lambda: measure(attack_settings(["bim"], ev["steps"], ev["eps"], ev["alpha"], [("self", None)], run.seed), "white-box BIM"))
        evaluations.append(_evaluation(run, "white-box", white))
        if ev["strong"]:
            n = ev["strong_steps"]
            strong = _cached(folder, "strong", {**base_key, "attacks": ev["strong"], "steps": n},
                             lambda: measure(attack_settings(["bim", *ev["strong"]], [n], ev["eps"], ev["alpha"], [("self", None)], run.seed), "stronger attacks"))
            evaluations.append(_evaluation(run, "strong", strong))
        if ev["transfer_from"]:
            subs = [r for r in runs if r.method == ev["transfer_from"] and r.label != run.label]
            if subs:
                sources = [(s.id, models[s.id]) for s in subs]
                transfer = _cached(folder, "transfer", {**base_key, "steps": ev["steps"], "sources": [s.id for s in subs]},
                                   lambda: measure(attack_settings(["bim"], ev["steps"], ev["eps"], ev["alpha"], sources, run.seed), "black-box transfer"))
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
    return {"run_id": run.id, "arch": run.arch, "method": run.method, "seed": run.seed, "kind": kind, "records": records}


def write_qualitative(runs: list[Run], models: dict[str, Any], out: Path, ev: dict[str, Any], dev: torch.device) -> str:
    """Images, their adversarial versions (BIM, the sweep's largest n, against each model) and predictions."""
    first = {}
    for run in runs:
        first.setdefault((run.arch, run.method), run)
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
