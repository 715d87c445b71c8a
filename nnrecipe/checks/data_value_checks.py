"""What the trained model says about the data (regularize stage): rules on measurements.

- suspected-label-errors: the share of training labels that out-of-fold models find very
  unlikely (confident learning), against `label_errors.max_rate` beyond binomial noise.
- data-scaling: the reference model's val metric on nested subsets of the training set; the
  last step's gain (the whole set vs. the largest subset), paired over val, says "still
  rising" or "plateau".
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional

import numpy as np

from nnrecipe.checks.regularize_checks import compare, seed_spread
from nnrecipe.experiments import SeedRuns
from nnrecipe.probes.label_errors import LabelErrors
from nnrecipe.spec_stages import RegularizeSpec
from nnrecipe.stats import wilson_interval
from nnrecipe.tasks import Task
from nnrecipe.verdict import Status, Verdict

STAGE = "regularize"
RISING, PLATEAU, FALLING = "rising", "plateau", "falling"


@dataclasses.dataclass
class LabelErrorMeasurements:
    errors: Optional[LabelErrors] = None
    skip: str = ""


def suspected_label_errors(m: LabelErrorMeasurements, cfg: RegularizeSpec) -> Verdict:
    c = cfg.label_errors
    check = "suspected-label-errors"
    expected = f"suspects <= {c.max_rate:.1%} of train (warn when the 95% interval lies above)"
    if m.errors is None:
        return Verdict(STAGE, check, Status.SKIP, expected=expected, message=m.skip or "not measured")
    e = m.errors
    if e.diverged_folds == e.folds:
        return Verdict(
            STAGE,
            check,
            Status.WARN,
            observed={"folds": e.folds, "diverged_folds": e.diverged_folds},
            expected=expected,
            message=f"all {e.folds} fold models diverged: no out-of-fold predictions",
            hint="make the reference train first (the overfit stage's checks say how)",
        )
    k, n = e.confirmed, e.n
    lo, hi = wilson_interval(k, n)
    observed = {
        "suspects": k,  # by both of confident learning's rules (the CSV lists the noise-rate rule's)
        "listed": len(e.ranked),
        "train_examples": n,
        "rate": round(k / n, 5),
        "rate_ci95": [round(lo, 5), round(hi, 5)],
        "folds": e.folds,
        "out_of_fold_accuracy": round(e.oof_accuracy, 4),
        "temperature": round(e.temperature, 3),  # the probabilities' calibration: well above 1, overconfident folds
        "diverged_folds": e.diverged_folds,
        "unjudged_examples": len(e.labels) - n,
    }  # in diverged folds: no prediction, not counted
    top = e.rows()[:3]
    examples = ", ".join(
        f"#{r['train_index']} given {r['given']} (p {r['p_given']:.2f}) looks like {r['suggested']}" for r in top
    )
    if lo > c.max_rate:
        return Verdict(
            STAGE,
            check,
            Status.WARN,
            observed=observed,
            expected=expected,
            message=f"{k} of {n} training labels ({k / n:.1%}, 95% CI {lo:.1%}-{hi:.1%}) look wrong to "
            f"models that never saw them, by both of confident learning's rules (out-of-fold accuracy "
            f"{e.oof_accuracy:.1%}); worst: {examples}",
            hint="look at suspected_label_errors.png and .csv; relabel or drop the confirmed ones "
            "(noisy labels cap accuracy and teach the model the noise). Where out-of-fold accuracy "
            "is low, examples that are merely hard are flagged too",
        )
    msg = f"{k} of {n} training labels ({k / n:.1%}) suspected by both of confident learning's rules"
    return Verdict(
        STAGE,
        check,
        Status.PASS,
        observed=observed,
        expected=expected,
        message=msg + (f"; worst: {examples}" if top else ""),
        hint=f"suspected_label_errors.csv lists {len(e.ranked)} (by the noise-rate rule): ambiguous examples "
        "end up there too"
        if len(e.ranked)
        else "",
    )


@dataclasses.dataclass
class ScalingPoint:
    fraction: float  # of the training set
    examples: int
    result: SeedRuns  # its runs (the reference's seeds)


@dataclasses.dataclass
class ScalingMeasurements:
    task: Task
    n_val: int
    points: list[ScalingPoint] = dataclasses.field(default_factory=list)  # ascending; the last is the whole set
    skip: str = ""


def power_law(examples: list[int], metrics: list[float]) -> tuple[float, float]:
    """(a, b) of error = a * examples^-b, error = 1 - metric (accuracy or R^2), fitted on log-log:
    learning curves are close to power laws (Hestness et al. 2017), and the fit never predicts
    a metric above 1."""
    x = np.log(np.asarray(examples, dtype=float))
    err = np.log(np.clip(1.0 - np.asarray(metrics, dtype=float), 1e-4, None))
    if len(x) < 2 or np.ptp(x) == 0:
        return math.nan, math.nan
    slope, icpt = np.polyfit(x, err, 1)
    return float(math.exp(icpt)), float(-slope)


def next_doubling_gain(examples: list[int], metrics: list[float]) -> float:
    """The metric gained by doubling the data once more, from how the gain per doubling shrank.

    For error = floor + a n^-b, whatever the floor, the gain per doubling shrinks by 2^-b from
    one doubling to the next: the next is the last one's times that ratio (measured between the
    last two steps, in [0, 1]). A power law fitted without the floor overstated it ~1.5x (issue
    25). With one step only: that step's gain per doubling, an upper bound."""
    x = np.log2(np.asarray(examples, dtype=float))
    m = np.asarray(metrics, dtype=float)
    if len(x) < 2 or np.ptp(x) == 0:
        return math.nan
    rate = np.diff(m) / np.diff(x)  # gain per doubling of each step, at its midpoint
    mid = (x[1:] + x[:-1]) / 2
    if rate[-1] <= 0:
        return 0.0
    shrink = 1.0  # per doubling
    if len(rate) >= 2 and rate[-2] > 0:
        shrink = min(1.0, float(rate[-1] / rate[-2])) ** (1.0 / (mid[-1] - mid[-2]))
    return float(rate[-1] * shrink ** (x[-1] + 0.5 - mid[-1]))


