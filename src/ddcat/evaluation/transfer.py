"""Black-box transfer: substitute models and the mean / std over them (the paper's Table 2)."""

from __future__ import annotations

from typing import Any, Sequence

from ddcat.statistics import mean_std


def transfer_summary(records: Sequence[dict[str, Any]], metric: str = "mIoU") -> list[dict[str, Any]]:
    """Mean and population std over substitute models for each (attack, steps, eps) of transfer records."""
    groups: dict[tuple, list[float]] = {}
    for r in records:
        if r["attack"] != "clean" and r["source"] != "self":
            groups.setdefault((r["attack"], r["steps"], r["eps"]), []).append(r[metric])
    summary = []
    for (attack, steps, eps), values in sorted(groups.items()):
        mean, std = mean_std(values)
        summary.append({"attack": attack, "steps": steps, "eps": eps, "metric": metric, "mean": mean, "std": std, "num_sources": len(values)})
    return summary
