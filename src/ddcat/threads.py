"""How many CPU threads a ddcat process uses, chosen so that several processes share one machine.

Why this exists: torch's CPU build runs its intra-op work on a GNU OpenMP pool with as many threads
as there are cores, and libgomp's default wait policy makes an idle pool thread spin on its core
for a while before it sleeps. Two such processes on two cores each keep two spinning threads: every
parallel region waits for a thread the OS has handed to the other process's spinners. Measured with
``benchmarks/bench_concurrency.py`` (docs/performance.md): two clean trainings of the demo config
at once were 17-18x slower per iteration than one alone; with ``OMP_WAIT_POLICY=PASSIVE`` 1.7x,
with one thread each 1.0x.

So every command (``ddcat ... --threads N``, or ``DDCAT_THREADS``) sets, before torch is imported:

* ``OMP_WAIT_POLICY=PASSIVE`` unless the environment already names a policy (idle threads sleep);
* ``OMP_NUM_THREADS`` / torch's intra-op threads to N, by default the cores this process may run
  on (its CPU affinity) divided by the local ranks of a ``torchrun`` job (``LOCAL_WORLD_SIZE``).

The chosen count is recorded in every ``run.json`` (``threads``).
"""

from __future__ import annotations

import os

from ddcat.errors import DdcatError, show

ENV_THREADS = "DDCAT_THREADS"


def available_cores() -> int:
    """The cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def default_threads(cores: int, local_ranks: int) -> int:
    """The cores shared evenly among the local ranks of one job, at least one thread each."""
    return max(1, cores // max(1, local_ranks))


def parse_threads(value: object, where: str) -> int:
    """A thread count from the command line or the environment: an integer >= 1."""
    text = str(value).strip()
    if not text.isdigit() or int(text) < 1:
        raise DdcatError(f"{where} must be an integer >= 1, got {show(value)}")
    return int(text)


def choose_threads(requested: int | None, environ: dict[str, str] | None = None) -> int:
    """``requested`` (``--threads``), else ``DDCAT_THREADS``, else :func:`default_threads`."""
    env = os.environ if environ is None else environ
    if requested is not None:
        return parse_threads(requested, "--threads")
    if env.get(ENV_THREADS, "").strip():
        return parse_threads(env[ENV_THREADS], ENV_THREADS)
    local = env.get("LOCAL_WORLD_SIZE", "1").strip()
    return default_threads(available_cores(), int(local) if local.isdigit() else 1)


def configure_threads(requested: int | None = None) -> int:
    """Set the wait policy and the thread count for this process; returns the count.

    Call before torch is first imported for the wait policy and ``OMP_NUM_THREADS`` to reach the
    OpenMP runtime (it reads them when it loads); the torch thread count is set either way."""
    threads = choose_threads(requested)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)
    return threads
