"""APGD / SEA benchmark: overhead over the bare passes, early stop, SEA throughput, peak memory.

(a) overhead: ``APGD(eps, steps=S, early_stop=False)`` vs the bare passes it runs (S x forward +
    ``torch.autograd.grad`` of the loss w.r.t. the input, plus one no-grad forward), interleaved,
    median over repeats; printed ratio (target <= 1.05). PSPNet-ResNet-18 (random weights, eval mode).
(b) early stop: image-passes APGD actually runs vs its budget ``images x (S + 1)``, on an undefended
    and on a SAT model of the demo's setting (``configs/synthetic.yaml``, trained here for
    ``--train-iters``, 700 = the demo; or ``--clean PATH`` / ``--sat PATH`` checkpoints).
(c) SEA on those models: images per second and passes per image (gradient and no-grad).
(d) peak RSS of SEA vs PGD on the same batch (``--mem-batch`` x ``--mem-size`` px), each in its own
    child process (``os.wait4``), next to a child that only builds the model and the batch.

    PYTHONPATH=src python benchmarks/bench_apgd.py [--eps 0.03] [--steps 20] [--size 64] [--batch 8]
        [--repeats 5] [--threads 2] [--clean PATH] [--sat PATH] [--train-iters 700] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from ddcat.attacks import APGD, PGD, SEA  # noqa: E402
from ddcat.attacks import losses as L  # noqa: E402
from ddcat.models import build_model  # noqa: E402

TARGET_OVERHEAD = 1.05
TARGET_MEMORY = 1.2
K = 4
CONFIG = Path(__file__).resolve().parents[1] / "configs" / "synthetic.yaml"


class PassCounter:
    """Counts the images of every forward of a model, split into gradient and no-grad passes."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.grad = self.nograd = 0
        model.register_forward_pre_hook(self._hook)

    def _hook(self, module, inputs) -> None:
        n = inputs[0].shape[0]
        if torch.is_grad_enabled() and inputs[0].requires_grad:
            self.grad += n
        else:
            self.nograd += n


def random_batch(n: int, size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g), torch.randint(0, K, (n, size, size), generator=g)


# ----------------------------------------------------------------------------- (a) overhead


def bare_passes(model, images, labels, steps: int) -> None:
    for _ in range(steps):
        x = images.detach().requires_grad_(True)
        torch.autograd.grad(L.masked_ce(model(x).float(), labels).sum(), x)
    with torch.no_grad():
        model(images)


def overhead(args) -> dict:
    torch.manual_seed(0)
    model = build_model("pspnet", "resnet18", K, width=args.width).eval()
    images, labels = random_batch(args.batch, args.size)
    attack = APGD(eps=args.eps, steps=args.steps, loss="masked-ce", early_stop=False)
    attack(model, images, labels)  # warm-up
    bare_passes(model, images, labels, 2)
    t_apgd, t_bare = [], []
    for r in range(args.repeats):
        order = [0, 1] if r % 2 == 0 else [1, 0]
        for which in order:
            tic = time.perf_counter()
            if which == 0:
                attack(model, images, labels)
            else:
                bare_passes(model, images, labels, args.steps)
            (t_apgd if which == 0 else t_bare).append(time.perf_counter() - tic)
    ratios = [a / b for a, b in zip(t_apgd, t_bare)]
    return {
        "apgd_s": statistics.median(t_apgd),
        "bare_s": statistics.median(t_bare),
        "ratio": statistics.median(t_apgd) / statistics.median(t_bare),
        "paired_ratio": statistics.median(ratios),
    }


# ----------------------------------------------------------------------------- (b), (c) on trained models


def train_tiny(method: str, iters: int, out: Path) -> Path:
    from ddcat.config import load_config
    from ddcat.training.loop import train

    sets = [f"train.method={method}", f"train.iters={iters}", f"train.save_every={iters}", "train.log_every=100"]
    return train(load_config(CONFIG, sets), out / method, progress=False)


def load(path: Path):
    from ddcat.checkpoint import load_model

    model, _ = load_model(path)
    return model.eval()


def val_batch(model_path: Path, n: int):
    from ddcat.checkpoint import load_checkpoint
    from ddcat.data import build_dataset

    cfg = load_checkpoint(model_path)["config"]
    ds = build_dataset(cfg, "val")
    items = [ds[i] for i in range(min(n, len(ds)))]
    return torch.stack([a for a, _ in items]), torch.stack([b for _, b in items])


def pixel_acc(model, x, labels) -> float:
    with torch.no_grad():
        return float(L.hits(model(x), labels).sum()) / max(1, int((labels != 255).sum()))


