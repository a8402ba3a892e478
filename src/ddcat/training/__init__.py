"""Training methods (clean, SAT, DDC-AT and its ablations) sharing one loop."""

from ddcat.training.loop import METHODS, build_method, optimizer_for, train

__all__ = ["METHODS", "build_method", "optimizer_for", "train"]
