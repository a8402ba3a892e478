"""The paper's evaluation protocol and the stronger attacks next to it.

- clean mIoU;
- white-box sweep: ``--attack bim --steps 1-7`` (eps 0.03, alpha 0.01), Tables 1 / 5;
- black-box transfer: perturbations computed on each substitute checkpoint and applied to the
  target, reported per (target, substitute) pair and as mean / std over substitutes (Table 2);
- stronger attacks (pgd, segpgd, cospgd, masked-ce, js) and the per-image worst case over them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from torch import nn

from ddcat.attacks import build_attack
from ddcat.checkpoint import load_model
from ddcat.errors import DdcatError
from ddcat.evaluation.engine import Setting
from ddcat.evaluation.inference import inference_model, inference_options
from ddcat.reporting.tables import mean_std

MAX_STEPS = 10000  # the same bound as config key attack.steps
EVAL_ATTACKS = ("fgsm", "bim", "pgd", "segpgd", "cospgd", "masked-ce", "js", "worst")


def parse_steps(text: str) -> list[int]:
    """``'1-7'`` -> [1..7]; ``'1,3,7'`` -> [1, 3, 7]."""
    try:
        steps: list[int] = []
        for part in str(text).split(","):
            if "-" in part:
                lo, hi = part.split("-", 1)
                if int(hi) > MAX_STEPS:
                    raise DdcatError(f"--steps allows at most {MAX_STEPS} steps per attack, got '{text}'")
                steps.extend(range(int(lo), int(hi) + 1))
            elif part.strip():
                steps.append(int(part))
    except ValueError:
        raise DdcatError(f"--steps expects a range like 1-7 or a list like 1,3,7, got '{text}'") from None
    if not steps or any(s < 0 for s in steps):
        raise DdcatError(f"--steps must name non-negative step counts, got '{text}'")
    if max(steps) > MAX_STEPS:
        raise DdcatError(f"--steps allows at most {MAX_STEPS} steps per attack, got '{text}'")
    return sorted(set(steps))


def inference_path(model: nn.Module, cfg: dict[str, Any]) -> nn.Module:
    e = cfg["eval"]
    return inference_model(model, e["mode"], e["crop_size"] or cfg["train"]["crop_size"], e["stride_rate"], **inference_options(cfg))


def attack_settings(
    attacks: Sequence[str], steps: Sequence[int], eps: float, alpha: float, sources: Sequence[tuple[str, nn.Module | None]], seed: int = 0
) -> list[Setting]:
    """Clean plus one setting per (attack, steps, source)."""
    settings = [Setting()]
    for name in attacks:
        if name not in EVAL_ATTACKS:
            raise DdcatError(f"unknown --attack '{name}'; valid: {', '.join(EVAL_ATTACKS)}")
        for n in steps:
            if n == 0:
                continue
            attack = build_attack(name, eps=eps, alpha=alpha, steps=n, seed=seed)
            for source, model in sources:
                settings.append(Setting(name, attack, n, eps, source, model, {"alpha": alpha}))
    return settings


def load_substitutes(paths: Sequence[str], num_classes: int, cfg: dict[str, Any], device) -> list[tuple[str, nn.Module]]:
    out = []
    for path in paths:
        model, _ = load_model(path, expect={"num_classes": num_classes})
        out.append((str(path), inference_path(model.to(device).eval(), cfg)))
    return out


def transfer_summary(records: Sequence[dict[str, Any]], metric: str = "mIoU") -> list[dict[str, Any]]:
    """Mean and std over substitute models for each (attack, steps) of transfer records."""
    groups: dict[tuple, list[float]] = {}
    for r in records:
        if r["attack"] != "clean" and r["source"] != "self":
            groups.setdefault((r["attack"], r["steps"], r["eps"]), []).append(r[metric])
    summary = []
    for (attack, steps, eps), values in sorted(groups.items()):
        mean, std = mean_std(values)
        summary.append({"attack": attack, "steps": steps, "eps": eps, "metric": metric, "mean": mean, "std": std, "num_sources": len(values)})
    return summary


def checkpoint_label(path: str | Path) -> str:
    p = Path(path)
    return p.parent.name if p.name in ("last.pt", "model.pt") else p.stem
