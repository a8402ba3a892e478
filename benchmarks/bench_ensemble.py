"""Cost of ``--attack ensemble`` (issue 16 section 6): per member and for the whole ensemble, as a
multiple of SEA's, on the demo's models; the early skip; peak memory as a multiple of PGD's.

For each model (the demo's setting, ``configs/synthetic.yaml``: PSPNet and DeepLabv3, SAT and No
Defense (``--methods``), trained here for ``--train-iters``, 700 = the demo; or ``--checkpoint
NAME=PATH``, repeatable; the undefended models show the early skip), on ``--images``
validation images in batches of ``--batch``, at ``--iters`` iterations per member and eps ``--eps``:

(a) every ensemble member alone: passes per image (forward + input-gradient, and no-grad forwards,
    counted by a hook on the model), images per second;
(b) SEA (its three APGD members) and the ensemble with and without the early skip: the same figures,
    the ensemble's as a multiple of SEA's (goal: <= 3x at 300 iterations), and inside the ensemble
    the passes per image of each member and the images it skipped (the early skip, visible);
(c) peak RSS of the ensemble vs PGD at the same budget, each in its own child process (``os.wait4``),
    next to a child that only builds the model and the batch.

    PYTHONPATH=src python benchmarks/bench_ensemble.py [--iters 300] [--images 32] [--batch 8] [--eps 0.03]
        [--threads 2] [--train-iters 700] [--methods sat,clean] [--checkpoint NAME=PATH ...] [--json PATH]

A quick check that it runs (not a measurement): ``--iters 2 --images 4 --train-iters 20``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from ddcat.attacks import SEA, build_attack, member_loop  # noqa: E402
from ddcat.attacks import losses as L  # noqa: E402
from ddcat.attacks.registry import member_names  # noqa: E402

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "synthetic.yaml"
GOAL = 3.0  # the ensemble at 300 iterations costs at most 3x SEA-300 per image


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

    def take(self) -> tuple[int, int]:
        out = (self.grad, self.nograd)
        self.grad = self.nograd = 0
        return out


def train_demo_model(arch: str, method: str, iters: int, out: Path) -> Path:
    from ddcat.config import load_config
    from ddcat.training.loop import train

    sets = [f"train.method={method}", f"model.arch={arch}", f"train.iters={iters}", f"train.save_every={iters}", "train.log_every=100"]
    return train(load_config(CONFIG, sets), out / f"{arch}_{method}", progress=False)


def load(path: Path):
    from ddcat.checkpoint import load_checkpoint, load_model
    from ddcat.data import build_dataset

    model, _ = load_model(path)
    return model.eval(), build_dataset(load_checkpoint(path)["config"], "val")


def batches(dataset, n: int, size: int):
    items = [dataset[i] for i in range(min(n, len(dataset)))]
    for i in range(0, len(items), size):
        chunk = items[i:i + size]
        yield torch.stack([a for a, _ in chunk]), torch.stack([b for _, b in chunk])


def build(name: str, args):
    return build_attack(name, eps=args.eps, alpha=args.alpha, steps=args.iters, seed=0)


def measure(attack, model, data, counter: PassCounter) -> dict:
    """Passes per image and images per second of one attack over the batches."""
    counter.take()
    n = 0
    tic = time.perf_counter()
    for images, labels in data:
        attack(model, images, labels)
        n += images.shape[0]
    wall = time.perf_counter() - tic
    grad, nograd = counter.take()
    return {"images_per_s": n / wall, "grad_per_image": grad / n, "nograd_per_image": nograd / n, "seconds": wall}


def inside_ensemble(ensemble, model, data, counter: PassCounter) -> list[dict]:
    """Per member inside the ensemble (early skip on): passes per image of the dataset and images skipped."""
    rows = [{"name": name, "grad": 0, "nograd": 0, "skipped": 0, "seconds": 0.0} for name in ensemble.names]
    n = 0
    for images, labels in data:
        counter.take()
        tic = time.perf_counter()
        for r in member_loop(ensemble.members, model, images, labels, early_skip=True):
            grad, nograd = counter.take()
            row = rows[r.index]
            row["grad"] += grad
            row["nograd"] += nograd
            row["skipped"] += int(r.skipped.sum())
            row["seconds"] += time.perf_counter() - tic
            tic = time.perf_counter()
        n += images.shape[0]
    for row in rows:
        row["grad_per_image"], row["nograd_per_image"] = row.pop("grad") / n, row.pop("nograd") / n
    return rows


def pixel_acc(model, attack, data) -> float:
    hit = total = 0
    for images, labels in data:
        with torch.no_grad():
            hit += int(L.hits(model(attack(model, images, labels)), labels).sum())
        total += int((labels != 255).sum())
    return hit / max(1, total)


def on_model(name: str, path: Path, args) -> dict:
    model, dataset = load(path)
    data = list(batches(dataset, args.images, args.batch))
    counter = PassCounter(model)
    out: dict = {"members": {}}
    for member in member_names():
        out["members"][member] = measure(build(member, args), model, data, counter)
    sea = SEA(eps=args.eps, steps=args.iters, seed=0)
    out["sea"] = measure(sea, model, data, counter)
    ensemble = build("ensemble", args)
    out["ensemble"] = measure(ensemble, model, data, counter)
    no_skip = build_attack("ensemble", eps=args.eps, alpha=args.alpha, steps=args.iters, seed=0, early_skip=False)
    out["ensemble_no_skip"] = measure(no_skip, model, data, counter)
    out["inside"] = inside_ensemble(ensemble, model, data, counter)
    out["acc"] = {"sea": pixel_acc(model, sea, data), "ensemble": pixel_acc(model, ensemble, data)}
    return out


def child(which: str, args) -> None:
    from ddcat.models import build_model

    torch.manual_seed(0)
    model = build_model("deeplabv3", "resnet18", 4, width=16).eval()
    g = torch.Generator().manual_seed(0)
    images = torch.rand(args.batch, 3, 64, 64, generator=g)
    labels = torch.randint(0, 4, (args.batch, 64, 64), generator=g)
    if which != "none":
        build(which, args)(model, images, labels)


def peak_rss(which: str, args) -> float:
    cmd = [sys.executable, __file__, "--child", which, "--iters", str(args.iters), "--batch", str(args.batch),
           "--threads", str(args.threads), "--eps", str(args.eps), "--alpha", str(args.alpha)]
    proc = subprocess.Popen(cmd)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"child {which} failed")
    return usage.ru_maxrss / 1024  # MiB


def build_parser() -> argparse.ArgumentParser:
    """The command line of this benchmark (tests/test_docs_commands.py parses the docs' commands with it)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--iters", type=int, default=300)
    p.add_argument("--images", type=int, default=32)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--eps", type=float, default=0.03)
    p.add_argument("--alpha", type=float, default=0.01)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--train-iters", type=int, default=700)
    p.add_argument("--methods", default="sat,clean", help="demo models to train (no --checkpoint): sat,clean,ddcat")
    p.add_argument("--checkpoint", action="append", default=[], metavar="NAME=PATH")
    p.add_argument("--json", type=Path)
    p.add_argument("--child", choices=["ensemble", "pgd", "none"], help=argparse.SUPPRESS)
    return p


def main() -> None:
    p = build_parser()
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        child(args.child, args)
        return

    result: dict = {"args": {k: str(v) for k, v in vars(args).items()}, "torch": torch.__version__, "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        paths = dict(item.split("=", 1) for item in args.checkpoint)
        if not paths:
            for arch in ("pspnet", "deeplabv3"):
                for method in args.methods.split(","):
                    tic = time.perf_counter()
                    paths[f"{arch}_{method}"] = train_demo_model(arch, method, args.train_iters, Path(tmp))
                    print(f"trained a demo {arch} {method} model ({args.train_iters} iterations) in {time.perf_counter() - tic:.0f} s", flush=True)
        for name, path in paths.items():
            r = on_model(name, Path(path), args)
            result["models"][name] = r
            sea = r["sea"]
            print(f"\n{name}: {args.images} images, {args.iters} iterations per member, eps {args.eps}")
            print(f"  {'attack':<26} {'img/s':>8} {'grad/img':>9} {'nograd/img':>10} {'time / SEA':>10}")
            rows = [*r["members"].items(), ("SEA", sea), ("ensemble (early skip)", r["ensemble"]), ("ensemble (no skip)", r["ensemble_no_skip"])]
            for label, m in rows:
                print(f"  {label:<26} {m['images_per_s']:8.3f} {m['grad_per_image']:9.1f} {m['nograd_per_image']:10.1f} "
                      f"{m['seconds'] / sea['seconds']:10.2f}")
            ratio = r["ensemble"]["seconds"] / sea["seconds"]
            print(f"  ensemble / SEA per image: {ratio:.2f}x time, {r['ensemble']['grad_per_image'] / max(sea['grad_per_image'], 1e-9):.2f}x "
                  f"gradient passes (goal at 300 iterations: <= {GOAL}x); pixel acc SEA {r['acc']['sea']:.3f}, ensemble {r['acc']['ensemble']:.3f}")
            print("  inside the ensemble (run order; early skip):")
            for m in r["inside"]:
                print(f"    {m['name']:<26} grad/img {m['grad_per_image']:7.1f}  nograd/img {m['nograd_per_image']:6.1f}  "
                      f"skipped {m['skipped']:3d} of {args.images} images  {m['seconds']:.1f} s")
    mem = {w: peak_rss(w, args) for w in ("none", "pgd", "ensemble")}
    result["peak_rss_mib"] = mem
    print(f"\npeak RSS, DeepLabv3-R18 width 16, batch {args.batch}x64px: model+batch {mem['none']:.0f} MiB, PGD-{args.iters} "
          f"{mem['pgd']:.0f} MiB, ensemble-{args.iters} {mem['ensemble']:.0f} MiB -> ensemble/PGD {mem['ensemble'] / mem['pgd']:.3f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
