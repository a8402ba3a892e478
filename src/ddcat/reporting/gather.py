"""``ddcat report PATH...``: the ``results.json`` dictionary of ``ddcat experiment`` rebuilt from folders.

At paper scale every training and every evaluation is its own job; this module turns what those jobs
left on disk into the dictionary :func:`ddcat.reporting.report.write_report` reads, so that ``ddcat
report``, ``ddcat demo`` and ``ddcat experiment`` write their report through the same code. It finds,
below every PATH (recursively):

- run folders (``config.yaml`` + ``run.json``): the training runs (arch, method, seed, dataset from
  the config; ``timing.json`` for the training time; ``train_log.jsonl`` for the routing figure);
- the evaluation caches of ``ddcat experiment`` (``RUN/eval/{white-box,strong,transfer}-HASH.json``);
- evaluation folders of ``ddcat eval`` (``metrics.json``): their embedded config names the model's
  dataset, arch, method and seed; records attacked through substitutes form a transfer evaluation,
  a BIM-only sweep a white-box one, anything else (any attack name) a "strong" one (a folder named
  ``eval-white-box`` / ``eval-strong``, as ``ddcat experiment --list`` writes, says which).

Models are grouped by (dataset, architecture, method) with the seed as the repetition (the dataset
joins the architecture's label when there are several). A record that cannot be placed (no method in
its config, an eps other than the report's, a second copy of an evaluation already found) is named
in the returned problems, never dropped silently.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

import yaml

from ddcat.errors import DdcatError
from ddcat.reporting.summary import ARCH_ORDER, METHOD_ORDER

MIOU_CONVENTION = "mIoU: mean IoU over classes with a non-empty union (mIoU_all: over all K, as the paper's code)"
KINDS = ("white-box", "strong", "transfer")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DdcatError(f"cannot read {path}: {getattr(exc, 'strerror', None) or type(exc).__name__}") from None


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise DdcatError(f"cannot read {path}: {getattr(exc, 'strerror', None) or type(exc).__name__}") from None


def _identity(cfg: Any, where: Path) -> dict[str, Any] | str:
    """(dataset, arch, method, seed) of a config, or why it cannot be placed."""
    if not isinstance(cfg, dict):
        return f"{where}: no config"
    train, model, data = cfg.get("train") or {}, cfg.get("model") or {}, cfg.get("data") or {}
    if not train.get("method"):
        return f"{where}: its config names no train.method"
    arch = model.get("arch") if not model.get("factory") else str(model["factory"])
    return {"dataset": data.get("name", "?"), "arch": arch or "?", "method": train["method"], "seed": cfg.get("seed", 0)}


def _split_metrics(records: list[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    """A ``metrics.json``'s records as (kind, records) evaluations, each with the clean record."""
    clean = [r for r in records if r.get("attack") == "clean"]
    own = [r for r in records if r.get("attack") != "clean" and r.get("source", "self") == "self"]
    transfer = [r for r in records if r.get("attack") != "clean" and r.get("source", "self") != "self"]
    out = []
    if own:
        sweep = all(r.get("attack") == "bim" for r in own) and len({r.get("steps") for r in own}) > 1
        out.append(("white-box" if sweep else "strong", clean[:1] + own))
    if transfer:
        out.append(("transfer", clean[:1] + transfer))
    if not own and not transfer and clean:
        out.append(("white-box", clean[:1]))
    return out


def _walk(paths: Iterable[Path]) -> tuple[list[Path], list[Path], list[Path], list[Path]]:
    runs, caches, metrics, qualitative = [], [], [], []
    for root in paths:
        if not root.exists():
            raise DdcatError(f"report input not found: {root}")
        files = [root] if root.is_file() else sorted(root.rglob("*"))
        for f in files:
            if f.name == "run.json" and (f.parent / "config.yaml").is_file():
                runs.append(f.parent)
            elif f.suffix == ".json" and f.parent.name == "eval" and f.name.split("-")[0] in ("white", "strong", "transfer"):
                caches.append(f)
            elif f.name == "metrics.json":
                metrics.append(f)
            elif f.name == "qualitative.npz":
                qualitative.append(f)
    return list(dict.fromkeys(runs)), list(dict.fromkeys(caches)), list(dict.fromkeys(metrics)), qualitative


