"""Attacks by name: what the command line, the configs and the experiments ask for.

The names, their classes and options are :mod:`ddcat.attacks.registry` (the one list); this module
keeps the factory's historical import path."""

from __future__ import annotations

from ddcat.attacks.registry import ATTACK_NAMES, build_attack

__all__ = ["ATTACK_NAMES", "build_attack"]
