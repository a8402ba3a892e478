"""Figures: the paper's Fig. 4 sweep, DDC-AT routing shares, training losses, stronger attacks and
the qualitative grid (Fig. 1 / 3).

Every function takes data and an output path, writes a PNG at 100 dpi and returns the path. The
figures are built with :class:`matplotlib.figure.Figure` on the Agg canvas, never through pyplot,
so no window opens, no global backend is switched and nothing stays registered after the call
(the figure is cleared and dropped before returning).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ddcat import trainlog
from ddcat.attacks import registry
from ddcat.constants import IGNORE_INDEX
from ddcat.data.palette import voc_colormap
from ddcat.errors import DdcatError
from ddcat.reporting.summary import (
    ARCH_ORDER,
    METHOD_ORDER,
    STRONG_ORDER,
    arch_name,
    archs_of,
    claimed_vs_remaining,
    attack_label,
    method_name,
    methods_of,
    steps_of,
    ordered,
    size_table,
    strong_table,
    sweep_stats,
    threat_model,
)

DPI = 100
METHOD_COLORS = {"clean": "#7f7f7f", "sat": "#1f77b4", "ddcat-m": "#2ca02c", "ddcat-n": "#9467bd", "ddcat": "#d62728",
                 "fgsm-rs": "#ff7f0e", "free": "#8c564b"}
#: Attack colours: the registry's (:mod:`ddcat.attacks.registry`); an attack without one takes the cycle's.
ATTACK_COLORS = {e.name: e.colour for e in registry.ENTRIES if e.colour}
LINESTYLES = ("-", "--", ":", "-.")
CYCLE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, format="png")
    fig.clear()
    return path


def _method_color(method: str, i: int) -> str:
    return METHOD_COLORS.get(method, CYCLE[i % len(CYCLE)])


# ----------------------------------------------------------------------------------------------
# Fig. 4: mIoU against attack steps


def plot_sweep(results: dict[str, Any], path: str | Path, kind: str = "white-box", metric: str = "mIoU") -> Path:
    """The paper's Fig. 4: ``metric`` against BIM steps (0 = clean, then the sweep's steps) with
    error bars (std over seeds; for transfer over (seed, substitute) pairs), one line per method,
    one subplot per architecture. Size: 5 x 4 inches (500 x 400 px) per architecture."""
    archs = archs_of(results, kind)
    fig = _figure(5 * max(1, len(archs)), 4)
    axes = fig.subplots(1, max(1, len(archs)), squeeze=False)[0]
    xs = [0, *steps_of(results)]
    title = {"white-box": "white-box BIM", "transfer": "black-box transfer (BIM)"}.get(kind, kind)
    title += "" if threat_model(results) == "L-inf" else f", {threat_model(results)}"
    if not archs:
        axes[0].text(0.5, 0.5, f"no {kind} evaluations", ha="center", va="center", transform=axes[0].transAxes)
        axes[0].set_axis_off()
    for ax, arch in zip(axes, archs):
        for i, method in enumerate(methods_of(results, arch, kind)):
            stats = sweep_stats(results, arch, method, kind, metric)
            cols = ["clean", *xs[1:]]
            pts = [(x, stats[c][0], stats[c][1]) for x, c in zip(xs, cols) if stats[c][2] > 0]
            if not pts:
                continue
            x, y, e = zip(*pts)
            ax.errorbar(x, y, yerr=e, marker="o", ms=4, capsize=3, lw=1.5, color=_method_color(method, i), label=method_name(method))
        ax.set_title(f"{arch_name(arch)}: {title}")
        ax.set_xlabel("attack steps n (0 = clean)")
        ax.set_ylabel(metric)
        ax.set_xticks(xs)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


# ----------------------------------------------------------------------------------------------
# Training logs


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``train_log.jsonl`` (:func:`ddcat.trainlog.read_records`: a torn
    last line is skipped). A missing or empty log raises :class:`DdcatError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise DdcatError(f"training log {path} does not exist")
    records = trainlog.read_records(path)
    if not records:
        raise DdcatError(f"training log {path} holds no records")
    return records


def moving_average(values: Sequence[float], window: int) -> np.ndarray:
    """Trailing moving average over ``window`` points (shorter at the start), NaNs ignored."""
    v = np.asarray(values, dtype=float)
    if window <= 1 or v.size == 0:
        return v
    ok = ~np.isnan(v)
    c = np.concatenate([[0.0], np.cumsum(np.where(ok, v, 0.0))])
    k = np.concatenate([[0], np.cumsum(ok)])
    idx = np.arange(1, v.size + 1)
    lo = np.maximum(0, idx - window)
    count = k[idx] - k[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, (c[idx] - c[lo]) / np.maximum(count, 1), np.nan)


def _auto_window(n: int) -> int:
    return max(1, min(50, n // 10))


def _series(records: Sequence[dict[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray]:
    pts = [(r[trainlog.ITER], r[key]) for r in records if r.get(key) is not None]
    if not pts:
        return np.zeros(0), np.zeros(0)
    x, y = zip(*pts)
    return np.asarray(x, dtype=float), np.asarray(y, dtype=float)


ROUTING_PANELS = (
    (trainlog.ROUTED_AUX_CLEAN, "clean pixels routed to the auxiliary branch (p = 1)"),
    (trainlog.MASK_POS_CLEAN, "clean pixels with mask label M = 1"),
)
# the order of the shares in routing.png's legend
ROUTING_ORDER = (trainlog.ROUTED_AUX_CLEAN, trainlog.MASK_POS_CLEAN, trainlog.ROUTED_AUX_ADV, trainlog.MASK_POS_ADV)


def _share_axes(ax: Any, ylabel: str) -> None:
    """Axes of shares against iteration: labels, a floor at 0, a grid and the legend."""
    ax.set_xlabel("iteration")
    ax.set_ylabel(ylabel)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def plot_routing(log_paths_by_label: dict[str, Sequence[str | Path]], path: str | Path, window: int | None = None) -> Path:
    """DDC-AT routing against iteration: left, the share of valid clean pixels the mask head routes
    to the auxiliary branch (``routed_aux_clean``); right, the share of clean mask labels = 1
    (``mask_pos_clean``). Moving average over ``window`` logged points (default: a tenth of the
    log, at most 50). One line per run (log): one colour per label, e.g. "PSPNet DDC-AT seed 0";
    several logs under one label share its colour with different line styles. Logs without
    routing shares are skipped; a missing log raises :class:`DdcatError`, as does having no
    routing data at all. Size 11 x 4 inches (1100 x 400 px)."""
    fig = _figure(11, 4)
    axes = fig.subplots(1, 2, squeeze=False)[0]
    drawn = 0
    for i, (label, paths) in enumerate(log_paths_by_label.items()):
        color = CYCLE[i % len(CYCLE)]
        several = len(paths) > 1
        for j, p in enumerate(paths):
            records = read_log(p)
            if not any(r.get(trainlog.ROUTED_AUX_CLEAN) is not None for r in records):
                continue
            style = LINESTYLES[j % len(LINESTYLES)]
            name = f"{label} ({Path(p).parent.name})" if several else label
            for ax, (key, _) in zip(axes, ROUTING_PANELS):
                x, y = _series(records, key)
                if x.size:
                    ax.plot(x, moving_average(y, window or _auto_window(x.size)), color=color, ls=style, lw=1.5, alpha=0.85, label=name)
            drawn += 1
    if not drawn:
        fig.clear()
        names = ", ".join(str(p) for ps in log_paths_by_label.values() for p in ps) or "(none given)"
        raise DdcatError(f"no DDC-AT routing shares (routed_aux_clean) in the training logs {names}")
    for ax, (_, title) in zip(axes, ROUTING_PANELS):
        ax.set_title(title, fontsize=10)
        _share_axes(ax, "share (moving average)")
    fig.tight_layout()
    return _save(fig, path)


def plot_training(run_dir: str | Path, out_dir: str | Path | None = None, window: int | None = None) -> list[Path]:
    """``ddcat plot-train DIR``: from ``DIR/train_log.jsonl`` write ``losses.png`` (every ``loss``
    / ``loss_*`` term against iteration, raw thin and moving average thick) and, for DDC-AT runs,
    ``routing.png`` (shares of pixels routed to the auxiliary branch and of mask labels = 1, for
    the clean half solid and the adversarial half dashed), and for runs with
    ``train.robust_check_every`` ``robustness.png`` (the watch: PGD-10 and the training attack's mIoU
    and pixel accuracy on the held-out batch, warnings marked). Written to ``out_dir`` (default DIR).
    A missing or empty log raises :class:`DdcatError` naming the file."""
    run_dir = Path(run_dir)
    records = read_log(run_dir / trainlog.LOG_NAME)
    out = Path(out_dir) if out_dir is not None else run_dir
    out.mkdir(parents=True, exist_ok=True)
    keys: list[str] = []
    for r in records:
        for k in r:
            if (k == trainlog.LOSS or k.startswith(trainlog.LOSS + "_")) and k not in keys:
                keys.append(k)
    written = []
    fig = _figure(8, 4.5)
    ax = fig.subplots()
    for i, key in enumerate(keys):
        x, y = _series(records, key)
        if not x.size:
            continue
        color = CYCLE[i % len(CYCLE)]
        w = window or _auto_window(x.size)
        if w > 1:
            ax.plot(x, y, color=color, lw=0.6, alpha=0.3)
        ax.plot(x, moving_average(y, w), color=color, lw=1.8 if key == trainlog.LOSS else 1.3, label=key)
    ax.set_title(f"training losses: {run_dir.name}")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    if keys:
        ax.legend(fontsize=8)
    fig.tight_layout()
    written.append(_save(fig, out / "losses.png"))

    share_keys = [k for k in ROUTING_ORDER if any(r.get(k) is not None for r in records)]
    if trainlog.ROUTED_AUX_CLEAN in share_keys or trainlog.MASK_POS_CLEAN in share_keys:
        fig = _figure(8, 4.5)
        ax = fig.subplots()
        styles = {
            trainlog.ROUTED_AUX_CLEAN: ("#d62728", "-", "clean: routed to auxiliary (p = 1)"),
            trainlog.MASK_POS_CLEAN: ("#1f77b4", "-", "clean: mask label M = 1"),
            trainlog.ROUTED_AUX_ADV: ("#d62728", "--", "adversarial: routed to auxiliary"),
            trainlog.MASK_POS_ADV: ("#1f77b4", "--", "adversarial: mask label M = 1"),
        }
        for key in share_keys:
            x, y = _series(records, key)
            color, ls, label = styles[key]
            ax.plot(x, moving_average(y, window or _auto_window(x.size)), color=color, ls=ls, lw=1.5, label=label)
        ax.set_title(f"DDC-AT routing: {run_dir.name}")
        _share_axes(ax, "share of valid pixels (moving average)")
        fig.tight_layout()
        written.append(_save(fig, out / "routing.png"))
    robust = plot_robustness_watch(records, out / "robustness.png", run_dir.name)
    if robust is not None:
        written.append(robust)
    return written


WATCH_STYLES = {  # the robustness watch (train.robust_check_every): colour by input, line by metric
    trainlog.ROBUST_CLEAN_ACC: ("#7f7f7f", "-", "clean aAcc"),
    trainlog.ROBUST_TRAIN_ACC: ("#1f77b4", "-", "training attack aAcc"),
    trainlog.ROBUST_PGD_ACC: ("#d62728", "-", "PGD-10 aAcc"),
    trainlog.ROBUST_CLEAN_MIOU: ("#7f7f7f", ":", "clean mIoU"),
    trainlog.ROBUST_TRAIN_MIOU: ("#1f77b4", ":", "training attack mIoU"),
    trainlog.ROBUST_PGD_MIOU: ("#d62728", ":", "PGD-10 mIoU"),
}


def plot_robustness_watch(records: Sequence[dict[str, Any]], path: str | Path, name: str) -> Path | None:
    """``robustness.png``: the watch's accuracy and mIoU on its fixed held-out images, clean, under
    the training attack and under PGD-10, with a marker where the catastrophic-overfitting warning
    fired; None when the log has no watch records."""
    keys = [k for k in WATCH_STYLES if any(r.get(k) is not None for r in records)]
    if not keys:
        return None
    fig = _figure(8, 4.5)
    ax = fig.subplots()
    for key in keys:
        x, y = _series(records, key)
        color, ls, label = WATCH_STYLES[key]
        ax.plot(x, y, color=color, ls=ls, lw=1.5, marker="o", ms=3, label=label)
    warned = [(r[trainlog.ITER], r[trainlog.ROBUST_PGD_ACC]) for r in records if r.get(trainlog.WARNING)]
    if warned:
        ax.scatter(*zip(*warned), color="black", marker="x", s=40, zorder=3, label="warning: PGD < 0.5 x training attack")
    ax.set_title(f"robustness watch (held-out images): {name}")
    _share_axes(ax, "pixel accuracy / mIoU")
    fig.tight_layout()
    return _save(fig, path)


def plot_cost_front(points: Sequence[tuple[str, int, float, float]], path: str | Path, ylabel: str, title: str) -> Path:
    """Robust mIoU against training cost (x clean), one point per (method label, seed, cost,
    mIoU), the seeds of a method in its colour, with the Pareto front (no other point both cheaper
    and more robust) drawn as a step line."""
    fig = _figure(7, 4.5)
    ax = fig.subplots()
    labels = list(dict.fromkeys(p[0] for p in points))
    for i, label in enumerate(labels):
        xs = [p[2] for p in points if p[0] == label]
        ys = [p[3] for p in points if p[0] == label]
        ax.scatter(xs, ys, color=_method_color(label, i), s=36, label=method_name(label), zorder=3)
    front = []
    for p in sorted(points, key=lambda p: (p[2], -p[3])):
        if not front or p[3] > front[-1][3]:
            front.append(p)
    if front:
        ax.step([p[2] for p in front], [p[3] for p in front], where="post", color="black", lw=0.8, alpha=0.6, label="front")
    ax.axvline(1.5, color="#999999", ls=":", lw=1)
    ax.set_xlabel("training cost per iteration (x clean)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


# ----------------------------------------------------------------------------------------------
# Stronger attacks


def plot_strong(results: dict[str, Any], path: str | Path) -> Path:
    """Grouped bars, one subplot per architecture, one group per method: mIoU under BIM-n, PGD,
    SegPGD, CosPGD, masked-CE, JS, the per-image worst case, APGD and SEA (whichever were run), error bars =
    std over seeds. Size 6 x 4 inches (600 x 400 px) per architecture."""
    archs = archs_of(results, "strong")
    fig = _figure(6 * max(1, len(archs)), 4)
    axes = fig.subplots(1, max(1, len(archs)), squeeze=False)[0]
    if not archs:
        axes[0].text(0.5, 0.5, "no stronger-attack evaluations", ha="center", va="center", transform=axes[0].transAxes)
        axes[0].set_axis_off()
    for ax, arch in zip(axes, archs):
        table = strong_table(results, arch)
        attacks = [a for a in STRONG_ORDER if a != "clean" and any(a in e["mIoU"] for e in table)]
        attacks += [a for e in table for a in e["mIoU"] if a != "clean" and a not in attacks]
        width = 0.8 / max(1, len(attacks))
        for j, a in enumerate(attacks):
            xs, ys, es = [], [], []
            for i, e in enumerate(table):
                if a in e["mIoU"]:
                    xs.append(i - 0.4 + width * (j + 0.5))
                    ys.append(e["mIoU"][a])
                    es.append(e["mIoU_std"].get(a, 0.0))
            label = next((e["labels"][a] for e in table if a in e["mIoU"]), attack_label(a))
            ax.bar(xs, ys, width, yerr=es, capsize=2, color=ATTACK_COLORS.get(a, CYCLE[j % len(CYCLE)]), label=label)
        ax.set_xticks(range(len(table)))
        ax.set_xticklabels([e["name"] for e in table])
        ax.set_ylabel("mIoU")
        ax.set_ylim(bottom=0)
        n = sorted({e["steps"] for e in table})
        norm = "" if threat_model(results) == "L-inf" else f", {threat_model(results)}"
        ax.set_title(f"{arch_name(arch)}: stronger attacks (n={', '.join(map(str, n))}{norm})")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return _save(fig, path)


def plot_size_recall(results: dict[str, Any], path: str | Path) -> Path:
    """Size-resolved recall: one subplot per (architecture, method) of the "strong" evaluations,
    recall of ground-truth object pixels against the object-size bin, one line per attack (clean
    included), mean over seeds. Size 4 x 3 inches per subplot."""
    panels = [(arch, m, [e for e in size_table(results, arch) if e["method"] == m])
              for arch in archs_of(results, "strong") for m in methods_of(results, arch, "strong")]
    panels = [p for p in panels if p[2]]
    if not panels:
        raise DdcatError("no stronger-attack evaluation holds size_recall")
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    fig = _figure(4 * cols, 3 * rows)
    axes = fig.subplots(rows, cols, squeeze=False).reshape(-1)
    for ax, (arch, method, entries) in zip(axes, panels):
        bins = entries[0]["bins"]
        for j, e in enumerate(entries):
            ys = [e["recall"].get(b, np.nan) for b in bins]
            color = "#000000" if e["attack"] == "clean" else ATTACK_COLORS.get(e["attack"], CYCLE[j % len(CYCLE)])
            ax.plot(range(len(bins)), ys, marker="o", ms=3, lw=1.2, color=color, ls="--" if e["attack"] == "clean" else "-", label=e["label"])
        ax.set_xticks(range(len(bins)))
        ax.set_xticklabels(bins)
        ax.set_ylim(0, 1)
        ax.set_xlabel("object size (share of labelled pixels)")
        ax.set_ylabel("recall")
        ax.set_title(f"{arch_name(arch)} {method_name(method)}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, ncol=2)
    for ax in axes[len(panels):]:
        ax.set_axis_off()
    fig.tight_layout()
    return _save(fig, path)


def plot_claimed_vs_remaining(results: dict[str, Any], path: str | Path) -> Path:
    """"Claimed vs. remaining": per architecture (one subplot each) and method, a bar of the mIoU
    BIM-n claims next to a bar of the mIoU SEA leaves (error bars = std over seeds), the clean mIoU
    as a marker above them. Size 6 x 4 inches per architecture."""
    archs = [a for a in archs_of(results, "strong") if claimed_vs_remaining(results, a)]
    if not archs:
        raise DdcatError("no model has both BIM and SEA in its stronger-attack evaluation")
    fig = _figure(6 * len(archs), 4)
    axes = fig.subplots(1, len(archs), squeeze=False)[0]
    for ax, arch in zip(axes, archs):
        entries = claimed_vs_remaining(results, arch)
        xs = np.arange(len(entries))
        claimed_label, remaining_label = entries[0]["claimed_label"], entries[0]["remaining_label"]
        ax.bar(xs - 0.2, [e["claimed"] for e in entries], 0.4, yerr=[e["claimed_std"] for e in entries], capsize=2,
               color=ATTACK_COLORS["bim"], label=f"claimed ({claimed_label})")
        ax.bar(xs + 0.2, [e["remaining"] for e in entries], 0.4, yerr=[e["remaining_std"] for e in entries], capsize=2,
               color=ATTACK_COLORS["worst"], label=f"remaining ({remaining_label})")
        clean = [(x, e["clean"]) for x, e in zip(xs, entries) if e["clean"] is not None]
        if clean:
            ax.plot([c[0] for c in clean], [c[1] for c in clean], "k_", markersize=28, mew=2, linestyle="none", label="clean")
        ax.set_xticks(xs)
        ax.set_xticklabels([e["name"] for e in entries])
        ax.set_ylabel("mIoU")
        ax.set_ylim(bottom=0)
        ax.set_title(f"{arch_name(arch)}: claimed vs. remaining robustness")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


# ----------------------------------------------------------------------------------------------
# Qualitative grid


def palette(num: int = 256) -> np.ndarray:
    """The fixed PASCAL VOC colour map (``num`` x 3 floats in [0, 1]); the ignore label is white."""
    cmap = voc_colormap(num)
    if num > IGNORE_INDEX:
        cmap[IGNORE_INDEX] = (255, 255, 255)
    return cmap.astype(float) / 255.0


_PALETTE = palette()


def colorize(label: np.ndarray) -> np.ndarray:
    """Label map (H, W) of class ids -> RGB (H, W, 3); the ignore label and anything out of range in white."""
    label = np.asarray(label).astype(np.int64)
    label = np.where((label < 0) | (label >= len(_PALETTE)), IGNORE_INDEX, label)
    return _PALETTE[label]


def _image(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    if x.ndim == 3 and x.shape[0] in (1, 3) and x.shape[-1] not in (1, 3):
        x = np.moveaxis(x, 0, -1)
    return np.clip(x, 0.0, 1.0)


def qualitative_methods(npz_keys: Iterable[str], arch: str) -> list[str]:
    """Methods of ``arch`` with a ``pred_adv/<arch>/<method>`` array, in the paper's order."""
    prefix = f"pred_adv/{arch}/"
    return ordered((k[len(prefix):] for k in npz_keys if k.startswith(prefix)), METHOD_ORDER)


