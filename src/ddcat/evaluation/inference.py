"""Inference paths that both the metric and the attack go through.

Whole-image inference is the model itself. :class:`SlidingWindow` evaluates large images in
overlapping crops and averages the logits; it is an ``nn.Module`` built from differentiable
operations, so an attack computes its gradient through exactly the path that produces the
prediction (not one crop at a time, as the paper's code does).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def window_starts(length: int, crop: int, stride: int) -> list[int]:
    """Start offsets covering [0, length) with windows of ``crop`` (the last one flush with the end)."""
    if length <= crop:
        return [0]
    n = math.ceil((length - crop) / stride) + 1
    return sorted({min(i * stride, length - crop) for i in range(n)})


class SlidingWindow(nn.Module):
    def __init__(self, model: nn.Module, crop: int, stride_rate: float = 2 / 3):
        super().__init__()
        self.model = model
        self.crop = crop
        self.stride = max(1, int(math.ceil(crop * stride_rate)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        pad_h, pad_w = max(self.crop - h, 0), max(self.crop - w, 0)
        if pad_h or pad_w:  # images smaller than a window: pad, predict, cut back
            x = F.pad(x, (0, pad_w, 0, pad_h))
        hh, ww = x.shape[-2:]
        logits = None
        count = torch.zeros(1, 1, hh, ww, device=x.device, dtype=x.dtype)
        for top in window_starts(hh, self.crop, self.stride):
            for left in window_starts(ww, self.crop, self.stride):
                crop = x[:, :, top : top + self.crop, left : left + self.crop]
                out = self.model(crop)
                if logits is None:
                    logits = x.new_zeros(n, out.shape[1], hh, ww)
                logits = logits + F.pad(out, (left, ww - left - out.shape[-1], top, hh - top - out.shape[-2]))
                count[:, :, top : top + self.crop, left : left + self.crop] += 1
        return (logits / count)[:, :, :h, :w]


def inference_model(model: nn.Module, mode: str, crop: int, stride_rate: float) -> nn.Module:
    return SlidingWindow(model, crop, stride_rate) if mode == "slide" else model
