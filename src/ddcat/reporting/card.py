"""Certified next to empirical robustness: ``ddcat certify``'s table and the report card.

The card (issue 18 §3) is a function of plain records, so ``ddcat demo`` / ``ddcat experiment``
and ``ddcat report`` can all call it: per model, clean mIoU, BIM-7 mIoU, the strongest attack's
mIoU (L-inf, eps: the first of the registry's :func:`~ddcat.attacks.registry.strongest_first`
present, i.e. the ensemble, else SEA, else the per-image worst case, else APGD; else the lowest
attacked record), the certified pixel accuracy and abstain rate at radius R (L2, sigma, tau).
Empirical columns are upper bounds on robustness (an attack found no worse image); certified ones
are lower bounds (with probability >= 1 - alpha per image)."""

from __future__ import annotations

from typing import Any, Sequence

from ddcat.attacks import registry
from ddcat.reporting.summary import arch_name, method_name
from ddcat.reporting.tables import markdown_table, text_table


def certify_table(records: Sequence[dict[str, Any]], model: str) -> str:
    """``ddcat certify``'s terminal table (also ``table.txt``): one row per tau."""
    columns = ["radius", "cert aAcc", "abstain", "cert mIoU", "smoothed aAcc", "smoothed mIoU"]
    r0 = records[0]
    title = (f"{model}: certified by randomized smoothing (L2, sigma={r0['sigma']:g}, n0={r0['n0']}, n={r0['n']}, "
             f"alpha={r0['alpha']:g}, {r0['correction']}, {r0['num_images']} images)")
    rows = [(f"tau={r['tau']:g}", [r["radius"], r["certified_pixel_accuracy"], r["abstain_rate"], r["certified_mIoU"],
                                   r["smoothed_pixel_accuracy"], r["smoothed_mIoU"]]) for r in records]
    return text_table(title, columns, rows)


def _find(records: Sequence[dict[str, Any]], attack: str, steps: int | None = None) -> dict[str, Any] | None:
    for r in records:
        if r.get("attack") == attack and r.get("source", "self") == "self" and (steps is None or r.get("steps") == steps):
            return r
    return None


