"""Cost of the attacks beyond SEA and of the L2 threat model, as a multiple of their bare passes.

Every attack here costs, by construction, S forward + input-gradient passes and one no-grad forward
per stage (S = its iterations; early stop off; APGD with red-eps has three stages). This script times each attack against exactly those bare
passes on the same batch (interleaved, median over repeats) and prints the ratio: what the attack's
own bookkeeping (Adam's moments, the L2 projection's float64 check, APGD's step-size control, the
best-iterate tracking) adds. PSPNet-ResNet-18 with random weights, eval mode.

    PYTHONPATH=src python benchmarks/bench_beyond_sea.py [--steps 10] [--size 64] [--batch 4]
        [--width 16] [--repeats 3] [--threads 1] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from ddcat.attacks import APGD, PGD, PAdam, build_attack  # noqa: E402
from ddcat.attacks import losses as L  # noqa: E402
from ddcat.attacks.apgd import red_eps_stages  # noqa: E402
from ddcat.models import build_model  # noqa: E402

K = 4


def bare_passes(model, images, labels, steps: int, nograd: int = 1) -> None:
    for _ in range(steps):
        x = images.detach().requires_grad_(True)
        torch.autograd.grad(L.ce(model(x).float(), labels).sum(), x)
    with torch.no_grad():
        for _ in range(nograd):
            model(images)


def nograd_passes(attack) -> int:
    """No-grad forwards of a run: one per APGD stage (red-eps: 3), else one."""
    if isinstance(attack, APGD):
        return len(red_eps_stages(attack.eps, attack.steps, attack.red_eps))
    return 1


def attacks(eps_linf: float, eps_l2: float, steps: int) -> dict:
    return {
        "tsallis (APGD, red-eps)": build_attack("tsallis", eps_linf, steps=steps, early_stop=False),
        "apgd-segpgd": build_attack("apgd-segpgd", eps_linf, steps=steps, early_stop=False),
        "apgd-spherical": build_attack("apgd-spherical", eps_linf, steps=steps, early_stop=False),
        "padam-ce": PAdam(eps_linf, steps, "ce"),
        "padam-cos": PAdam(eps_linf, steps, "cosine"),
        "APGD-CE L-inf": APGD(eps_linf, steps, "ce", early_stop=False),
        "APGD-CE L2": APGD(eps_l2, steps, "ce", early_stop=False, norm="l2"),
        "PGD L-inf": PGD(eps_linf, 0.01, steps),
        "PGD L2": PGD(eps_l2, eps_l2 / 4, steps, norm="l2"),
        "padam-ce L2": PAdam(eps_l2, steps, "ce", norm="l2"),
    }


def build_parser() -> argparse.ArgumentParser:
    """The command line of this benchmark (tests/test_docs_commands.py parses the docs' commands with it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None)
    return parser


def main() -> None:
    parser = build_parser()
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_model("pspnet", "resnet18", K, width=args.width).eval()
    g = torch.Generator().manual_seed(0)
    images = torch.rand(args.batch, 3, args.size, args.size, generator=g)
    labels = torch.randint(0, K, (args.batch, args.size, args.size), generator=g)
    bare_passes(model, images, labels, 2)  # warm-up
    rows = {}
    for name, attack in attacks(8 / 255, 0.5, args.steps).items():
        attack(model, images, labels)  # warm-up
        t_attack, t_bare = [], []
        for _ in range(args.repeats):  # interleaved
            t0 = time.perf_counter()
            attack(model, images, labels)
            t_attack.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            bare_passes(model, images, labels, args.steps, nograd_passes(attack))
            t_bare.append(time.perf_counter() - t0)
        a, b = statistics.median(t_attack), statistics.median(t_bare)
        rows[name] = {"attack_s": a, "bare_s": b, "ratio": a / b}
        print(f"{name:26s} {a:7.3f} s   bare passes {b:7.3f} s   ratio {a / b:5.3f}", flush=True)
    setup = {k: getattr(args, k) for k in ("steps", "size", "batch", "width", "repeats", "threads")}
    print(f"setup: {setup} (PSPNet-ResNet-18, random weights, {K} classes)")
    if args.json:
        Path(args.json).write_text(json.dumps({"setup": setup, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
