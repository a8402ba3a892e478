"""Attack overhead benchmark: BIM vs the bare forward + input-gradient backward it is built on.

For PSPNet-ResNet-18 (``build_model("pspnet", "resnet18", 21)``) in eval mode, on the CPU, it times

* ``bim``:  ``BIM(eps=0.03, alpha=0.01, steps=S)(model, images, labels)``;
* ``base``: ``S`` x (one forward + ``torch.autograd.grad`` of the CE w.r.t. the input),

interleaved in one run (the order alternates every repeat) after a warm-up, and reports the median
of each and their ratio (target <= 1.15), plus the median of the per-repeat ratios ("paired", less
sensitive to other load on a shared machine). The same is done for the DDC-AT model (``ddc=True``):
its auxiliary and mask heads must cost nothing in an attack (eval mode computes the main head only),
so its ``base`` should match the plain model's and its ratio should be the same.

    PYTHONPATH=src python benchmarks/bench_attacks.py [--repeats 5] [--size 128] [--batch 8]
        [--steps 7] [--threads N] [--json PATH]
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

from ddcat.attacks import BIM  # noqa: E402
from ddcat.models import build_model  # noqa: E402

TARGET_RATIO = 1.15


def baseline(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, steps: int) -> None:
    """``steps`` x (forward + input-gradient backward) at the clean images: the floor for BIM."""
    for _ in range(steps):
        x = images.detach().requires_grad_(True)
        loss = F.cross_entropy(model(x).float(), labels, ignore_index=255)
        torch.autograd.grad(loss, x)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_model(ddc: bool, args: argparse.Namespace) -> dict:
    torch.manual_seed(0)
    model = build_model("pspnet", "resnet18", 21, ddc=ddc).eval()
    g = torch.Generator().manual_seed(0)
    images = torch.rand(args.batch, 3, args.size, args.size, generator=g)
    labels = torch.randint(0, 21, (args.batch, args.size, args.size), generator=g)
    labels[:, : args.size // 8] = 255
    attack = BIM(eps=0.03, alpha=0.01, steps=args.steps)
    runs = {
        "base": lambda: baseline(model, images, labels, args.steps),
        "bim": lambda: attack(model, images, labels),
    }
    for _ in range(args.warmup):
        for fn in runs.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for r in range(args.repeats):
        order = list(runs) if r % 2 == 0 else list(runs)[::-1]
        for name in order:
            times[name].append(timed(runs[name]))
    base, bim = statistics.median(times["base"]), statistics.median(times["bim"])
    return {
        "model": "pspnet-resnet18" + ("-ddc" if ddc else ""),
        "ddc": ddc,
        "parameters": sum(p.numel() for p in model.parameters()),
        "base_s": base,
        "bim_s": bim,
        "ratio": bim / base,
        # per-repeat bim/base of the adjacent pair: robust to load that drifts across the run
        "ratio_paired": statistics.median(b / a for a, b in zip(times["base"], times["bim"])),
        "base_per_step_s": base / args.steps,
        "times_s": times,
    }


def build_parser() -> argparse.ArgumentParser:
    """The command line of this benchmark (tests/test_docs_commands.py parses the docs' commands with it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per measurement (median)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed warm-up runs per measurement")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels")
    parser.add_argument("--batch", type=int, default=8, help="images per batch")
    parser.add_argument("--steps", type=int, default=7, help="BIM steps")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch default)")
    parser.add_argument("--json", type=Path, default=None, help="write the figures to this JSON file")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.size < 8 or args.batch < 1 or args.steps < 1 or args.warmup < 0:
        parser.error("need --repeats >= 1, --size >= 8, --batch >= 1, --steps >= 1, --warmup >= 0")
    if args.threads:
        torch.set_num_threads(args.threads)

    results = [bench_model(False, args), bench_model(True, args)]
    plain_base = results[0]["base_s"]
    print(
        f"BIM({args.steps} steps) vs {args.steps} x (forward + input-grad backward); "
        f"batch {args.batch}, {args.size}x{args.size}, CPU, {torch.get_num_threads()} threads, "
        f"median of {args.repeats}"
    )
    header = f"{'model':<22} {'params':>10} {'base s':>9} {'bim s':>9} {'ratio':>7} {'paired':>7} {'base/plain':>11}"
    print(header)
    print("-" * len(header))
    for r in results:
        r["base_vs_plain"] = r["base_s"] / plain_base
        print(
            f"{r['model']:<22} {r['parameters']:>10,} {r['base_s']:>9.3f} {r['bim_s']:>9.3f} "
            f"{r['ratio']:>7.3f} {r['ratio_paired']:>7.3f} {r['base_vs_plain']:>11.3f}"
        )
    worst = max(r["ratio"] for r in results)
    ok = worst <= TARGET_RATIO
    print(f"target ratio <= {TARGET_RATIO}: {'met' if ok else 'NOT met'} (worst {worst:.3f})")
    if args.json:
        payload = {
            "benchmark": "attacks",
            "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "machine": platform.machine(),
            "processor": platform.processor(),
            "target_ratio": TARGET_RATIO,
            "target_met": ok,
            "results": results,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
