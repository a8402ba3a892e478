"""Experiment files (``ddcat experiment FILE``, ``configs/demo.yaml``): read, check, and expand
into one :class:`Run` per (model variant, method, seed) with its full config.

A file names a base config, model variants (a label and config overrides each), methods, seeds,
the evaluations (:data:`EVAL_DEFAULTS`) and a ``quick:`` section for smoke runs."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ddcat.config import DEFAULTS, apply_sets, load_yaml, merge, validate
from ddcat.errors import DdcatError, show
from ddcat.parsing import parse_fraction

EXPERIMENT_KEYS = ("name", "base", "set", "models", "methods", "seeds", "evaluation", "quick")
EVAL_DEFAULTS: dict[str, Any] = {
    "eps": DEFAULTS["attack"]["eps"],  # accepts 4/255
    "alpha": DEFAULTS["attack"]["alpha"],
    "steps": [1, 2, 3, 4, 5, 6, 7],
    "transfer_from": None,
    "strong": [],
    "strong_steps": 7,
    "sea_iters": 300,  # iterations of apgd and of each sea member in the stronger attacks
    "max_images": 0,
    "qualitative": 0,
}


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


def check_evaluation(evaluation: dict[str, Any], path: Path) -> dict[str, Any]:
    """Numbers written as fractions (``eps: 4/255``) become floats; budgets must be positive."""
    out = dict(evaluation)
    for key in ("eps", "alpha"):
        out[key] = parse_fraction(out[key], f"evaluation.{key} in {path}", positive=key == "alpha")
    if isinstance(out["sea_iters"], bool) or not isinstance(out["sea_iters"], int) or out["sea_iters"] < 1:
        raise DdcatError(f"evaluation.sea_iters in {path} must be an integer >= 1, got {out['sea_iters']!r}")
    return out


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
    if not isinstance(methods, list) or not all(isinstance(m, str) for m in methods):
        raise DdcatError(f"'methods' in {path} must be a list of method names, got {show(methods)}")
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


def load_experiment(path: str | Path, quick: bool = False, sets: list[str] | None = None) -> dict[str, Any]:
    """Read and check an experiment file; ``quick`` applies its ``quick:`` section."""
    path = Path(path)
    spec = load_yaml(path, what="experiment file")
    check_structure(spec, path)
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
        base = apply_sets(base, sets)
    runs = []
    for label, overrides in spec["models"].items():
        for method in spec["methods"]:
            for seed in seeds:
                cfg = merge(base, overrides or {}, where=f" in {path} (models.{label})")
                cfg = merge(cfg, {"seed": int(seed), "train": {"method": method}}, where=f" in {path}")
                validate(cfg)
                runs.append(Run(label, method, int(seed), cfg))
    evaluation = check_evaluation(evaluation, path)
    return {"name": spec.get("name", path.stem), "file": str(path), "runs": runs, "evaluation": evaluation, "quick": quick}
