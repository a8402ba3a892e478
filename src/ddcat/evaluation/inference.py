"""Inference paths that both the metric and the attack go through.

Whole-image inference without test-time options is the model itself. :class:`InferencePath`
(``SlidingWindow`` is the same class) adds, each as a differentiable operation, so that an attack
computes its gradient through exactly the path that produces the prediction:

- ``base_size``: the image is first resized (bilinear, as ``cv2.INTER_LINEAR``) so that its long side
  is ``base_size`` (semseg's ``test.py``) and the averaged prediction is resized back to the input
  size, so it is scored on the original labels (the paper's VOC evaluation). With
  ``score_at="base"`` the evaluation images *and labels* are resized to the base size before
  anything else (:func:`evaluation_inputs`: bilinear / nearest, the paper's Cityscapes evaluation
  at 1024x512); the resized image is then the image that is attacked and scored;
- ``crop`` > 0: overlapping ``crop x crop`` windows with stride ``ceil(crop * stride_rate)``;
  an image smaller than a window is padded, either at the bottom/right with zeros (``pad="zero"``)
  or centred with the ImageNet mean colour (``pad="mean"``, the paper's code), and cut back after;
- ``flip``: each window is also predicted mirrored, and the mirrored prediction is mirrored back and
  averaged in (both branches are attacked);
- ``average``: what windows and flips average: ``"logits"`` or ``"softmax"`` probabilities (the
  paper's code). With ``"softmax"`` the path returns ``log`` of the averaged probabilities, so that
  ``argmax`` is the paper's prediction and cross-entropy on the output is ``-log`` of the averaged
  probability of the label.

The attack perturbs the input of :meth:`InferencePath.forward`, i.e. the original image's pixels,
through every window at once (stricter than the paper's code, which attacks each resized window on
its own: :meth:`InferencePath.forward_attacked_per_crop` does that for a like-for-like comparison).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from ddcat.constants import IGNORE_INDEX

# The colour of mean padding, in [0, 1] pixels (the paper's code pads with mean * 255 on 0..255).
IMAGENET_MEAN = (0.485, 0.456, 0.406)


def window_starts(length: int, crop: int, stride: int) -> list[int]:
    """Start offsets covering [0, length) with windows of ``crop`` (the last one flush with the end)."""
    if length <= crop:
        return [0]
    n = math.ceil((length - crop) / stride) + 1
    return sorted({min(i * stride, length - crop) for i in range(n)})


def base_shape(h: int, w: int, base_size: int) -> tuple[int, int]:
    """semseg's ``test.py``: the long side becomes ``base_size``, the short one ``round`` of its share."""
    if h > w:
        return base_size, round(base_size / float(h) * w)
    return round(base_size / float(w) * h), base_size


def pad_amounts(h: int, w: int, crop: int, centred: bool) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) padding up to ``crop``; centred = semseg's ``int(pad / 2)`` on top/left."""
    ph, pw = max(crop - h, 0), max(crop - w, 0)
    if centred:
        return ph // 2, ph - ph // 2, pw // 2, pw - pw // 2
    return 0, ph, 0, pw


