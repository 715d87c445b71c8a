"""Small statistics used to tell a real difference from noise (NumPy; SciPy's t and normal
tails where degrees of freedom are few).

All comparisons here are *paired*: two models scored on the same val examples, so the
noise of which examples landed in val cancels out. Where separately trained models are
compared, the noise of which seed trained them is a second source (`SeedNoise`, `seeded_z`).
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter, defaultdict
from typing import Iterable, Optional

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


def paired_z(a_loss: np.ndarray, b_loss: np.ndarray, *, blocks: Optional[np.ndarray] = None) -> float:
    """z for "A has a lower per-example loss than B": mean(B - A) / its standard error.

    `blocks` (a block id per example) marks dependent examples, e.g. consecutive windows of one
    text: the standard error is then taken over blocks (`block_var`) and t has (blocks - 1)
    degrees of freedom, returned as the normal z with the same tail."""
    d = np.asarray(b_loss, dtype=np.float64) - np.asarray(a_loss, dtype=np.float64)
    keep = np.isfinite(d)
    d = d[keep]
    if len(d) < 2:
        return 0.0
    if blocks is None:
        var, df = float(d.var(ddof=1)) / len(d), math.inf
    else:
        var, df = block_var(d, np.asarray(blocks)[keep])
    if var <= 0 or df < 1:
        return math.inf if d.mean() > 0 else (-math.inf if d.mean() < 0 else 0.0)
    return t_as_z(float(d.mean()) / math.sqrt(var), df)


def block_var(d: np.ndarray, blocks: np.ndarray) -> tuple[float, float]:
    """(Var of mean(d), its degrees of freedom) when examples within a block are dependent and
    blocks are not: the cluster-robust (batch means) estimate over B blocks of any sizes,
    B/(B-1) * sum_k (S_k - n_k mean)^2 / N^2 on B - 1 degrees of freedom. With one example per
    block it is the usual var(d)/N."""
    d = np.asarray(d, dtype=np.float64)
    _, ids = np.unique(blocks, return_inverse=True)
    b = int(ids.max()) + 1 if len(ids) else 0
    if b < 2:
        return 0.0, 0.0
    resid = np.bincount(ids, weights=d - d.mean(), minlength=b)  # S_k - n_k * mean, per block
    return float(b / (b - 1) * (resid**2).sum() / len(d) ** 2), float(b - 1)


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
    """How much a configuration's val error moves when only the seed changes (init, data order,
    dropout masks), measured on the same val examples and pooled over configurations.

    A run's mean error moves across seeds by `between` (variance). Part of that is per-example
    noise (an example flips right/wrong with the seed, variance `within` per example, so
    `within / n` on the mean), which a paired comparison over examples already counts; the rest,
    `shift`, moves the whole run and is what a paired test cannot see."""

    between: float  # variance across seeds of a configuration's mean val error, (error units)^2
    within: float  # per-example variance around the example's and the run's means
    n: int  # val examples
    df: int  # degrees of freedom of `between`: sum over configurations of (seeds - 1)
    configurations: int  # how many configurations had two seeds or more

    @property
    def shift(self) -> float:
        return max(self.between - self.within / self.n, 0.0)

    @property
    def sd(self) -> float:
        """How far a run's mean error typically lies from another seed's (the SD across seeds)."""
        return math.sqrt(self.between)


def seed_noise(groups: Iterable[np.ndarray]) -> Optional[SeedNoise]:
    """The seed spread from groups of per-example errors, one (seeds, examples) array per
    configuration (the same val examples throughout); None when no group has two seeds."""
    ss = rs = 0.0
    df = rdf = k = 0
    n = 0
    for g in groups:
        e = np.asarray(g, dtype=np.float64)
        if e.ndim != 2 or len(e) < 2:
            continue
        seeds, n = e.shape
        means = e.mean(axis=1)
        ss += float(((means - means.mean()) ** 2).sum())
        df += seeds - 1
        resid = e - e.mean(axis=0) - (means - means.mean())[:, None]
        rs += float((resid**2).sum())
        rdf += (seeds - 1) * (n - 1)
        k += 1
    if not df or n < 2:
        return None
    return SeedNoise(between=ss / df, within=rs / rdf, n=n, df=df, configurations=k)


def seeded_z(a_err: np.ndarray, b_err: np.ndarray, noise: SeedNoise, *, blocks: Optional[np.ndarray] = None) -> float:
    """z for "A has a lower error than B" when A and B were trained separately, counting both
    noises: which examples are in val (paired over examples, on each side's seed-averaged
    errors; this includes the per-example part of the seed noise) and the shift a seed gives
    a whole run (noise.shift, averaged over each side's seeds).

    a_err, b_err: (seeds, examples) per-example errors of each side's runs. The statistic is
    t = mean(B - A) / sqrt(V_examples + V_shift) with Welch-Satterthwaite degrees of freedom (the
    shift is estimated from noise.between on noise.df degrees of freedom), returned as the
    normal z with the same tail: a spread measured on few seeds asks for a larger difference.
    `blocks` as in `paired_z`: the examples' part of the variance is taken over blocks.
    """
    a = np.atleast_2d(np.asarray(a_err, dtype=np.float64))
    b = np.atleast_2d(np.asarray(b_err, dtype=np.float64))
    d = b.mean(axis=0) - a.mean(axis=0)
    keep = np.isfinite(d)
    d = d[keep]
    if len(d) < 2:
        return 0.0
    c = 1.0 / len(a) + 1.0 / len(b)
    if blocks is None:
        v_ex, df_ex = float(d.var(ddof=1)) / len(d), float(len(d) - 1)
    else:
        v_ex, df_ex = block_var(d, np.asarray(blocks)[keep])
    v = v_ex + noise.shift * c
    if v <= 0 or df_ex < 1:
        return math.inf if d.mean() > 0 else (-math.inf if d.mean() < 0 else 0.0)
    t = float(d.mean()) / math.sqrt(v)
    # Var(shift estimate) = Var(between estimate) = 2 between^2 / df: its Satterthwaite share
    nu = v * v / (v_ex * v_ex / df_ex + (c * noise.between) ** 2 / noise.df)
    return t_as_z(t, nu)


def t_as_z(t: float, df: float) -> float:
    """The normal deviate with the same one-sided tail probability as Student's t at df."""
    from scipy import stats

    if not math.isfinite(t) or df > 1e6:
        return t
    p = float(stats.t.sf(abs(t), df))
    z = float(stats.norm.isf(p)) if p > 0 else abs(t)  # p underflows only far beyond any threshold
    return math.copysign(z, t)


def conditional_entropy(keys: list, labels: list) -> tuple[float, int]:
    """Mean over examples of H(label | key) in nats, within this sample: what no model that
    sees only the key can go below with a cross-entropy loss on these very examples (identical
    inputs, or identical contexts, followed by different labels). Also: how many keys come
    with more than one label."""
    groups: dict = defaultdict(Counter)
    for k, y in zip(keys, labels):
        groups[k][y] += 1
    total = sum(sum(c.values()) for c in groups.values())
    if not total:
        return 0.0, 0
    h = 0.0
    for c in groups.values():
        n = sum(c.values())
        h += n * -sum((v / n) * math.log(v / n) for v in c.values())
    return h / total, sum(len(c) > 1 for c in groups.values())


MIN_EXPECTED = 5.0  # Cochran's rule: a chi-square cell expects at least 5 counts


def homogeneity_p(a_counts: np.ndarray, b_counts: np.ndarray) -> tuple[float, int]:
    """p-value of "both samples come from one categorical distribution" (Pearson's 2 x C test
    of homogeneity), and the number of categories it compared.

    Both rows are estimates: a goodness-of-fit test of b against a's shares as if they were
    exact inflates X^2 by (1 + n_b/n_a) and, over hundreds of classes, warns on most random
    splits. Categories expecting fewer than 5 counts in either row are pooled into one, so the
    chi-square tail holds; p is nan when fewer than two categories remain."""
    from scipy import stats

    a, b = np.asarray(a_counts, dtype=float), np.asarray(b_counts, dtype=float)
    total, n_a, n_b = a + b, a.sum(), b.sum()
    if n_a == 0 or n_b == 0:
        return math.nan, 0
    rare = total * min(n_a, n_b) / (n_a + n_b) < MIN_EXPECTED
    table = np.stack([a[~rare], b[~rare]], axis=1)
    if rare.any():
        table = np.vstack([table, [a[rare].sum(), b[rare].sum()]])
    table = table[table.sum(axis=1) > 0]
    if len(table) < 2:
        return math.nan, len(table)
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
    if expected.min() < 1.0:  # the pooled cell itself is tiny: drop it rather than trust its tail
        table = table[expected.min(axis=1) >= 1.0]
        if len(table) < 2:
            return math.nan, len(table)
        expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
    x2 = float(((table - expected) ** 2 / expected).sum())
    return float(stats.chi2.sf(x2, len(table) - 1)), len(table)


def examples_to_settle(n: int, z: float, target: float) -> Optional[int]:
    """About how many examples would carry an observed z (> 0) on n examples to `target`, the
    effect staying as large: z grows as sqrt(n). None when z <= 0 (nothing to carry)."""
    if not (z > 0 and math.isfinite(z)):
        return None
    return int(math.ceil(n * (target / z) ** 2))


def halves(blocks: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two boolean masks splitting examples in two by whole blocks (a block id per example),
    at random but the same for a given seed: one half to select on, one to confirm on."""
    ids, inverse = np.unique(np.asarray(blocks), return_inverse=True)
    order = np.random.default_rng(seed).permutation(len(ids))
    first = np.zeros(len(ids), dtype=bool)
    first[order[: (len(ids) + 1) // 2]] = True
    return first[inverse], ~first[inverse]


def pool_noise(noises: Iterable[Optional[SeedNoise]]) -> Optional[SeedNoise]:
    """One seed spread from several measured on the same val examples (by degrees of freedom):
    e.g. tune's own fresh seeds and the spread the regularize stage measured."""
    parts = [s for s in noises if s is not None]
    if not parts:
        return None
    df = sum(s.df for s in parts)
    return SeedNoise(
        between=sum(s.between * s.df for s in parts) / df,
        within=sum(s.within * s.df for s in parts) / df,
        n=parts[0].n,
        df=df,
        configurations=sum(s.configurations for s in parts),
    )


def end_loss_se(losses: np.ndarray) -> float:
    """How precisely a run's end-of-training loss is known: the SE of the mean step loss over
    its last tenth (at least 5 steps). Two runs whose final train losses differ by less than
    a few of these are a coin flip, not a ranking."""
    v = np.asarray(losses, dtype=np.float64)
    v = v[np.isfinite(v)]
    w = max(5, len(v) // 10)
    last = v[-w:]
    return float(last.std(ddof=1) / math.sqrt(len(last))) if len(last) > 1 else 0.0
