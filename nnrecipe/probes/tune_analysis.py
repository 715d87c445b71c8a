"""What a finished study says: its trials, how well they cover the space, which parameters
matter. Measurements only; the rules that judge them are in checks/tune_checks.py."""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any, Optional

import numpy as np

from nnrecipe.probes.tune_space import distribution, unit

MIN_TRIALS_FOR_IMPORTANCE = 5  # fewer complete trials cannot separate a parameter's effect from noise


@dataclasses.dataclass
class TrialRecord:
    number: int
    state: str  # "complete" | "pruned"
    value: Optional[float]  # the objective: val accuracy or R^2 (pruned: its last reported value)
    params: dict[str, Any]
    steps: Optional[int] = None  # steps trained (pruned: the step it was stopped at)
    diverged: bool = False
    val_loss: Optional[float] = None
    train_metric: Optional[float] = None
    seconds: Optional[float] = None  # from its start to its end: its round's, for a round of several
    round_of: int = 1  # the trials asked and trained with it (as one, where they could: tune_study.Rounds)
    worker: str = ""
    retry_of: Optional[int] = None  # the trial (killed or stale) this one re-runs
    ran: Optional[dict] = None  # ledger.Ran's fields and the run's id, as its worker stamped them
    intermediate: dict[int, float] = dataclasses.field(default_factory=dict)  # step -> val metric


def records(study) -> list[TrialRecord]:
    """The finished trials (complete or pruned) in trial order; surplus and failed ones aside."""
    from optuna.trial import TrialState

    out = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        inter = {int(k): float(v) for k, v in t.intermediate_values.items()}
        value = t.value if t.state == TrialState.COMPLETE else (inter[max(inter)] if inter else None)
        a = t.user_attrs
        out.append(
            TrialRecord(
                number=t.number,
                state="complete" if t.state == TrialState.COMPLETE else "pruned",
                value=value,
                params=dict(t.params),
                steps=a.get("steps", max(inter) if inter else None),
                diverged=bool(a.get("diverged", False)),
                val_loss=a.get("val_loss"),
                train_metric=a.get("train_metric"),
                seconds=(t.datetime_complete - t.datetime_start).total_seconds()
                if t.datetime_complete and t.datetime_start
                else None,
                round_of=int(a.get("round_of", 1)),
                worker=a.get("worker", ""),
                retry_of=t.system_attrs.get("failed_trial"),
                ran=a.get("ran"),
                intermediate=inter,
            )
        )
    return out


# ----------------------------------------------------------------------------- coverage


def max_spacing_tail(n: int, x: float) -> float:
    """P(the largest of the n+1 gaps between n uniform points on [0, 1] exceeds x): the exact
    alternating sum (e.g. David & Nagaraja, Order Statistics), a Gumbel limit for large n."""
    if x <= 0:
        return 1.0
    if x >= 1:
        return 0.0
    if n > 150:
        return float(-np.expm1(-(n + 1) * math.exp(-(n + 1) * x)))
    total = 0.0
    for j in range(1, n + 2):
        base = 1.0 - j * x
        if base <= 0:
            break
        total += (-1) ** (j + 1) * math.comb(n + 1, j) * base**n
    return min(max(total, 0.0), 1.0)


def critical_gap(n: int, p: float) -> float:
    """The gap random sampling leaves with probability p: P(max gap > it) = p."""
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if max_spacing_tail(n, mid) > p else (lo, mid)
    return hi


NULL_DRAWS = 4000  # Monte Carlo studies of an integer dimension's null (p resolution 2.5e-4)


def int_draws(dim, shape, rng: np.random.Generator) -> np.ndarray:
    """Integers as Optuna's random sampler draws them (optuna/_transform.py): uniform on
    [low - 0.5, high + 0.5], uniform in its log for log_int, then rounded."""
    low, high = getattr(dim, dim.kind)
    a, b = low - 0.5, high + 0.5
    x = np.exp(rng.uniform(math.log(a), math.log(b), shape)) if dim.kind == "log_int" else rng.uniform(a, b, shape)
    return np.clip(np.round(x), low, high)


