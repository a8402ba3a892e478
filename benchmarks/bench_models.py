"""Model cost benchmark: forward and forward+backward time per image, and what DDC-AT's heads cost.

For PSPNet and DeepLabv3 on ResNet-18 and ResNet-50 (full width 64, 21 classes, output stride 8,
as ``build_model(arch, backbone, 21)``) on the CPU it times, after a warm-up, the median of
``--repeats`` runs of

* ``forward``:  an eval-mode forward under ``torch.no_grad()`` (main head only: inference);
* ``fwd+bwd``:  a train-mode forward of every head and the backward of the training loss
  ``CE(main) + 0.4 CE(deep_sup)`` into the parameter gradients (one clean training step minus SGD);

and reports milliseconds per image. Then, for each architecture on ResNet-18, it times the eval-mode
forward of the ``ddc=True`` model (with auxiliary and mask heads) against the plain model, the two
measurements interleaved in one loop (the order alternating) so that machine noise hits both alike,
and reports the median of the paired ratios ddc / plain: DDC-AT's extra heads are dropped at
inference, so the target is <= 1.02.

On a shared machine, ``--threads 1`` gives far steadier figures than the default thread count.

    PYTHONPATH=src python benchmarks/bench_models.py [--repeats 5] [--size 128] [--batch 4]
        [--warmup 1] [--ratio-repeats 10] [--threads N] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from ddcat.models import build_model  # noqa: E402

NUM_CLASSES = 21
TARGET_RATIO = 1.02
MODELS = (("pspnet", "resnet18"), ("deeplabv3", "resnet18"), ("pspnet", "resnet50"), ("deeplabv3", "resnet50"))


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def inputs(args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    images = torch.rand(args.batch, 3, args.size, args.size, generator=g)
    labels = torch.randint(0, NUM_CLASSES, (args.batch, args.size, args.size), generator=g)
    labels[:, : args.size // 8] = 255
    return images, labels


def bench_model(arch: str, backbone: str, args: argparse.Namespace) -> dict:
    torch.manual_seed(0)
    model = build_model(arch, backbone, NUM_CLASSES)
    images, labels = inputs(args)

    def forward() -> None:
        model.eval()
        with torch.no_grad():
            model(images)

    def forward_backward() -> None:
        model.train()
        model.zero_grad(set_to_none=True)
        out = model(images)
        loss = F.cross_entropy(out["main"], labels, ignore_index=255)
        loss = loss + 0.4 * F.cross_entropy(out["deep_sup"], labels, ignore_index=255)
        loss.backward()

    runs = {"forward": forward, "fwd+bwd": forward_backward}
    times: dict[str, list[float]] = {name: [] for name in runs}
    for name, fn in runs.items():
        for _ in range(args.warmup):
            fn()
        for _ in range(args.repeats):
            times[name].append(timed(fn))
    per_image = {name: statistics.median(t) / args.batch * 1e3 for name, t in times.items()}
    return {
        "model": f"{arch}-{backbone}",
        "arch": arch,
        "backbone": backbone,
        "parameters": sum(p.numel() for p in model.parameters()),
        "forward_ms_per_image": per_image["forward"],
        "fwd_bwd_ms_per_image": per_image["fwd+bwd"],
        "times_s": times,
    }


def bench_ddc_ratio(arch: str, backbone: str, args: argparse.Namespace) -> dict:
    """Eval-mode forward of ddc=True over the plain model, interleaved, same main-branch weights."""
    torch.manual_seed(0)
    plain = build_model(arch, backbone, NUM_CLASSES).eval()
    ddc = build_model(arch, backbone, NUM_CLASSES, ddc=True).eval()
    ddc.load_state_dict(plain.state_dict(), strict=False)
    images, _ = inputs(args)

    def run(model) -> float:
        with torch.no_grad():
            return timed(lambda: model(images))

    for _ in range(args.warmup):
        run(plain)
        run(ddc)
    pairs: list[tuple[float, float]] = []
    for r in range(args.ratio_repeats):
        if r % 2 == 0:
            p = run(plain)
            d = run(ddc)
        else:
            d = run(ddc)
            p = run(plain)
        pairs.append((p, d))
    plain_t = [p for p, _ in pairs]
    ddc_t = [d for _, d in pairs]
    ratio = statistics.median(d / p for p, d in pairs)
    return {
        "model": f"{arch}-{backbone}",
        "plain_parameters": sum(p.numel() for p in plain.parameters()),
        "ddc_parameters": sum(p.numel() for p in ddc.parameters()),
        "plain_ms_per_image": statistics.median(plain_t) / args.batch * 1e3,
        "ddc_ms_per_image": statistics.median(ddc_t) / args.batch * 1e3,
        "ratio": ratio,
        "ratio_of_medians": statistics.median(ddc_t) / statistics.median(plain_t),
        "times_s": {"plain": plain_t, "ddc": ddc_t},
    }


def build_parser() -> argparse.ArgumentParser:
    """The command line of this benchmark (tests/test_docs_commands.py parses the docs' commands with it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per measurement (median)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed warm-up runs per measurement")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels")
    parser.add_argument("--batch", type=int, default=4, help="images per batch")
    parser.add_argument("--ratio-repeats", type=int, default=0, help="interleaved pairs for the ddc/plain ratio (0 = 2 x --repeats)")
    parser.add_argument("--models", default="all", help="comma list like pspnet-resnet18 (default: all four)")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch default)")
    parser.add_argument("--json", type=Path, default=None, help="write the figures to this JSON file")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.size < 32 or args.batch < 2 or args.warmup < 0 or args.ratio_repeats < 0:
        parser.error("need --repeats >= 1, --size >= 32, --batch >= 2 (train-mode BatchNorm), --warmup >= 0, --ratio-repeats >= 0")
    args.ratio_repeats = args.ratio_repeats or 2 * args.repeats
    if args.threads:
        torch.set_num_threads(args.threads)
    names = {f"{a}-{b}": (a, b) for a, b in MODELS}
    if args.models == "all":
        chosen = list(MODELS)
    else:
        unknown = [m for m in args.models.split(",") if m not in names]
        if unknown:
            parser.error(f"unknown --models {', '.join(unknown)}; valid: {', '.join(names)}")
        chosen = [names[m] for m in args.models.split(",")]

    print(
        f"batch {args.batch}, {args.size}x{args.size}, {NUM_CLASSES} classes, width 64, output stride 8, CPU, "
        f"{torch.get_num_threads()} threads, median of {args.repeats} after {args.warmup} warm-up"
    )
    header = f"{'model':<20} {'params':>12} {'forward ms/img':>15} {'fwd+bwd ms/img':>15}"
    print(header)
    print("-" * len(header))
    results = []
    for arch, backbone in chosen:
        r = bench_model(arch, backbone, args)
        results.append(r)
        print(f"{r['model']:<20} {r['parameters']:>12,} {r['forward_ms_per_image']:>15.1f} {r['fwd_bwd_ms_per_image']:>15.1f}", flush=True)

    print()
    print(f"eval forward, ddc=True over plain, {args.ratio_repeats} interleaved pairs (median of paired ratios)")
    header = f"{'model':<20} {'plain params':>13} {'ddc params':>12} {'plain ms/img':>13} {'ddc ms/img':>11} {'ratio':>7}"
    print(header)
    print("-" * len(header))
    ratios = []
    ratio_models: dict[str, str] = {}  # one per architecture, on ResNet-18 when it was chosen
    for arch, backbone in chosen:
        if arch not in ratio_models or backbone == "resnet18":
            ratio_models[arch] = backbone
    for arch, backbone in ratio_models.items():
        r = bench_ddc_ratio(arch, backbone, args)
        ratios.append(r)
        print(
            f"{r['model']:<20} {r['plain_parameters']:>13,} {r['ddc_parameters']:>12,} {r['plain_ms_per_image']:>13.1f} "
            f"{r['ddc_ms_per_image']:>11.1f} {r['ratio']:>7.3f}",
            flush=True,
        )
    worst = max(r["ratio"] for r in ratios)
    ok = worst <= TARGET_RATIO
    print(f"target ddc/plain <= {TARGET_RATIO}: {'met' if ok else 'NOT met'} (worst {worst:.3f})")
    if args.json:
        payload = {
            "benchmark": "models",
            "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "machine": platform.machine(),
            "processor": platform.processor(),
            "num_classes": NUM_CLASSES,
            "target_ratio": TARGET_RATIO,
            "target_met": ok,
            "results": results,
            "ddc_ratio": ratios,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
