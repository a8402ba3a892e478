"""The segmentation network: normalization, ResNet trunk, shared context module, heads.

Heads (all produce logits at input resolution):

- ``main``      f_n, K classes; the only head used at inference;
- ``auxiliary`` f_a, K classes, same structure as f_n (DDC-AT only);
- ``mask``      f_m, 2 classes: 1 = send the pixel to f_a (DDC-AT only);
- ``deep_sup``  the deep-supervision head on layer3 (training only, loss weight 0.4).

In eval mode ``model(x)`` returns the main logits (N, K, H, W) and computes no other head; in
train mode it returns a dict with every head the model has. ``model(x, heads=(...))`` computes
exactly the listed heads in either mode and returns a dict.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from ddcat.config import CHOICES
from ddcat.errors import DdcatError
from ddcat.models.heads import ASPP, ClassifierHead, PyramidPooling
from ddcat.models.resnet import ResNet

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: The heads DDC-AT adds to a plain segmenter (``ddc=True``): f_a and the mask head f_m.
DDC_EXTRA_HEADS = ("auxiliary", "mask")

# Options of build_model (and of a checkpoint's model spec); a spec that lacks one was saved before
# it existed and gets the default here, which is the model it was trained as.
MODEL_OPTIONS = (
    "width", "deep_stem", "output_stride", "head_channels", "dropout",
    "stem_width", "dilation", "align_corners", "deep_sup_kernel",
)


class Segmenter(nn.Module):
    def __init__(
        self,
        arch: str,
        backbone: str,
        num_classes: int,
        ddc: bool = False,
        width: int = 64,
        deep_stem: bool = False,
        output_stride: int = 8,
        head_channels: int = 0,
        dropout: float = 0.1,
        stem_width: int = 0,
        dilation: str = "torchvision",
        align_corners: bool = False,
        deep_sup_kernel: int = 3,
    ):
        super().__init__()
        if arch not in CHOICES["model.arch"]:  # the vocabulary is the config's; checked here for Python callers
            raise DdcatError(f"unknown model.arch '{arch}'; valid: {', '.join(CHOICES['model.arch'])}")
        self.arch, self.num_classes, self.ddc = arch, num_classes, ddc
        self.align_corners = align_corners
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.backbone = ResNet(
            backbone, width=width, deep_stem=deep_stem, output_stride=output_stride, stem_width=stem_width, dilation=dilation
        )
        c3, c4 = self.backbone.channels3, self.backbone.channels4
        scale = width / 64
        if arch == "pspnet":
            self.context = PyramidPooling(c4, align_corners=align_corners)
            mid, kernel = head_channels or max(8, int(512 * scale)), 3
        elif arch == "deeplabv3":
            self.context = ASPP(c4, max(8, int(256 * scale)))
            mid, kernel = head_channels or max(8, int(256 * scale)), 1
        cin = self.context.out_channels
        heads = {"main": ClassifierHead(cin, mid, num_classes, kernel, dropout)}
        if ddc:
            heads["auxiliary"] = ClassifierHead(cin, mid, num_classes, kernel, dropout)
            heads["mask"] = ClassifierHead(cin, mid, 2, kernel, dropout)
        heads["deep_sup"] = ClassifierHead(c3, max(8, int(256 * scale)), num_classes, deep_sup_kernel, dropout)
        self.heads = nn.ModuleDict(heads)

    @property
    def head_names(self) -> tuple[str, ...]:
        return tuple(self.heads.keys())

    def new_parameters(self) -> Iterable[nn.Parameter]:
        """Parameters that are not part of the (possibly ImageNet-initialised) trunk: 10x lr."""
        yield from self.context.parameters()
        yield from self.heads.parameters()

    def forward(
        self, x: torch.Tensor, heads: Iterable[str] | None = None, rows: dict[str, slice] | None = None
    ) -> torch.Tensor | dict[str, torch.Tensor]:
        if heads is None and not self.training:
            return self.forward_heads(x, ("main",))["main"]
        return self.forward_heads(x, self.head_names if heads is None else tuple(heads), rows)

    def forward_heads(self, x: torch.Tensor, heads: tuple[str, ...], rows: dict[str, slice] | None = None) -> dict[str, torch.Tensor]:
        """Logits of ``heads``; ``rows`` optionally restricts a head to some images of the batch
        (DDC-AT needs f_a / f_m of the attack's clean forward on part of the batch only)."""
        rows = rows or {}
        size = x.shape[-2:]
        c3, c4 = self.backbone((x - self.mean) / self.std)
        out: dict[str, torch.Tensor] = {}
        context = self.context(c4) if any(h != "deep_sup" for h in heads) else None
        for name in heads:
            if name not in self.heads:
                raise KeyError(f"model has no head {name!r}; it has {', '.join(self.heads)}")
            feats = c3 if name == "deep_sup" else context
            if name in rows:
                feats = feats[rows[name]]
            out[name] = F.interpolate(self.heads[name](feats), size, mode="bilinear", align_corners=self.align_corners)
        return out


def build_model(arch: str, backbone: str, num_classes: int, ddc: bool = False, **options: Any) -> Segmenter:
    """Build PSPNet or DeepLabv3 on a ResNet trunk; ``ddc=True`` adds DDC-AT's f_a and f_m heads.

    Options: ``width`` (64), ``deep_stem`` (False), ``output_stride`` (8), ``head_channels`` (0 =
    derived), ``dropout`` (0.1), ``pretrained`` (path to a torchvision ResNet state dict), and the
    paper code's conventions (docs/protocol.md): ``stem_width`` (0 = width // 2; the paper: 64),
    ``dilation`` ("torchvision" | "paper"), ``align_corners`` (False; the paper: True),
    ``deep_sup_kernel`` (3; the paper's DeepLabv3: 1).
    """
    from ddcat.models.resnet import load_pretrained, read_weights

    pretrained = options.pop("pretrained", None)
    unknown = set(options) - set(MODEL_OPTIONS)
    if unknown:
        raise DdcatError(f"unknown model option(s) {', '.join(sorted(unknown))}")
    model = Segmenter(arch, backbone, num_classes, ddc=ddc, **options)
    if pretrained:
        content = read_weights(pretrained)
        if isinstance(content, dict) and content.get("format") == "ddcat" and isinstance(content.get("model"), dict):
            load_whole_model(model, content["model"], pretrained)
        else:
            load_pretrained(model.backbone, pretrained, content)
    return model


def load_whole_model(model: Segmenter, state: dict[str, torch.Tensor], path: Any) -> None:
    """Initialise every weight of ``model`` from a ddcat checkpoint's state dict (``model.pretrained``
    naming a ddcat checkpoint, e.g. one ``ddcat convert`` wrote): fine-tuning it, DDC-AT included.
    Every key of the file must be a weight of the model with its shape, and every weight of the
    model must be in the file, except DDC-AT's f_a / f_m when the file has none (a plain model
    fine-tuned with ``--method ddcat``: those heads start fresh). Otherwise a one-line error naming the key."""
    own = model.state_dict()
    for key, value in state.items():
        if key not in own:
            raise DdcatError(f"pretrained checkpoint {path}: key '{key}' is not a weight of this model (model.* keys differ?)")
        if tuple(value.shape) != tuple(own[key].shape):
            raise DdcatError(f"pretrained checkpoint {path}: key '{key}' has shape {list(value.shape)}, the model expects {list(own[key].shape)}")
    fresh = tuple(f"heads.{h}." for h in DDC_EXTRA_HEADS)
    has_extra = any(k.startswith(fresh) for k in state)
    for key in own:
        if key not in state and (has_extra or not key.startswith(fresh)):
            raise DdcatError(f"pretrained checkpoint {path} lacks weight '{key}'")
    model.load_state_dict({**own, **state}, strict=True)
