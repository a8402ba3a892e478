"""Evaluation: inference paths, the one-pass evaluation engine, and the paper's protocol."""

from ddcat.evaluation.engine import Setting, evaluate
from ddcat.evaluation.inference import SlidingWindow

__all__ = ["Setting", "SlidingWindow", "evaluate"]
