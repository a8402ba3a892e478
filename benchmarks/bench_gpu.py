"""The GPU path at paper scale: training and evaluation throughput, fp32 vs bf16, DDP + SyncBN.

    python benchmarks/bench_gpu.py [--size 473] [--batch 8] [--iters 6] [--json PATH] [--device cuda]

For PSPNet-ResNet-50 and DeepLabv3-ResNet-50 (deep stem, output stride 8, 21 classes) at
``size x size`` on random data, prints per (model, method, precision):

- training: ms per iteration and images/s of clean, SAT and DDC-AT (BIM n = 3, the paper's
  training attack), and the peak GPU memory of the iteration;
- the same iteration with the model converted to SyncBatchNorm and wrapped in
  DistributedDataParallel on a one-process NCCL group (the code path of ``torchrun`` on GPUs;
  one lent GPU cannot hold two NCCL ranks, so this measures the wrapper's overhead, not scaling);
- evaluation: images/s of BIM-7 (the paper's sweep costs 7 attack steps per image) and of APGD
  at 100 iterations, eval mode, fp32.

From the measured DDC-AT images/s it prints the estimated wall time of a VOC run (33,069
iterations of batch 16, the paper's schedule) on 4 such GPUs, assuming linear scaling (an estimate).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from ddcat.attacks import BIM, build_attack
from ddcat.config import load_config
from ddcat.models import build_model
from ddcat.training import build_method, optimizer_for

K = 21
VOC_ITERS, VOC_BATCH = 33069, 16  # 50 epochs of train_aug (10,582 images) at batch 16


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(amp: str, device: torch.device):
    if amp == "off":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def time_training(arch: str, method_name: str, amp: str, ddp: bool, args, device) -> dict:
    torch.manual_seed(0)
    cfg = load_config(None, [f"train.method={method_name}", f"train.batch_size={args.batch}", "attack.steps=3",
                             f"data.num_classes={K}", f"train.amp={amp}"])  # fmt: skip
    model = build_model(arch, "resnet50", K, ddc=method_name == "ddcat", deep_stem=True, width=args.width).to(device).train()
    if ddp:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index]) if ddp else model
    method = build_method(cfg)
    optimizer = optimizer_for(model, cfg["train"])
    images = torch.rand(args.batch, 3, args.size, args.size, device=device)
    labels = torch.randint(0, K, (args.batch, args.size, args.size), device=device)
    times = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for i in range(args.warmup + args.iters):
        sync(device)
        tic = time.perf_counter()
        with autocast(amp, device):
            loss, _ = method.loss(net, model, images, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        sync(device)
        if i >= args.warmup:
            times.append(time.perf_counter() - tic)
    ms = statistics.median(times) * 1000
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    return {"arch": arch, "method": method_name, "amp": amp, "ddp_syncbn": ddp, "ms_per_iter": ms,
            "images_per_s": args.batch / (ms / 1000), "peak_gib": peak}  # fmt: skip


def time_attack(arch: str, name: str, args, device) -> dict:
    torch.manual_seed(0)
    model = build_model(arch, "resnet50", K, deep_stem=True, width=args.width).to(device).eval()
    images = torch.rand(args.batch, 3, args.size, args.size, device=device)
    labels = torch.randint(0, K, (args.batch, args.size, args.size), device=device)
    if name == "bim-7":
        attack = BIM(eps=0.03, alpha=0.01, steps=7)
    else:
        attack = build_attack("apgd", eps=4 / 255, steps=100)
    attack(model, images[:1], labels[:1])  # warm-up
    sync(device)
    tic = time.perf_counter()
    attack(model, images, labels)
    sync(device)
    seconds = time.perf_counter() - tic
    return {"arch": arch, "attack": name, "seconds": seconds, "images_per_s": args.batch / seconds}


def build_parser() -> argparse.ArgumentParser:
    """The command line of this benchmark (tests/test_docs_commands.py parses the docs' commands with it)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", nargs="+", default=["pspnet", "deeplabv3"])
    parser.add_argument("--size", type=int, default=473)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--iters", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--width", type=int, default=64, help="trunk width (64 = the paper's; small for a smoke run)")
    parser.add_argument("--no-apgd", action="store_true")
    parser.add_argument("--json", default=None)
    return parser


def main() -> None:
    parser = build_parser()
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        device = torch.device("cuda", 0)
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29531")
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=0, world_size=1)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device {name}, torch {torch.__version__}, {args.size}x{args.size}, batch {args.batch}, median of {args.iters}")
    rows = []
    for arch in args.archs:
        for method in ("clean", "sat", "ddcat"):
            for amp in ("off", "bf16"):
                rows.append(time_training(arch, method, amp, False, args, device))
                r = rows[-1]
                print(f"train {arch:<10}{method:<7}{amp:<5} {r['ms_per_iter']:8.1f} ms/iter {r['images_per_s']:7.1f} img/s  peak {r['peak_gib']:.1f} GiB", flush=True)
        for method in ("clean", "ddcat") if device.type == "cuda" else ():  # SyncBatchNorm needs CUDA
            rows.append(time_training(arch, method, "bf16", True, args, device))
            r = rows[-1]
            print(f"train {arch:<10}{method:<7}bf16 DDP+SyncBN {r['ms_per_iter']:8.1f} ms/iter {r['images_per_s']:7.1f} img/s  peak {r['peak_gib']:.1f} GiB", flush=True)
    attacks = []
    for arch in args.archs:
        for name in ("bim-7",) + (() if args.no_apgd else ("apgd-100",)):
            attacks.append(time_attack(arch, name, args, device))
            a = attacks[-1]
            print(f"eval  {arch:<10}{name:<9} {a['images_per_s']:7.2f} img/s ({a['seconds']:.1f} s for {args.batch} images)", flush=True)
    for arch in args.archs:
        for amp in ("off", "bf16"):
            ddc = next(r for r in rows if r["arch"] == arch and r["method"] == "ddcat" and r["amp"] == amp and not r["ddp_syncbn"])
            hours = VOC_ITERS * VOC_BATCH / (4 * ddc["images_per_s"]) / 3600
            print(f"estimate: DDC-AT {arch} on VOC (33,069 x 16 images), 4 GPUs, amp {amp}: {hours:.1f} h (linear scaling assumed)")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": name, "torch": torch.__version__, "size": args.size,
                                               "batch": args.batch, "training": rows, "attacks": attacks}, indent=2))  # fmt: skip
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
