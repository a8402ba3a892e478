"""The training log ``train_log.jsonl``: one JSON record per logged iteration.

One module writes it (:class:`LogWriter`), reads it (:func:`read_records`, tolerant of a last line
cut by a kill mid-write: resume and the plots share it) and names its keys.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ddcat.outdir import cannot_write

LOG_NAME = "train_log.jsonl"

# Keys of a record. Every method logs ITER, LR, TIME, LOSS and its loss terms; DDC-AT adds the
# routing shares: of valid clean / adversarial pixels sent to f_a, and of mask labels equal to 1.
ITER, LR, TIME, LOSS = "iter", "lr", "time", "loss"
LOSS_MAIN, LOSS_AUX, LOSS_MASK, LOSS_DEEP_SUP = "loss_main", "loss_aux", "loss_mask", "loss_deep_sup"
ROUTED_AUX_CLEAN, ROUTED_AUX_ADV = "routed_aux_clean", "routed_aux_adv"
MASK_POS_CLEAN, MASK_POS_ADV = "mask_pos_clean", "mask_pos_adv"
ROUTING_KEYS = (ROUTED_AUX_CLEAN, ROUTED_AUX_ADV, MASK_POS_CLEAN, MASK_POS_ADV)
# The robustness watch (train.robust_check_every, training/watch.py): pixel accuracy and mIoU of the
# fixed held-out batch clean, under PGD-10 and under the training attack; WARNING: the
# catastrophic-overfitting line (PGD accuracy < half of the training attack's).
ROBUST_CLEAN_ACC, ROBUST_CLEAN_MIOU = "robust_clean_acc", "robust_clean_miou"
ROBUST_PGD_ACC, ROBUST_PGD_MIOU = "robust_pgd_acc", "robust_pgd_miou"
ROBUST_TRAIN_ACC, ROBUST_TRAIN_MIOU = "robust_train_acc", "robust_train_miou"
ROBUST_KEYS = (ROBUST_CLEAN_ACC, ROBUST_CLEAN_MIOU, ROBUST_PGD_ACC, ROBUST_PGD_MIOU, ROBUST_TRAIN_ACC, ROBUST_TRAIN_MIOU)
WARNING = "warning"


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """The records of a log, in order; lines that are not a JSON record with ``iter`` (a torn last
    line, garbage) are skipped. A missing log has no records."""
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict) and isinstance(rec.get(ITER), int):
                records.append(rec)
    return records


def truncated_text(path: str | Path, iteration: int) -> str:
    """The log's text without records after ``iteration`` (work a crash lost, redone on resume)."""
    return "".join(json.dumps(r) + "\n" for r in read_records(path) if r[ITER] <= iteration)


class LogWriter:
    """Appends records, flushed at once, so that a kill loses at most the line being written. A
    failed open or write (a full disk) is a one-line error naming the log (:func:`ddcat.outdir.cannot_write`)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self._fh = open(self.path, "a", encoding="utf-8")
        except OSError as exc:
            raise cannot_write(self.path, exc) from None

    def write(self, record: dict[str, Any]) -> None:
        try:
            self._fh.write(json.dumps(record) + "\n")
            self._fh.flush()
        except OSError as exc:
            raise cannot_write(self.path, exc) from None

    def close(self) -> None:
        self._fh.close()
