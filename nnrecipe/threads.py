"""How many torch threads a CPU run trains with (issue 24), chosen by measuring, once per process.

torch starts with a thread per core. A small model's step is a few operators too small to
split: spread over every core, its threads mostly wait for each other, and where other
processes hold cores they wait far longer (10-50x slower was seen on a shared two-core box).
A large model's matrix products do scale with cores. Which one a model is depends on the
model and the machine, so nnrecipe measures instead of guessing: unless the user set
OMP_NUM_THREADS (a setting nnrecipe never overrides), the first training in a process times
a forward and backward of its model on one batch at 1, 2, 4, ... threads (up to the cores the
process may use), and keeps the fewest within 10 % of the fastest; a model whose step takes
over 20 ms at the most threads keeps them all, unmeasured further. The choice and its timings
are said once in the log. Thread counts change float summation order, so a rerun that must
be bit for bit the same sets OMP_NUM_THREADS.
"""

from __future__ import annotations

import copy
import os
import statistics
import time
from typing import Optional

import torch
from torch import nn
from torch.utils._pytree import tree_leaves

WITHIN = 0.10  # fewer threads win unless more are this much faster: they leave the machine cores
BUDGET_S = 0.15  # measuring time per thread count (after 2 warm-up steps), at least 3 steps
# A step this long at the most threads is arithmetic enough to split over them: keep them all
# (and measuring fewer threads, each step longer still, would cost seconds)
LARGE_S = 0.02


class _Choice:
    most = 0  # the most threads to try; 0: not choosing (the user's OMP_NUM_THREADS, or off)
    chosen: Optional[int] = None
    note = ""  # what was measured, said once by the stage log
    said = False


def enable(most: int) -> None:
    """Choose the thread count at the first training of this process, from 1 to `most`, unless
    the user's OMP_NUM_THREADS fixes it."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    _Choice.most = 0 if (env.isdigit() and int(env) > 0) else most
    _Choice.chosen, _Choice.note, _Choice.said = None, "", False


def pending() -> bool:
    """Whether this process still has a thread count to choose."""
    return _Choice.most > 1 and _Choice.chosen is None


def choose(step_s: dict[int, float], *, within: float = WITHIN) -> int:
    """The fewest threads whose step time is within `within` of the fastest."""
    best = min(step_s.values())
    return min(n for n, t in step_s.items() if t <= best * (1 + within))


def candidates(most: int) -> list[int]:
    """1, 2, 4, ... and `most` itself."""
    out, n = [], 1
    while n < most:
        out.append(n)
        n *= 2
    return out + [most]


def settle(model: nn.Module, x) -> None:
    """At the first training of the process (when enabled): time a step of a copy of `model` on
    the batch x at each candidate count and keep the choice for the rest of the process. The
    RNG is left as it was, and the run's own loss is not called (a probe may be recording the
    first batch through it): the step's backward starts from the sum of the outputs. Where the
    model fails, the threads stay as they are and training says what failed."""
    if not pending():
        return
    before = torch.get_num_threads()
    timings: dict[int, float] = {}
    try:
        with torch.random.fork_rng(devices=[]):
            probe = copy.deepcopy(model).train()
            for n in reversed(candidates(_Choice.most)):  # the most first: a large model stops there
                torch.set_num_threads(n)
                timings[n] = _step_seconds(probe, x)
                if timings[n] > LARGE_S:
                    break
    except Exception:
        torch.set_num_threads(before)
        _Choice.chosen = before
        return
    _Choice.chosen = choose(timings)
    torch.set_num_threads(_Choice.chosen)
    measured = ", ".join(f"{n}: {t * 1e3:.2f} ms" for n, t in sorted(timings.items()))
    _Choice.note = (
        f"torch threads: {_Choice.chosen} of {_Choice.most} (a forward and backward of the model at {measured}; "
        "OMP_NUM_THREADS fixes it)"
    )


def note() -> str:
    """The choice, the first time it is asked for after it was made ("" otherwise)."""
    if not _Choice.note or _Choice.said:
        return ""
    _Choice.said = True
    return _Choice.note


def _step_seconds(model: nn.Module, x) -> float:
    """Median seconds of a forward and backward of `model` on x."""

    def step() -> None:
        model.zero_grad(set_to_none=True)
        out = [t for t in tree_leaves(model(x)) if isinstance(t, torch.Tensor) and t.requires_grad]
        torch.stack([t.float().sum() for t in out]).sum().backward()

    for _ in range(2):
        step()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < 3 or (time.perf_counter() - start < BUDGET_S and len(times) < 50):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return statistics.median(times)
