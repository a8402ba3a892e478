"""Data order that is a pure function of (seed, iteration): exact resume and DDP sharding.

Epoch e visits the training set in the order ``permutation(rng([seed, e]))``; iteration t takes
global batch t mod (N // B) of epoch t // (N // B) (the incomplete last batch is dropped), and
rank r of W takes the r-th contiguous slice of B / W images of it. Items are addressed as
(epoch, index) pairs so that each sample's augmentation is drawn from rng([seed, epoch, index])
whatever process loads it.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset

from ddcat.errors import DdcatError


class EpochIndexed(Dataset):
    """``dataset[(epoch, i)]`` = ``dataset.set_epoch(epoch); dataset[i]``."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]):
        epoch, index = key
        self.dataset.set_epoch(epoch)
        return self.dataset[index]


class ResumableBatchSampler:
    """Yields this rank's list of (epoch, index) keys for iterations start, start+1, ..., stop-1."""

    def __init__(self, num_items: int, global_batch: int, seed: int, start: int, stop: int, rank: int = 0, world: int = 1):
        if global_batch % world:
            raise DdcatError(f"train.batch_size={global_batch} must be divisible by the number of processes ({world})")
        if num_items < global_batch:
            raise DdcatError(f"the training set has {num_items} images, fewer than train.batch_size={global_batch}")
        self.n, self.b, self.seed = num_items, global_batch, seed
        self.start, self.stop, self.rank, self.world = start, stop, rank, world
        self.per_epoch = num_items // global_batch

    def order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.n)

    def keys(self, iteration: int) -> list[tuple[int, int]]:
        epoch, pos = divmod(iteration, self.per_epoch)
        batch = self.order(epoch)[pos * self.b : (pos + 1) * self.b]
        local = self.b // self.world
        return [(epoch, int(i)) for i in batch[self.rank * local : (self.rank + 1) * local]]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for t in range(self.start, self.stop):
            yield self.keys(t)

    def __len__(self) -> int:
        return self.stop - self.start


def iteration_seed(seed: int, iteration: int, rank: int) -> int:
    """Seed of the torch / python RNGs at the start of an iteration (dropout, random starts)."""
    return int(np.random.SeedSequence([seed, iteration, rank]).generate_state(1)[0])


def collate(batch):
    images, labels = zip(*batch)
    return torch.stack(images), torch.stack(labels)
