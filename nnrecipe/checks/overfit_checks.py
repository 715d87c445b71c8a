"""overfit rules: (measurements, settings) -> Verdict. `ladder` returns one verdict per rung."""

from __future__ import annotations

import math

import numpy as np

from nnrecipe.experiments import Result
from nnrecipe.loop import EvalResult, History
from nnrecipe.probes.measurements import OverfitMeasurements
from nnrecipe.spec_stages import OverfitSpec
from nnrecipe.stats import end_loss_se, examples_to_settle
from nnrecipe.verdict import Status, Verdict

STAGE = "overfit"


def _model(m: OverfitMeasurements) -> Result:
    """The stage's model: run() trains it before any rule reads it."""
    assert m.model is not None
    return m.model


def _history(e: Result) -> History:
    """A model trained in this run keeps its history (Result.scored); only squeeze's results
    (a record read back, a model scored as loaded) have none, and none reaches these rules."""
    assert e.history is not None
    return e.history


def _train_eval(e: Result) -> EvalResult:
    """Its train evaluation: as _history, kept by every result trained in this run."""
    assert e.train_eval is not None
    return e.train_eval


def _divergence(m: OverfitMeasurements) -> dict:
    h = _history(_model(m))
    finite = h.losses[np.isfinite(h.losses.numpy())]
    return {
        "non_finite_at_step": h.nonfinite_step,
        "last_finite_loss": round(float(finite[-1]), 6) if len(finite) else None,
    }


def weights_at(step, last: int) -> str:
    """Which weights a number was measured on, in words."""
    return f"step {step}, the best checkpoint" if step is not None and step != last else f"step {last}, the last"


def fits_train(m: OverfitMeasurements, cfg: OverfitSpec) -> Verdict:
    """The recipe's stage-3 goal: the training set is fit."""
    e = _model(m)
    if _history(e).diverged:
        d = _divergence(m)
        return Verdict(
            STAGE,
            "fits-train",
            Status.FAIL,
            observed=d,
            expected="finite losses",
            message=f"the loss became NaN/Inf at step {d['non_finite_at_step']} (last finite loss {d['last_finite_loss']})",
            hint="lower the LR (try the suggestion of --lr-range), clip gradients (optim.grad_clip), check the data scale",
        )
    goal = m.task.train_goal(cfg)  # accuracy, R^2 or bits per token, each against its target
    train = _train_eval(e)
    value, steps = goal.value(train), _history(e).steps_run
    # train is measured on the weights of the last step (val, in beats-baselines, at the best checkpoint)
    observed = {
        goal.name.replace(" ", "_"): round(value, goal.digits),
        "train_loss": round(train.loss, 6),
        **goal.extra(train),
        "steps": steps,
        "train_step": e.train_step,
    }
    if goal.met(value):
        return Verdict(
            STAGE,
            "fits-train",
            Status.PASS,
            observed=observed,
            expected=goal.expected,
            message=goal.passed.format(name=goal.name, value=value, steps=steps),
        )
    c = m.collapse
    return Verdict(
        STAGE,
        "fits-train",
        Status.FAIL,
        observed=observed,
        expected=goal.expected,
        message=goal.failed.format(name=goal.name, value=value, steps=steps) + (f"; {c.words()}" if c else ""),
        hint=c.hint() if c else goal.hint,
    )


