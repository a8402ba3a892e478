"""``report.md`` (tables in the paper's layout, figures, findings, training times) and the
terminal tables, from the ``results.json`` dictionary of ``ddcat experiment`` / ``ddcat demo``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from ddcat.errors import DdcatError
from ddcat.outdir import write_text
from ddcat.reporting import plots
from ddcat.reporting.card import card_models, card_section, card_text
from ddcat.reporting.summary import (
    arch_name,
    archs_of,
    claimed_rows,
    claimed_vs_remaining,
    column_labels,
    findings,
    ensemble_winners,
    lowest_bounds,
    lowest_rows,
    method_name,
    methods_of,
    paper_table,
    pooled_count,
    size_rows,
    size_table,
    strong_rows,
    strong_table,
    substitutes,
    threat_model,
)
from ddcat.reporting.tables import fmt, markdown_table, paper_markdown, text_table

ABLATION = ("sat", "ddcat-m", "ddcat-n", "ddcat")


def _mean_rows(rows: list[tuple[str, list[float | None]]]) -> list[str]:
    return [name for name, _ in rows if name.startswith("Mean ")]


def _counts(results: dict[str, Any], arch: str, kind: str) -> str:
    counts = pooled_count(results, arch, kind)
    unit = "(seed, substitute) pairs" if kind == "transfer" else "seeds"
    return ", ".join(f"{method_name(m)} {n}" for m, n in counts.items()) + f" {unit}"


def _has_metric(results: dict[str, Any], kind: str, metric: str) -> bool:
    return any(metric in r for e in results.get("evaluations", []) if e.get("kind") == kind for r in e.get("records", []))


def _log_path(run: dict[str, Any], out_dir: Path) -> Path | None:
    candidates = []
    if run.get("log"):
        candidates += [Path(run["log"]), out_dir / run["log"]]
    if run.get("dir"):
        candidates += [Path(run["dir"]) / "train_log.jsonl", out_dir / run["dir"] / "train_log.jsonl"]
    if run.get("id"):
        candidates.append(out_dir / "runs" / run["id"] / "train_log.jsonl")
    return next((p for p in candidates if p.is_file()), None)


def _routing_logs(results: dict[str, Any], out_dir: Path) -> dict[str, list[Path]]:
    logs: dict[str, list[Path]] = {}
    for run in results.get("runs", []):
        if not str(run.get("method", "")).startswith("ddcat"):
            continue
        path = _log_path(run, out_dir)
        if path is not None:
            logs.setdefault(f"{arch_name(run.get('arch', '?'))} {method_name(run['method'])} seed {run.get('seed', '?')}", []).append(path)
    return logs


def _sweep_section(results: dict[str, Any], kind: str, methods: tuple[str, ...] | None = None, metric: str = "mIoU") -> list[str]:
    cols = column_labels(results)
    lines: list[str] = []
    for arch in archs_of(results, kind):
        rows = paper_table(results, arch, kind, metric, methods=methods)
        if not rows:
            continue
        lines += [f"**Model: {arch_name(arch)}** ({metric}; n = {_counts(results, arch, kind)})", "", paper_markdown(cols, rows, bold_rows=_mean_rows(rows)), ""]
    return lines


def write_report(results: dict[str, Any], out_dir: str | Path) -> Path:
    """Write ``out_dir/report.md`` and the figures it links (``sweep_white_box.png``,
    ``sweep_transfer.png``, ``routing.png``, ``strong_attacks.png``, ``size_recall.png``, ``claimed_vs_remaining.png``,
    ``qualitative_<arch>.png``;
    each only when there is data for it). Returns the path of ``report.md``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    steps = ", ".join(str(s) for s in results.get("steps", [])) or "-"
    problems: list[str] = []

    def figure(name: str, make: Callable[[Path], Path], caption: str) -> list[str]:
        try:
            path = make(out_dir / name)
        except DdcatError as err:
            problems.append(f"{name}: {err}")
            return []
        return [f"![{caption}]({path.name})", "", f"*{caption}*", ""]

    md: list[str] = [f"# ddcat report: {results.get('experiment', 'experiment')}", ""]
    for key, label in (("date", "Date"), ("machine", "Machine"), ("command", "Command"), ("file", "Experiment file")):
        if results.get(key):
            md.append(f"- {label}: `{results[key]}`" if key in ("command", "file") else f"- {label}: {results[key]}")
    norm = threat_model(results)
    md.append(f"- Attack: BIM, {norm} eps {results.get('eps', '-')}, alpha {results.get('alpha', '-')} (pixels in [0, 1]), steps n = {steps}")
    if norm != "L-inf":
        md.append(f"- Threat model: {norm} (eps = the {norm} radius per image; every attack of the report)")
    elif isinstance(results.get("eps"), (int, float)):
        md.append(f"- Threat model: L-inf, untargeted, white-box (Table 2: black-box transfer from the substitutes); "
                  f"eps {results['eps']} = {results['eps'] * 255:.2f}/255 (the literature compares at 4/255 and 8/255)")
    if results.get("quick"):
        md.append("- Quick run (`--quick`): a smoke test, not a reproduction.")
    if results.get("wall_seconds") is not None:
        md.append(f"- Wall time: {results['wall_seconds']:.0f} s")
    md += ["", f"**mIoU convention.** {results.get('miou_convention', 'not stated')}", ""]

    md += ["## Table 1: white-box attack", "",
           "Column \"clean\" is mIoU on clean images; columns 1..n are mIoU under white-box BIM with that many "
           "iterations. \"Mean\" / \"Std\": mean and population standard deviation over seeds; bold = highest mean.", ""]
    section = _sweep_section(results, "white-box")
    md += section or ["No white-box evaluations.", ""]
    if section:
        md += figure("sweep_white_box.png", lambda p: plots.plot_sweep(results, p, "white-box"),
                     "Fig. 4 layout: white-box BIM mIoU against attack steps (0 = clean), error bars = std over seeds.")

    if archs_of(results, "transfer"):
        md += ["## Table 2: black-box transfer attack", "",
               "Each target model is attacked with BIM perturbations computed on each substitute model (the paper's protocol); "
               "mean and std pool every (target seed, substitute) pair. Clean column: over seeds.", ""]
        for arch in archs_of(results, "transfer"):
            subs = substitutes(results, arch)
            if subs:
                md.append(f"- {arch_name(arch)} targets attacked through: " + ", ".join(f"`{s}`" for s in subs))
        md.append("")
        md += _sweep_section(results, "transfer")
        md += figure("sweep_transfer.png", lambda p: plots.plot_sweep(results, p, "transfer"),
                     "Black-box transfer mIoU against attack steps, error bars = std over (seed, substitute) pairs.")

    if any(m in ("ddcat-m", "ddcat-n") for a in archs_of(results, "white-box") for m in methods_of(results, a, "white-box")):
        md += ["## Table 3: ablation of the division setting (white-box)", "",
               "DDC-AT-M routes clean and adversarial boundary pixels to the auxiliary branch, DDC-AT-N only adversarial ones.", ""]
        md += _sweep_section(results, "white-box", ABLATION)

    strong_archs = archs_of(results, "strong")
    if strong_archs:
        md += ["## Stronger attacks: what BIM alone would claim vs the per-image worst case", "",
               "Same eps; every attack at the step count shown. \"worst\" keeps, per image, the adversarial image "
               "of whichever attack leaves the fewest pixels correct. \"BIM - worst\" is the robustness that BIM alone "
               "would claim but that does not survive the worst case. Mean over seeds.", ""]
        for arch in strong_archs:
            table = strong_table(results, arch)
            for metric in ("mIoU", "aAcc"):
                cols, rows = strong_rows(table, metric)
                if rows:
                    md += [f"**Model: {arch_name(arch)}** ({metric})", "", markdown_table(cols, rows, first="Method"), ""]
        md += figure("strong_attacks.png", lambda p: plots.plot_strong(results, p),
                     "mIoU under BIM and the stronger attacks, error bars = std over seeds.")
        sizes = {arch: size_table(results, arch) for arch in strong_archs}
        if any(sizes.values()):
            md += ["## Objects by size: image-wise mIoU and size-resolved recall", "",
                   "Image-wise mIoU: the mean over images of each image's mIoU over the classes with a non-empty union in it "
                   "(Halmosi et al. 2024). Recall by size: every ground-truth object (8-connected component of one class) is "
                   "binned by its share of the image's labelled pixels; the share of its pixels still classified correctly, "
                   "per bin. Ensembles: their per-image worst case. Mean over seeds.", ""]
            for arch in (a for a, entries in sizes.items() if entries):
                cols, rows = size_rows(sizes[arch])
                md += [f"**Model: {arch_name(arch)}**", "", markdown_table(cols, rows, first="Method, attack"), ""]
            md += figure("size_recall.png", lambda p: plots.plot_size_recall(results, p),
                         "Recall of ground-truth object pixels by object size, clean (dashed) and under each attack.")

    claims = {arch: claimed_vs_remaining(results, arch) for arch in strong_archs}
    if any(claims.values()):
        md += ["## Claimed vs. remaining robustness: BIM-n against SEA", "",
               "\"claimed\" is the mIoU under BIM at the sweep's step count, the robustness the paper's evaluation reports; "
               "\"remaining\" is the mIoU SEA leaves (APGD with masked CE, balanced masked CE and JS, greedy dataset-level "
               "worst case over them; Croce, Singh & Hein 2024) at the same eps. Mean over seeds.", ""]
        for arch in (a for a, entries in claims.items() if entries):
            for metric in ("mIoU", "aAcc"):
                cols, rows = claimed_rows(claimed_vs_remaining(results, arch, metric))
                if rows:
                    md += [f"**Model: {arch_name(arch)}** ({metric}{'; SEA: per-image worst case' if metric == 'aAcc' else ''})", "",
                           markdown_table(cols, rows, first="Method"), ""]
        md += figure("claimed_vs_remaining.png", lambda p: plots.plot_claimed_vs_remaining(results, p),
                     "Claimed vs. remaining: mIoU under BIM-n (what BIM claims) and under SEA (what remains), clean as a marker, error bars = std over seeds.")

    md += card_section(results)
    lows = {arch: lowest_bounds(results, arch) for arch in archs_of(results)}
    if any(lows.values()):
        md += ["## Lowest bound per model: every attack found", "",
               "Per model (seed), the lowest mIoU (and aAcc) that any attack in these evaluations left, whichever attack it was "
               "(BIM at any step count, the stronger attacks, SEA, any later attack; white-box, so transfer is left to Table 2), "
               "at the same eps; then mean and "
               "population std over seeds. This is the robustness that survives everything tried, an upper bound on the true one.", ""]
        for arch in (a for a, entries in lows.items() if entries):
            cols, rows = lowest_rows(lows[arch])
            md += [f"**Model: {arch_name(arch)}**", "", markdown_table(cols, rows, first="Method"), "",
                   "Attacks giving the lowest value: " + "; ".join(f"{e['name']}: {', '.join(e['attacks'])}" for e in lows[arch]), ""]
    wins = {arch: ensemble_winners(results, arch) for arch in archs_of(results)}
    if any(wins.values()):
        md += ["## Which attack found the worst case (the ensemble)", "",
               "Per image, the attack whose adversarial image the ensemble kept, counted over the images of every seed: "
               "for mIoU the greedy dataset-level selection (over every attack of the evaluation), for aAcc the per-image "
               "worst case over the ensemble's members.", ""]
        for arch in (a for a, entries in wins.items() if entries):
            md += [f"**Model: {arch_name(arch)}**", ""]
            for e in wins[arch]:
                for metric in ("mIoU", "aAcc"):
                    md.append(f"- {e['name']}, {metric} ({e['images']} images): " + ", ".join(f"{k} {v}" for k, v in e[metric]))
            md.append("")

    routing = _routing_logs(results, out_dir)
    if routing:
        md += ["## DDC-AT routing during training", ""]
        md += figure("routing.png", lambda p: plots.plot_routing(routing, p),
                     "Share of clean pixels routed to the auxiliary branch and of clean mask labels = 1, against iteration (moving average).")

    npz = results.get("qualitative")
    if npz:
        npz_path = Path(npz) if Path(npz).is_absolute() else out_dir / npz
        if npz_path.is_file():
            md += ["## Qualitative results", ""]
            try:
                q_archs = plots.qualitative_archs(npz_path)
            except (OSError, ValueError) as err:
                problems.append(f"{npz_path}: {err}")
                q_archs = []
            for arch in q_archs:
                md += figure(f"qualitative_{arch}.png", lambda p, a=arch: plots.plot_qualitative(npz_path, p, a),
                             f"{arch_name(arch)}: image, adversarial image, ground truth, and each model's prediction on its own adversarial image.")
        else:
            problems.append(f"qualitative file {npz_path} does not exist")

    found = findings(results)
    md += ["## Findings", "", "Computed from the numbers above (mean \u00b1 std over seeds).", ""]
    md += [f"- {s}" for s in found] or ["- Not enough evaluations to compare methods."]
    md.append("")

    runs = results.get("runs", [])
    if runs:
        md += ["## Training time", "", "| Run | Arch | Method | Seed | Train seconds |", "|---|---|---|---:|---:|"]
        for r in runs:
            secs = r.get("train_seconds")
            note = " (reused)" if r.get("reused") else ""
            md.append(f"| `{r.get('id', '?')}` | {arch_name(r.get('arch', '?'))} | {method_name(r.get('method', '?'))} | {r.get('seed', '-')} "
                      f"| {fmt(secs, 1) if secs is not None else '-'}{note} |")
        md.append("")

    if _has_metric(results, "white-box", "mIoU_all"):
        md += ["## Appendix: Table 1 with the paper's mIoU convention (mean over all K classes)", ""]
        md += _sweep_section(results, "white-box", metric="mIoU_all")

    if problems:
        md += ["## Figures not drawn", ""] + [f"- {p}" for p in problems] + [""]

    path = out_dir / "report.md"
    write_text(path, "\n".join(md).rstrip() + "\n")  # a full disk names the file
    return path


def print_tables(results: dict[str, Any]) -> str:
    """Terminal version: Table 1 (white-box) and Table 2 (transfer) per architecture, plus the
    stronger-attack mIoU table when there is one."""
    cols = column_labels(results)
    parts: list[str] = []
    for kind, title in (("white-box", "Table 1 (white-box BIM, mIoU)"), ("transfer", "Table 2 (black-box transfer, mIoU)")):
        for arch in archs_of(results, kind):
            rows = paper_table(results, arch, kind)
            if rows:
                parts.append(text_table(f"{title}: {arch_name(arch)}", cols, rows))
    for arch in archs_of(results, "strong"):
        scols, rows = strong_rows(strong_table(results, arch), "mIoU")
        if rows:
            parts.append(text_table(f"Stronger attacks (mIoU): {arch_name(arch)}", scols, rows))
        ccols, rows = claimed_rows(claimed_vs_remaining(results, arch))
        if rows:
            parts.append(text_table(f"Claimed vs. remaining (mIoU, BIM vs SEA): {arch_name(arch)}", ccols, rows))
    if card_models(results):
        parts.append(card_text(card_models(results)))
    return "\n\n".join(parts) if parts else "no evaluations to tabulate"
