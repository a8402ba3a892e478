"""Pixel counts per class of the training split: the weights 1 / N_y of SEA's balanced masked
cross-entropy (Croce, Singh & Hein 2024). Counted once over the untransformed training labels and
cached as JSON, keyed by the data config, so that every evaluation of the same data reuses them."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from ddcat.data import build_dataset
from ddcat.errors import DdcatError
from ddcat.outdir import write_text

CACHE_NAME = "class_counts-{digest}.json"


def count_classes(dataset, num_classes: int) -> list[int]:
    """Pixels of each class 0..K-1 over the untransformed labels (``dataset.raw(i)``) of ``dataset``;
    pixels labelled ``dataset.ignore_index`` are not counted. A label outside [0, K) and not ignored is an error."""
    counts = np.zeros(num_classes, dtype=np.int64)
    ignore_index = dataset.ignore_index
    for index in range(len(dataset)):
        _, label = dataset.raw(index)
        label = np.asarray(label).reshape(-1).astype(np.int64)
        label = label[label != ignore_index]
        if label.size and (label.min() < 0 or label.max() >= num_classes):
            raise DdcatError(f"training label {index} holds class values outside [0, {num_classes})")
        counts += np.bincount(label, minlength=num_classes)
    return [int(c) for c in counts]


#: The data keys the untransformed training labels depend on (not the augmentation).
LABEL_KEYS = ("name", "root", "num_classes", "train_list", "seed", "image_size", "num_train")


def data_key(cfg: dict[str, Any]) -> dict[str, Any]:
    """What the training labels depend on: the dataset, its lists and content, the class count."""
    return {"data": {k: cfg["data"][k] for k in LABEL_KEYS}}


def training_class_counts(cfg: dict[str, Any], cache_dir: str | Path | None = None) -> list[int]:
    """The training split's pixel count per class; read from / written to ``cache_dir`` (as
    ``class_counts-<hash of the data config>.json``) when given."""
    key = data_key(cfg)
    path = None
    if cache_dir is not None:
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]
        path = Path(cache_dir) / CACHE_NAME.format(digest=digest)
        if path.is_file():
            try:
                stored = json.loads(path.read_text())
                if stored.get("key") == key:
                    return [int(c) for c in stored["counts"]]
            except (ValueError, KeyError, TypeError):
                pass  # a damaged cache is recomputed
    counts = count_classes(build_dataset(cfg, "train"), cfg["data"]["num_classes"])
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text(path, json.dumps({"key": key, "counts": counts}) + "\n")  # a temporary per process: several may write it at once
    return counts
