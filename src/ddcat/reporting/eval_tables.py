"""The terminal tables of ``ddcat eval`` (also written to ``table.txt``), from its records.

Sweep attacks (BIM, PGD, ...) in the paper's layout: one row per model (or model <- substitute),
columns ``clean, 1..n``, one table per (attack, eps). APGD and SEA: one row per (attack, eps,
iterations, source) with mIoU and aAcc; SEA's rows are followed by one row per member."""

from __future__ import annotations

from typing import Any

from ddcat.evaluation.run import checkpoint_label
from ddcat.evaluation.settings import BUDGET_ATTACKS
from ddcat.reporting.summary import ordered
from ddcat.reporting.tables import sweep_row, text_table


def _source_name(model: str, source: str) -> str:
    return model if source == "self" else f"{model} <- {checkpoint_label(source)}"


def budget_label(record: dict[str, Any], eps: float | None = None) -> str:
    """``eps=0.03`` for an L-inf record (records without a norm are L-inf), ``L2, eps=0.5`` for L2."""
    eps = record.get("eps", 0.0) if eps is None else eps
    return f"L2, eps={eps:.4g}" if record.get("norm") == "l2" else f"eps={eps:.4g}"


def _sweep_tables(summary: dict[str, Any], attack: str, steps: list[int]) -> list[str]:
    records = summary["records"]
    model = summary["model"]
    transfer = summary.get("transfer_summary")
    kind = "black-box transfer" if transfer else "white-box"
    columns = ["clean", *map(str, steps)]
    blocks = []
    eps_values = ordered((r["eps"] for r in records if r["attack"] == attack), ()) or [0]
    for eps in eps_values:
        sources = sorted({r["source"] for r in records if r["attack"] == attack})
        budget = budget_label(next((r for r in records if r["attack"] == attack and r["eps"] == eps), {}), eps)
        rows = [(_source_name(model, s), sweep_row(records, steps, "mIoU", attack, s, eps)) for s in sources]
        if transfer:
            summ = {(s["attack"], s["steps"], s["eps"]): s for s in transfer}
            clean = sweep_row(records, steps, "mIoU", attack, sources[0], eps)[0]
            rows.append(("mean over substitutes", [clean, *(summ.get((attack, n, eps), {}).get("mean") for n in steps)]))
            rows.append(("std over substitutes", [None, *(summ.get((attack, n, eps), {}).get("std") for n in steps)]))
        blocks.append(text_table(f"mIoU under {attack} ({kind}), {budget}", columns, rows))
        if attack == "worst":
            rows = [(model, sweep_row(records, steps, "aAcc", attack, sources[0], eps))]
            blocks.append(text_table(f"aAcc under the per-image worst case, {budget}", columns, rows))
    return blocks


def _budget_table(summary: dict[str, Any]) -> str:
    records = summary["records"]
    model = summary["model"]
    clean = records[0]
    rows: list[tuple[str, list[float | None]]] = [(f"{model} clean", [clean["mIoU"], clean["aAcc"]])]
    for r in records:
        if r["attack"] not in BUDGET_ATTACKS:
            continue
        name = f"{_source_name(model, r['source'])} {r['attack']}-{r['steps']} {budget_label(r)}"
        rows.append((name, [r["mIoU"], r["aAcc"]]))
        for member in r.get("members", []):
            skipped = f" (skipped {member['skipped_images']})" if member.get("skipped_images") else ""
            rows.append((f"  member {member['name']}{skipped}", [member["mIoU"], member["aAcc"]]))
    ensembles = [r for r in records if r["attack"] in BUDGET_ATTACKS and r.get("members")]
    note = ("ensembles (sea, ensemble): mIoU = greedy dataset-level worst case (sea: over its members; ensemble: over every "
            "attack of this evaluation), aAcc = per-image worst case over the members" if ensembles else "")
    for r in ensembles:
        if r.get("ensemble"):
            note += f"\n{r['attack']} {budget_label(r)}: {r['ensemble']['version']}, members {', '.join(r['ensemble']['members'])}"
        for metric, won in r.get("winners", {}).items():
            note += f"\n{r['attack']} {budget_label(r)}: images won ({metric}): " + ", ".join(f"{k} {v}" for k, v in won.items())
    table = text_table("APGD / PAdam / SEA / ensemble (iterations per attack in the name)", ["mIoU", "aAcc"], rows)
    return table + (f"\n{note}" if note else "")


def _image_table(summary: dict[str, Any]) -> str:
    """Image-wise mIoU and size-resolved recall of every record (clean first)."""
    records = summary["records"]
    bins = [b["bin"] for b in records[0].get("size_recall", [])]
    rows = []
    for r in records:
        name = "clean" if r["attack"] == "clean" else f"{r['attack']}-{r['steps']} {budget_label(r)}"
        if r["source"] != "self":
            name += f" <- {checkpoint_label(r['source'])}"
        recall = {b["bin"]: b["recall"] for b in r.get("size_recall", [])}
        rows.append((name, [r.get("mIoU_imagewise"), *(recall.get(b) for b in bins)]))
    pixels = ", ".join(f"{b['bin']} {b['pixels']}" for b in records[0].get("size_recall", []))
    table = text_table("image-wise mIoU and recall of ground-truth objects by size (share of the image's labelled pixels)",
                       ["mIoU_img", *(f"rec {b}" for b in bins)], rows)
    return table + f"\nobject pixels per size bin: {pixels}"


CONVENTIONS = (
    "mIoU: mean over classes with a non-empty union. metrics.json also holds mIoU_all (mean over all K, the paper's"
    " code), mAcc (mean recall over classes present in the ground truth) and mAcc_all (over all K, the paper's code)."
    " mIoU_img (mIoU_imagewise): mean over images of each image's mIoU over the classes with a non-empty union in it;"
    " rec BIN: share of the pixels of ground-truth objects (8-connected components of one class) of that size still"
    " classified correctly."
)


def eval_tables(summary: dict[str, Any]) -> str:
    """All tables of one ``ddcat eval`` summary (``metrics.json`` content)."""
    records = summary["records"]
    attacks = ordered((r["attack"] for r in records if r["attack"] != "clean"), ())
    sweep = [a for a in attacks if a not in BUDGET_ATTACKS]
    steps = sorted({r["steps"] for r in records if r["attack"] in sweep})
    blocks: list[str] = []
    for attack in sweep:
        blocks += _sweep_tables(summary, attack, steps)
    if any(a in BUDGET_ATTACKS for a in attacks):
        blocks.append(_budget_table(summary))
    if not attacks:
        blocks.append(text_table("mIoU (clean)", ["clean"], [(summary["model"], [records[0]["mIoU"]])]))
    if "mIoU_imagewise" in records[0]:
        blocks.append(_image_table(summary))
    blocks.append(CONVENTIONS)
    return "\n\n".join(blocks)

