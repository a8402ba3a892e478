"""Any segmentation network as a ddcat model: [0, 1] images in, logits at input size out.

:func:`adapt` wraps a user's ``nn.Module`` so that attacks, metrics and the training methods see
the same interface as ddcat's own :class:`~ddcat.models.Segmenter`:

- input: images in [0, 1], (N, 3, H, W); normalization (``normalize=(mean, std)``) happens
  inside the adapter, so the eps-ball stays in pixel space;
- the wrapped model is called as ``model(x)``, or as ``model(pixel_values=x)`` when its
  ``forward`` takes ``pixel_values`` (Hugging Face transformers);
- its output may be a tensor, a dict with ``"out"`` (torchvision; ``"aux"`` becomes the
  deep-supervision head in training), or an object with ``.logits`` (transformers'
  ``SemanticSegmenterOutput``); ``output=callable`` reads anything else;
- logits at reduced resolution (SegFormer: 1/4) are resized bilinearly to (H, W) inside the
  adapter, so an attack differentiates through the path that makes the prediction.

The adapter starts in the wrapped model's mode (``adapt(model.eval())`` is in eval mode).
Eval mode: ``adapted(x)`` returns the main logits (N, K, H, W). Train mode: a dict with
``"main"``, ``"deep_sup"`` when the model gives an auxiliary output, and, for DDC-AT,
``"auxiliary"`` (f_a) and ``"mask"`` (f_m). ``adapted(x, heads=(...), rows={...})`` computes
the listed heads in either mode, as :meth:`Segmenter.forward` does.

DDC-AT (``ddc_head="decode_head.classifier"``): the named module must produce the class logits
(N, K, h, w) (the model's output is that map, up to a bilinear resize). f_a is a deep copy of it;
f_m is a deep copy whose last ``Conv2d`` / ``Linear`` (in registration order) is replaced by a
fresh layer with 2 outputs. A forward hook captures the named head's input, so f_a and f_m read
the same features as f_n and cost no extra trunk pass; they run only when asked for, and only
on the ``rows`` asked for.
"""

from __future__ import annotations

import copy
import inspect
from typing import Any, Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ddcat.errors import DdcatError

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
DDC_HEAD_NAMES = ("auxiliary", "mask")


def describe(value: Any) -> str:
    """A short description of a model output for error messages."""
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    if isinstance(value, dict):
        return f"a dict with keys {sorted(map(str, value))}"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)} item(s)"
    return f"a {type(value).__name__}"


