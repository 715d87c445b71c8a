"""Small statistics used to tell a real difference from noise. Plain NumPy, no SciPy.

All comparisons here are *paired*: two models scored on the same val examples, so the
noise of which examples landed in val cancels out.
"""

from __future__ import annotations

import math

import numpy as np


def mcnemar_z(a_correct: np.ndarray, b_correct: np.ndarray) -> tuple[float, int, int]:
    """z for "A is more accurate than B" on the same examples (McNemar, normal form).

    Only discordant examples carry information: b = A right & B wrong, c = A wrong & B right;
    under "no difference" b ~ Binomial(b + c, 1/2), so z = (b - c) / sqrt(b + c).
    """
    a = np.asarray(a_correct, dtype=bool)
    b_ = np.asarray(b_correct, dtype=bool)
    b = int((a & ~b_).sum())
    c = int((~a & b_).sum())
    if b + c == 0:
        return 0.0, b, c
    return (b - c) / math.sqrt(b + c), b, c


def paired_z(a_loss: np.ndarray, b_loss: np.ndarray) -> float:
    """z for "A has a lower per-example loss than B": mean(B - A) / its standard error."""
    d = np.asarray(b_loss, dtype=np.float64) - np.asarray(a_loss, dtype=np.float64)
    d = d[np.isfinite(d)]
    if len(d) < 2:
        return 0.0
    se = d.std(ddof=1) / math.sqrt(len(d))
    if se == 0:
        return math.inf if d.mean() > 0 else (-math.inf if d.mean() < 0 else 0.0)
    return float(d.mean() / se)


def mean_se(values: np.ndarray) -> tuple[float, float]:
    """Mean and its standard error."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return math.nan, math.nan
    return float(v.mean()), float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else 0.0


def accuracy_ci95(p: float, n: int) -> float:
    """Half-width of the normal 95% interval of an accuracy p measured on n examples."""
    return 1.96 * math.sqrt(max(p * (1 - p), 1.0 / max(n, 1)) / max(n, 1))


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion k/n (sensible at k = 0 and for small n)."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)
