"""Numbers behind the report: the paper's tables and the findings, computed from ``results.json``.

Pure functions over the results dictionary written by ``ddcat experiment`` / ``ddcat demo``; no
plotting, no files. Statistics are the mean and the *population* standard deviation
(:func:`ddcat.statistics.mean_std`):

- white-box (Table 1, Fig. 4): over the seeds of one (arch, method);
- black-box transfer (Table 2): over every (target seed, substitute model) pair, the paper's protocol
  of attacking each target model through each substitute;
- stronger attacks: over the seeds, at the one step count of the ``strong`` evaluation.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

from ddcat.attacks import registry
from ddcat.constants import SWEEP_STEPS
from ddcat.evaluation.settings import BUDGET_ATTACKS
from ddcat.reporting.tables import fmt
from ddcat.statistics import mean_std

METHOD_ORDER = ("clean", "sat", "ddcat-m", "ddcat-n", "ddcat", "fgsm-rs", "free")
METHOD_NAMES = {"clean": "No Defense", "sat": "SAT", "ddcat": "DDC-AT", "ddcat-m": "DDC-AT-M", "ddcat-n": "DDC-AT-N",
                "fgsm-rs": "FGSM-RS", "free": "Free AT"}
ARCH_ORDER = ("pspnet", "deeplabv3")
ARCH_NAMES = {"pspnet": "PSPNet", "deeplabv3": "DeepLabv3"}
#: The order of the attacks in tables: clean, then the registry's order (:mod:`ddcat.attacks.registry`).
STRONG_ORDER = ("clean", *registry.ATTACK_NAMES)
#: Display labels of the attacks: the registry's.
ATTACK_LABELS = {"clean": "clean", **{name: registry.label_of(name) for name in registry.ATTACK_NAMES}}
#: Attacks whose label carries their step / iteration count: BIM (the sweep) and the iteration attacks.
COUNTED = ("bim", *BUDGET_ATTACKS)
DEFAULT_STEPS = SWEEP_STEPS
TIE = 1e-9  # differences below this count as equal ("does not beat")

Stat = tuple[float, float, int]  # (mean, population std, number of values)


def method_name(method: str) -> str:
    return METHOD_NAMES.get(method, method)


def arch_name(arch: str) -> str:
    return ARCH_NAMES.get(arch, arch)


def attack_label(attack: str, steps: int | None = None) -> str:
    """``bim`` at 7 steps -> ``BIM-7``, ``sea`` at 100 iterations -> ``SEA-100``; the other attacks
    by name alone."""
    name = ATTACK_LABELS.get(attack, attack)
    return f"{name}-{steps}" if attack in COUNTED and steps else name


def threat_model(results: dict[str, Any]) -> str:
    """``"L2"`` when the evaluations' records are L2 (``eval.norm: l2``), "mixed" when they differ, else
    "L-inf" (records without a norm are L-inf)."""
    norms = {r.get("norm", "linf") for ev in results.get("evaluations", []) for r in ev.get("records", []) if r.get("attack") != "clean"}
    if len(norms) > 1:
        return "mixed (L-inf and L2)"
    return "L2" if norms == {"l2"} else "L-inf"


def ordered(found: Iterable[str], order: Sequence[str]) -> list[str]:
    """The distinct items of ``found``: those in ``order`` first (in that order), then the rest as found."""
    seen: list[str] = []
    for x in found:
        if x not in seen:
            seen.append(x)
    return [x for x in order if x in seen] + [x for x in seen if x not in order]


def steps_of(results: dict[str, Any]) -> list[int]:
    """The sweep's attack step counts (``results["steps"]``, default 1..7), without 0."""
    return [int(n) for n in (results.get("steps") or DEFAULT_STEPS) if int(n) != 0]


def columns_of(results: dict[str, Any]) -> list[str | int]:
    """Table columns: ``"clean"`` then the step counts."""
    return ["clean", *steps_of(results)]


def column_labels(results: dict[str, Any]) -> list[str]:
    return [str(c) for c in columns_of(results)]


