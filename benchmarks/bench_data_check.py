"""Cost of the data check before the first write (``ddcat.data.check``) on a list of VOC's size.

Writes ``--pairs`` (default 10,582, VOC train_aug) image/label pairs under ``--dir`` in the VOC
layout (``JPEGImages/*.jpg``, palette ``SegmentationClassAug/*.png``, ``list/train_aug.txt``): one
JPEG and one label of ``--size`` HxW encoded once and written to every path (the check opens,
parses and decodes each file on its own, so the content being the same does not help it). Then it
times :func:`check_pairs` twice with a fresh cache file: the first run (every header read, every
label decoded) and the second (every pair found in the cache: two ``stat`` calls each), and prints
seconds, ms per pair and the ratio first / cached. Files are in the page cache (just written):
a cold disk adds its read time to the first run only.

    PYTHONPATH=src python benchmarks/bench_data_check.py [--pairs 10582] [--size 375x500] [--workers N] [--dir /tmp/ddcat-bench-data]
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from ddcat.data.check import check_pairs  # noqa: E402
from ddcat.data.fixtures import toy_pair, voc_palette  # noqa: E402
from ddcat.data.listfile import read_list  # noqa: E402


def write_tree(root: Path, pairs: int, height: int, width: int) -> Path:
    image, label = toy_pair(np.random.default_rng(0), height, width, 21, void_border=True)
    jpg, png = io.BytesIO(), io.BytesIO()
    Image.fromarray(image).save(jpg, format="JPEG", quality=90)
    lab = Image.fromarray(label).convert("P")
    lab.putpalette(voc_palette())
    lab.save(png, format="PNG")
    (root / "JPEGImages").mkdir(parents=True)
    (root / "SegmentationClassAug").mkdir()
    (root / "list").mkdir()
    lines = []
    for n in range(pairs):
        name = f"2007_{n:06d}"
        (root / "JPEGImages" / f"{name}.jpg").write_bytes(jpg.getvalue())
        (root / "SegmentationClassAug" / f"{name}.png").write_bytes(png.getvalue())
        lines.append(f"JPEGImages/{name}.jpg SegmentationClassAug/{name}.png")
    (root / "list" / "train_aug.txt").write_text("\n".join(lines) + "\n")
    return root / "list" / "train_aug.txt"


def build_parser() -> argparse.ArgumentParser:
    """The command line of this benchmark (tests/test_docs_commands.py parses the docs' commands with it)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=10582)
    ap.add_argument("--size", default="375x500", help="HxW of every image and label (VOC's typical 375x500)")
    ap.add_argument("--workers", type=int, default=None, help="threads of the check (default: its own choice)")
    ap.add_argument("--dir", default="/tmp/ddcat-bench-data")
    return ap


def main() -> None:
    ap = build_parser()
    args = ap.parse_args()
    h, w = (int(v) for v in args.size.lower().split("x"))
    root = Path(args.dir) / "VOC"
    if root.exists():
        shutil.rmtree(root)
    tic = time.perf_counter()
    list_file = write_tree(root, args.pairs, h, w)
    print(f"wrote {args.pairs} pairs of {w}x{h} under {root} in {time.perf_counter() - tic:.1f} s")
    pairs = read_list(root, list_file)
    cache = Path(args.dir) / "check-cache.json"
    if cache.exists():
        cache.unlink()
    times = []
    for run in ("first", "cached"):
        tic = time.perf_counter()
        counts = check_pairs(pairs, 21, cache=cache, workers=args.workers, progress=False)
        times.append(time.perf_counter() - tic)
        print(f"{run:>6} run: {times[-1]:7.2f} s  {1000 * times[-1] / len(pairs):6.3f} ms/pair  {counts}")
    print(f"ratio first / cached: {times[0] / times[1]:.1f}x  (cpu cores: {os.cpu_count()}, cache {cache.stat().st_size / 1e6:.1f} MB)")
    shutil.rmtree(Path(args.dir))


if __name__ == "__main__":
    main()
