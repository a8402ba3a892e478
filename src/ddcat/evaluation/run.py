"""The one evaluation entry point: load a model on its inference path, build the attack settings,
evaluate, return records. ``ddcat eval`` (through :func:`evaluate_checkpoint`) and ``ddcat
experiment`` (through :func:`load_inference_model` and :func:`evaluate_model`) both go through it;
neither argparse nor file writing reaches this layer, and nothing here formats tables."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

from torch import nn

from ddcat.checkpoint import load_model
from ddcat.config import DEFAULTS, apply_sets, merge
from ddcat.data import build_dataset
from ddcat.data.check import check_dataset
from ddcat.distributed import DistContext, init_distributed
from ddcat.errors import DdcatError
from ddcat.evaluation.class_counts import training_class_counts
from ddcat.evaluation.engine import evaluate
from ddcat.evaluation.inference import inference_model, inference_options
from ddcat.evaluation.settings import AttackPlan, attack_settings
from ddcat.evaluation.transfer import transfer_summary
from ddcat.models.user import Trust
from ddcat.runinfo import run_record

MIOU_CONVENTION = "mIoU: mean over classes with non-empty union; mIoU_all: mean over all K (paper code)"
MACC_CONVENTION = "mAcc: mean recall over classes present in the ground truth; mAcc_all: mean over all K (paper code)"


def checkpoint_label(path: str | Path) -> str:
    """A model's name from its checkpoint path: the run folder for ``last.pt`` / ``model.pt``."""
    p = Path(path)
    return p.parent.name if p.name in ("last.pt", "model.pt") else p.stem


def eval_config(ckpt: dict[str, Any], sets: Sequence[str], path: str | Path = "") -> dict[str, Any]:
    """The checkpoint's training config (for the data) with ``--set`` overrides applied; a bad
    value in the embedded config is an error naming the checkpoint file."""
    embedded = ckpt.get("config") or {}
    if not isinstance(embedded, dict):
        raise DdcatError(f"checkpoint {path}: 'config' must be a mapping, got {type(embedded).__name__}")
    cfg = merge(DEFAULTS, embedded, where=f" in the config of checkpoint {path}")
    return apply_sets(cfg, list(sets))


def on_inference_path(model: nn.Module, cfg: dict[str, Any], device) -> nn.Module:
    """``model`` in eval mode on ``device``, behind the inference path ``cfg["eval"]`` names
    (whole image or sliding window): what both the metric and the attacks see."""
    e = cfg["eval"]
    crop = e["crop_size"] or cfg["train"]["crop_size"]
    return inference_model(model.to(device).eval(), e["mode"], crop, e["stride_rate"], **inference_options(cfg))


def load_inference_model(
    path: str | Path, cfg: dict[str, Any], device, expect: dict[str, Any] | None = None, trust: Trust = Trust()
) -> nn.Module:
    """The checkpoint's model on its inference path (see :func:`on_inference_path`); ``trust``: the
    factories a user-model checkpoint may name."""
    model, _ = load_model(path, expect=expect, trust=trust)
    return on_inference_path(model, cfg, device)


def with_class_counts(plan: AttackPlan, cfg: dict[str, Any], cache_dir: str | Path | None) -> AttackPlan:
    """``plan`` with the training split's class pixel counts filled in when an attack needs them."""
    if not plan.needs_class_counts or plan.class_counts is not None:
        return plan
    return replace(plan, class_counts=tuple(training_class_counts(cfg, cache_dir)))


