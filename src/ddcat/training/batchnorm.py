"""BatchNorm running statistics when one global batch is split into shards.

A global batch of B images is processed as S = world_size x accum_steps shards; each shard's
train-mode forward normalises with its own batch statistics (SyncBatchNorm on GPU replaces that
for the DDP part). So that the result does not depend on how the S shards are spread over
processes, every shard updates the running statistics from the same starting point and the
iteration ends with their average, within a process (accumulation) and across processes
(all-reduce). With one shard this is plain BatchNorm.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from ddcat.distributed import DistContext

STATS = ("running_mean", "running_var")


def batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


def snapshot(model: nn.Module) -> list[dict[str, torch.Tensor]]:
    return [{k: getattr(m, k).detach().clone() for k in STATS} for m in batchnorms(model)]


def restore(model: nn.Module, snap: list[dict[str, torch.Tensor]]) -> None:
    for m, s in zip(batchnorms(model), snap):
        for k in STATS:
            getattr(m, k).copy_(s[k])


def set_mean(model: nn.Module, snaps: list[list[dict[str, torch.Tensor]]]) -> None:
    """Running statistics := the mean of the per-shard results."""
    for i, m in enumerate(batchnorms(model)):
        for k in STATS:
            getattr(m, k).copy_(torch.stack([s[i][k] for s in snaps]).mean(0))


def all_reduce_mean(model: nn.Module, ctx: DistContext) -> None:
    if not ctx.enabled:
        return
    buffers = [getattr(m, k) for m in batchnorms(model) for k in STATS]
    if not buffers:
        return
    flat = torch.cat([b.reshape(-1) for b in buffers])  # one all-reduce, not one per buffer
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat.div_(ctx.world)
    offset = 0
    for b in buffers:
        b.copy_(flat[offset : offset + b.numel()].view_as(b))
        offset += b.numel()
