"""``ddcat report PATH...``: the ``results.json`` dictionary of ``ddcat experiment`` rebuilt from folders.

At paper scale every training and every evaluation is its own job; this module turns what those jobs
left on disk into the dictionary :func:`ddcat.reporting.report.write_report` reads, so that ``ddcat
report``, ``ddcat demo`` and ``ddcat experiment`` write their report through the same code. It finds,
below every PATH (recursively):

- run folders (``config.yaml`` + ``run.json``): the training runs (arch, method, seed, dataset from
  the config; ``timing.json`` for the training time; ``train_log.jsonl`` for the routing figure);
- the evaluation caches of ``ddcat experiment`` (``RUN/eval/{white-box,strong,transfer}-HASH.json``)
  and its certification caches (``RUN/eval/certify-HASH.json``);
- evaluation folders of ``ddcat eval`` (``metrics.json``): their embedded config names the model's
  dataset, arch, method and seed; records are classed one by one: attacked through substitutes, a
  transfer evaluation; BIM (any number of steps), the white-box one (Table 1); any other attack
  name, the "strong" one, which also keeps the BIM record at the other attacks' step count (the
  strong table's BIM-n column). A folder named ``eval-white-box`` / ``eval-strong``, as ``ddcat
  experiment --list`` writes, says which for all its records;
- certification folders of ``ddcat certify`` (``certify.json``): their embedded config names the
  model as for ``metrics.json``; they fill the report card (``results["certifications"]``).

A model is its run folder (resolved path: two run folders of one name under different PATHs stay
two models) or, for a checkpoint outside a run folder, the checkpoint's resolved path; the records
of several jobs on one model merge into one evaluation per kind. Models are grouped by (dataset,
architecture, method) with the seed as the repetition (the dataset joins the architecture's label
when there are several). A record that cannot be placed (no method in its config, an eps other than
the report's, a second copy of a record already found: same attack, steps, eps, norm and source) is
named in the returned problems, never dropped silently.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

import yaml

from ddcat.errors import DdcatError
from ddcat.evaluation.settings import BUDGET_ATTACKS
from ddcat.reporting.summary import ARCH_ORDER, METHOD_ORDER, attack_label

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
    arch = (model.get("arch") if not model.get("factory") else str(model["factory"])) or "?"
    # a model trained with Gaussian noise (a base model for smoothing) is another model than the
    # plain one of the same arch and method: its own label (an experiment's run label wins)
    sigma = train.get("noise_sigma") or 0
    label = f"{arch}-noise{sigma:g}" if isinstance(sigma, (int, float)) and sigma > 0 else arch
    return {"dataset": data.get("name", "?"), "arch": arch, "label": label, "method": train["method"], "seed": cfg.get("seed", 0)}


def _split_metrics(records: list[dict[str, Any]], named: str | None = None) -> list[tuple[str, list[dict[str, Any]]]]:
    """A ``metrics.json``'s records as (kind, records) evaluations, each with the clean record.

    Each record is classed on its own: BIM (a sweep or one step count) feeds the white-box table,
    any other attack the strong table (with the BIM records at the step counts of the other step
    attacks, else the largest, the strong table's BIM-n column), substitutes' records the transfer
    table. ``named`` (a folder ``eval-KIND``) puts every record of the model's own under that kind."""
    clean = [r for r in records if r.get("attack") == "clean"]
    own = [r for r in records if r.get("attack") != "clean" and r.get("source", "self") == "self"]
    transfer = [r for r in records if r.get("attack") != "clean" and r.get("source", "self") != "self"]
    out = []
    if own and named in KINDS:
        out.append((named, clean[:1] + own))
    elif own:
        bim = [r for r in own if r.get("attack") == "bim"]
        other = [r for r in own if r.get("attack") != "bim"]
        if bim:
            out.append(("white-box", clean[:1] + bim))
        if other:
            steps = {r.get("steps") for r in other if r.get("attack") not in BUDGET_ATTACKS}
            top = max((r.get("steps") or 0 for r in bim), default=None)
            out.append(("strong", clean[:1] + [r for r in bim if r.get("steps") in steps or (not steps and r.get("steps") == top)] + other))
    if transfer:
        out.append(("transfer", clean[:1] + transfer))
    if not own and not transfer and clean:
        out.append(("white-box", clean[:1]))
    return out


def _record_key(r: dict[str, Any]) -> tuple:
    """What makes two records of one model the same measurement."""
    if r.get("attack") == "clean":
        return ("clean",)
    return (r.get("attack"), r.get("steps"), r.get("eps"), r.get("norm", "linf"), r.get("source", "self"))


def _record_name(r: dict[str, Any]) -> str:
    name = attack_label(str(r.get("attack")), r.get("steps")) if r.get("attack") != "clean" else "clean"
    extra = [f"eps {r['eps']:g}"] if isinstance(r.get("eps"), (int, float)) else []
    if r.get("source", "self") != "self":
        extra.append(f"from {r['source']}")
    return f"{name} ({', '.join(extra)})" if extra else name


def _walk(paths: Iterable[Path]) -> tuple[list[Path], list[Path], list[Path], list[Path], list[Path]]:
    runs, caches, metrics, certs, qualitative = [], [], [], [], []
    for root in paths:
        if not root.exists():
            raise DdcatError(f"report input not found: {root}")
        files = [root] if root.is_file() else sorted(root.rglob("*"))
        for f in files:
            if f.name == "run.json" and (f.parent / "config.yaml").is_file():
                runs.append(f.parent)
            elif f.suffix == ".json" and f.parent.name == "eval" and f.name.split("-")[0] in ("white", "strong", "transfer", "certify"):
                caches.append(f)
            elif f.name == "metrics.json":
                metrics.append(f)
            elif f.name == "certify.json":
                certs.append(f)
            elif f.name == "qualitative.npz":
                qualitative.append(f)
    unique = lambda items: list(dict.fromkeys(items))  # noqa: E731
    return unique(runs), unique(caches), unique(metrics), unique(certs), qualitative


def _resolved(path: Path) -> str:
    return str(path.resolve())


def _model_key(data: dict[str, Any], where: Path, by_name: dict[str, list[str]]) -> str:
    """The model a ``metrics.json`` / ``certify.json`` describes: the resolved run folder of its
    checkpoint (``last.pt``; ``model.pt`` of ``--config``), else the checkpoint's resolved path.
    A run folder not found at that path (folders copied from a cluster) is matched by its name
    when exactly one run folder of that name was found."""
    ckpt = Path(str(data.get("checkpoint") or where))
    if ckpt.name not in ("last.pt", "model.pt"):
        return _resolved(ckpt)
    key = _resolved(ckpt.parent)
    same_name = by_name.get(ckpt.parent.name, [])
    if key not in same_name and len(same_name) == 1:
        return same_name[0]
    return key


def gather_results(paths: Iterable[Path]) -> tuple[dict[str, Any], list[str]]:
    """(results dictionary for :func:`write_report`, problems: one line per record not placed)."""
    paths = [Path(p) for p in paths]
    run_dirs, caches, metrics, certify_files, qualitative = _walk(paths)
    problems: list[str] = []
    runs: dict[str, dict[str, Any]] = {}  # resolved run folder -> run
    idents: dict[str, dict[str, Any]] = {}
    by_name: dict[str, list[str]] = {}
    for folder in run_dirs:
        cfg = _read_yaml(folder / "config.yaml")
        ident = _identity(cfg, folder / "config.yaml")
        if isinstance(ident, str):
            problems.append(ident)
            continue
        timing = _read_json(folder / "timing.json") if (folder / "timing.json").is_file() else {}
        ident["label"] = timing.get("label") or ident["label"]
        # an experiment's method label (configs/recipes.yaml: sat, sat-bim1 and sat-adv100 all train with
        # train.method sat) keeps its runs apart, as in the experiment's own report
        ident["method"] = timing.get("method") or ident["method"]
        key = _resolved(folder)
        idents[key] = ident
        by_name.setdefault(folder.name, []).append(key)
        runs[key] = {
            "id": folder.name, "arch": ident["label"], "method": ident["method"], "seed": ident["seed"], "dir": str(folder),
            "checkpoint": str(folder / "last.pt"), "log": str(folder / "train_log.jsonl"),
            "train_seconds": timing.get("train_seconds"), "reused": False, "dataset": ident["dataset"],
        }
    found: list[tuple[Path, str, str, dict[str, Any], list[dict[str, Any]]]] = []  # (file, model key, kind, ident, records)
    certified: list[tuple[Path, str, dict[str, Any], list[dict[str, Any]]]] = []  # (file, model key, ident, records)
    for f in caches:
        run_id = _resolved(f.parent.parent)
        if run_id not in idents:
            problems.append(f"{f}: its run folder {f.parent.parent} has no config.yaml / run.json")
            continue
        if f.name.startswith("certify-"):
            certified.append((f, run_id, idents[run_id], _read_json(f).get("records", [])))
            continue
        kind = next(k for k in KINDS if f.name.startswith(k + "-"))
        found.append((f, run_id, kind, idents[run_id], _read_json(f).get("records", [])))

    def placed(f: Path) -> tuple[str, dict[str, Any], dict[str, Any]] | None:
        """(model key, identity, file content) of a metrics.json / certify.json, or None (a problem named)."""
        data = _read_json(f)
        ident = _identity(data.get("config") if isinstance(data, dict) else None, f)
        if isinstance(ident, str):
            problems.append(ident)
            return None
        run_id = _model_key(data, f, by_name)
        ident["label"] = idents.get(run_id, {}).get("label") or ident["label"]
        ident["method"] = idents.get(run_id, {}).get("method") or ident["method"]
        return run_id, ident, data

    for f in metrics:
        if (got := placed(f)) is None:
            continue
        run_id, ident, data = got
        named = f.parent.name[len("eval-"):] if f.parent.name.startswith("eval-") else None  # the folders --list's commands write
        for kind, records in _split_metrics(data.get("records", []), named):
            found.append((f, run_id, kind, ident, records))
    for f in certify_files:
        if (got := placed(f)) is not None:
            certified.append((f, got[0], got[1], got[2].get("records", [])))

    def order(arch: str, method: str, seed: Any, run_id: str) -> tuple:  # the grid's order: arch, method, seed
        rank = lambda x, seq: seq.index(x) if x in seq else len(seq)  # noqa: E731
        return (rank(arch, ARCH_ORDER), arch, rank(method, METHOD_ORDER), method, str(seed), run_id)

    found.sort(key=lambda t: (*order(t[3]["label"], t[3]["method"], t[3]["seed"], t[1]), KINDS.index(t[2])))
    certified.sort(key=lambda t: order(t[2]["label"], t[2]["method"], t[2]["seed"], t[1]))
    runs = dict(sorted(runs.items(), key=lambda kv: order(kv[1]["arch"], kv[1]["method"], kv[1]["seed"], kv[0])))
    datasets = {ident["dataset"] for _, _, _, ident, _ in found} | {ident["dataset"] for _, _, ident, _ in certified}
    eps_seen = [r["eps"] for *_, records in found for r in records if r.get("attack") != "clean" and "eps" in r]
    eps = max(set(eps_seen), key=eps_seen.count) if eps_seen else None
    alphas = [r["alpha"] for *_, records in found for r in records if r.get("eps") == eps and "alpha" in r]

    def label_of(ident: dict[str, Any], run_id: str) -> str:
        label = ident["label"] if len(datasets) < 2 else f"{ident['dataset']}/{ident['label']}"
        if run_id in runs and len(datasets) > 1:
            runs[run_id]["arch"] = label
        return label

    # one evaluation per (model, kind), the records of every file that has some; a record measured
    # twice (same attack, steps, eps, norm, source) keeps its first copy and names both files
    evaluations: list[dict[str, Any]] = []
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    origin: dict[tuple[str, str, tuple], tuple[Path, dict[str, Any]]] = {}
    for f, run_id, kind, ident, records in found:
        other = sorted({r["eps"] for r in records if r.get("attack") != "clean" and r.get("eps") != eps and "eps" in r})
        if other:
            problems.append(f"{f}: records at eps {', '.join(map(str, other))} differ from the report's eps {eps} and are left out")
            records = [r for r in records if r.get("attack") == "clean" or r.get("eps") == eps]
        entry = merged.get((run_id, kind))
        if entry is None:
            entry = merged[(run_id, kind)] = {"run_id": run_id, "arch": label_of(ident, run_id), "method": ident["method"],
                                              "seed": ident["seed"], "kind": kind, "records": []}
            evaluations.append(entry)
        for r in records:
            key = (run_id, kind, _record_key(r))
            if key in origin:
                first, kept = origin[key]
                if first == f:
                    problems.append(f"{f}: two {_record_name(r)} records of {run_id} (the first one is used)")
                elif r.get("attack") != "clean" or r.get("mIoU") != kept.get("mIoU"):
                    problems.append(f"{f}: its {_record_name(r)} record of {run_id} is also in {first} (the one in {first} is used)")
                continue
            origin[key] = (f, r)
            entry["records"].append(r)

    certifications: list[dict[str, Any]] = []
    certs_of: dict[str, dict[str, Any]] = {}
    cert_origin: dict[tuple[str, Any, Any], Path] = {}
    for f, run_id, ident, records in certified:
        entry = certs_of.get(run_id)
        if entry is None:
            entry = certs_of[run_id] = {"run_id": run_id, "arch": label_of(ident, run_id), "method": ident["method"],
                                        "seed": ident["seed"], "kind": "certify", "records": []}
            certifications.append(entry)
        for r in records:
            key = (run_id, r.get("sigma"), r.get("tau"))
            if key in cert_origin:  # the card shows one certification per (sigma, tau)
                problems.append(f"{f}: its certification of {run_id} at sigma {r.get('sigma')}, tau {r.get('tau')} is also in "
                                f"{cert_origin[key]} (the one in {cert_origin[key]} is used)")
                continue
            cert_origin[key] = f
            entry["records"].append(r)
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
    if certifications:
        results["certifications"] = certifications
    if len(qualitative) == 1:
        results["qualitative"] = str(qualitative[0].resolve())
    return results, list(dict.fromkeys(problems))