def max_gaps(units: np.ndarray) -> np.ndarray:
    """Per row of positions in [0, 1]: the largest gap between them, the edges included."""
    s = np.sort(units, axis=-1)
    edges = np.concatenate([np.zeros(s.shape[:-1] + (1,)), s, np.ones(s.shape[:-1] + (1,))], axis=-1)
    return np.diff(edges, axis=-1).max(axis=-1)


def discrete_critical_gap(dim, n: int, p: float) -> float:
    """The gap that n random draws of an integer dimension exceed with probability <= p.

    An integer range of k values always leaves gaps of at least 1/(k - 1): the continuous
    null would call 20 trials on `int: [1, 4]` a hole every time. Simulated (seeded, so a
    study is judged the same way every time) with the sampler's own draws."""
    if n == 0:
        return 1.0
    rng = np.random.default_rng(n)
    # unit() is annotated float; of an array it returns an array (asarray: no copy)
    units = np.asarray(unit(dim, int_draws(dim, (NULL_DRAWS, n), rng)))
    return float(np.quantile(max_gaps(units), 1.0 - p, method="higher"))


def untried_p(k: int, untried: int, n: int) -> float:
    """Upper bound on P(random sampling of n trials leaves `untried` given choices of k all
    untried): C(k, m) (1 - m/k)^n (union bound; for m = 1, k (1 - 1/k)^n)."""
    if untried <= 0:
        return 1.0
    return min(1.0, math.comb(k, untried) * (1.0 - untried / k) ** n)


@dataclasses.dataclass
class DimCoverage:
    path: str
    kind: str
    n: int  # usable trials (finished, not diverged)
    max_gap: Optional[float] = (
        None  # numeric: the largest stretch without a usable trial, in [0, 1] of the sampled scale
    )
    gap_range: Optional[tuple[Any, Any]] = None  # that stretch in the parameter's own units
    critical_gap: Optional[float] = None  # what random sampling leaves with probability coverage_p
    untried: list = dataclasses.field(default_factory=list)  # choice: values no usable trial had
    untried_p: float = 1.0  # choice: how likely random sampling leaves that many untried (untried_p())
    diverged_values: list = dataclasses.field(default_factory=list)  # values of trials that diverged
    best_value: Any = None
    best_position: Optional[float] = None  # the best trial's value in [0, 1] of the sampled scale


def _from_unit(dim, u: float):
    kind = dim.kind
    low, high = getattr(dim, kind)
    v = (
        math.exp(math.log(low) + u * (math.log(high) - math.log(low)))
        if kind.startswith("log")
        else low + u * (high - low)
    )
    return round(v) if kind in ("int", "log_int") else float(f"{v:.4g}")


def coverage(
    space: dict, recs: list[TrialRecord], *, p: float, random_until: Optional[int] = None
) -> list[DimCoverage]:
    """Per dimension: the largest gap between usable trials (edges included) against the gap
    random sampling of as many trials leaves with probability p; choices never tried.
    `random_until` (TPE) limits the gap test to the trials sampled at random (by number)."""
    usable = [r for r in recs if not r.diverged and r.value is not None]
    best = max(
        (r for r in recs if r.state == "complete" and not r.diverged), key=lambda r: (r.value, -r.number), default=None
    )
    out = []
    for path, dim in space.items():
        c = DimCoverage(path, dim.kind, len(usable))
        c.diverged_values = [r.params[path] for r in recs if r.diverged and path in r.params]
        if best is not None and path in best.params:
            c.best_value, c.best_position = best.params[path], unit(dim, best.params[path])
        if dim.kind == "choice":
            tried = {repr(r.params.get(path)) for r in usable}
            c.untried = [v for v in dim.choice if repr(v) not in tried]
            c.untried_p = untried_p(len(dim.choice), len(c.untried), len(usable))
        else:
            pool = [r for r in usable if random_until is None or r.number < random_until]
            us = sorted(unit(dim, r.params[path]) for r in pool if path in r.params)
            edges = [0.0] + us + [1.0]
            gaps = [(b - a, a, b) for a, b in zip(edges, edges[1:])]
            g, a, b = max(gaps)
            c.n = len(us)
            c.max_gap, c.gap_range = g, (_from_unit(dim, a), _from_unit(dim, b))
            discrete = dim.kind in ("int", "log_int")
            c.critical_gap = discrete_critical_gap(dim, len(us), p) if discrete else critical_gap(len(us), p)
        out.append(c)
    return out