def trend(m: ScalingMeasurements, cfg: RegularizeSpec) -> tuple[str, float]:
    """(rising | plateau | falling, z of the last step's gain): the whole set vs. the largest
    subset; with the seed spread between runs counted once the points have two seeds each."""
    noise = seed_spread(m.task, [p.result for p in m.points])
    z, _ = compare(m.task, m.points[-2].result, m.points[-1].result, noise)
    if z >= cfg.significance_z:
        return RISING, z
    if z <= -cfg.significance_z:
        return FALLING, z
    return PLATEAU, z


def measured_trend(m: ScalingMeasurements, cfg: RegularizeSpec) -> Optional[str]:
    """trend()'s kind where the curve was measured (two sizes or more, none diverged), else None."""
    if m.skip or len(m.points) < 2 or any(r.diverged for p in m.points for r in p.result.runs):
        return None
    return trend(m, cfg)[0]


def data_scaling(m: ScalingMeasurements, cfg: RegularizeSpec) -> Verdict:
    check = "data-scaling"
    metric = m.task.metric
    expected = f"the val {metric} does not fall with more data (paired z > -{cfg.significance_z:g})"
    if m.skip or len(m.points) < 2:
        return Verdict(
            STAGE, check, Status.SKIP, expected=expected, message=m.skip or "fewer than two training-set sizes"
        )
    if any(r.diverged for p in m.points for r in p.result.runs):
        bad = [f"{p.fraction:.0%}" for p in m.points if any(r.diverged for r in p.result.runs)]
        return Verdict(
            STAGE,
            check,
            Status.WARN,
            observed={"diverged": bad},
            expected=expected,
            message=f"training diverged on {', '.join(bad)} of the training set: no learning curve",
            hint="make the reference train stably first",
        )
    metrics = [float(np.mean([r.val_metric for r in p.result.runs])) for p in m.points]
    train = [float(np.mean([r.train_metric for r in p.result.runs])) for p in m.points]
    examples = [p.examples for p in m.points]
    kind, z = trend(m, cfg)
    slope = next_doubling_gain(examples, metrics)
    gain = metrics[-1] - metrics[-2]
    observed = {
        "examples": examples,
        f"val_{metric}": [round(v, 5) for v in metrics],
        f"train_{metric}": [round(v, 5) for v in train],
        "last_step_gain": round(gain, 5),
        "z": round(z, 2) if math.isfinite(z) else z,
        "predicted_gain_at_2x": round(slope, 5),
        "seeds": len(m.points[-1].result.runs),
        "trend": kind,
    }
    span = f"from {examples[-2]} to {examples[-1]} examples"
    if m.task.score_is_loss:  # z is computed on the per-window cross-entropy: show it
        losses = [float(np.mean([r.val_loss for r in p.result.runs])) for p in m.points[-2:]]
        span += f" (val loss {losses[0]:.4f} -> {losses[1]:.4f} nats)"
    if kind == FALLING:
        return Verdict(
            STAGE,
            check,
            Status.WARN,
            observed=observed,
            expected=expected,
            message=f"more data made val {metric} worse: {metrics[-2]:.4f} -> {metrics[-1]:.4f} {span} (z {z:.1f})",
            hint="the examples the smaller subset leaves out differ from val: look for label noise "
            "(suspected-label-errors) or a second distribution mixed into the training split",
        )
    if kind == RISING:
        return Verdict(
            STAGE,
            check,
            Status.PASS,
            observed=observed,
            expected=expected,
            message=f"still rising: val {metric} {metrics[-2]:.4f} -> {metrics[-1]:.4f} {span} (z {z:.1f}); "
            f"more data is likely to help: about {slope:+.3f} at twice the data (from how the "
            "gain per doubling shrank)",
            hint="more real training data is the recipe's first regularizer",
        )
    return Verdict(
        STAGE,
        check,
        Status.PASS,
        observed=observed,
        expected=expected,
        message=f"plateau: val {metric} {metrics[-2]:.4f} -> {metrics[-1]:.4f} {span} is within noise "
        f"(z {z:.1f}); more of the same data is unlikely to help much",
        hint="capacity, features or the labels limit this model, not the amount of data",
    )
