"""Certification (``ddcat certify``, SegCertify) cost: images per second, passes per image, and
where the time goes.

(a) passes: the images that go through the model per certified image, counted with a forward
    hook (the floor is n0 + n; nothing else may run the model);
(b) overhead: :func:`ddcat.certification.certify_dataset` against the bare forward passes it needs
    (n0 + n noisy copies per image in batches of ``--batch``, noise drawn once outside the timing),
    interleaved, median over repeats; the printed ratio is certification / bare passes, and the
    parts: per-sample noise generation and the statistics (counts, p-values, Holm) timed alone;
(c) batch size: images per second at several ``--batch`` values (results do not depend on it).

Model: the demo's PSPNet-ResNet-18 (width 16, ``configs/synthetic.yaml``), random weights, or a
checkpoint (``--checkpoint PATH``, e.g. the demo's noise-trained run) on its validation images.

    PYTHONPATH=src python benchmarks/bench_certify.py [--images 8] [--size 64] [--n0 10] [--n 100]
        [--batch 16] [--repeats 3] [--threads 2] [--checkpoint PATH] [--json PATH]
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

from ddcat.certification.certify import CertifyPlan, certify_dataset, noise, sample_seed  # noqa: E402
from ddcat.certification.smoothing import binomial_log_sf_table, holm_reject  # noqa: E402
from ddcat.models import build_model  # noqa: E402

K = 4


class Images(torch.utils.data.Dataset):
    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.images[i], self.labels[i]


def load(args) -> tuple[torch.nn.Module, Images, int]:
    if args.checkpoint:
        from ddcat.data import build_dataset
        from ddcat.distributed import DistContext
        from ddcat.evaluation.run import checkpoint_target

        model, cfg = checkpoint_target(args.checkpoint, [], DistContext())
        data = build_dataset(cfg, "val")
        items = [data[i] for i in range(min(args.images, len(data)))]
        return model, Images(torch.stack([x for x, _ in items]), torch.stack([y for _, y in items])), cfg["data"]["num_classes"]
    torch.manual_seed(0)
    model = build_model("pspnet", "resnet18", K, width=16).eval()
    g = torch.Generator().manual_seed(0)
    images = torch.rand(args.images, 3, args.size, args.size, generator=g)
    return model, Images(images, torch.randint(0, K, (args.images, args.size, args.size), generator=g)), K


def build_parser() -> argparse.ArgumentParser:
    """The command line of this benchmark (tests/test_docs_commands.py parses the docs' commands with it)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--n0", type=int, default=10)
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--batches", default="1,4,16,55", help="batch sizes of (c)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--json", default=None)
    return p


def main() -> None:
    p = build_parser()
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model, data, k = load(args)
    alpha = 0.001 if args.n >= 60 else 0.1
    plan = CertifyPlan(sigma=0.25, n0=args.n0, n=args.n, alpha=alpha, batch_size=args.batch)
    passes = args.n0 + args.n

    # (a) passes per image
    seen = [0]
    handle = model.register_forward_pre_hook(lambda m, inp: seen.__setitem__(0, seen[0] + inp[0].shape[0]))
    certify_dataset(model, data, plan, k, seed=0, progress=False)
    handle.remove()
    per_image = seen[0] / len(data)

    # (b) certification vs the bare passes it needs, interleaved
    x0 = data.images[0]
    noisy = [x0 + 0.25 * torch.randn(min(args.batch, passes - s), *x0.shape) for s in range(0, passes, args.batch)]

    @torch.no_grad()
    def bare() -> None:
        for _ in range(len(data)):
            for batch in noisy:
                model(batch).argmax(1)

    def cert() -> None:
        certify_dataset(model, data, plan, k, seed=0, progress=False)

    def draws() -> None:
        for i in range(len(data)):
            for s in range(0, passes, args.batch):
                noise(x0.shape, [sample_seed(0, i, 1, j) for j in range(s, min(s + args.batch, passes))], torch.device("cpu"))

    counts = torch.randint(0, args.n + 1, (args.size * args.size,))
    table = binomial_log_sf_table(args.n, 0.75)

    def stats() -> None:
        for _ in range(len(data)):
            holm_reject(table[counts].exp(), alpha)

    timings: dict[str, list[float]] = {"bare": [], "certify": [], "noise": [], "statistics": []}
    for _ in range(args.repeats):
        for name, fn in (("bare", bare), ("certify", cert), ("noise", draws), ("statistics", stats)):
            tic = time.perf_counter()
            fn()
            timings[name].append(time.perf_counter() - tic)
    med = {name: statistics.median(v) for name, v in timings.items()}

    # (c) batch size
    sweep = {}
    for b in (int(v) for v in args.batches.split(",")):
        tic = time.perf_counter()
        certify_dataset(model, data, CertifyPlan(sigma=0.25, n0=args.n0, n=args.n, alpha=alpha, batch_size=b), k, seed=0, progress=False)
        sweep[b] = len(data) / (time.perf_counter() - tic)

    result = {
        "images": len(data), "size": list(x0.shape[-2:]), "n0": args.n0, "n": args.n, "batch": args.batch, "threads": args.threads,
        "passes_per_image": per_image, "floor_passes_per_image": passes,
        "images_per_second": len(data) / med["certify"], "seconds_per_image": med["certify"] / len(data),
        "ratio_certify_over_bare_passes": med["certify"] / med["bare"],
        "share_noise": med["noise"] / med["certify"], "share_statistics": med["statistics"] / med["certify"],
        "images_per_second_by_batch": sweep,
        "checkpoint": args.checkpoint,
    }
    print(f"passes per image: {per_image:.0f} (floor n0 + n = {passes})")
    print(f"certification: {result['images_per_second']:.2f} images/s ({result['seconds_per_image']:.3f} s per image, "
          f"{len(data)} images of {x0.shape[-2]}x{x0.shape[-1]}, batch {args.batch}, {args.threads} threads)")
    print(f"ratio certification / bare forward passes: {result['ratio_certify_over_bare_passes']:.3f}")
    print(f"share of the certification time: noise generation {result['share_noise']:.3f}, statistics {result['share_statistics']:.4f}")
    print("images/s by batch size: " + ", ".join(f"{b}: {v:.2f}" for b, v in sweep.items()))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
