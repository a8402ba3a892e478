"""Experiment files (``ddcat experiment FILE``, ``configs/demo.yaml``): read, check, and expand
into one :class:`Run` per (model variant, method, seed) with its full config.

A file names a base config, model variants (a label and config overrides each), methods (names, or
labels with config overrides each), seeds,
the evaluations (:data:`EVAL_DEFAULTS`) and a ``quick:`` section for smoke runs."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

from ddcat.config import DEFAULTS, apply_sets, load_yaml, merge, validate
from ddcat.constants import ITERS, SWEEP_STEPS
from ddcat.errors import DdcatError, show
from ddcat.parsing import MAX_STEPS, parse_fraction, parse_steps

EXPERIMENT_KEYS = ("name", "base", "set", "models", "methods", "seeds", "evaluation", "quick", "extra_runs")
EVAL_DEFAULTS: dict[str, Any] = {
    "eps": DEFAULTS["attack"]["eps"],  # accepts 4/255
    "alpha": DEFAULTS["attack"]["alpha"],
    "steps": list(SWEEP_STEPS),
    "transfer_from": None,
    "strong": [],
    "strong_steps": 7,
    "sea_iters": ITERS,  # iterations of the iteration attacks (apgd, each sea / ensemble member) in the stronger attacks
    "max_images": 0,
    "qualitative": 0,
    "certify": None,  # randomized smoothing of some runs: a mapping of CERTIFY_DEFAULTS keys (ddcat certify)
}
#: ``evaluation.certify``: ``ddcat certify``'s settings and the runs it certifies ("label/method",
#: each at the seeds listed); the card of the report puts them next to the attacks.
CERTIFY_DEFAULTS: dict[str, Any] = {
    "sigma": 0.25, "n0": 10, "n": 100, "alpha": 0.001, "tau": [0.75], "correction": "holm",
    "batch_size": 16, "max_images": 0, "runs": [], "seeds": [0],
}
#: One entry of ``extra_runs``: a run outside the (model x method x seed) grid, e.g. a noise-trained
#: base model for certification: ``{label: pspnet-noise, method: clean, seeds: [0], set: {...}}``.
EXTRA_RUN_KEYS = ("label", "method", "seeds", "set")


@dataclass
class Run:
    """One training run of an experiment and its evaluations."""

    label: str  # the model variant's name in the experiment file (``results.json`` key "arch")
    method: str
    seed: int
    cfg: dict[str, Any]

    @property
    def id(self) -> str:
        digest = hashlib.sha256(json.dumps(self.cfg, sort_keys=True).encode()).hexdigest()[:8]
        return f"{self.label}-{self.method}-s{self.seed}-{digest}"


def packaged_config(name: str) -> Path:
    return Path(str(resources.files("ddcat") / "configs" / name))


def check_evaluation(
    evaluation: dict[str, Any], path: Path, prefix: str = "evaluation", attacks: Sequence[str] | None = None, methods: Sequence[str] | None = None
) -> dict[str, Any]:
    """Every key of an ``evaluation`` section present in ``evaluation``, checked, with errors naming
    ``prefix.key`` and the file: numbers written as fractions (``eps: 4/255``) become floats,
    budgets are integers in range, ``strong`` names attacks of ``attacks`` (the evaluation's list
    of attack names; ``None``: not checked here), ``transfer_from`` one of ``methods``."""
    out = dict(evaluation)
    if out.get("certify") is not None:
        out["certify"] = check_certify(out["certify"], path)

    def fail(key: str, what: str) -> DdcatError:
        return DdcatError(f"'{prefix}.{key}' in {path} must be {what}, got {show(out[key])}")

    def integer(key: str, lo: int, hi: int = MAX_STEPS) -> None:
        value = out[key]
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise fail(key, f"an integer in {lo}..{hi}")

    for key in ("eps", "alpha"):
        if key in out:
            out[key] = parse_fraction(out[key], f"'{prefix}.{key}' in {path}", positive=key == "alpha")
    if "steps" in out:
        steps = out["steps"]
        if isinstance(steps, str):
            try:
                out["steps"] = parse_steps(steps)
            except DdcatError:
                raise fail("steps", "a list of step counts like [1, 3, 7] or a range like 1-7") from None
        elif not isinstance(steps, list) or not steps or not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= MAX_STEPS for s in steps):
            raise fail("steps", f"a non-empty list of step counts in 0..{MAX_STEPS}, e.g. [1, 3, 7]")
    for key, lo in (("sea_iters", 1), ("strong_steps", 1), ("max_images", 0), ("qualitative", 0)):
        if key in out:
            integer(key, lo, 2**31 - 1 if key in ("max_images", "qualitative") else MAX_STEPS)
    if "strong" in out:
        strong = out["strong"]
        if strong is None:
            out["strong"] = strong = []
        if not isinstance(strong, list) or not all(isinstance(a, str) for a in strong):
            raise fail("strong", "a list of attack names, e.g. [pgd, apgd]")
        unknown = [a for a in strong if attacks is not None and a not in attacks]
        if unknown:
            raise DdcatError(f"'{prefix}.strong' in {path} names unknown attack {show(unknown[0])}; valid: {', '.join(attacks or ())}")
    if out.get("transfer_from") is not None:
        source = out["transfer_from"]
        if not isinstance(source, str) or (methods is not None and source not in methods):
            raise fail("transfer_from", f"null or one of the file's methods ({', '.join(methods or ())})")
    return out


def check_certify(spec: Any, path: Path) -> dict[str, Any]:
    """``evaluation.certify``: known keys of the right kinds (the ranges are checked by the
    certification's plan before any training); fractions like ``64/255`` become floats."""
    if not isinstance(spec, dict):
        raise DdcatError(f"evaluation.certify in {path} must be a mapping of {', '.join(CERTIFY_DEFAULTS)}, got {show(spec)}")
    bad = [show(k) for k in spec if k not in CERTIFY_DEFAULTS]
    if bad:
        raise DdcatError(f"unknown key(s) {', '.join(bad)} in evaluation.certify of {path}; valid: {', '.join(CERTIFY_DEFAULTS)}")
    out = {**CERTIFY_DEFAULTS, **spec}
    for key in ("sigma", "alpha"):
        out[key] = parse_fraction(out[key], f"evaluation.certify.{key} in {path}", positive=True)
    taus = out["tau"] if isinstance(out["tau"], list) else [out["tau"]]
    out["tau"] = [parse_fraction(t, f"evaluation.certify.tau in {path}") for t in taus]
    for key in ("n0", "n", "batch_size", "max_images"):
        if isinstance(out[key], bool) or not isinstance(out[key], int):
            raise DdcatError(f"evaluation.certify.{key} in {path} must be an integer, got {show(out[key])}")
    if not isinstance(out["runs"], list) or not all(isinstance(r, str) and r.count("/") == 1 for r in out["runs"]):
        raise DdcatError(f"evaluation.certify.runs in {path} must be a list of 'label/method' strings (e.g. pspnet/sat), got {show(out['runs'])}")
    _check_seeds(out["seeds"], "evaluation.certify.seeds", path)
    return out


def _extra_runs(spec: dict[str, Any], base: dict[str, Any], seeds: list[int], path: Path) -> list[Run]:
    """The runs ``extra_runs`` lists, each from the base config and its own ``set``."""
    entries = spec.get("extra_runs") or []
    if not isinstance(entries, list):
        raise DdcatError(f"'extra_runs' in {path} must be a list of mappings with {', '.join(EXTRA_RUN_KEYS)}, got {show(entries)}")
    runs = []
    for i, entry in enumerate(entries):
        where = f"extra_runs[{i}] in {path}"
        if not isinstance(entry, dict) or not isinstance(entry.get("label"), str) or not isinstance(entry.get("method"), str):
            raise DdcatError(f"{where} must be a mapping with a 'label' and a 'method' (and optional 'seeds', 'set'), got {show(entry)}")
        bad = [show(k) for k in entry if k not in EXTRA_RUN_KEYS]
        if bad:
            raise DdcatError(f"unknown key(s) {', '.join(bad)} in {where}; valid: {', '.join(EXTRA_RUN_KEYS)}")
        if entry["label"] in (spec.get("models") or {}):
            raise DdcatError(f"{where}: label '{entry['label']}' is also a model variant; give the extra run its own label")
        if "seeds" in entry:
            _check_seeds(entry["seeds"], f"extra_runs[{i}].seeds", path)
        if entry.get("set") is not None and not isinstance(entry["set"], dict):
            raise DdcatError(f"{where}: 'set' must be a mapping of config overrides, got {show(entry['set'])}")
        for seed in entry.get("seeds", seeds):
            cfg = merge(base, entry.get("set") or {}, where=f" in {where}")
            cfg = merge(cfg, {"seed": int(seed), "train": {"method": entry["method"]}}, where=f" in {where}")
            _validate(cfg, f"{where} ({entry['label']}/{entry['method']}, seed {seed})")
            runs.append(Run(entry["label"], entry["method"], int(seed), cfg))
    return runs


def _validate(cfg: dict[str, Any], where: str) -> None:
    """:func:`ddcat.config.validate` of one run's full config; its one-line error names the
    experiment file and the run (its values may come from the base config, ``set``, the model
    variant or the method)."""
    try:
        validate(cfg)
    except DdcatError as exc:
        raise DdcatError(f"{exc}, in {where}") from None


QUICK_KEYS = ("set", "seeds", "evaluation")


def check_structure(spec: dict[str, Any], path: Path) -> None:
    """The shape of an experiment file, before anything is merged (one-line errors)."""
    unknown = [show(k) for k in spec if k not in EXPERIMENT_KEYS]
    if unknown:
        raise DdcatError(f"unknown key(s) {', '.join(unknown)} in {path}; valid: {', '.join(EXPERIMENT_KEYS)}")
    for key in ("models", "methods", "seeds"):
        if not spec.get(key):
            raise DdcatError(f"experiment file {path} needs a non-empty '{key}'")
    models = spec["models"]
    if not isinstance(models, dict) or not all(isinstance(k, str) and isinstance(v, (dict, type(None))) for k, v in models.items()):
        raise DdcatError(f"'models' in {path} must map a label to config overrides (e.g. pspnet: {{model: {{arch: pspnet}}}}), got {show(models)}")
    methods = spec["methods"]
    named = isinstance(methods, list) and all(isinstance(m, str) for m in methods)
    labelled = isinstance(methods, dict) and all(isinstance(k, str) and isinstance(v, (dict, type(None))) for k, v in methods.items())
    if not (named or labelled):
        raise DdcatError(
            f"'methods' in {path} must be a list of method names or map a label to config overrides "
            f"(e.g. sat-bim1: {{train: {{method: sat}}, attack: {{steps: 1}}}}), got {show(methods)}"
        )
    for where, section in (("", spec), ("quick.", spec.get("quick") or {})):
        if "seeds" in section:
            _check_seeds(section["seeds"], f"{where}seeds", path)
    for key in ("set", "evaluation", "quick"):
        if spec.get(key) is not None and not isinstance(spec[key], dict):
            raise DdcatError(f"'{key}' in {path} must be a mapping, got {show(spec[key])}")
    quick = spec.get("quick") or {}
    bad = [show(k) for k in quick if k not in QUICK_KEYS]
    if bad:
        raise DdcatError(f"unknown key(s) {', '.join(bad)} in 'quick' of {path}; valid: {', '.join(QUICK_KEYS)}")
    for key in ("set", "evaluation"):
        if quick.get(key) is not None and not isinstance(quick[key], dict):
            raise DdcatError(f"'quick.{key}' in {path} must be a mapping, got {show(quick[key])}")


def _check_seeds(seeds: Any, key: str, path: Path) -> None:
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 2**31 for s in seeds):
        raise DdcatError(f"'{key}' in {path} must be a non-empty list of integers >= 0, e.g. [0, 1], got {show(seeds)}")