def beats_baselines(m: OverfitMeasurements, cfg: OverfitSpec) -> Verdict:
    """The val metric (at the best checkpoint) beats the baseline stage's dumb baselines,
    paired on the same examples."""
    if m.baseline_scores is None:
        return Verdict(STAGE, "beats-baselines", Status.SKIP, message=m.baseline_skip)
    e = _model(m)
    if _history(e).diverged:
        return Verdict(
            STAGE,
            "beats-baselines",
            Status.FAIL,
            observed=_divergence(m),
            expected="a trained model",
            message="the model diverged; it beats nothing",
            hint="see fits-train",
        )
    z = {name: round(m.task.better_z(e.val_scores, s), 2) for name, s in m.baseline_scores.items()}
    score = {name: round(float(np.mean(s)), 5) for name, s in m.baseline_scores.items()}
    metric = m.task.score
    at = weights_at(e.val_step, e.steps)  # val is judged at the best checkpoint, train at the last step
    observed = {
        f"val_{metric}": round(float(np.mean(e.val_scores)), 5),
        "val_step": e.val_step,
        f"baseline_val_{metric}": score,
        "z": z,
    }
    expected = f"z >= {cfg.significance_z:g} against the majority/mean predictor; not worse than any baseline"
    worse = [n for n, v in z.items() if v <= -cfg.significance_z]
    # A model that fits train should clearly beat predicting the majority class / the mean; against
    # the linear model, being on par (within noise) is fine: on easy data a linear model is strong.
    dumb = [n for n in z if n != m.task.linear_name]
    not_better = [n for n in dumb if -cfg.significance_z < z[n] < cfg.significance_z]
    if worse:
        return Verdict(
            STAGE,
            "beats-baselines",
            Status.FAIL,
            observed=observed,
            expected=expected,
            message=f"the model ({at}) is worse on val than the baseline(s) {', '.join(worse)} "
            f"(z = {', '.join(str(z[n]) for n in worse)})",
            hint="it fits train but not val: a train/val mismatch in the data pipeline (labels or preprocessing "
            "differ), or it memorised noise (regularize next)",
        )
    if not_better:
        n = len(e.val_scores)
        settle = examples_to_settle(n, min(z[k] for k in not_better), cfg.significance_z)
        words = f"; about {settle} val examples (not {n}) would tell" if settle else ""
        return Verdict(
            STAGE,
            "beats-baselines",
            Status.WARN,
            observed=observed,
            expected=expected,
            message=f"the model ({at}) is not clearly better on val than the {', '.join(not_better)} predictor{words}",
            hint="fitting train did not buy val performance: check that train and val come from one distribution",
        )
    if m.per_output is not None:
        observed["per_output"] = m.per_output
        lost = [k for k, zk in enumerate(m.per_output["z"]) if zk < cfg.significance_z]
        if lost:
            k = lost[0]
            return Verdict(
                STAGE,
                "beats-baselines",
                Status.WARN,
                observed=observed,
                expected=expected + "; each output better than its own train mean",
                message=f"the model beats the mean predictor overall, but not on {len(lost)} of "
                f"{len(m.per_output['z'])} outputs (output {k}: val R^2 {m.per_output['r2'][k]}, "
                f"z = {m.per_output['z'][k]} against its train mean): it learnt the others only",
                hint="an output the inputs do not predict: its column misaligned with the inputs (shuffled or "
                "joined separately), or drowned by the others' scale (standardize the targets)",
            )
    linear = m.task.linear_name
    on_par = f" (on par with the {linear} model)" if linear in z and z[linear] < cfg.significance_z else ""
    return Verdict(
        STAGE,
        "beats-baselines",
        Status.PASS,
        observed=observed,
        expected=expected,
        message=f"the model ({at}) beats the dumb baselines on val "
        f"({', '.join(f'{n} z={v}' for n, v in z.items())}){on_par}",
    )


def lr_schedule(m: OverfitMeasurements, cfg: OverfitSpec) -> Verdict:
    """The LR the optimizer actually applied: no silent decay to zero; constant, as the recipe says."""
    lrs = np.asarray(_history(_model(m)).lrs, dtype=np.float64)
    if len(lrs) == 0:
        return Verdict(STAGE, "lr-schedule", Status.SKIP, message="no optimizer steps")
    n = len(lrs)
    cut = max(1, int(math.floor(cfg.lr_min_progress * n)))
    top = int(np.argmax(lrs[:cut]))  # the start, or the end of a warmup
    start = float(lrs[top])
    low = top + np.nonzero(lrs[top:cut] < cfg.lr_min_fraction * start)[0]
    observed = {
        "schedule": m.schedule,
        "lr_first": float(lrs[0]),
        "lr_min": float(lrs.min()),
        "lr_last": float(lrs[-1]),
        "steps": n,
        "first_step_below": int(low[0]) + 1 if len(low) else None,
    }
    expected = f"lr >= {cfg.lr_min_fraction:g} x start for the first {cfg.lr_min_progress:.0%} of steps; constant in this stage"
    if len(low):
        step = int(low[0]) + 1
        return Verdict(
            STAGE,
            "lr-schedule",
            Status.FAIL,
            observed=observed,
            expected=expected,
            message=f"the LR fell to {lrs[low[0]]:.3g} ({lrs[low[0]] / start:.2%} of its start) at step {step} "
            f"of {n}: training is secretly stopping",
            hint="a schedule written for epochs is being stepped per batch (StepLR(step_size=30) means 30 "
            "optimizer steps here); keep it constant in this stage",
        )
    peak = float(lrs.max())
    decays = bool(np.any(lrs[int(np.argmax(lrs)) :] < peak * (1 - 1e-6)))  # down from its peak (a warmup alone is fine)
    if decays:
        return Verdict(
            STAGE,
            "lr-schedule",
            Status.WARN,
            observed=observed,
            expected=expected,
            message=f"a decaying schedule ({m.schedule}) in the overfit stage: the LR ends at "
            f"{lrs[-1] / peak:.0%} of its peak",
            hint="the recipe: keep the LR constant here and tune a decay at the very end",
        )
    return Verdict(
        STAGE,
        "lr-schedule",
        Status.PASS,
        observed=observed,
        expected=expected,
        message=f"constant LR {lrs[0]:.3g} over all {n} steps",
    )


