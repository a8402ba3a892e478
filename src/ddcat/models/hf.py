"""A ``model.factory`` for Hugging Face transformers segmentation models (extra: ``ddcat[hf]``).

    model:
      factory: ddcat.models.hf:from_config
      kwargs:
        architecture: SegformerForSemanticSegmentation
        config: {num_labels: 19, hidden_sizes: [32, 64, 160, 256], ...}   # random weights, offline
        # or: pretrained: /path/to/a/local/snapshot                         # from_pretrained, offline
      normalize: imagenet
      ddc_head: decode_head.classifier
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ddcat.errors import DdcatError


def from_config(architecture: str, config: dict[str, Any] | None = None, pretrained: str | None = None) -> nn.Module:
    """``transformers.<architecture>`` built from ``config`` (a dict of its config class's
    arguments; random weights) or loaded with ``from_pretrained(pretrained, **config)`` from a local folder."""
    try:
        import transformers
    except ImportError:
        raise DdcatError("ddcat.models.hf:from_config needs transformers (pip install 'ddcat[hf]')") from None
    cls = getattr(transformers, str(architecture), None)
    if not isinstance(cls, type) or not issubclass(cls, nn.Module):
        raise DdcatError(f"model.kwargs.architecture '{architecture}' is not a transformers model class")
    if pretrained:
        return cls.from_pretrained(pretrained, local_files_only=True, **(config or {}))
    return cls(cls.config_class(**(config or {})))