def evaluations(results: dict[str, Any], arch: str | None = None, method: str | None = None, kind: str | None = None) -> list[dict[str, Any]]:
    return [
        e for e in results.get("evaluations", [])
        if (arch is None or e.get("arch") == arch) and (method is None or e.get("method") == method) and (kind is None or e.get("kind") == kind)
    ]


def archs_of(results: dict[str, Any], kind: str | None = None) -> list[str]:
    """Architectures with evaluations (of ``kind``), PSPNet and DeepLabv3 first."""
    return ordered((e["arch"] for e in evaluations(results, kind=kind)), ARCH_ORDER)


def methods_of(results: dict[str, Any], arch: str | None = None, kind: str | None = None) -> list[str]:
    """Methods with evaluations, in the paper's order No Defense, SAT, DDC-AT-M, DDC-AT-N, DDC-AT."""
    return ordered((e["method"] for e in evaluations(results, arch, kind=kind)), METHOD_ORDER)


def _is_self(record: dict[str, Any]) -> bool:
    return record.get("source", "self") in ("self", None)


def _values(results: dict[str, Any], arch: str, method: str, kind: str, metric: str, attack: str, column: str | int) -> list[float]:
    """All values feeding one table cell: one per seed (white-box, strong) or per (seed, substitute) pair (transfer)."""
    out: list[float] = []
    for ev in evaluations(results, arch, method, kind):
        records = ev.get("records", [])
        if column == "clean":
            for r in records:  # one clean number per evaluated model
                if r.get("attack") == "clean" and r.get(metric) is not None:
                    out.append(float(r[metric]))
                    break
        elif kind == "transfer":
            out.extend(
                float(r[metric]) for r in records
                if r.get("attack") == attack and r.get("steps") == column and not _is_self(r) and r.get(metric) is not None
            )
        else:
            for r in records:
                if r.get("attack") == attack and r.get("steps") == column and _is_self(r) and r.get(metric) is not None:
                    out.append(float(r[metric]))
                    break
    return out


def _stat(values: Sequence[float]) -> Stat:
    mean, std = mean_std(values)
    return mean, std, len(values)


def sweep_stats(
    results: dict[str, Any], arch: str, method: str, kind: str = "white-box", metric: str = "mIoU", attack: str = "bim"
) -> dict[str | int, Stat]:
    """Column (``"clean"``, 1, ..., 7) -> (mean, population std, n) for one (arch, method).

    White-box: over the seeds. Transfer: over every (seed, substitute) pair, as in the paper's
    Table 2 (clean over the seeds). A column without values is ``(nan, nan, 0)``.
    """
    return {col: _stat(_values(results, arch, method, kind, metric, attack, col)) for col in columns_of(results)}


def paper_table(
    results: dict[str, Any],
    arch: str,
    kind: str = "white-box",
    metric: str = "mIoU",
    methods: Sequence[str] | None = None,
    attack: str = "bim",
) -> list[tuple[str, list[float | None]]]:
    """Rows of the paper's Table 1 layout for one architecture, columns ``clean, 1..7``.

    ``"Mean <method>"`` rows for every method present (No Defense, SAT, DDC-AT-M, DDC-AT-N, DDC-AT),
    then ``"Std <method>"`` rows for each method whose cells pool more than one value (more than one
    seed; for transfer, more than one (seed, substitute) pair). The paper leaves out the No Defense
    std; it is kept here when there is one. ``methods`` restricts (and orders) the methods.
    """
    present = methods_of(results, arch, kind)
    chosen = [m for m in (methods if methods is not None else present) if m in present]
    stats = {m: sweep_stats(results, arch, m, kind, metric, attack) for m in chosen}
    cols = columns_of(results)

    def cell(s: Stat, i: int) -> float | None:
        return None if s[2] == 0 else s[i]

    rows: list[tuple[str, list[float | None]]] = []
    for m in chosen:
        rows.append((f"Mean {method_name(m)}", [cell(stats[m][c], 0) for c in cols]))
    for m in chosen:
        if max((stats[m][c][2] for c in cols), default=0) > 1:
            rows.append((f"Std {method_name(m)}", [cell(stats[m][c], 1) for c in cols]))
    return rows