def qualitative_archs(npz_path: str | Path) -> list[str]:
    """Architectures with predictions in a ``qualitative.npz``."""
    with np.load(npz_path) as data:
        return ordered((k.split("/")[1] for k in data.files if k.startswith("pred_adv/") and k.count("/") == 2), ARCH_ORDER)


def plot_qualitative(npz_path: str | Path, path: str | Path, arch: str, cell: float = 2.0) -> Path:
    """The paper's Fig. 1 / 3 grid for one architecture: one row per image; columns: image,
    adversarial image (the one crafted against the first method, i.e. No Defense when present),
    ground truth, then each method's prediction on the adversarial image crafted against that
    method itself ("No Defense", "SAT", "DDC-AT", ...). VOC palette, ignore (255) in white.
    Size ``cell`` inches (200 px) per panel."""
    npz_path = Path(npz_path)
    if not npz_path.is_file():
        raise DdcatError(f"qualitative file {npz_path} does not exist")
    with np.load(npz_path) as data:
        arrays = {k: data[k] for k in data.files}
    methods = qualitative_methods(arrays, arch)
    if not methods:
        raise DdcatError(f"{npz_path} holds no predictions for '{arch}' (keys pred_adv/{arch}/<method>)")
    for key in ("image", "label"):
        if key not in arrays:
            raise DdcatError(f"{npz_path} lacks the '{key}' array")
    adv_key = next((f"adversarial/{arch}/{m}" for m in methods if f"adversarial/{arch}/{m}" in arrays), "adversarial")
    adv_title = f"adversarial (vs {method_name(adv_key.split('/')[2])})" if adv_key.count("/") == 2 else "adversarial"
    images, labels = arrays["image"], arrays["label"]
    rows = images.shape[0]
    columns: list[tuple[str, Any]] = [("image", lambda r: _image(images[r]))]
    if adv_key in arrays:
        columns.append((adv_title, lambda r: _image(arrays[adv_key][r])))
    columns.append(("ground truth", lambda r: colorize(labels[r])))
    for m in methods:
        columns.append((method_name(m), lambda r, m=m: colorize(arrays[f"pred_adv/{arch}/{m}"][r])))
    fig = _figure(cell * len(columns), cell * rows + 0.4)
    axes = fig.subplots(rows, len(columns), squeeze=False)
    for r in range(rows):
        for c, (title, get) in enumerate(columns):
            ax = axes[r][c]
            ax.imshow(get(r), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=9)
    fig.suptitle(f"{arch_name(arch)}: predictions on adversarial images (each model attacked itself)", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)
