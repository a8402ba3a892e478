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
        rows = [(_source_name(model, s), sweep_row(records, steps, "mIoU", attack, s, eps)) for s in sources]
        if transfer:
            summ = {(s["attack"], s["steps"], s["eps"]): s for s in transfer}
            clean = sweep_row(records, steps, "mIoU", attack, sources[0], eps)[0]
            rows.append(("mean over substitutes", [clean, *(summ.get((attack, n, eps), {}).get("mean") for n in steps)]))
            rows.append(("std over substitutes", [None, *(summ.get((attack, n, eps), {}).get("std") for n in steps)]))
        blocks.append(text_table(f"mIoU under {attack} ({kind}), eps={eps:.4g}", columns, rows))
        if attack == "worst":
            rows = [(model, sweep_row(records, steps, "aAcc", attack, sources[0], eps))]
            blocks.append(text_table(f"aAcc under the per-image worst case, eps={eps:.4g}", columns, rows))
    return blocks


def _budget_table(summary: dict[str, Any]) -> str:
    records = summary["records"]
    model = summary["model"]
    clean = records[0]
    rows: list[tuple[str, list[float | None]]] = [(f"{model} clean", [clean["mIoU"], clean["aAcc"]])]
    for r in records:
        if r["attack"] not in BUDGET_ATTACKS:
            continue
        name = f"{_source_name(model, r['source'])} {r['attack']}-{r['steps']} eps={r['eps']:.4g}"
        rows.append((name, [r["mIoU"], r["aAcc"]]))
        for member in r.get("members", []):
            rows.append((f"  member {member['name']}", [member["mIoU"], member["aAcc"]]))
    note = ("SEA: mIoU = greedy dataset-level worst case over the members, aAcc = per-image worst case"
            if any(r["attack"] == "sea" for r in records) else "")
    table = text_table("APGD / SEA (iterations per attack in the name)", ["mIoU", "aAcc"], rows)
    return table + (f"\n{note}" if note else "")


CONVENTIONS = (
    "mIoU: mean over classes with a non-empty union. metrics.json also holds mIoU_all (mean over all K, the paper's"
    " code), mAcc (mean recall over classes present in the ground truth) and mAcc_all (over all K, the paper's code)."
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
    blocks.append(CONVENTIONS)
    return "\n\n".join(blocks)

