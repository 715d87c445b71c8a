"""baseline rules about short training runs: (measurements, settings) -> Verdict.

Comparisons between two models are paired on the same val examples (the task's `better_z`:
McNemar's z for accuracy, a paired z on per-example errors) and count only beyond `significance_z`.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

from nnrecipe.checks import not_for_task
from nnrecipe.probes.diagnosis import ModeGap
from nnrecipe.probes.measurements import BaselineMeasurements
from nnrecipe.spec_stages import BaselineSpec
from nnrecipe.stats import accuracy_ci95, end_loss_se, examples_to_settle, paired_z
from nnrecipe.verdict import Status, Verdict

STAGE = "baseline"
# train-eval-consistency: a gap counts beyond noise and above this share of the constant
# prediction's loss (a BatchNorm model's eval mode differs a little from its train mode anyway);
# "at chance in eval mode" is >= 90% of that loss while train mode is <= 50% of it
MODE_GAP = 0.1
EVAL_AT_CHANCE, TRAIN_FITS = 0.9, 0.5
NORM_DRIFT = 0.5  # a layer named as a cause: its running statistics this far from the batch's (SDs, log-variance)


def dumb_baselines(m: BaselineMeasurements, cfg: BaselineSpec) -> Verdict:
    """The model against the majority class / mean predictor and a linear model."""
    task, z = m.task, cfg.significance_z
    name = task.score
    model, linear, dumb = m.model, m.linear, m.dumb_scores
    if model is None or dumb is None:
        return Verdict(STAGE, "dumb-baselines", Status.SKIP, message="not measured")
    observed = {
        f"model_val_{name}": round(float(np.mean(model.val_scores)), 5),
        f"{m.dumb_name}_val_{name}": round(float(np.mean(dumb)), 5),
        f"linear_val_{name}": round(float(np.mean(linear.val_scores)), 5) if linear else None,
    }
    z_dumb = task.better_z(model.val_scores, dumb)
    z_linear = task.better_z(linear.val_scores, model.val_scores) if linear else -math.inf
    observed["z_model_vs_" + m.dumb_name] = round(z_dumb, 2)
    if linear:
        observed["z_linear_vs_model"] = round(z_linear, 2)
    expected = f"model beats the {m.dumb_name} by z >= {z:g}; linear not better by z >= {z:g}"
    if z_dumb <= -z:
        return Verdict(
            STAGE,
            "dumb-baselines",
            Status.FAIL,
            observed=observed,
            expected=expected,
            message=f"the model is worse than the {m.dumb_name} predictor (z = {z_dumb:.1f})",
            hint="the training loop or the data pipeline is broken: see the other baseline checks",
        )
    if z_dumb < z:
        n = len(model.val_scores)
        settle = examples_to_settle(n, z_dumb, z)
        words = f"; about {settle} val examples (not {n}) would tell" if settle else ""
        return Verdict(
            STAGE,
            "dumb-baselines",
            Status.WARN,
            observed=observed,
            expected=expected,
            message=f"the model is not clearly better than the {m.dumb_name} predictor (z = {z_dumb:.1f}{words})",
            hint="too few steps for this model (stages.baseline.steps), too low an LR, or no signal reaches the model",
        )
    linear_name = task.linear_text
    if z_linear >= z:
        return Verdict(
            STAGE,
            "dumb-baselines",
            Status.WARN,
            observed=observed,
            expected=expected,
            message=f"{linear_name} beats yours on val (z = {z_linear:.1f})",
            hint="for this budget the model underperforms a linear one: undertrained, badly initialised, or a bug",
        )
    return Verdict(
        STAGE,
        "dumb-baselines",
        Status.PASS,
        observed=observed,
        expected=expected,
        message=f"the model beats the {m.dumb_name} predictor (z = {z_dumb:.1f})"
        + (f" and is not beaten by {linear_name} (z = {z_linear:.1f})" if linear else ""),
    )


def input_independent(m: BaselineMeasurements, cfg: BaselineSpec) -> Verdict:
    """The model must do clearly better with its inputs than with zeros in their place."""
    task, z = m.task, cfg.significance_z
    model, zeroed = m.model, m.zero_input
    if model is None or zeroed is None:
        return Verdict(STAGE, "input-independent", Status.SKIP, message="not measured")
    zval = task.better_z(model.val_scores, zeroed.val_scores)
    # the record's val numbers are its val evaluation's, and the engine names the metric task.metric
    name = task.metric
    observed: dict[str, Optional[float]] = {
        f"val_{name}_real": round(model.val_metric, 5),
        f"val_{name}_zeroed": round(zeroed.val_metric, 5),
        "val_loss_real": round(model.val_loss, 5),
        "val_loss_zeroed": round(zeroed.val_loss, 5),
        "z": round(zval, 2),
    }
    modes = m.modes_val
    if modes is not None:  # both modes: the real-input model on (part of) val in train mode too
        observed["val_loss_real_train_mode"] = round(float(modes.train_mode.mean()), 5)
    expected = f"z >= {z:g} in favour of real inputs"
    hint = "is x disconnected from the output (overwritten, detached), or were x and y shuffled separately?"
    if zval < z and modes is not None and m.modes is not None and _train_mode_fits(m.modes):  # eval mode loses it
        return Verdict(
            STAGE,
            "input-independent",
            Status.FAIL,
            observed=observed,
            expected=expected,
            message=f"in eval mode the model does no better than on zeroed inputs (z = {zval:.1f}), but in "
            f"train mode it does (val loss {modes.train_mode.mean():.4g} against "
            f"{modes.eval_mode.mean():.4g}): the input reaches it, eval mode loses it",
            hint="see train-eval-consistency: BatchNorm's running statistics or dropout",
        )
    if zval <= 0:  # not better at all: with a real effect this is rare at any val size
        return Verdict(
            STAGE,
            "input-independent",
            Status.FAIL,
            observed=observed,
            expected=expected,
            message=f"trained on zeroed inputs the model does as well on val (z = {zval:.1f}): "
            "it extracts nothing from the input",
            hint=hint,
        )
    if zval < z:  # better, but not beyond noise: a small val set cannot tell a weak model from a broken one
        n = len(model.val_scores)
        observed["val_examples_to_settle"] = examples_to_settle(n, zval, z)
        return Verdict(
            STAGE,
            "input-independent",
            Status.WARN,
            observed=observed,
            expected=expected,
            message=f"real inputs do better than zeroed ones, but not beyond noise (z = {zval:.1f}): "
            f"too few val examples ({n}) to tell; about {observed['val_examples_to_settle']} would settle it",
            hint="a larger val set, or more steps (stages.baseline.steps); if it stays, " + hint,
        )
    return Verdict(
        STAGE,
        "input-independent",
        Status.PASS,
        observed=observed,
        expected=expected,
        message=f"real inputs beat zeroed inputs on val (z = {zval:.1f})",
    )


def _train_mode_fits(g: ModeGap) -> bool:
    """The model at chance in eval mode while it fits in train mode (ModeGap)."""
    c = g.constant_loss
    return c > 0 and float(g.eval_mode.mean()) >= EVAL_AT_CHANCE * c and float(g.train_mode.mean()) <= TRAIN_FITS * c


def train_eval_consistency(m: BaselineMeasurements, cfg: BaselineSpec) -> Verdict:
    """The trained model on the same training examples in train mode (no gradient step) and in
    eval mode: what it learnt must survive the switch (BatchNorm's running statistics, dropout)."""
    check = "train-eval-consistency"
    g = m.modes
    if g is None:
        return Verdict(STAGE, check, Status.SKIP, message=m.modes_skip or "no trained model")
    tr, ev = float(g.train_mode.mean()), float(g.eval_mode.mean())
    z = paired_z(g.train_mode, g.eval_mode)  # z for "train mode has the lower loss"
    scale = g.constant_loss if g.constant_loss > 0 else max(tr, ev)
    norms = [d for d in g.norms if d.drift >= NORM_DRIFT][:3]
    observed = {
        "train_mode_loss": round(tr, 5),
        "eval_mode_loss": round(ev, 5),
        "z": round(z, 2) if math.isfinite(z) else z,
        "constant_prediction_loss": round(g.constant_loss, 5),
        "examples": len(g.train_mode),
        "norm_drift": {d.layer: round(d.drift, 3) for d in g.norms[:5]},
        "dropout_layers": g.dropouts,
    }
    expected = (
        f"eval-mode loss not above train mode's by more than {MODE_GAP:.0%} of the constant prediction's "
        f"beyond z = {cfg.significance_z:g}"
    )
    named = "; ".join(d.words(m.batch_size) for d in norms)
    cause = (
        f": BatchNorm's running statistics are far from the batch statistics it learnt with at {named}"
        if norms
        else f": dropout at {', '.join(g.dropouts)}"
        if g.dropouts
        else ""
    )
    hint = (
        "running statistics that lag the batch's: a larger batch or input, a higher BatchNorm momentum, re-estimating "
        "them on training data (torch.optim.swa_utils.update_bn), or GroupNorm/LayerNorm, which keep no running statistics"
    )
    if _train_mode_fits(g):
        return Verdict(
            STAGE,
            check,
            Status.FAIL,
            observed=observed,
            expected=expected,
            message=f"the model fits train in train mode (loss {tr:.4g}) and is at chance in eval mode "
            f"({ev:.4g}; predicting the same for every example: {g.constant_loss:.4g}){cause}",
            hint=hint,
        )
    if z >= cfg.significance_z and ev - tr > MODE_GAP * scale:
        return Verdict(
            STAGE,
            check,
            Status.WARN,
            observed=observed,
            expected=expected,
            message=f"eval mode is worse than train mode on the same training examples: loss {ev:.4g} against "
            f"{tr:.4g} (z = {z:.1f}){cause}",
            hint=hint,
        )
    word = " (dropout off in eval mode)" if g.dropouts and ev < tr else ""
    return Verdict(
        STAGE,
        check,
        Status.PASS,
        observed=observed,
        expected=expected,
        message=f"train mode {tr:.4g}, eval mode {ev:.4g} on {len(g.train_mode)} training examples{word}",
    )


def overfit_one_batch(m: BaselineMeasurements, cfg: BaselineSpec) -> Verdict:
    """A few examples can be memorised: the loss on them reaches ~zero (the batch's floor, where
    identical inputs or contexts come with different targets)."""
    o = m.overfit
    if o is None:
        return Verdict(STAGE, "overfit-one-batch", Status.SKIP, message="not measured")
    floor, floor_why = (o.floor.value, o.floor.why) if o.floor is not None else (0.0, "")
    observed = {
        "final_loss": round(o.final_loss, 6),
        "steps": o.steps_run,
        "examples": len(o.outputs),
        "curve": [(s, round(v, 5)) for s, v in o.losses[:: max(1, len(o.losses) // 6)]],
    }
    expected = f"loss <= {o.target_loss:.3g} within {cfg.overfit_steps} steps (lr {cfg.overfit_lr:g})"
    words = ""
    if floor > 0:
        observed["floor"] = round(floor, 6)
        expected = f"loss <= {o.target_loss:.3g} (the batch's floor {floor:.3g} + margin) within {cfg.overfit_steps} steps (lr {cfg.overfit_lr:g})"
        words = f" (no model can go below {floor:.3g} on this batch: {floor_why})"
    # both modes: a model that fits in train mode and not in eval mode says so
    train_mode = round(o.train_curve[-1][1], 6) if o.train_curve else None
    if train_mode is not None:
        observed["final_loss_train_mode"] = train_mode
    if o.final_loss <= o.target_loss:
        return Verdict(
            STAGE,
            "overfit-one-batch",
            Status.PASS,
            observed=observed,
            expected=expected,
            message=f"{len(o.outputs)} examples memorised: loss {o.final_loss:.3g} after {o.steps_run} steps{words}",
        )
    if train_mode is not None and train_mode <= o.target_loss:  # eval mode is what fails (its outputs may all be alike)
        alike = "; in eval mode every example gets the same output" if o.collapse and not o.collapse.partial else ""
        return Verdict(
            STAGE,
            "overfit-one-batch",
            Status.FAIL,
            observed=observed,
            expected=expected,
            message=f"{len(o.outputs)} examples memorised in train mode (loss {train_mode:.3g}) but not in "
            f"eval mode (loss {o.final_loss:.3g}) after {o.steps_run} steps{alike}{words}",
            hint=f"the model differs between the modes: BatchNorm over a batch of {len(o.outputs)} (a larger one: "
            "stages.baseline.overfit_examples, e.g. 32), a low BatchNorm momentum, or dropout; see "
            "train-eval-consistency for the training batches",
        )
    if o.collapse is not None:
        observed.update({"collapsed_from_step": o.collapse.settled_at, "alike_at": o.collapse.layer or None})
        return Verdict(
            STAGE,
            "overfit-one-batch",
            Status.FAIL,
            observed=observed,
            expected=expected,
            message=f"{len(o.outputs)} examples could not be memorised: {o.collapse.words()}{words}",
            hint=o.collapse.hint(),
        )
    falling = _still_falling(o.losses, floor)
    if falling is not None and falling <= cfg.overfit_falling_ratio:  # a slow learner, not a stuck one
        observed["excess_ratio_last_fifth"] = round(falling, 3)
        return Verdict(
            STAGE,
            "overfit-one-batch",
            Status.WARN,
            observed=observed,
            expected=expected,
            message=f"loss {o.final_loss:.3g} after {o.steps_run} steps is above the target but still "
            f"falling: its excess over the floor shrank to {falling:.0%} over the last fifth{words}",
            hint="raise stages.baseline.overfit_steps or overfit_lr; a model stuck above the target fails",
        )
    return Verdict(
        STAGE,
        "overfit-one-batch",
        Status.FAIL,
        observed=observed,
        expected=expected,
        message=f"{len(o.outputs)} examples could not be memorised: loss {o.final_loss:.3g} after "
        f"{o.steps_run} steps{words}",
        hint="a model that cannot fit 8 examples has a bug: inputs not reaching the output, a wrong loss, "
        "frozen or detached layers, labels not matching the inputs",
    )


def _still_falling(losses: list[tuple[int, float]], floor: float) -> Optional[float]:
    """The loss's excess over the floor at the end relative to 80% of the way (None: too few points)."""
    if len(losses) < 5 or not np.isfinite(losses[-1][1]):
        return None
    last = losses[-1][0]
    before = [v for s, v in losses if s <= 0.8 * last]
    excess = before[-1] - floor if before else 0.0
    return (losses[-1][1] - floor) / excess if excess > 0 else None


def loss_decreases(m: BaselineMeasurements, cfg: BaselineSpec) -> Verdict:
    """The training loss goes down over the run, and a slightly larger model goes lower."""
    model = m.model
    h = model.history if model is not None else None
    if model is None or h is None:  # no history: a result read back from its record
        return Verdict(STAGE, "loss-decreases", Status.SKIP, message="not measured")
    losses = h.losses.numpy().astype(np.float64)
    if h.diverged or not np.isfinite(losses).all():
        return Verdict(
            STAGE,
            "loss-decreases",
            Status.FAIL,
            observed={"non_finite_at_step": h.nonfinite_step},
            expected="finite losses",
            message=f"the loss became NaN/Inf at step {h.nonfinite_step}",
            hint="lower the LR, clip gradients, check the inputs",
        )
    w = max(5, len(losses) // 10)
    first, last = losses[:w], losses[-w:]
    se = math.sqrt(first.var(ddof=1) / w + last.var(ddof=1) / w)
    z = (first.mean() - last.mean()) / se if se > 0 else (math.inf if first.mean() > last.mean() else 0.0)
    observed = {
        "first_window": round(float(first.mean()), 5),
        "last_window": round(float(last.mean()), 5),
        "window": w,
        "z": round(float(z), 2),
        "train_loss_end": round(model.train_loss, 5),  # its train evaluation's loss
    }
    expected = {"z_min": cfg.significance_z, "larger_model": "train loss not higher beyond noise"}
    if z < cfg.significance_z:
        c = m.collapse
        return Verdict(
            STAGE,
            "loss-decreases",
            Status.FAIL,
            observed=observed,
            expected=expected,
            message=f"the training loss does not go down: {first.mean():.4g} over the first {w} steps, "
            f"{last.mean():.4g} over the last (z = {z:.1f})" + (f"; {c.words()}" if c else ""),
            hint=c.hint()
            if c
            else "the LR is too low or zero (check the schedule), gradients do not flow, or the loss ignores the model",
        )
    larger = m.larger
    big_history = larger.history if larger is not None else None
    if larger is None or big_history is None:
        return Verdict(
            STAGE,
            "loss-decreases",
            Status.PASS,
            observed=observed,
            expected=expected,
            message=f"the training loss falls from {first.mean():.4g} to {last.mean():.4g} (z = {z:.1f}); "
            f"no larger-model comparison ({m.larger_skip or 'its training history was not kept'})",
        )
    base_loss, big_loss = model.train_loss, larger.train_loss
    # each end point wobbles with the batches: a larger model "higher" by less than that is a coin flip
    se = math.hypot(end_loss_se(losses), end_loss_se(big_history.losses.numpy()))
    observed.update({"larger_train_loss_end": round(big_loss, 5), "end_loss_se": round(se, 6)})
    if big_loss - base_loss > cfg.significance_z * se:
        return Verdict(
            STAGE,
            "loss-decreases",
            Status.WARN,
            observed=observed,
            expected=expected,
            message=f"the training loss falls, but a larger model ends higher on train ({big_loss:.4g} vs "
            f"{base_loss:.4g}, beyond the end points' wobble of {se:.2g})",
            hint="capacity does not help: an optimisation problem (LR, init) or a bottleneck the width does not touch",
        )
    than = (
        f"a larger model goes lower ({big_loss:.4g} < {base_loss:.4g})"
        if big_loss < base_loss
        else f"a larger model ends on par ({big_loss:.4g} vs {base_loss:.4g}, within the end points' wobble of {se:.2g})"
    )
    return Verdict(
        STAGE,
        "loss-decreases",
        Status.PASS,
        observed=observed,
        expected=expected,
        message=f"the training loss falls from {first.mean():.4g} to {last.mean():.4g} (z = {z:.1f}); {than}",
    )


def human_baseline(m: BaselineMeasurements, cfg: BaselineSpec) -> Verdict:
    """The model's val accuracy against the human accuracy the spec gives."""
    if cfg.human_accuracy is None:
        return Verdict(STAGE, "human-baseline", Status.SKIP, message="no stages.baseline.human_accuracy in the spec")
    if skip := not_for_task(STAGE, "human-baseline", m.task):
        return skip
    model = m.model
    if model is None:
        return Verdict(STAGE, "human-baseline", Status.SKIP, message="not measured")
    acc, n = model.val_metric, len(model.val_scores)  # its val evaluation's metric and example count
    ci = accuracy_ci95(acc, n)
    observed = {"model_val_accuracy": round(acc, 5), "ci95": round(ci, 4), "gap": round(cfg.human_accuracy - acc, 5)}
    expected = {"human_accuracy": cfg.human_accuracy}
    if acc + ci < cfg.human_accuracy:
        return Verdict(
            STAGE,
            "human-baseline",
            Status.WARN,
            observed=observed,
            expected=expected,
            message=f"val accuracy {acc:.3f} (±{ci:.3f}) is below human accuracy {cfg.human_accuracy:.3f}",
            hint="expected this early: the gap is what the overfit, regularize and tune stages are for",
        )
    return Verdict(
        STAGE,
        "human-baseline",
        Status.PASS,
        observed=observed,
        expected=expected,
        message=f"val accuracy {acc:.3f} (±{ci:.3f}) reaches human accuracy {cfg.human_accuracy:.3f}",
    )
