"""Evaluation: inference paths, the attack settings, the one-pass evaluation engine, and the one
entry point (:func:`evaluate_checkpoint` / :func:`evaluate_model`) that ``ddcat eval`` and
``ddcat experiment`` share. Returns records; formatting them is the reporting layer's job."""

from ddcat.evaluation.engine import Setting, evaluate
from ddcat.evaluation.inference import SlidingWindow
from ddcat.evaluation.run import EvalResult, evaluate_checkpoint, evaluate_model, load_inference_model
from ddcat.evaluation.settings import AttackPlan, attack_settings

__all__ = [
    "AttackPlan",
    "EvalResult",
    "Setting",
    "SlidingWindow",
    "attack_settings",
    "evaluate",
    "evaluate_checkpoint",
    "evaluate_model",
    "load_inference_model",
]
