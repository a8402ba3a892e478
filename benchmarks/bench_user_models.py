"""A user model through the adapter: eval overhead and the cost of one training iteration.

    PYTHONPATH=src python benchmarks/bench_user_models.py [--size 128] [--batch 4] [--rounds 5]

Model: SegFormer-B0-sized (transformers' default SegformerConfig, 3.7 M parameters, random weights),
K = 6, ImageNet normalization inside the adapter, ``ddc_head: decode_head.classifier``.

- eval forward: adapted model vs the same computation written by hand (normalize, call with
  ``pixel_values=``, resize ``.logits``), interleaved, median of per-round ratios;
- one training iteration (loss + backward) of clean / SAT / DDC-AT with a 3-step BIM, ratios to clean.
Prints the figures and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F


def timed(fn) -> float:
    tic = time.perf_counter()
    fn()
    return time.perf_counter() - tic


def build_parser() -> argparse.ArgumentParser:
    """The command line of this benchmark (tests/test_docs_commands.py parses the docs' commands with it)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    return parser


def main() -> None:
    parser = build_parser()
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    from ddcat.config import load_config
    from ddcat.models import adapt
    from ddcat.training import build_method

    k = 6
    torch.manual_seed(0)
    net = SegformerForSemanticSegmentation(SegformerConfig(num_labels=k)).eval()
    plain = adapt(net, normalize="imagenet", num_classes=k).eval()
    x = torch.rand(args.batch, 3, args.size, args.size)
    y = torch.randint(0, k, (args.batch, args.size, args.size))
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

    def by_hand():
        with torch.no_grad():
            F.interpolate(net(pixel_values=(x - mean) / std).logits, size=x.shape[-2:], mode="bilinear", align_corners=False)

    def adapted():
        with torch.no_grad():
            plain(x)

    by_hand(), adapted()  # warm-up
    ratios, hand_s = [], []
    for _ in range(args.rounds):
        a, b = timed(by_hand), timed(adapted)
        hand_s.append(a)
        ratios.append(b / a)
    eval_ratio = statistics.median(ratios)

    def iteration(method: str):
        ddc = method == "ddcat"
        torch.manual_seed(0)
        model = adapt(SegformerForSemanticSegmentation(SegformerConfig(num_labels=k)), normalize="imagenet", num_classes=k,
                      ddc_head="decode_head.classifier" if ddc else None).train()
        cfg = load_config(None, [f"train.method={method}", f"data.num_classes={k}", f"train.batch_size={args.batch}", "attack.steps=3"])
        m = build_method(cfg)

        def step():
            loss, _ = m.loss(model, model, x, y)
            model.zero_grad()
            loss.backward()

        return step

    steps = {name: iteration(name) for name in ("clean", "sat", "ddcat")}
    for fn in steps.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, fn in steps.items():
            times[name].append(timed(fn))
    med = {name: statistics.median(v) for name, v in times.items()}
    result = {
        "image": args.size, "batch": args.batch, "threads": args.threads, "rounds": args.rounds,
        "eval_ms_per_image_by_hand": 1000 * statistics.median(hand_s) / args.batch,
        "eval_adapted_over_by_hand": eval_ratio,
        "iteration_s": med,
        "sat_over_clean": med["sat"] / med["clean"],
        "ddcat_over_clean": med["ddcat"] / med["clean"],
        "ddcat_over_sat": med["ddcat"] / med["sat"],
    }
    print(f"SegFormer-B0-sized, {args.size}x{args.size}, batch {args.batch}, {args.threads} thread(s), {args.rounds} rounds")
    print(f"eval forward: {result['eval_ms_per_image_by_hand']:.1f} ms/img by hand; adapted / by hand = {eval_ratio:.3f}")
    print("one iteration (BIM-3): " + ", ".join(f"{n} {s:.2f} s" for n, s in med.items())
          + f"; sat/clean {result['sat_over_clean']:.2f}, ddcat/clean {result['ddcat_over_clean']:.2f}, ddcat/sat {result['ddcat_over_sat']:.2f}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