# ----------------------------------------------------------------------------- importance


@dataclasses.dataclass
class Importance:
    share: dict[str, float]  # Optuna's fANOVA importance, normalised to sum to 1 (which mattered most)
    explained: dict[str, float]  # leave-one-out R^2 of the val metric from this parameter alone
    p: dict[str, float]  # permutation p-value of `explained` (family-wise: against the null's maximum over parameters)
    permutations: int
    n: int  # complete trials used


def _fanova_share(space: dict, recs: list[TrialRecord], values, seed: int) -> dict[str, float]:
    import optuna
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances

    dists = {path: distribution(dim) for path, dim in space.items()}
    study = optuna.create_study(direction="maximize")
    study.add_trials(
        [
            optuna.trial.create_trial(params={k: r.params[k] for k in dists}, distributions=dists, value=float(v))
            for r, v in zip(recs, values)
        ]
    )
    imp = get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=seed))
    return {k: float(imp.get(k, 0.0)) for k in dists}


def loo_explained(x: np.ndarray, y: np.ndarray, *, categorical: bool, k: int) -> np.ndarray:
    """Leave-one-out R^2 of y predicted from x alone, for each column of y (permutations):
    the mean of the k nearest other trials in x (a choice: the other trials with the same
    choice). A U-shaped effect (a learning rate) counts as much as a monotone one."""
    n = len(x)
    if categorical:
        same = (x[:, None] == x[None, :]) & ~np.eye(n, dtype=bool)
        weights = same.astype(np.float64)
        lonely = weights.sum(axis=1) == 0
        weights[lonely] = (~np.eye(n, dtype=bool))[lonely]  # no other trial with this choice: the others' mean
    else:
        d = np.abs(x[:, None] - x[None, :]) + np.where(np.eye(n, dtype=bool), np.inf, 0.0)
        order = np.argsort(d, axis=1, kind="stable")[:, :k]
        weights = np.zeros((n, n))
        np.put_along_axis(weights, order, 1.0, axis=1)
    weights /= weights.sum(axis=1, keepdims=True)
    pred = weights @ y
    sst = ((y - y.mean(axis=0)) ** 2).sum(axis=0)
    return 1.0 - ((y - pred) ** 2).sum(axis=0) / np.where(sst > 0, sst, np.inf)


def importance(space: dict, recs: list[TrialRecord], *, permutations: int, seed: int) -> Optional[Importance]:
    """Which dimensions explain the val metric over the complete trials: Optuna's fANOVA
    importance (shares), and a permutation test of each dimension's leave-one-out R^2 with
    the metric shuffled across trials (the maximum over dimensions: family-wise)."""
    complete = [r for r in recs if r.state == "complete" and r.value is not None and all(k in r.params for k in space)]
    varying = {k: d for k, d in space.items() if len({repr(r.params[k]) for r in complete}) > 1}
    if len(complete) < MIN_TRIALS_FOR_IMPORTANCE or not varying:
        return None
    values = np.array([r.value for r in complete], dtype=np.float64)
    if np.ptp(values) == 0:  # every trial scored the same: nothing to explain
        return Importance(
            {k: 1.0 / len(varying) for k in varying},
            {k: 0.0 for k in varying},
            {k: 1.0 for k in varying},
            0,
            len(complete),
        )
    rng = np.random.default_rng(seed)
    y = np.column_stack([values] + [rng.permutation(values) for _ in range(permutations)])
    k = max(2, len(complete) // 5)
    explained = {}
    for path, dim in varying.items():
        if dim.kind == "choice":
            x = np.array([dim.choice.index(r.params[path]) for r in complete], dtype=np.float64)
        else:
            x = np.array([unit(dim, r.params[path]) for r in complete])
        explained[path] = loo_explained(x, y, categorical=dim.kind == "choice", k=k)
    null_max = np.max(np.stack([e[1:] for e in explained.values()]), axis=0)
    p = {path: float((1 + np.sum(null_max >= e[0])) / (1 + permutations)) for path, e in explained.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        share = _fanova_share(varying, complete, values, seed)
    return Importance(share, {path: float(e[0]) for path, e in explained.items()}, p, permutations, len(complete))