def on_models(args, paths: dict[str, Path]) -> dict:
    out = {}
    for name, path in paths.items():
        model = load(path)
        images, labels = val_batch(path, args.eval_images)
        n = images.shape[0]
        counter = PassCounter(model)
        apgd = APGD(eps=args.eps, steps=args.steps, loss="masked-ce")
        adv = apgd(model, images, labels)
        row = {"apgd_passes": counter.grad + counter.nograd, "apgd_budget": n * (args.steps + 1)}
        row.update(clean_acc=pixel_acc(model, images, labels), apgd_acc=pixel_acc(model, adv, labels))
        counter.grad = counter.nograd = 0
        sea = SEA(eps=args.eps, steps=args.steps)
        tic = time.perf_counter()
        adv = sea(model, images, labels)
        wall = time.perf_counter() - tic
        row.update(sea_images_per_s=n / wall, sea_grad_passes_per_image=counter.grad / n,
                   sea_nograd_passes_per_image=counter.nograd / n,
                   sea_budget_per_image=len(sea.members) * (args.steps + (3 if sea.red_eps else 1)))
        row["sea_acc"] = pixel_acc(model, adv, labels)
        out[name] = row
    return out


# ----------------------------------------------------------------------------- (d) memory


def child(which: str, args) -> None:
    torch.manual_seed(0)
    model = build_model("pspnet", "resnet18", K, width=args.width).eval()
    images, labels = random_batch(args.mem_batch, args.mem_size)
    if which == "sea":
        SEA(eps=args.eps, steps=args.steps)(model, images, labels)
    elif which == "pgd":
        PGD(args.eps, args.eps / 4, args.steps)(model, images, labels)
    # "none": model and batch only


def peak_rss(which: str, args) -> float:
    cmd = [sys.executable, __file__, "--child", which, "--steps", str(args.steps), "--mem-size", str(args.mem_size),
           "--mem-batch", str(args.mem_batch), "--width", str(args.width), "--threads", str(args.threads),
           "--eps", str(args.eps)]
    proc = subprocess.Popen(cmd)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"child {which} failed")
    return usage.ru_maxrss / 1024  # MiB


def build_parser() -> argparse.ArgumentParser:
    """The command line of this benchmark (tests/test_docs_commands.py parses the docs' commands with it)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--eps", type=float, default=0.03)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--eval-images", type=int, default=16)
    p.add_argument("--train-iters", type=int, default=700)
    p.add_argument("--mem-size", type=int, default=128)
    p.add_argument("--mem-batch", type=int, default=16)
    p.add_argument("--clean", type=Path)
    p.add_argument("--sat", type=Path)
    p.add_argument("--json", type=Path)
    p.add_argument("--child", choices=["sea", "pgd", "none"], help=argparse.SUPPRESS)
    return p


def main() -> None:
    p = build_parser()
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        child(args.child, args)
        return

    result: dict = {"args": {k: str(v) for k, v in vars(args).items()}, "torch": torch.__version__}
    a = overhead(args)
    result["overhead"] = a
    print(f"(a) APGD {args.steps} steps, PSPNet-R18 width {args.width}, batch {args.batch}x{args.size}px: "
          f"{a['apgd_s']:.3f} s vs bare passes {a['bare_s']:.3f} s -> ratio {a['ratio']:.3f} "
          f"(median of per-repeat ratios {a['paired_ratio']:.3f}; target <= {TARGET_OVERHEAD})", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for name in ("clean", "sat"):
            given = getattr(args, name)
            if given is None:
                tic = time.perf_counter()
                given = train_tiny(name, args.train_iters, Path(tmp))
                print(f"    trained a tiny {name} model ({args.train_iters} iterations) in {time.perf_counter() - tic:.0f} s", flush=True)
            paths[name] = given
        models = on_models(args, paths)
    result["models"] = models
    for name, r in models.items():
        print(f"(b) {name}: pixel acc clean {r['clean_acc']:.3f}, APGD-{args.steps} {r['apgd_acc']:.3f}; "
              f"image-passes {r['apgd_passes']} of budget {r['apgd_budget']} ({r['apgd_passes'] / r['apgd_budget']:.2f})")
        print(f"(c) {name}: SEA-{args.steps} acc {r['sea_acc']:.3f}, {r['sea_images_per_s']:.2f} images/s, "
              f"passes/image {r['sea_grad_passes_per_image']:.1f} gradient + {r['sea_nograd_passes_per_image']:.1f} no-grad "
              f"(budget {r['sea_budget_per_image']})", flush=True)

    mem = {w: peak_rss(w, args) for w in ("none", "pgd", "sea")}
    result["peak_rss_mib"] = mem
    print(f"(d) peak RSS, batch {args.mem_batch}x{args.mem_size}px: model+batch {mem['none']:.0f} MiB, PGD-{args.steps} "
          f"{mem['pgd']:.0f} MiB, SEA-{args.steps} {mem['sea']:.0f} MiB -> SEA/PGD {mem['sea'] / mem['pgd']:.3f} "
          f"(target <= {TARGET_MEMORY})")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
