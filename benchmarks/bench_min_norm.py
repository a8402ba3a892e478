"""The minimum-norm attacks (DAG, PDPGD, ALMA-prox) at an L-inf budget: rse's box="clip" (run
unconstrained, clip the result to the eps-box) vs ddcat's box="project" (iterates kept in the box).

For each attack and mode, on the first ``--images`` validation images of a small trained model (the
demo's setting, ``configs/synthetic.yaml``, trained here for ``--train-iters`` with ``--method``, or
``--checkpoint PATH``): pixel accuracy (aAcc) and mIoU left, image-passes per image (forward calls
counted on the model; a gradient pass and a no-grad pass count one each) and wall time. Printed: one
row per (attack, mode) and the ratios project / clip of accuracy and of passes.

    PYTHONPATH=src python benchmarks/bench_min_norm.py [--eps 8/255] [--steps 100] [--images 16]
        [--checkpoint PATH | --train-iters 300 --method clean] [--threads 2] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from ddcat.attacks import build_attack  # noqa: E402
from ddcat.metrics import ConfusionMatrix  # noqa: E402
from ddcat.parsing import parse_fraction  # noqa: E402

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "synthetic.yaml"
ATTACKS = ("dag", "dag-003", "pdpgd", "alma-prox")


def train_tiny(method: str, iters: int, out: Path) -> Path:
    from ddcat.config import load_config
    from ddcat.training.loop import train

    sets = [f"train.method={method}", f"train.iters={iters}", f"train.save_every={iters}"]
    return train(load_config(CONFIG, sets), out / method, progress=False)


def load(path: Path):
    from ddcat.checkpoint import load_checkpoint, load_model
    from ddcat.data import build_dataset

    model, _ = load_model(path)
    cfg = load_checkpoint(path)["config"]
    return model.eval(), build_dataset(cfg, "val"), cfg["data"]["num_classes"]


class Passes:
    def __init__(self, model: torch.nn.Module) -> None:
        self.n = 0
        model.register_forward_pre_hook(lambda m, inputs: setattr(self, "n", self.n + inputs[0].shape[0]))


def scores(model, x, y, k) -> dict:
    cm = ConfusionMatrix(k)
    with torch.no_grad():
        cm.update(model(x).argmax(1), y)
    out = cm.compute()
    return {"aAcc": float(out["aAcc"]), "mIoU": float(out["mIoU"])}


def build_parser() -> argparse.ArgumentParser:
    """The command line of this benchmark (tests/test_docs_commands.py parses the docs' commands with it)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--eps", default="8/255")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--images", type=int, default=16)
    p.add_argument("--checkpoint", type=Path, default=None)
    p.add_argument("--train-iters", type=int, default=300)
    p.add_argument("--method", default="clean")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, default=None)
    return p


def main() -> None:
    p = build_parser()
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    eps = parse_fraction(args.eps, "--eps")
    with tempfile.TemporaryDirectory() as tmp:
        path = args.checkpoint or train_tiny(args.method, args.train_iters, Path(tmp))
        model, ds, k = load(path)
    items = [ds[i] for i in range(min(args.images, len(ds)))]
    x, y = torch.stack([a for a, _ in items]), torch.stack([b for _, b in items])
    counter = Passes(model)
    rows = {"clean": scores(model, x, y, k)}
    print(f"eps {args.eps}, {args.steps} iterations, {x.shape[0]} images {tuple(x.shape[2:])}, {k} classes")
    print(f"{'attack':<10} {'box':<8} {'aAcc':>7} {'mIoU':>7} {'passes/img':>10} {'s':>7}")
    print(f"{'clean':<10} {'':<8} {rows['clean']['aAcc']:7.4f} {rows['clean']['mIoU']:7.4f}")
    for name in ATTACKS:
        for box in ("clip", "project"):
            attack = build_attack(name, eps=eps, steps=args.steps, box=box)
            counter.n = 0
            tic = time.perf_counter()
            adv = attack(model, x, y)
            wall, passes = time.perf_counter() - tic, counter.n / x.shape[0]
            row = scores(model, adv, y, k)
            row.update(passes_per_image=passes, seconds=wall)
            rows[f"{name}/{box}"] = row
            print(f"{name:<10} {box:<8} {row['aAcc']:7.4f} {row['mIoU']:7.4f} {row['passes_per_image']:10.1f} {wall:7.1f}")
        c, q = rows[f"{name}/clip"], rows[f"{name}/project"]
        print(f"{name:<10} project/clip: aAcc x{q['aAcc'] / max(c['aAcc'], 1e-12):.3f}, "
              f"mIoU x{q['mIoU'] / max(c['mIoU'], 1e-12):.3f}, passes x{q['passes_per_image'] / max(c['passes_per_image'], 1e-12):.3f}")
    if args.json:
        args.json.write_text(json.dumps({"eps": eps, "steps": args.steps, "images": int(x.shape[0]), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
