"""Numbers and ranges as users write them on the command line and in experiment files:
``4/255``, ``0.03``, ``1-7``, ``1,3,7``. Mistakes are :class:`DdcatError` naming the option."""

from __future__ import annotations

import math
import numbers

from ddcat.errors import DdcatError


def parse_fraction(value: object, name: str = "--eps", positive: bool = False) -> float:
    """``'4/255'`` -> 4/255, ``'0.03'`` or ``0.03`` -> 0.03; finite and >= 0 (``positive``: > 0).
    Errors name ``name`` (the flag or key the value came from)."""
    if isinstance(value, bool):
        raise DdcatError(f"{name} expects a number like 0.03 or 4/255, got {value!r}")
    if isinstance(value, numbers.Real):
        result = float(value)
    else:
        text = str(value).strip()
        try:
            if "/" in text:
                num, den = text.split("/", 1)
                result = float(num) / float(den)
            else:
                result = float(text)
        except (ValueError, ZeroDivisionError):
            raise DdcatError(f"{name} expects a number like 0.03 or 4/255, got '{value}'") from None
    if not math.isfinite(result) or result < 0 or (positive and result == 0):
        raise DdcatError(f"{name} must be a finite number {'> 0' if positive else '>= 0'}, got '{value}'")
    return result


MAX_STEPS = 10000  # the bound of config key attack.steps


def parse_steps(text: object) -> list[int]:
    """``'1-7'`` -> [1..7]; ``'1,3,7'`` -> [1, 3, 7]; sorted, without repeats."""
    try:
        steps: list[int] = []
        for part in str(text).split(","):
            if "-" in part:
                lo, hi = part.split("-", 1)
                if int(hi) > MAX_STEPS:  # before the range is built (1-99999999999 is a MemoryError)
                    raise DdcatError(f"--steps allows at most {MAX_STEPS} steps per attack, got '{text}'")
                steps.extend(range(int(lo), int(hi) + 1))
            elif part.strip():
                steps.append(int(part))
    except ValueError:
        raise DdcatError(f"--steps expects a range like 1-7 or a list like 1,3,7, got '{text}'") from None
    if steps and max(steps) > MAX_STEPS:
        raise DdcatError(f"--steps allows at most {MAX_STEPS} steps per attack, got '{text}'")
    if not steps or any(s < 0 for s in steps):
        raise DdcatError(f"--steps must name non-negative step counts, got '{text}'")
    return sorted(set(steps))


def parse_shard(text: str, name: str = "--shard") -> tuple[int, int]:
    """``'2/8'`` -> (2, 8): shard I of N, 0 <= I < N (a SLURM array task id and count)."""
    try:
        index, count = (int(v) for v in str(text).split("/"))
    except ValueError:
        raise DdcatError(f"{name} expects I/N with integers 0 <= I < N, e.g. 0/4, got '{text}'") from None
    if count < 1 or not 0 <= index < count:
        raise DdcatError(f"{name} expects I/N with 0 <= I < N, got '{text}'")
    return index, count