def load_experiment(path: str | Path, quick: bool = False, sets: list[str] | None = None, attacks: Sequence[str] | None = None) -> dict[str, Any]:
    """Read and check the whole experiment file before anything runs; ``quick`` applies its
    ``quick:`` section; ``attacks``: the attack names ``evaluation.strong`` may use."""
    path = Path(path)
    spec = load_yaml(path, what="experiment file")
    check_structure(spec, path)
    for prefix, section in (("evaluation", spec.get("evaluation")), ("quick.evaluation", (spec.get("quick") or {}).get("evaluation"))):
        bad = sorted(map(show, set(section or {}) - set(EVAL_DEFAULTS)))
        if bad:
            raise DdcatError(f"unknown key(s) {', '.join(bad)} in '{prefix}' of {path}; valid: {', '.join(EVAL_DEFAULTS)}")
        check_evaluation(section or {}, path, prefix, attacks, spec["methods"])  # each key named where it was written
    base = merge(DEFAULTS, {})
    if spec.get("base"):
        base_path = (path.parent / spec["base"]).resolve()
        base = merge(base, load_yaml(base_path), where=f" in {base_path}")
    base = merge(base, spec.get("set") or {}, where=f" in {path} (set)")
    evaluation = dict(EVAL_DEFAULTS)
    evaluation.update(spec.get("evaluation") or {})
    seeds = list(spec["seeds"])
    if quick and spec.get("quick"):
        q = spec["quick"]
        base = merge(base, q.get("set") or {}, where=f" in {path} (quick.set)")
        seeds = list(q.get("seeds", seeds))
        evaluation.update(q.get("evaluation") or {})
    if sets:
        base = apply_sets(base, sets)
    runs = []
    methods = spec["methods"] if isinstance(spec["methods"], dict) else {m: None for m in spec["methods"]}
    for label, overrides in spec["models"].items():
        for method, method_overrides in methods.items():
            # a labelled method (methods: {sat-bim1: {...}}) names its train.method (default: the label)
            name = ((method_overrides or {}).get("train") or {}).get("method", method)
            for seed in seeds:
                cfg = merge(base, overrides or {}, where=f" in {path} (models.{label})")
                cfg = merge(cfg, method_overrides or {}, where=f" in {path} (methods.{method})")
                cfg = merge(cfg, {"seed": int(seed), "train": {"method": name}}, where=f" in {path}")
                _validate(cfg, f"{path} (run {label}/{method}, seed {seed})")
                runs.append(Run(label, method, int(seed), cfg))
    runs += _extra_runs(spec, base, seeds, path)
    evaluation = check_evaluation(evaluation, path, "evaluation", attacks, spec["methods"])
    return {"name": spec.get("name", path.stem), "file": str(path), "runs": runs, "evaluation": evaluation, "quick": quick}
