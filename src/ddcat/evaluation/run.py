"""``ddcat eval``: load a checkpoint, run the requested protocol, write ``metrics.json``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ddcat.checkpoint import load_model
from ddcat.config import DEFAULTS, apply_sets, merge
from ddcat.data import build_dataset
from ddcat.errors import DdcatError
from ddcat.distributed import init_distributed
from ddcat.evaluation.engine import evaluate
from ddcat.evaluation.protocol import (
    attack_settings,
    checkpoint_label,
    inference_path,
    load_substitutes,
    parse_steps,
    transfer_summary,
)
from ddcat.reporting.tables import sweep_row, text_table
from ddcat.runinfo import run_record


def eval_config(ckpt: dict[str, Any], sets: list[str]) -> dict[str, Any]:
    """The checkpoint's training config (for the data) with ``--set`` overrides applied."""
    cfg = merge(DEFAULTS, ckpt.get("config") or {}, where=" (checkpoint config)")
    return apply_sets(cfg, sets)


def evaluate_checkpoint(
    checkpoint: str | Path,
    attacks: list[str],
    steps: list[int],
    eps: float = 0.03,
    alpha: float = 0.01,
    transfer_from: list[str] | None = None,
    sets: list[str] | None = None,
    split: str = "val",
    device: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Everything ``ddcat eval`` computes, as a dict (nothing is written)."""
    ctx = init_distributed(device)
    model, ckpt = load_model(checkpoint)
    cfg = eval_config(ckpt, sets or [])
    num_classes = ckpt["model_spec"]["num_classes"]
    if cfg["data"]["num_classes"] != num_classes:
        raise DdcatError(
            f"--set data.num_classes={cfg['data']['num_classes']} disagrees with checkpoint {checkpoint}, which has {num_classes} classes"
        )
    target = inference_path(model.to(ctx.device).eval(), cfg)
    sources = load_substitutes(transfer_from, num_classes, cfg, ctx.device) if transfer_from else [("self", None)]
    settings = attack_settings(attacks, steps, eps, alpha, sources, seed=cfg["seed"])
    dataset = build_dataset(cfg, split)
    records = evaluate(
        target, dataset, settings, num_classes, ctx.device, cfg["eval"]["batch_size"], cfg["eval"]["max_images"], ctx, progress,
        desc=f"eval {checkpoint_label(checkpoint)}",
    )
    for r in records:
        r["model"] = checkpoint_label(checkpoint)
    result = {
        "checkpoint": str(checkpoint),
        "model": checkpoint_label(checkpoint),
        "miou_convention": "mIoU: mean over classes with non-empty union; mIoU_all: mean over all K (paper code)",
        "macc_convention": "mAcc: mean recall over classes present in the ground truth; mAcc_all: mean over all K (paper code)",
        "records": records,
        "run": run_record(cfg, "eval", {"world_size": ctx.world}),
        "config": cfg,
    }
    clean = records[0]
    for key in ("mIoU", "mIoU_all", "mAcc", "mAcc_all", "aAcc", "per_class_iou", "num_images"):
        result[key] = clean[key]  # clean figures at the top level
    if transfer_from:
        result["transfer_summary"] = transfer_summary(records)
    result["is_main_process"] = ctx.is_main
    return result


def format_tables(result: dict[str, Any], attacks: list[str], steps: list[int]) -> str:
    """The paper's layout: rows = model (or model <- substitute), columns = clean, 1..n."""
    columns = ["clean", *map(str, steps)]
    records = result["records"]
    blocks = []
    for attack in attacks:
        sources = sorted({r["source"] for r in records if r["attack"] == attack})
        rows = []
        for source in sources:
            name = result["model"] if source == "self" else f"{result['model']} <- {checkpoint_label(source)}"
            rows.append((name, sweep_row(records, steps, "mIoU", attack, source)))
        if result.get("transfer_summary"):
            summ = {(s["attack"], s["steps"]): s for s in result["transfer_summary"]}
            clean = sweep_row(records, steps, "mIoU", attack, sources[0])[0]
            rows.append(("mean over substitutes", [clean, *(summ.get((attack, n), {}).get("mean") for n in steps)]))
            rows.append(("std over substitutes", [None, *(summ.get((attack, n), {}).get("std") for n in steps)]))
        kind = "black-box transfer" if result.get("transfer_summary") else "white-box"
        blocks.append(text_table(f"mIoU under {attack} ({kind}), eps={records[-1]['eps'] if len(records) > 1 else 0}", columns, rows))
        if attack == "worst":
            rows = [(result["model"], sweep_row(records, steps, "aAcc", attack, sources[0]))]
            blocks.append(text_table("aAcc under the per-image worst case", columns, rows))
    blocks.append(
        "mIoU: mean over classes with a non-empty union. metrics.json also holds mIoU_all (mean over all K, the paper's"
        " code), mAcc (mean recall over classes present in the ground truth) and mAcc_all (over all K, the paper's code)."
    )
    return "\n\n".join(blocks)


def run_eval(args) -> dict[str, Any]:
    if getattr(args, "config", None):  # --config: the untrained model as a checkpoint in OUT/model.pt
        from ddcat.checkpoint import checkpoint_from_config
        from ddcat.config import load_config

        args.checkpoint = str(checkpoint_from_config(load_config(args.config, args.set or []), Path(args.out) / "model.pt"))
    attacks = args.attack or []
    steps = parse_steps(args.steps) if attacks else []
    result = evaluate_checkpoint(
        args.checkpoint, attacks, steps, args.eps, args.alpha, args.transfer_from, args.set or [], args.split, args.device,
        progress=not args.no_progress,
    )
    if not result.pop("is_main_process"):
        return result
    table = format_tables(result, attacks or ["clean"], steps)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / ".metrics.json.tmp"
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(out / "metrics.json")
    (out / "table.txt").write_text(table + "\n")
    print(table)
    print(f"wrote {out / 'metrics.json'}")
    return result