def lr_range(m: OverfitMeasurements, cfg: OverfitSpec) -> Verdict:
    """The LR range test's suggestion, and whether the spec's LR is already past the divergence."""
    r = m.lr_range
    if r is None:
        return Verdict(STAGE, "lr-range", Status.SKIP, message="not requested (nnrecipe overfit --lr-range)")
    observed = {
        "suggested_lr": r.suggested_lr,
        "min_loss_lr": r.min_loss_lr,
        "diverge_lr": r.diverge_lr,
        "spec_lr": m.lr0,
    }
    expected = "spec lr below the loss minimum of the sweep"
    if r.suggested_lr is None:
        return Verdict(
            STAGE,
            "lr-range",
            Status.WARN,
            observed=observed,
            expected=expected,
            message="the sweep diverged before the loss could be read",
            hint="lower stages.overfit.lr_range.min_lr, or check the data scale",
        )
    if r.diverge_lr is not None and m.lr0 >= r.diverge_lr:
        return Verdict(
            STAGE,
            "lr-range",
            Status.FAIL,
            observed=observed,
            expected=expected,
            message=f"the loss diverges from lr {r.diverge_lr:.3g} on, and the spec trains at {m.lr0:.3g}",
            hint=f"use about {r.suggested_lr:.2g}",
        )
    if r.min_loss_lr is not None and m.lr0 > r.min_loss_lr:
        return Verdict(
            STAGE,
            "lr-range",
            Status.WARN,
            observed=observed,
            expected=expected,
            message=f"the spec's lr {m.lr0:.3g} is past the sweep's loss minimum ({r.min_loss_lr:.3g}): unstable",
            hint=f"use about {r.suggested_lr:.2g}",
        )
    return Verdict(
        STAGE,
        "lr-range",
        Status.PASS,
        observed=observed,
        expected=expected,
        message=f"suggested lr {r.suggested_lr:.2g} (steepest descent); the spec's {m.lr0:.3g} is below the loss minimum",
    )


def ladder(m: OverfitMeasurements, cfg: OverfitSpec) -> list[Verdict]:
    """Complexify one at a time: each rung must end with a lower training loss than the one before."""
    return [_rung(m, cfg, i) for i in range(len(m.ladder))]


def _rung(m: OverfitMeasurements, cfg: OverfitSpec, i: int) -> Verdict:
    """Rung i against rung i - 1: lower, on par within the end points' wobble, or both already
    fitting train pass; higher beyond the wobble fails."""
    check = f"ladder-{i}"
    e, name, goal = m.ladder[i], m.ladder_names[i], m.task.train_goal(cfg)
    h, train = _history(e), _train_eval(e)
    observed = {"model": name, "train_loss": round(train.loss, 6), f"train_{train.metric_name}": round(train.metric, 5)}
    if h.diverged:
        return Verdict(
            STAGE,
            check,
            Status.FAIL,
            observed=observed,
            expected="finite losses",
            message=f"{name}: the loss became NaN/Inf at step {h.nonfinite_step}",
            hint="lower the LR",
        )
    if i == 0:
        message = f"first rung {name}: train loss {train.loss:.4g}; nothing before it to beat"
        return Verdict(STAGE, check, Status.SKIP, observed=observed, message=message)
    prev, before = m.ladder[i - 1], m.ladder_names[i - 1]
    prev_train = _train_eval(prev)
    se = math.hypot(end_loss_se(h.losses.numpy()), end_loss_se(_history(prev).losses.numpy()))
    observed.update({"previous_train_loss": round(prev_train.loss, 6), "end_loss_se": round(se, 6)})
    expected = f"train loss not above the rung before's beyond {cfg.significance_z:g} x the end points' wobble"
    if train.loss < prev_train.loss:
        message = f"{name}: train loss {train.loss:.4g} < {prev_train.loss:.4g} ({before})"
    elif goal.met(goal.value(prev_train)) and goal.met(goal.value(train)):  # fits-train's target, both
        message = f"{name}: both this rung and the one before already fit train (fits-train's target)"
    elif train.loss - prev_train.loss <= cfg.significance_z * se:
        message = (
            f"{name}: train loss {train.loss:.4g} on par with {prev_train.loss:.4g} "
            f"({before}), within the end points' wobble of {se:.2g}"
        )
    else:
        return Verdict(
            STAGE,
            check,
            Status.FAIL,
            observed=observed,
            expected=expected,
            message=f"{name}: train loss {train.loss:.4g} is not below the previous rung's {prev_train.loss:.4g}",
            hint="this change made fitting harder: undo it, or change one thing at a time",
        )
    return Verdict(STAGE, check, Status.PASS, observed=observed, expected=expected, message=message)
