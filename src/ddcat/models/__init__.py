"""Segmentation models: own ResNet trunks, PSPNet / DeepLabv3 heads, DDC-AT branches; adapters for any other network."""

from ddcat.models.adapter import AdaptedModel, adapt
from ddcat.models.segmenter import DDC_EXTRA_HEADS, Segmenter, build_model

__all__ = ["DDC_EXTRA_HEADS", "AdaptedModel", "Segmenter", "adapt", "build_model"]