def pooled_count(results: dict[str, Any], arch: str, kind: str = "white-box") -> dict[str, int]:
    """Method -> the largest number of values pooled in one of its cells (seeds, or pairs for transfer)."""
    return {m: max((s[2] for s in sweep_stats(results, arch, m, kind).values()), default=0) for m in methods_of(results, arch, kind)}


def substitutes(results: dict[str, Any], arch: str | None = None) -> list[str]:
    """The substitute run ids used by the transfer evaluations (of targets of ``arch``)."""
    found = []
    for ev in evaluations(results, arch, kind="transfer"):
        for r in ev.get("records", []):
            if r.get("attack") != "clean" and not _is_self(r) and r["source"] not in found:
                found.append(r["source"])
    return found


def _budget_of(records: Iterable[dict[str, Any]], attack: str) -> int | None:
    """The iteration budget of an APGD / SEA record (its ``steps``)."""
    return next((int(r["steps"]) for r in records if r.get("attack") == attack and _is_self(r)), None)


def _strong_match(r: dict[str, Any], attack: str, n: int) -> bool:
    """Record ``r`` is the value of ``attack`` in a strong table at step count ``n`` (APGD and SEA
    at whatever budget they ran)."""
    if r.get("attack") != attack:
        return False
    if attack == "clean":
        return True
    return _is_self(r) and (attack in BUDGET_ATTACKS or r.get("steps") == n)


def strong_table(results: dict[str, Any], arch: str) -> list[dict[str, Any]]:
    """One entry per method with "strong" evaluations: clean, BIM-n, PGD, SegPGD, CosPGD, masked-CE, JS,
    the per-image worst case, APGD and SEA (whichever were run), mean/std over seeds of mIoU and aAcc.

    Each entry: ``method``, ``name``, ``steps`` (n of the step attacks), ``seeds``, ``attacks`` (ids in
    order), ``labels`` (id -> column title, e.g. ``"BIM-7"``, ``"SEA-100"``), ``mIoU`` / ``aAcc`` (id ->
    mean), ``mIoU_std`` / ``aAcc_std`` (id -> std), ``bim_overstatement`` = BIM mIoU - worst-case mIoU
    at the same steps and ``sea_gap`` = BIM mIoU - SEA mIoU (``None`` without both). SEA's mIoU is its
    greedy dataset-level worst case, its aAcc the per-image worst case.
    """
    table = []
    for method in methods_of(results, arch, "strong"):
        evs = evaluations(results, arch, method, "strong")
        records = [r for ev in evs for r in ev.get("records", [])]
        steps = [r.get("steps", 0) for r in records if r.get("attack") not in ("clean", *BUDGET_ATTACKS) and _is_self(r)]
        n = max(steps) if steps else 0
        found = ordered((r["attack"] for r in records if _strong_match(r, r.get("attack"), n)), STRONG_ORDER)
        entry: dict[str, Any] = {
            "method": method, "name": method_name(method), "steps": n, "seeds": len({ev.get("seed") for ev in evs}),
            "attacks": found,
            "labels": {a: attack_label(a, _budget_of(records, a) if a in BUDGET_ATTACKS else n) for a in found},
        }
        for metric in ("mIoU", "aAcc"):
            means, stds = {}, {}
            for a in found:
                vals = []
                for ev in evs:
                    for r in ev.get("records", []):
                        if _strong_match(r, a, n) and r.get(metric) is not None:
                            vals.append(float(r[metric]))
                            break
                if vals:
                    means[a], stds[a] = mean_std(vals)
            entry[metric], entry[f"{metric}_std"] = means, stds
        m = entry["mIoU"]
        entry["bim_overstatement"] = m["bim"] - m["worst"] if "bim" in m and "worst" in m else None
        entry["sea_gap"] = m["bim"] - m["sea"] if "bim" in m and "sea" in m else None
        table.append(entry)
    return table