def pad_constant(x: torch.Tensor, amounts: tuple[int, int, int, int], colour: tuple[float, ...] | None) -> torch.Tensor:
    """Pad (N, C, H, W) by ``amounts``; the new pixels hold ``colour`` (per channel) or 0.

    Differentiable, and exact: inside, the values are ``x + 0``; outside, ``0 + colour``.
    """
    top, bottom, left, right = amounts
    if not any(amounts):
        return x
    spec = (left, right, top, bottom)
    out = F.pad(x, spec)
    if colour is not None:
        c = torch.tensor(colour, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        border = F.pad(torch.zeros(1, 1, x.shape[-2], x.shape[-1], dtype=x.dtype, device=x.device), spec, value=1.0)
        out = out + border * c
    return out


class _Window(nn.Module):
    """One window's prediction: the model, plus its flipped twin averaged in (``accumulate``)."""

    def __init__(self, model: nn.Module, flip: bool, softmax: bool):
        super().__init__()
        self.model, self.flip, self.softmax = model, flip, softmax

    def accumulate(self, x: torch.Tensor) -> torch.Tensor:
        """What overlapping windows sum: probabilities (softmax) or logits."""
        n = x.shape[0]
        out = self.model(torch.cat([x, x.flip(3)]) if self.flip else x)
        if self.softmax:
            out = F.softmax(out.float(), dim=1)
        if self.flip:
            out = (out[:n] + out[n:].flip(3)) / 2
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return to_output(self.accumulate(x), self.softmax)


def to_output(value: torch.Tensor, softmax: bool) -> torch.Tensor:
    """Averaged probabilities -> their log (logits-like; argmax and softmax unchanged); logits as they are."""
    return torch.log(value.clamp_min(torch.finfo(value.dtype).tiny)) if softmax else value


class InferencePath(nn.Module):
    """Base-size resize, sliding window (``crop`` > 0; 0 = the whole image), flip, logit or softmax averaging.

    Shapes: (N, 3, H, W) pixels in [0, 1] -> (N, K, H, W).
    """

    def __init__(
        self,
        model: nn.Module,
        crop: int = 0,
        stride_rate: float = 2 / 3,
        flip: bool = False,
        pad: str = "zero",
        average: str = "logits",
        base_size: int = 0,
        score_at: str = "input",
        attack_per_crop: bool = False,
    ):
        super().__init__()
        if pad not in ("zero", "mean") or average not in ("logits", "softmax") or score_at not in ("input", "base"):
            raise ValueError(f"bad inference options pad={pad!r} average={average!r} score_at={score_at!r}")
        self.model = model
        self.crop = crop
        self.stride = max(1, int(math.ceil(crop * stride_rate))) if crop else 0
        self.pad, self.average, self.base_size, self.score_at = pad, average, base_size, score_at
        self.attack_per_crop = attack_per_crop
        self.window = _Window(model, flip, average == "softmax")

    # ------------------------------------------------------------------ shapes
    def _to_base(self, x: torch.Tensor) -> torch.Tensor:
        if not self.base_size:
            return x
        size = base_shape(x.shape[-2], x.shape[-1], self.base_size)
        return x if tuple(x.shape[-2:]) == size else F.interpolate(x, size, mode="bilinear", align_corners=False)

    def _from_base(self, value: torch.Tensor, h: int, w: int) -> torch.Tensor:
        same = tuple(value.shape[-2:]) == (h, w)
        return value if same else F.interpolate(value, (h, w), mode="bilinear", align_corners=False)

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        value = self._slide(self._to_base(x), None, None)
        return to_output(self._from_base(value, h, w), self.window.softmax)

    def forward_attacked_per_crop(
        self, attack: Callable[..., torch.Tensor], x: torch.Tensor, labels: torch.Tensor, source: nn.Module | None = None
    ) -> torch.Tensor:
        """The paper code's adversarial evaluation: every window of the resized, padded image is attacked
        on its own (with its crop of the resized labels, padding = ignore) on ``source``'s window model
        (white-box: this path's), and predicted from its own adversarial version. Output as :meth:`forward`.
        """
        h, w = x.shape[-2:]
        xb = self._to_base(x).detach()
        lb = resize_labels(labels, tuple(xb.shape[-2:]))
        attacked = source.window if isinstance(source, InferencePath) else (source or self.window)

        def per_crop(crop: torch.Tensor, crop_labels: torch.Tensor) -> torch.Tensor:
            return attack(attacked, crop, crop_labels).detach()

        if self.crop:
            value = self._slide(xb, lb, per_crop)
        else:
            adv = per_crop(xb, lb)
            with torch.no_grad():
                value = self.window.accumulate(adv)
        return to_output(self._from_base(value, h, w), self.window.softmax).detach()

    def _slide(
        self, x: torch.Tensor, labels: torch.Tensor | None, per_crop: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None
    ) -> torch.Tensor:
        if not self.crop:
            return self.window.accumulate(x)
        n, _, h, w = x.shape
        amounts = pad_amounts(h, w, self.crop, centred=self.pad == "mean")
        x = pad_constant(x, amounts, IMAGENET_MEAN if self.pad == "mean" else None)
        if labels is not None:
            top, bottom, left, right = amounts
            labels = F.pad(labels, (left, right, top, bottom), value=IGNORE_INDEX)
        hh, ww = x.shape[-2:]
        total = None
        count = torch.zeros(1, 1, hh, ww, device=x.device, dtype=torch.float32)
        for top in window_starts(hh, self.crop, self.stride):
            for left in window_starts(ww, self.crop, self.stride):
                crop = x[:, :, top : top + self.crop, left : left + self.crop]
                if per_crop is None:
                    out = self.window.accumulate(crop)
                else:
                    crop = per_crop(crop, labels[:, top : top + self.crop, left : left + self.crop])
                    with torch.no_grad():
                        out = self.window.accumulate(crop)
                if total is None:
                    total = out.new_zeros(n, out.shape[1], hh, ww)
                total = total + F.pad(out, (left, ww - left - out.shape[-1], top, hh - top - out.shape[-2]))
                count[:, :, top : top + self.crop, left : left + self.crop] += 1
        value = total / count.to(total.dtype)
        return value[:, :, amounts[0] : amounts[0] + h, amounts[2] : amounts[2] + w]


SlidingWindow = InferencePath  # the historical name: SlidingWindow(model, crop, stride_rate)


def resize_labels(labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, H, W) integer labels -> ``size`` by nearest neighbour (``cv2.INTER_NEAREST``: floor of the scaled index)."""
    if tuple(labels.shape[-2:]) == tuple(size):
        return labels
    out = F.interpolate(labels[:, None].float(), size=size, mode="nearest")
    return out[:, 0].to(labels.dtype)


def evaluation_inputs(path: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The images and labels an evaluation through ``path`` attacks and scores: with ``score_at="base"``
    both are resized to the base size first (bilinear / nearest), as the paper's Cityscapes evaluation
    does; otherwise they are returned unchanged."""
    if isinstance(path, InferencePath) and path.base_size and path.score_at == "base":
        size = base_shape(images.shape[-2], images.shape[-1], path.base_size)
        if tuple(images.shape[-2:]) != size:
            images = F.interpolate(images, size, mode="bilinear", align_corners=False).clamp(0, 1)
        return images, resize_labels(labels, size)
    return images, labels


def inference_options(cfg: dict[str, Any]) -> dict[str, Any]:
    """The ``eval.*`` test-time options of a run configuration, as :class:`InferencePath` arguments."""
    e = cfg["eval"]
    return {
        "flip": e.get("flip", False),
        "pad": e.get("pad", "zero"),
        "average": e.get("average", "logits"),
        "base_size": e.get("base_size", 0),
        "score_at": e.get("score_at", "input"),
        "attack_per_crop": e.get("attack_per_crop", False),
    }


def inference_model(model: nn.Module, mode: str, crop: int, stride_rate: float, **options: Any) -> nn.Module:
    """The model itself for plain whole-image inference; otherwise an :class:`InferencePath` around it."""
    defaults = {"flip": False, "pad": "zero", "average": "logits", "base_size": 0, "score_at": "input", "attack_per_crop": False}
    plain = all(options.get(k, v) == v for k, v in defaults.items())
    if mode != "slide" and plain:
        return model
    return InferencePath(model, crop if mode == "slide" else 0, stride_rate, **options)
