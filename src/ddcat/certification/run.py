"""The certification entry points: :func:`certify_checkpoint` (``ddcat certify``) and
:func:`certify_model` (``ddcat experiment`` / the demo), loading models the way evaluation does
(:func:`ddcat.evaluation.run.checkpoint_target`). Nothing here writes files or formats tables."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from torch import nn

from ddcat.certification.certify import CertifyPlan, certify_dataset
from ddcat.data import build_dataset
from ddcat.distributed import DistContext, init_distributed
from ddcat.evaluation.run import checkpoint_label, checkpoint_target
from ddcat.models.user import Trust
from ddcat.runinfo import run_record


def certify_model(
    target: nn.Module,
    cfg: dict[str, Any],
    plan: CertifyPlan,
    split: str = "val",
    ctx: DistContext = DistContext(),
    progress: bool = True,
    desc: str = "certify",
    seed: int | None = None,
) -> list[dict[str, Any]]:
    """One record per tau of ``plan`` for ``target`` (an inference path) on ``cfg``'s ``split``;
    the noise seed is ``plan.seed``, else ``seed``, else ``cfg["seed"]``."""
    dataset = build_dataset(cfg, split)
    return certify_dataset(target, dataset, plan, cfg["data"]["num_classes"], cfg["seed"] if seed is None else seed, ctx, progress, desc)


@dataclass
class CertifyResult:
    """``summary`` (the ``certify.json`` content) and the process context (only ``ctx.is_main`` writes)."""

    summary: dict[str, Any]
    ctx: DistContext

    @property
    def records(self) -> list[dict[str, Any]]:
        return self.summary["records"]


def certify_checkpoint(
    checkpoint: str | Path,
    plan: CertifyPlan = CertifyPlan(),
    sets: Sequence[str] = (),
    split: str = "val",
    device: str | None = None,
    progress: bool = True,
    trust: Trust = Trust(),
) -> CertifyResult:
    """Everything ``ddcat certify`` computes (nothing is written); ``trust``: the factories a
    user-model checkpoint may name (the caller decides)."""
    ctx = init_distributed(device)
    target, cfg = checkpoint_target(checkpoint, sets, ctx, trust)
    label = checkpoint_label(checkpoint)
    records = certify_model(target, cfg, plan, split, ctx, progress, desc=f"certify {label}")
    for r in records:
        r["model"] = label
    summary = {
        "checkpoint": str(checkpoint),
        "model": label,
        "split": split,
        "records": records,
        "run": run_record(cfg, "certify", {"world_size": ctx.world}),
        "config": cfg,
    }
    return CertifyResult(summary, ctx)