def size_table(results: dict[str, Any], arch: str) -> list[dict[str, Any]]:
    """Image-wise mIoU and size-resolved recall (issue 16 section 5) of the "strong" evaluations:
    one entry per (method, attack) (clean first), mean over seeds. Each entry: ``method``, ``name``,
    ``attack``, ``label``, ``bins`` (bin names), ``recall`` (bin -> mean recall), ``mIoU_imagewise``."""
    out = []
    for e in strong_table(results, arch):
        evs = evaluations(results, arch, e["method"], "strong")
        for a in e["attacks"]:
            recalls: dict[str, list[float]] = {}
            image: list[float] = []
            bins: list[str] = []
            for ev in evs:
                r = next((r for r in ev.get("records", []) if _strong_match(r, a, e["steps"])), None)
                if r is None or "size_recall" not in r:
                    continue
                bins = [b["bin"] for b in r["size_recall"]]
                for b in r["size_recall"]:
                    if b["recall"] is not None:
                        recalls.setdefault(b["bin"], []).append(float(b["recall"]))
                if r.get("mIoU_imagewise") is not None:
                    image.append(float(r["mIoU_imagewise"]))
            if bins:
                out.append({
                    "method": e["method"], "name": e["name"], "attack": a, "label": e["labels"][a], "bins": bins,
                    "recall": {b: mean_std(v)[0] for b, v in recalls.items()},
                    "mIoU_imagewise": mean_std(image)[0] if image else None,
                })
    return out


def size_rows(entries: Sequence[dict[str, Any]]) -> tuple[list[str], list[tuple[str, list[float | None]]]]:
    """:func:`size_table` as (column titles, rows): image-wise mIoU, then recall per size bin."""
    if not entries:
        return [], []
    bins = entries[0]["bins"]
    cols = ["mIoU (image-wise)", *(f"recall {b}" for b in bins)]
    return cols, [(f"{e['name']}, {e['label']}", [e["mIoU_imagewise"], *(e["recall"].get(b) for b in bins)]) for e in entries]


def claimed_vs_remaining(results: dict[str, Any], arch: str, metric: str = "mIoU") -> list[dict[str, Any]]:
    """Per method with a strong evaluation holding both BIM-n and SEA: the robustness BIM-n claims,
    what SEA leaves (mean and std over seeds of ``metric``) and the clean value.

    Each entry: ``method``, ``name``, ``claimed_label`` (``"BIM-7"``), ``remaining_label``
    (``"SEA-100"``), ``clean``, ``claimed``, ``claimed_std``, ``remaining``, ``remaining_std``,
    ``overstatement`` = claimed - remaining, ``seeds``."""
    out = []
    for e in strong_table(results, arch):
        means, stds = e[metric], e[f"{metric}_std"]
        if "bim" not in means or "sea" not in means:
            continue
        out.append({
            "method": e["method"], "name": e["name"], "seeds": e["seeds"],
            "claimed_label": e["labels"]["bim"], "remaining_label": e["labels"]["sea"],
            "clean": means.get("clean"), "claimed": means["bim"], "claimed_std": stds["bim"],
            "remaining": means["sea"], "remaining_std": stds["sea"], "overstatement": means["bim"] - means["sea"],
        })
    return out