def strongest(records: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The record of the strongest white-box attack among ``records``: the first attack of the
    registry's :func:`~ddcat.attacks.registry.strongest_first` present (the ensemble, else SEA, else
    the per-image worst case, else APGD; its lowest-mIoU record), else the attacked record with the
    lowest mIoU (None without attacks)."""
    for name in registry.strongest_first():
        found = [r for r in records if r.get("attack") == name and r.get("source", "self") == "self"]
        if found:
            return min(found, key=lambda r: r["mIoU"])
    attacked = [r for r in records if r.get("attack") not in (None, "clean") and r.get("source", "self") == "self"]
    return min(attacked, key=lambda r: r["mIoU"]) if attacked else None


def card_rows(models: Sequence[tuple[str, Sequence[dict[str, Any]], Sequence[dict[str, Any]]]], bim_steps: int = 7) -> tuple[list[str], list[tuple[str, list[float | None]]]]:
    """(columns, rows) of the card for ``models`` = (name, eval records, certify records); a model
    without certify records (or without attacks) has '-' in those columns. The threat model of
    each column is in its header; columns come from the first model that has them."""
    evals = [r for _, ev, _ in models for r in ev]
    certs = [r for _, _, cr in models for r in cr]
    strong = strongest(evals)
    eps = _find(evals, "bim", bim_steps)
    columns = ["clean mIoU"]
    columns.append(f"BIM-{bim_steps} mIoU (Linf {eps['eps']:.4g})" if eps else f"BIM-{bim_steps} mIoU")
    if strong is not None:
        iters = registry.canonical(strong.get("attack")) in registry.names(budget="iters")
        budget = f", {strong['steps']} it." if iters else ""
        columns.append(f"{strong['attack']} mIoU (Linf {strong['eps']:.4g}{budget})")
    cert_keys = sorted({(r["sigma"], r["tau"]) for r in certs})
    for sigma, tau in cert_keys:
        r = next(c for c in certs if (c["sigma"], c["tau"]) == (sigma, tau))
        where = f"L2 {r['radius']:.3g}, sigma {sigma:g}, tau {tau:g}"
        columns += [f"cert aAcc ({where})", f"abstain ({where})"]
    rows = []
    for name, ev, cr in models:
        values: list[float | None] = []
        clean = _find(ev, "clean")
        values.append(clean["mIoU"] if clean else None)
        bim = _find(ev, "bim", bim_steps)
        values.append(bim["mIoU"] if bim else None)
        if strong is not None:
            s = next((r for r in ev if r.get("attack") == strong["attack"] and r.get("eps") == strong["eps"]
                      and r.get("steps") == strong["steps"] and r.get("source", "self") == "self"), None)
            values.append(s["mIoU"] if s else None)
        for sigma, tau in cert_keys:
            c = next((r for r in cr if (r["sigma"], r["tau"]) == (sigma, tau)), None)
            values += [c["certified_pixel_accuracy"] if c else None, c["abstain_rate"] if c else None]
        rows.append((name, values))
    return columns, rows


CARD_NOTE = ("Empirical columns (L-inf attacks) are upper bounds on robustness: the attack found no worse image. "
             "Certified columns (randomized smoothing, SegCertify) are lower bounds for the smoothed classifier: "
             "with probability >= 1 - alpha per image every non-abstaining pixel keeps its class in the L2 ball of radius R "
             "(abstentions count as wrong). An L2 ball of radius R holds L-inf perturbations up to R / sqrt(3 H W) only.")


def card_markdown(models: Sequence[tuple[str, Sequence[dict[str, Any]], Sequence[dict[str, Any]]]], bim_steps: int = 7) -> str:
    """The card as a markdown table followed by the note on what each column bounds."""
    columns, rows = card_rows(models, bim_steps)
    return markdown_table(columns, rows, first="model") + "\n\n" + CARD_NOTE


def card_text(models: Sequence[tuple[str, Sequence[dict[str, Any]], Sequence[dict[str, Any]]]], bim_steps: int = 7) -> str:
    columns, rows = card_rows(models, bim_steps)
    return text_table("Report card: empirical (upper bound) and certified (lower bound) robustness", columns, rows)


def card_models(results: dict[str, Any]) -> list[tuple[str, list[dict[str, Any]], list[dict[str, Any]]]]:
    """The card's models from ``results.json`` of ``ddcat experiment`` / ``ddcat demo``: every
    certified run, with its white-box and stronger-attack records (the same run id)."""
    models = []
    for cert in results.get("certifications") or []:
        evals = [r for e in results.get("evaluations", []) if e.get("run_id") == cert.get("run_id") and e.get("kind") in ("white-box", "strong")
                 for r in e.get("records", [])]
        name = f"{arch_name(cert.get('arch', '?'))} {method_name(cert.get('method', '?'))} (seed {cert.get('seed', '?')})"
        models.append((name, evals, list(cert.get("records", []))))
    return models


def card_section(results: dict[str, Any]) -> list[str]:
    """The report's "Report card" section (markdown lines), empty without certifications."""
    models = card_models(results)
    if not models:
        return []
    certs = [r for _, _, cr in models for r in cr]
    r0 = certs[0]
    seconds = sum(float(r.get("seconds", 0.0)) for c in results.get("certifications", []) for r in c.get("records", [])[:1])
    return [
        "## Report card: empirical and certified robustness", "",
        f"Certified by randomized smoothing (SegCertify): n0 = {r0['n0']}, n = {r0['n']} samples per image, alpha = {r0['alpha']:g} "
        f"({r0['correction']}), {r0['num_images']} validation images, {seconds:.0f} s of sampling in all. "
        "\"cert aAcc\": labelled pixels certified and correct; \"abstain\": pixels the test could not certify.", "",
        card_markdown(models), "",
    ]