def evaluate_model(
    target: nn.Module,
    cfg: dict[str, Any],
    plan: AttackPlan,
    sources: Sequence[tuple[str, nn.Module | None]] = (("self", None),),
    split: str = "val",
    ctx: DistContext = DistContext(),
    progress: bool = True,
    desc: str = "eval",
    cache_dir: str | Path | None = None,
    seed: int | None = None,
    max_images: int | None = None,
) -> list[dict[str, Any]]:
    """Clean and attacked records of ``target`` (an inference path, see :func:`load_inference_model`)
    on ``cfg``'s ``split``, one record per setting of ``plan`` and source. ``max_images``
    (default ``cfg["eval"]["max_images"]``, 0 = all) caps the images; ``seed`` (default
    ``cfg["seed"]``) seeds the randomized attacks unless ``plan.seed`` is set; ``cache_dir`` holds
    the class-count cache of SEA's balanced loss; ``plan.norm`` None takes ``cfg["eval"]["norm"]``; ``ctx`` shards the images over processes and
    names the device."""
    plan = with_class_counts(plan, cfg, cache_dir)
    if plan.norm is None:  # the threat model: --norm, else the config's eval.norm
        plan = replace(plan, norm=cfg["eval"].get("norm", DEFAULTS["eval"]["norm"]))
    settings = attack_settings(plan, list(sources), seed=cfg["seed"] if seed is None else seed)
    dataset = build_dataset(cfg, split)
    if cfg["data"].get("check", True):  # every listed file, before the first batch (data/check.py)
        check_dataset(dataset, progress=progress and ctx.is_main, desc=f"check {split} data")
    return evaluate(
        target, dataset, settings, cfg["data"]["num_classes"], ctx.device, cfg["eval"]["batch_size"],
        cfg["eval"]["max_images"] if max_images is None else max_images, ctx, progress, desc=desc,
    )


def checkpoint_target(
    checkpoint: str | Path, sets: Sequence[str], ctx: DistContext, trust: Trust = Trust()
) -> tuple[nn.Module, dict[str, Any]]:
    """The checkpoint's model on its inference path on ``ctx.device``, and the config it is scored
    with (the checkpoint's, ``--set`` overrides applied, its class count checked): what ``ddcat
    eval`` and ``ddcat certify`` load. ``trust``: the factories a user-model checkpoint may name."""
    model, ckpt = load_model(checkpoint, trust=trust)
    cfg = eval_config(ckpt, sets, checkpoint)
    num_classes = ckpt["model_spec"]["num_classes"]
    if cfg["data"]["num_classes"] != num_classes:
        raise DdcatError(
            f"--set data.num_classes={cfg['data']['num_classes']} disagrees with checkpoint {checkpoint}, which has {num_classes} classes"
        )
    return on_inference_path(model, cfg, ctx.device), cfg


@dataclass
class EvalResult:
    """What :func:`evaluate_checkpoint` computed: ``summary`` (the ``metrics.json`` content) and the
    process context it ran in (only ``ctx.is_main`` writes files)."""

    summary: dict[str, Any]
    ctx: DistContext

    @property
    def records(self) -> list[dict[str, Any]]:
        return self.summary["records"]


def evaluate_checkpoint(
    checkpoint: str | Path,
    plan: AttackPlan = AttackPlan(),
    transfer_from: Sequence[str] | None = None,
    sets: Sequence[str] = (),
    split: str = "val",
    device: str | None = None,
    progress: bool = True,
    cache_dir: str | Path | None = None,
    trust: Trust = Trust(),
) -> EvalResult:
    """Everything ``ddcat eval`` computes (nothing is written): clean and attacked records of the
    checkpoint under ``plan``, white-box or through the ``transfer_from`` substitutes. ``trust``:
    the factories the checkpoints may name (the caller decides)."""
    ctx = init_distributed(device)
    target, cfg = checkpoint_target(checkpoint, sets, ctx, trust)
    num_classes = cfg["data"]["num_classes"]
    sources: list[tuple[str, nn.Module | None]] = [("self", None)]
    if transfer_from:
        sources = [
            (str(p), load_inference_model(p, cfg, ctx.device, expect={"num_classes": num_classes}, trust=trust)) for p in transfer_from
        ]
    label = checkpoint_label(checkpoint)
    records = evaluate_model(target, cfg, plan, sources, split, ctx, progress, desc=f"eval {label}", cache_dir=cache_dir)
    for r in records:
        r["model"] = label
    summary: dict[str, Any] = {
        "checkpoint": str(checkpoint),
        "model": label,
        "miou_convention": MIOU_CONVENTION,
        "macc_convention": MACC_CONVENTION,
        "records": records,
        "run": run_record(cfg, "eval", {"world_size": ctx.world}),
        "config": cfg,
    }
    clean = records[0]
    for key in ("mIoU", "mIoU_all", "mAcc", "mAcc_all", "aAcc", "per_class_iou", "num_images"):
        summary[key] = clean[key]  # clean figures at the top level
    if transfer_from:
        summary["transfer_summary"] = transfer_summary(records)
    return EvalResult(summary, ctx)