def lowest_bounds(results: dict[str, Any], arch: str) -> list[dict[str, Any]]:
    """The lowest mIoU any white-box attack found, per model, over every record of every evaluation
    of it (BIM sweep, stronger attacks, worst case, SEA, any attack name a later version adds; all at
    the report's eps; transfer records, another threat model, are Table 2's), then mean and
    population std over the seeds of each method.

    Each entry: ``method``, ``name``, ``seeds``, ``clean`` (mean), ``lowest``, ``lowest_std``,
    ``attacks`` (the labels that gave a model's lowest value, most frequent first) and ``aAcc`` /
    ``aAcc_std`` (the lowest aAcc, per model, over the same records)."""
    out = []
    for method in methods_of(results, arch):
        per_run: dict[Any, dict[str, Any]] = {}
        for ev in evaluations(results, arch, method):
            run = per_run.setdefault(ev.get("run_id", ev.get("seed")), {"mIoU": None, "aAcc": None, "label": None, "clean": None})
            for r in ev.get("records", []):
                if r.get("attack") == "clean":
                    if run["clean"] is None and r.get("mIoU") is not None:
                        run["clean"] = float(r["mIoU"])
                    continue
                if not _is_self(r):  # transfer: another threat model (black-box), reported in Table 2
                    continue
                label = attack_label(str(r.get("attack")), r.get("steps"))
                if r.get("mIoU") is not None and (run["mIoU"] is None or float(r["mIoU"]) < run["mIoU"]):
                    run["mIoU"], run["label"] = float(r["mIoU"]), label
                if r.get("aAcc") is not None and (run["aAcc"] is None or float(r["aAcc"]) < run["aAcc"]):
                    run["aAcc"] = float(r["aAcc"])
        attacked = [r for r in per_run.values() if r["mIoU"] is not None]
        if not attacked:
            continue
        low, low_std = mean_std([r["mIoU"] for r in attacked])
        acc = [r["aAcc"] for r in attacked if r["aAcc"] is not None]
        cleans = [r["clean"] for r in per_run.values() if r["clean"] is not None]
        labels = [r["label"] for r in attacked]
        out.append({
            "method": method, "name": method_name(method), "seeds": len(attacked),
            "clean": mean_std(cleans)[0] if cleans else None, "lowest": low, "lowest_std": low_std,
            "attacks": sorted(set(labels), key=lambda a: (-labels.count(a), a)),
            "aAcc": mean_std(acc)[0] if acc else None, "aAcc_std": mean_std(acc)[1] if acc else None,
        })
    return out


def ensemble_winners(results: dict[str, Any], arch: str) -> list[dict[str, Any]]:
    """Which ensemble member found each image's worst case, per method (white-box ``ensemble``
    records, summed over seeds): ``method``, ``name``, ``images`` (per-image choices counted),
    ``mIoU`` and ``aAcc``, each a list of ``(member label, images)``, most images first. ``mIoU``
    counts the member whose result the greedy dataset-level selection kept for the image (members of
    the whole evaluation, BIM-7 and ``worst`` included), ``aAcc`` the per-image worst case's."""
    out = []
    for method in methods_of(results, arch):
        counts: dict[str, dict[str, int]] = {"mIoU": {}, "aAcc": {}}
        images = 0
        for ev in evaluations(results, arch, method):
            for r in ev.get("records", []):
                if r.get("attack") != "ensemble" or not _is_self(r) or not isinstance(r.get("winners"), dict):
                    continue
                images += int(r.get("num_images") or 0)
                for metric, table in counts.items():
                    for member, n in (r["winners"].get(metric) or {}).items():
                        table[member] = table.get(member, 0) + int(n)
        if any(counts.values()):
            ranked = {m: sorted(((registry.label_of(k), v) for k, v in t.items()), key=lambda kv: (-kv[1], kv[0])) for m, t in counts.items()}
            out.append({"method": method, "name": method_name(method), "images": images, **ranked})
    return out


def lowest_rows(entries: Sequence[dict[str, Any]]) -> tuple[list[str], list[tuple[str, list[float | None]]]]:
    """:func:`lowest_bounds` as (column titles, rows): clean, lowest mIoU, its std, lowest aAcc."""
    if not entries:
        return [], []
    return ["clean", "lowest mIoU", "std", "lowest aAcc"], [(e["name"], [e["clean"], e["lowest"], e["lowest_std"], e["aAcc"]]) for e in entries]


