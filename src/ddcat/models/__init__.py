"""Segmentation models: own ResNet trunks, PSPNet / DeepLabv3 heads, DDC-AT branches."""

from ddcat.models.segmenter import DDC_HEADS, Segmenter, build_model

__all__ = ["DDC_HEADS", "Segmenter", "build_model"]
