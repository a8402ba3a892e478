"""ddcat: Dynamic Divide-and-Conquer Adversarial Training for robust semantic segmentation."""

__version__ = "0.1.0"