def claimed_rows(entries: Sequence[dict[str, Any]]) -> tuple[list[str], list[tuple[str, list[float | None]]]]:
    """:func:`claimed_vs_remaining` as (column titles, rows): clean, claimed, remaining, claimed - remaining."""
    if not entries:
        return [], []
    first = entries[0]
    cols = ["clean", f"claimed ({first['claimed_label']})", f"remaining ({first['remaining_label']})", "claimed - remaining"]
    return cols, [(e["name"], [e["clean"], e["claimed"], e["remaining"], e["overstatement"]]) for e in entries]


def strong_rows(table: Sequence[dict[str, Any]], metric: str = "mIoU") -> tuple[list[str], list[tuple[str, list[float | None]]]]:
    """``strong_table`` as (column titles, rows) for :func:`tables.markdown_table` / ``text_table``;
    for mIoU a last column "BIM - worst" holds the overstatement."""
    attacks = ordered((a for e in table for a in e["attacks"]), STRONG_ORDER)
    labels = {a: lab for e in table for a, lab in e["labels"].items()}
    cols = [labels[a] for a in attacks]
    with_gap = metric == "mIoU" and any(e["bim_overstatement"] is not None for e in table)
    if with_gap:
        cols.append("BIM - worst")
    rows = []
    for e in table:
        vals: list[float | None] = [e[metric].get(a) for a in attacks]
        if with_gap:
            vals.append(e["bim_overstatement"])
        rows.append((e["name"], vals))
    return cols, rows


# ----------------------------------------------------------------------------------------------
# Findings: sentences that follow the numbers.


def _ok(s: Stat | None) -> bool:
    return s is not None and s[2] > 0 and not math.isnan(s[0])


def _compare(a_name: str, a: Stat, b_name: str, b: Stat, where: str) -> str:
    """One sentence: does ``a`` beat ``b``, by how much, and is the gap larger than the larger std."""
    diff = a[0] - b[0]
    spread = max(a[1], b[1])
    nums = f"{a_name} {fmt(a[0])} \u00b1 {fmt(a[1])} vs {b_name} {fmt(b[0])} \u00b1 {fmt(b[1])}"
    if min(a[2], b[2]) < 2:
        noise = "only one seed, so there is no spread to judge it against"
    elif abs(diff) > spread:
        noise = f"the gap is larger than the larger std ({fmt(spread)})"
    else:
        noise = f"the gap is within the larger std ({fmt(spread)}), so it is not a clear difference"
    if diff > TIE:
        return f"{where}: {a_name} beats {b_name} by {fmt(diff)} ({nums}); {noise}."
    if diff < -TIE:
        return f"{where}: {a_name} does not beat {b_name}; it is {fmt(-diff)} lower ({nums}); {noise}."
    return f"{where}: {a_name} does not beat {b_name}; they are equal ({nums})."