def read_output(raw: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(main logits, auxiliary logits or None) of a model output, by the common conventions."""
    if isinstance(raw, torch.Tensor):
        return raw, None
    if isinstance(raw, dict) and "out" in raw:  # torchvision segmentation models
        return raw["out"], raw.get("aux")
    logits = getattr(raw, "logits", None)
    if isinstance(logits, torch.Tensor):  # transformers' SemanticSegmenterOutput
        return logits, None
    raise DdcatError(
        f"cannot read the model's output: it returned {describe(raw)}; expected a logits tensor, a dict with "
        "'out', or an object with .logits (pass output=callable to adapt() for anything else)"
    )


def check_logits(logits: Any, batch: int, num_classes: int | None, what: str = "the model's logits") -> torch.Tensor:
    if not isinstance(logits, torch.Tensor) or logits.dim() != 4 or logits.shape[0] != batch:
        raise DdcatError(f"{what} must be (N={batch}, K, h, w), got {describe(logits)}")
    if num_classes is not None and logits.shape[1] != num_classes:
        raise DdcatError(
            f"{what} have {logits.shape[1]} classes (shape {tuple(logits.shape)}), the dataset has {num_classes} (data.num_classes)"
        )
    return logits


def resize(logits: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)


def takes_pixel_values(model: nn.Module) -> bool:
    try:
        return "pixel_values" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def find_module(model: nn.Module, path: str, key: str = "model.ddc_head") -> nn.Module:
    """The submodule at dotted ``path``; a DdcatError naming the path when it is missing or not a module."""
    node: Any = model
    for i, part in enumerate(path.split(".")):
        if not part or not hasattr(node, part):
            where = ".".join(path.split(".")[:i]) or "the model"
            children = [n for n, _ in node.named_children()] if isinstance(node, nn.Module) else []
            raise DdcatError(f"{key} '{path}': {where} has no attribute '{part}' (its submodules: {', '.join(children) or 'none'})")
        node = getattr(node, part)
    if not isinstance(node, nn.Module):
        raise DdcatError(f"{key} '{path}' is a {type(node).__name__}, not an nn.Module")
    return node


def last_projection(head: nn.Module) -> tuple[str, nn.Module]:
    """(name, module) of the last Conv2d / Linear registered in ``head`` (``''`` for the head itself)."""
    found = [(n, m) for n, m in head.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    if not found:
        raise DdcatError(f"model.ddc_head must be, or end in, a Conv2d or Linear layer producing the class logits; {type(head).__name__} has none")
    return found[-1]


def with_outputs(layer: nn.Module, outputs: int) -> nn.Module:
    """A fresh layer like ``layer`` (Conv2d or Linear) with ``outputs`` output channels."""
    device, dtype = layer.weight.device, layer.weight.dtype
    if isinstance(layer, nn.Linear):
        return nn.Linear(layer.in_features, outputs, bias=layer.bias is not None, device=device, dtype=dtype)
    if layer.groups != 1:
        raise DdcatError(f"model.ddc_head ends in a grouped Conv2d (groups={layer.groups}); only groups=1 is supported")
    return nn.Conv2d(
        layer.in_channels, outputs, layer.kernel_size, stride=layer.stride, padding=layer.padding, dilation=layer.dilation,
        bias=layer.bias is not None, padding_mode=layer.padding_mode, device=device, dtype=dtype,
    )


def mask_head_like(head: nn.Module, num_classes: int | None) -> nn.Module:
    """f_m: a deep copy of ``head`` whose last Conv2d / Linear has 2 outputs (freshly initialised)."""
    name, last = last_projection(head)
    out = last.out_channels if isinstance(last, nn.Conv2d) else last.out_features
    if num_classes is not None and out != num_classes:
        raise DdcatError(
            f"model.ddc_head's last {type(last).__name__} ('{name or 'the head itself'}') has {out} outputs, not the "
            f"{num_classes} classes: ddc_head must be the module that produces the class logits"
        )
    fresh = with_outputs(last, 2)
    fresh.train(last.training)  # the mode of the layer it replaces
    if not name:
        return fresh
    mask = copy.deepcopy(head)
    parent_name, _, child = name.rpartition(".")
    parent = mask.get_submodule(parent_name) if parent_name else mask
    setattr(parent, child, fresh)
    return mask


def _rows(value: Any, rows: slice, batch: int) -> Any:
    if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == batch:
        return value[rows]
    if isinstance(value, (tuple, list)):
        return type(value)(_rows(v, rows, batch) for v in value)
    return value


class AdaptedModel(nn.Module):
    """See the module docstring. ``model`` is the user's network (its state dict sits under ``model.``)."""

    def __init__(
        self,
        model: nn.Module,
        normalize: tuple[Sequence[float], Sequence[float]] | None = None,
        output: str | Callable[[Any], Any] = "auto",
        num_classes: int | None = None,
        ddc_head: str | None = None,
    ):
        super().__init__()
        if not isinstance(model, nn.Module):
            raise DdcatError(f"adapt() needs an nn.Module, got {type(model).__name__}")
        if output != "auto" and not callable(output):
            raise DdcatError(f"adapt(output=...) must be 'auto' or a callable, got {output!r}")
        self.model = model
        self.output = output
        self.num_classes = num_classes
        self.ddc_head = ddc_head
        self.keyword_call = takes_pixel_values(model)
        self.normalized = normalize is not None
        if normalize is not None:
            mean, std = normalize
            if len(mean) != 3 or len(std) != 3 or any(float(s) <= 0 for s in std):
                raise DdcatError(f"normalize must be (mean, std) with 3 values each and std > 0, got {normalize!r}")
            self.register_buffer("mean", torch.tensor([float(v) for v in mean]).view(1, 3, 1, 1), persistent=False)
            self.register_buffer("std", torch.tensor([float(v) for v in std]).view(1, 3, 1, 1), persistent=False)
        self._capture = False
        self._captured: tuple[tuple, dict, Any] | None = None
        self._verified = False
        self.ddc_heads: nn.ModuleDict | None = None
        if ddc_head is not None:
            head = find_module(model, ddc_head)
            mask = mask_head_like(head, num_classes)  # also checks the head's class count
            self.ddc_heads = nn.ModuleDict({"auxiliary": copy.deepcopy(head), "mask": mask})
            self.ddc_heads.training = head.training
            head.register_forward_hook(self._hook, with_kwargs=True)
        # the wrapper takes the wrapped model's mode (``adapt(model.eval())`` returns logits); the
        # modules inside keep theirs, and f_a / f_m are copies of the head, modes included
        self.training = model.training

    @property
    def ddc(self) -> bool:
        return self.ddc_heads is not None

    def new_parameters(self) -> Iterable[nn.Parameter]:
        """None: a user model trains at ``train.lr`` throughout (``train.head_lr_mult`` is for ddcat's own models)."""
        return iter(())

    def user_model(self) -> nn.Module:
        """The wrapped network as the user built it (without f_a / f_m)."""
        return self.model

    def _hook(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        if self._capture:
            self._captured = (args, kwargs, output)

    def _call(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.normalized:
            x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        raw = self.model(pixel_values=x) if self.keyword_call else self.model(x)
        if self.output == "auto":
            return read_output(raw)
        return self.output(raw), None

    def forward(
        self, x: torch.Tensor, heads: Iterable[str] | None = None, rows: dict[str, slice] | None = None
    ) -> torch.Tensor | dict[str, torch.Tensor]:
        if heads is None and not self.training:
            return self.forward_heads(x, ("main",))["main"]
        if heads is None:
            heads = ("main", "deep_sup?", *(DDC_HEAD_NAMES if self.ddc else ()))
        return self.forward_heads(x, tuple(heads), rows)

    def forward_heads(self, x: torch.Tensor, heads: tuple[str, ...], rows: dict[str, slice] | None = None) -> dict[str, torch.Tensor]:
        """Logits (N, C, H, W) of ``heads``; ``rows`` restricts f_a / f_m to some images.
        ``"deep_sup?"`` asks for the auxiliary output only if the model gives one."""
        rows = rows or {}
        size, batch = x.shape[-2:], x.shape[0]
        want_ddc = [h for h in heads if h in DDC_HEAD_NAMES]
        for h in heads:
            if h not in ("main", "deep_sup", "deep_sup?") and not (h in DDC_HEAD_NAMES and self.ddc):
                have = ["main", "deep_sup (if the model gives an auxiliary output)", *(DDC_HEAD_NAMES if self.ddc else ())]
                raise KeyError(f"model has no head {h!r}; it has {', '.join(have)}")
        self._capture, self._captured = bool(want_ddc), None
        try:
            main, aux = self._call(x)
            captured = self._captured
        finally:
            self._capture, self._captured = False, None
        main = check_logits(main, batch, self.num_classes)
        out = {"main": resize(main, size)}
        if "deep_sup" in heads or ("deep_sup?" in heads and aux is not None):
            if aux is None:
                raise KeyError("model has no head 'deep_sup': its output has no auxiliary logits")
            out["deep_sup"] = resize(check_logits(aux, batch, self.num_classes, "the model's auxiliary logits"), size)
        if want_ddc:
            if captured is None:
                raise DdcatError(f"model.ddc_head '{self.ddc_head}' was not called in the model's forward")
            args, kwargs, head_out = captured
            self._verify(head_out, out["main"], batch)
            for name in want_ddc:
                r = rows.get(name, slice(None))
                n = len(range(batch)[r])
                try:
                    o = self.ddc_heads[name](*_rows(args, r, batch), **{k: _rows(v, r, batch) for k, v in kwargs.items()})
                except RuntimeError as exc:  # e.g. a head whose logits are the sum of two layers (LRASPP)
                    raise DdcatError(
                        f"the copy of model.ddc_head '{self.ddc_head}' as f_{'a' if name == 'auxiliary' else 'm'} fails "
                        f"({str(exc).strip().splitlines()[0][:120]}); ddc_head must end in the one layer that produces the logits"
                    ) from None
                k = self.num_classes if name == "auxiliary" else 2
                out[name] = resize(check_logits(o, n, k, f"the output of model.ddc_head's copy f_{'a' if name == 'auxiliary' else 'm'}"), size)
        return out

    def _verify(self, head_out: Any, main: torch.Tensor, batch: int) -> None:
        """Once: the named head's output, resized, must be the model's logits (else f_a / f_m
        would compete with something that is not f_n)."""
        if self._verified:
            return
        head_out = check_logits(head_out, batch, self.num_classes, f"the output of model.ddc_head '{self.ddc_head}'")
        resized = resize(head_out.detach().float(), main.shape[-2:])
        tol = 1e-3 if main.dtype == torch.float32 else 3e-2  # autocast: the model may resize in bf16 / fp16
        if not torch.allclose(resized, main.detach().float(), rtol=tol, atol=tol):
            raise DdcatError(
                f"model.ddc_head '{self.ddc_head}' is not the module that produces the model's logits (its output, "
                "resized to the input, differs from the model's output); name the last module before the logits"
            )
        self._verified = True


def normalization(value: Any) -> tuple[Sequence[float], Sequence[float]] | None:
    """``None``, ``"imagenet"``, ``(mean, std)`` or ``{"mean": ..., "std": ...}`` -> (mean, std) or None."""
    if value is None:
        return None
    if value == "imagenet":
        return IMAGENET
    if isinstance(value, dict) and set(value) == {"mean", "std"}:
        return value["mean"], value["std"]
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return value[0], value[1]
    raise DdcatError(f"normalize must be null, 'imagenet', (mean, std) or {{mean: [...], std: [...]}}, got {value!r}")


def adapt(
    model: nn.Module,
    *,
    normalize: Any = None,
    output: str | Callable[[Any], Any] = "auto",
    num_classes: int | None = None,
    ddc_head: str | None = None,
) -> AdaptedModel:
    """Wrap ``model`` so that it maps [0, 1] images (N, 3, H, W) to logits (N, K, H, W).

    ``normalize``: None (the model takes [0, 1] pixels), ``"imagenet"`` or ``(mean, std)``;
    ``output``: ``"auto"`` (tensor / dict with ``"out"`` / ``.logits``) or a callable taking the
    raw output and returning the logits; ``num_classes``: K, checked on every forward;
    ``ddc_head``: dotted path of the module producing the logits, for DDC-AT's f_a / f_m.
    """
    return AdaptedModel(model, normalization(normalize), output, num_classes, ddc_head)