def gather_results(paths: Iterable[Path]) -> tuple[dict[str, Any], list[str]]:
    """(results dictionary for :func:`write_report`, problems: one line per record not placed)."""
    paths = [Path(p) for p in paths]
    run_dirs, caches, metrics, qualitative = _walk(paths)
    problems: list[str] = []
    runs: dict[str, dict[str, Any]] = {}
    idents: dict[str, dict[str, Any]] = {}
    for folder in run_dirs:
        cfg = _read_yaml(folder / "config.yaml")
        ident = _identity(cfg, folder / "config.yaml")
        if isinstance(ident, str):
            problems.append(ident)
            continue
        timing = _read_json(folder / "timing.json") if (folder / "timing.json").is_file() else {}
        ident["label"] = timing.get("label") or ident["arch"]
        idents[folder.name] = ident
        runs[folder.name] = {
            "id": folder.name, "arch": ident["label"], "method": ident["method"], "seed": ident["seed"], "dir": str(folder),
            "checkpoint": str(folder / "last.pt"), "log": str(folder / "train_log.jsonl"),
            "train_seconds": timing.get("train_seconds"), "reused": False, "dataset": ident["dataset"],
        }
    found: list[tuple[Path, str, str, dict[str, Any], list[dict[str, Any]]]] = []  # (file, run id, kind, ident, records)
    for f in caches:
        run_id, kind = f.parent.parent.name, next(k for k in KINDS if f.name.startswith(k + "-"))
        if run_id not in idents:
            problems.append(f"{f}: its run folder {f.parent.parent} has no config.yaml / run.json")
            continue
        found.append((f, run_id, kind, idents[run_id], _read_json(f).get("records", [])))
    for f in metrics:
        data = _read_json(f)
        ident = _identity(data.get("config") if isinstance(data, dict) else None, f)
        if isinstance(ident, str):
            problems.append(ident)
            continue
        ckpt = Path(str(data.get("checkpoint", f)))
        run_id = ckpt.parent.name if ckpt.name in ("last.pt", "model.pt") else str(data.get("model") or ckpt.stem)
        ident["label"] = idents.get(run_id, {}).get("label") or ident["arch"]
        named = f.parent.name[len("eval-"):] if f.parent.name.startswith("eval-") else None  # the folders --list's commands write
        for kind, records in _split_metrics(data.get("records", [])):
            if named in KINDS and kind != "transfer":
                kind = named
            found.append((f, run_id, kind, ident, records))

    def order(arch: str, method: str, seed: Any, run_id: str) -> tuple:  # the grid's order: arch, method, seed
        rank = lambda x, seq: seq.index(x) if x in seq else len(seq)  # noqa: E731
        return (rank(arch, ARCH_ORDER), arch, rank(method, METHOD_ORDER), method, str(seed), run_id)

    found.sort(key=lambda t: (*order(t[3]["label"], t[3]["method"], t[3]["seed"], t[1]), KINDS.index(t[2])))
    runs = dict(sorted(runs.items(), key=lambda kv: order(kv[1]["arch"], kv[1]["method"], kv[1]["seed"], kv[0])))
    datasets = {ident["dataset"] for _, _, _, ident, _ in found}
    eps_seen = [r["eps"] for *_, records in found for r in records if r.get("attack") != "clean" and "eps" in r]
    eps = max(set(eps_seen), key=eps_seen.count) if eps_seen else None
    alphas = [r["alpha"] for *_, records in found for r in records if r.get("eps") == eps and "alpha" in r]
    evaluations, seen = [], set()
    for f, run_id, kind, ident, records in found:
        if (run_id, kind) in seen:
            problems.append(f"{f}: a second {kind} evaluation of {run_id} (the first one found is used)")
            continue
        other = sorted({r["eps"] for r in records if r.get("attack") != "clean" and r.get("eps") != eps and "eps" in r})
        if other:
            problems.append(f"{f}: records at eps {', '.join(map(str, other))} differ from the report's eps {eps} and are left out")
            records = [r for r in records if r.get("attack") == "clean" or r.get("eps") == eps]
        seen.add((run_id, kind))
        label = ident["label"] if len(datasets) < 2 else f"{ident['dataset']}/{ident['label']}"
        evaluations.append({"run_id": run_id, "arch": label, "method": ident["method"], "seed": ident["seed"], "kind": kind, "records": records})
        if run_id in runs and len(datasets) > 1:
            runs[run_id]["arch"] = label
    steps = sorted({int(r["steps"]) for e in evaluations if e["kind"] == "white-box" for r in e["records"] if r.get("attack") == "bim"})
    results: dict[str, Any] = {
        "experiment": "report",
        "steps": steps,
        "eps": eps,
        "alpha": max(set(alphas), key=alphas.count) if alphas else None,
        "miou_convention": MIOU_CONVENTION,
        "runs": list(runs.values()),
        "evaluations": evaluations,
        "inputs": [str(p) for p in paths],
    }
    if len(qualitative) == 1:
        results["qualitative"] = str(qualitative[0].resolve())
    return results, problems