def findings(results: dict[str, Any]) -> list[str]:
    """Plain-English findings computed from the numbers (nothing is assumed about who wins).

    Per architecture: DDC-AT vs SAT on clean mIoU and at every BIM step count (by how much, and
    whether the gap exceeds the larger std over seeds), the same under transfer, SAT vs No Defense at
    the largest step count, the ablation variants, and how far the per-image worst case falls below
    BIM at the same steps.
    """
    out: list[str] = []
    steps = steps_of(results)
    for arch in archs_of(results):
        A = arch_name(arch)
        wb = {m: sweep_stats(results, arch, m, "white-box") for m in methods_of(results, arch, "white-box")}
        if "ddcat" in wb and "sat" in wb:
            d, s = wb["ddcat"], wb["sat"]
            if _ok(d["clean"]) and _ok(s["clean"]):
                out.append(_compare("DDC-AT", d["clean"], "SAT", s["clean"], f"{A}, clean mIoU"))
            for n in steps:
                if _ok(d[n]) and _ok(s[n]):
                    out.append(_compare("DDC-AT", d[n], "SAT", s[n], f"{A}, white-box BIM n={n}"))
            text = _tally(f"{A}, white-box summary", "DDC-AT", d, "SAT", s, steps)
            if text:
                out.append(text)
        for variant in ("ddcat-m", "ddcat-n"):
            if variant in wb and "ddcat" in wb:
                v, d = wb[variant], wb["ddcat"]
                text = _tally(f"{A}, ablation (white-box)", "DDC-AT", d, method_name(variant), v, steps)
                if text:
                    out.append(text)
        if "sat" in wb and "clean" in wb and steps:
            n = max(steps)
            s, c = wb["sat"][n], wb["clean"][n]
            if _ok(s) and _ok(c):
                out.append(_compare("SAT", s, "No Defense", c, f"{A}, white-box BIM n={n}"))
        tr = {m: sweep_stats(results, arch, m, "transfer") for m in methods_of(results, arch, "transfer")}
        if "ddcat" in tr and "sat" in tr:
            text = _tally(f"{A}, black-box transfer", "DDC-AT", tr["ddcat"], "SAT", tr["sat"], steps)
            if text:
                out.append(text)
        lows = {e["method"]: e for e in lowest_bounds(results, arch)}
        if "ddcat" in lows and "sat" in lows:
            d, s = lows["ddcat"], lows["sat"]
            out.append(_compare("DDC-AT", (d["lowest"], d["lowest_std"], d["seeds"]), "SAT", (s["lowest"], s["lowest_std"], s["seeds"]),
                                f"{A}, the strongest evaluation present (lowest mIoU per model over every attack: {', '.join(d['attacks'] + [a for a in s['attacks'] if a not in d['attacks']])})"))
        for e in claimed_vs_remaining(results, arch):
            where = f"{A}, {e['name']}"
            out.append(
                f"{where}: {e['claimed_label']} claims mIoU {fmt(e['claimed'])}; {e['remaining_label']} leaves {fmt(e['remaining'])} "
                f"(clean {fmt(e['clean'])}): {fmt(e['overstatement'])} of the claimed robustness does not survive SEA."
                if e["overstatement"] > TIE else
                f"{where}: {e['remaining_label']} leaves mIoU {fmt(e['remaining'])}, not lower than what {e['claimed_label']} claims ({fmt(e['claimed'])})."
            )
        for e in strong_table(results, arch):
            gap = e["bim_overstatement"]
            if gap is None:
                continue
            bim, worst = e["mIoU"]["bim"], e["mIoU"]["worst"]
            where = f"{A}, {e['name']}, n={e['steps']}"
            if gap > TIE:
                out.append(
                    f"{where}: the per-image worst case leaves mIoU {fmt(worst)}, {fmt(gap)} lower than BIM-{e['steps']} "
                    f"({fmt(bim)}); BIM alone overstates robustness by {fmt(gap)}."
                )
            else:
                out.append(f"{where}: the per-image worst case (mIoU {fmt(worst)}) is not lower than BIM-{e['steps']} ({fmt(bim)}).")
    return out


def _tally(where: str, a_name: str, a: dict[str | int, Stat], b_name: str, b: dict[str | int, Stat], steps: Sequence[int]) -> str | None:
    """One sentence over all step counts: at how many ``a`` beats ``b``, where clearly, where not."""
    both = [n for n in steps if _ok(a[n]) and _ok(b[n])]
    if not both:
        return None
    wins = [n for n in both if a[n][0] - b[n][0] > TIE]
    losses = [n for n in both if n not in wins]
    spread = all(min(a[n][2], b[n][2]) >= 2 for n in wins)
    clear = [n for n in wins if min(a[n][2], b[n][2]) >= 2 and a[n][0] - b[n][0] > max(a[n][1], b[n][1])]
    if not wins:
        return f"{where}: {a_name} does not beat {b_name} at any of the {len(both)} step counts (n={_list(losses)})."
    text = f"{where}: {a_name} beats {b_name} at {len(wins)} of {len(both)} step counts"
    if spread:
        text += f" (by more than the larger std at n={_list(clear)})" if clear else " (at none by more than the larger std)"
    return text + (f"; {a_name} does not beat {b_name} at n={_list(losses)}." if losses else ".")


def _list(ns: Sequence[int]) -> str:
    return ", ".join(str(n) for n in ns)
