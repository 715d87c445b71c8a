"""Small statistics used to tell a real difference from noise (NumPy; SciPy's t and normal
tails where degrees of freedom are few).

All comparisons here are *paired*: two models scored on the same val examples, so the
noise of which examples landed in val cancels out. Where separately trained models are
compared, the noise of which seed trained them is a second source (`SeedNoise`, `seeded_z`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Iterable, Sequence

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


@dataclasses.dataclass(frozen=True)
class SeedNoise:
    """How much a configuration's mean val error moves when only the seed changes (init, data
    order, dropout masks), measured on the same val examples: the pooled variance across
    seeds of each configuration's per-run mean error, with its degrees of freedom."""

    var: float  # (error units)^2: 1 - accuracy, squared error, or nats per token
    df: int  # sum over configurations of (seeds - 1)
    configurations: int  # how many configurations had two seeds or more

    @property
    def sd(self) -> float:
        return math.sqrt(self.var)


def seed_noise(groups: Iterable[Sequence[float]]) -> SeedNoise | None:
    """Pooled between-seed variance from groups of per-seed mean errors (one group per
    configuration); None when no configuration has two seeds."""
    ss, df, k = 0.0, 0, 0
    for g in groups:
        v = np.asarray(g, dtype=np.float64)
        v = v[np.isfinite(v)]
        if len(v) >= 2:
            ss += float(((v - v.mean()) ** 2).sum())
            df += len(v) - 1
            k += 1
    return SeedNoise(ss / df, df, k) if df else None


def seeded_z(a_err: np.ndarray, b_err: np.ndarray, noise: SeedNoise) -> float:
    """z for "A has a lower error than B" when A and B were trained separately, counting both
    noises: which examples are in val (paired over examples, on each side's seed-averaged
    errors) and which seeds trained them (noise.var per run, averaged over each side's seeds).

    a_err, b_err: (seeds, examples) per-example errors of each side's runs. The statistic is
    t = mean(B - A) / sqrt(V_examples + V_seeds) with Welch-Satterthwaite degrees of freedom;
    it is returned as the normal z with the same tail probability, so a seed spread measured
    with few seeds asks for a larger difference (t with 2 df needs ~19 where z needs 3).
    """
    a = np.atleast_2d(np.asarray(a_err, dtype=np.float64))
    b = np.atleast_2d(np.asarray(b_err, dtype=np.float64))
    d = b.mean(axis=0) - a.mean(axis=0)
    d = d[np.isfinite(d)]
    if len(d) < 2:
        return 0.0
    v_ex = float(d.var(ddof=1)) / len(d)
    v_seed = noise.var * (1.0 / len(a) + 1.0 / len(b))
    v = v_ex + v_seed
    if v == 0:
        return math.inf if d.mean() > 0 else (-math.inf if d.mean() < 0 else 0.0)
    t = float(d.mean()) / math.sqrt(v)
    nu = v * v / (v_ex * v_ex / (len(d) - 1) + (v_seed * v_seed / noise.df if noise.df else 0.0))
    return t_as_z(t, nu)


def t_as_z(t: float, df: float) -> float:
    """The normal deviate with the same one-sided tail probability as Student's t at df."""
    from scipy import stats

    if not math.isfinite(t) or df > 1e6:
        return t
    p = float(stats.t.sf(abs(t), df))
    z = float(stats.norm.isf(p)) if p > 0 else abs(t)  # p underflows only far beyond any threshold
    return math.copysign(z, t)
