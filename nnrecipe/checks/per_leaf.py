"""Rules about one input tensor, applied to each leaf of structured inputs.

shapes-dtypes, input-scale and outliers judge one tensor: its shape, its scale, its extreme
examples. A dict or tuple of tensors (nnrecipe/inputs.py) gets the rule once per leaf, on that
leaf's measurements, and one verdict: the worst leaf's status, every leaf's observation, and
the message of each leaf at that status, named.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from nnrecipe.verdict import Status, Verdict

SEVERITY = {Status.SKIP: 0, Status.PASS: 1, Status.WARN: 2, Status.FAIL: 3}


def per_leaf(check: Callable, views: dict, cfg) -> Verdict:
    """check(measurements, cfg) on each leaf's measurements (views: leaf name -> them)."""
    verdicts = {leaf: check(m, cfg) for leaf, m in views.items()}
    return combine(verdicts)


def combine(verdicts: dict[str, Verdict]) -> Verdict:
    worst = max(verdicts.values(), key=lambda v: SEVERITY[v.status])
    named = {leaf: v for leaf, v in verdicts.items() if v.status == worst.status}
    return dataclasses.replace(
        worst,
        observed={leaf: v.observed for leaf, v in verdicts.items()},
        expected=worst.expected,
        message="; ".join(f"{leaf}: {v.message}" for leaf, v in named.items()),
        hint=next((v.hint for v in named.values() if v.hint), ""),
    )
