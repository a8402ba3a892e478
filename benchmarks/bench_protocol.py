"""Per-image costs of the paper's full-scale protocol (docs/protocol.md), measured on this machine.

    python benchmarks/bench_protocol.py [--configs voc_pspnet ...] [--batch 4] [--repeats 3] [--json PATH]
    python benchmarks/bench_protocol.py --tiny          # a CPU smoke run (width 8, small images)

For each paper config (``protocol: paper``, ResNet-50, random weights: costs do not depend on them):

- training: one iteration of clean / SAT / DDC-AT at ``--batch`` images of the config's crop (the
  paper: 16 images on 4 GPUs = 4 per GPU), fp32 (TF32 convolutions where the GPU has them), peak memory;
- evaluation: one val-sized image (VOC 500x375, Cityscapes 2048x1024) through the paper's inference
  path (base-size resize, sliding window, flip, softmax): the clean prediction, and one BIM step
  through the whole path (forward + input-gradient backward), peak memory.

docs/protocol.md turns these figures into wall-time estimates for the paper's runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from ddcat.attacks import BIM
from ddcat.config import load_config
from ddcat.evaluation.run import on_inference_path
from ddcat.models import build_model
from ddcat.training import build_method, optimizer_for

ROOT = Path(__file__).resolve().parents[1]
VAL_SIZE = {"voc": (375, 500), "cityscapes": (1024, 2048)}  # (H, W) of a typical val image
METHODS = ("clean", "sat", "ddcat")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def timed(fn, device: torch.device, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        fn()
    reset_peak(device)  # after the warm-up: cudnn.benchmark's algorithm search allocates large workspaces once
    times = []
    for _ in range(repeats):
        sync(device)
        tic = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - tic)
    return statistics.median(times)


def model_for(cfg: dict, ddc: bool) -> torch.nn.Module:
    m = cfg["model"]
    opts = {k: m[k] for k in ("width", "deep_stem", "output_stride", "head_channels", "dropout", "stem_width", "dilation", "align_corners", "deep_sup_kernel")}
    return build_model(m["arch"], m["backbone"], cfg["data"]["num_classes"], ddc=ddc, **opts)


def bench_config(name: str, args, device: torch.device) -> dict:
    sets = [f"train.batch_size={args.batch}"] + (["model.width=8", "train.crop_size=65", "eval.crop_size=65", "eval.base_size=96"] if args.tiny else [])
    base = load_config(ROOT / "configs" / f"{name}.yaml", sets)
    crop, k = base["train"]["crop_size"], base["data"]["num_classes"]
    result: dict = {"config": name, "crop": crop, "batch": args.batch, "train": {}, "eval": {}}
    images = torch.rand(args.batch, 3, crop, crop, device=device)
    labels = torch.randint(0, k, (args.batch, crop, crop), device=device)
    for method_name in METHODS:
        cfg = load_config(ROOT / "configs" / f"{name}.yaml", sets + [f"train.method={method_name}"])
        torch.manual_seed(0)
        model = model_for(cfg, ddc=method_name == "ddcat").to(device).train()
        method, opt = build_method(cfg), optimizer_for(model, cfg["train"])

        def step():
            loss, _ = method.loss(model, model, images, labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        reset_peak(device)
        seconds = timed(step, device, args.warmup, args.repeats)
        result["train"][method_name] = {"s_per_iter": seconds, "peak_gib": peak_gib(device)}
        del model, opt, method
    # evaluation of one val-sized image through the paper's inference path (main head only)
    h, w = (96, 128) if args.tiny else VAL_SIZE[base["data"]["name"]]
    model = model_for(base, ddc=False).to(device).eval()
    path = on_inference_path(model, base, device)
    x = torch.rand(1, 3, h, w, device=device)
    y = torch.randint(0, k, (1, h, w), device=device)

    def clean():
        with torch.no_grad():
            path(x).argmax(1)

    reset_peak(device)
    result["eval"]["clean_s_per_image"] = timed(clean, device, 1, args.repeats)
    result["eval"]["clean_peak_gib"] = peak_gib(device)
    one_step = BIM(0.03, 0.01, 1)
    reset_peak(device)
    result["eval"]["bim_step_s_per_image"] = timed(lambda: one_step(path, x, y), device, 1, args.repeats)
    result["eval"]["bim_peak_gib"] = peak_gib(device)
    result["eval"]["image"] = [h, w]
    return result


def build_parser() -> argparse.ArgumentParser:
    """The command line of this benchmark (tests/test_docs_commands.py parses the docs' commands with it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["voc_pspnet", "voc_deeplabv3", "cityscapes_pspnet", "cityscapes_deeplabv3"])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--json", default=None)
    return parser


def main() -> None:
    parser = build_parser()
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cudnn.benchmark = True
    rows = []
    for name in args.configs:
        r = bench_config(name, args, device)
        rows.append(r)
        t, e = r["train"], r["eval"]
        print(
            f"{name}: train s/iter (batch {r['batch']} x {r['crop']}px) clean {t['clean']['s_per_iter']:.3f} "
            f"sat {t['sat']['s_per_iter']:.3f} ddcat {t['ddcat']['s_per_iter']:.3f}; peak GiB "
            f"{t['clean']['peak_gib']} / {t['sat']['peak_gib']} / {t['ddcat']['peak_gib']}; "
            f"eval {e['image']} clean {e['clean_s_per_image']:.3f} s, BIM step {e['bim_step_s_per_image']:.3f} s, "
            f"peak GiB {e['clean_peak_gib']} / {e['bim_peak_gib']}",
            flush=True,
        )
    out = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", "torch": torch.__version__, "rows": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
