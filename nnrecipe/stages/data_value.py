"""The regularize stage's look at the data through trained models: "the by far best and
preferred way to regularize a model is to add more real training data" (data-scaling) and
"the neural net is effectively a compressed version of your dataset" (suspected label errors
and what the best configuration gets wrong on val)."""

from __future__ import annotations

import math

import numpy as np
import torch

from nnrecipe import pictures
from nnrecipe.checks.data_value_checks import (LabelErrorMeasurements, ScalingMeasurements, ScalingPoint,
                                               next_doubling_gain, power_law)
from nnrecipe.probes import label_errors
from nnrecipe.probes.regularize import KnobResult, train_one
from nnrecipe.stages.base import FigureSaver
from nnrecipe.stages.misprediction_pictures import write_csv
from nnrecipe.stats import accuracy_ci95
from nnrecipe.tasks import METRIC_SYMBOL

STAGE = "regularize"


def nested_subsets(n: int, fractions: list[float], seed: int) -> list[torch.Tensor]:
    """Index sets of round(f * n) training examples, each containing the smaller ones (prefixes
    of one seeded permutation), so the curve measures more data and not other data."""
    perm = torch.from_numpy(np.random.default_rng(seed).permutation(n))
    return [perm[: max(1, round(f * n))].sort().values for f in fractions]


def measure_scaling(ctx, *, ref_spec, reference: KnobResult, data, cfg, steps: int, every: int) -> ScalingMeasurements:
    """The reference recipe on nested subsets, at each seed the reference was trained with; the
    whole set is the reference's own runs (no retraining)."""
    s = cfg.data_scaling
    m = ScalingMeasurements(task=data.task, n_val=len(data.val))
    if not s.enabled:
        m.skip = "stages.regularize.data_scaling.enabled is false"
        return m
    if not reference.runs:
        m.skip = "the reference did not train"
        return m
    n = len(data.train)
    for frac, idx in zip(s.fractions, nested_subsets(n, s.fractions, ref_spec.seed)):
        sub = data.with_train(data.train.subset(idx))
        result = KnobResult(f"data-{frac:.0%}", f"{len(idx)} training examples ({frac:.0%})")
        for run in reference.runs:
            label = f"data-{round(100 * frac)}pct" + ("" if run.seed == reference.runs[0].seed else f"-seed{run.seed}")
            t = train_one(ref_spec, data=sub, base=ctx.base, device=ctx.device, seed=run.seed, steps=steps, every=every,
                          writer=ctx.writer(STAGE, label), progress=ctx.progress, label=label)
            result.runs.append(t.run)
        m.points.append(ScalingPoint(frac, len(idx), result))
    m.points.append(ScalingPoint(1.0, n, reference))
    return m


def measure_label_errors(ctx, *, spec, data, cfg, steps: int, every: int, loss: str) -> LabelErrorMeasurements:
    c = cfg.label_errors
    if not c.enabled:
        return LabelErrorMeasurements(skip="stages.regularize.label_errors.enabled is false")
    if data.task != "classification":
        return LabelErrorMeasurements(skip="classification only (regression has no label to doubt, see the residuals; "
                                           "a language model's targets are its own text)")
    if len(data.train) < 10 * c.folds:
        return LabelErrorMeasurements(skip=f"{len(data.train)} training examples are too few for {c.folds} folds")
    errors = label_errors.measure(spec, data=data, base=ctx.base, device=ctx.device, folds=c.folds, seed=spec.seed,
                                  steps=c.steps or steps, every=every, loss=loss,
                                  writer_for=lambda name: ctx.writer(STAGE, name), progress=ctx.progress)
    return LabelErrorMeasurements(errors=errors)


def draw(ctx, scaling: ScalingMeasurements, labels: LabelErrorMeasurements, *, data, cfg) -> dict[str, list[str]]:
    save = FigureSaver(ctx, STAGE)
    if len(scaling.points) >= 2:
        save(_scaling_figure(scaling), "data_scaling", "data-scaling")
    e = labels.errors
    if e is not None:
        rows = e.rows(data.class_name)
        write_csv(ctx.run.stage_dir(STAGE) / "suspected_label_errors.csv", rows)
        if rows and cfg.label_errors.show:
            items = [(data.train.example(r["train_index"])[0],
                      f"#{r['train_index']} {r['given']}→{r['suggested']} {r['p_given']:.2f}") for r in rows[: cfg.label_errors.show]]
            save(pictures.example_grid([("train", items)], data.kind,
                                       title="suspected label errors (given→what out-of-fold models say, p of given)"),
                 "suspected_label_errors", "suspected-label-errors")
        if rows:
            save.arts.setdefault("suspected-label-errors", []).append(ctx.rel(ctx.run.stage_dir(STAGE) / "suspected_label_errors.csv"))
    return save.arts


def _scaling_figure(m: ScalingMeasurements):
    metric = METRIC_SYMBOL[m.task]
    x = np.array([p.examples for p in m.points])
    val = np.array([np.mean([r.val_metric for r in p.result.runs]) for p in m.points])
    train = np.array([np.mean([r.train_metric for r in p.result.runs]) for p in m.points])
    fig = pictures.new_figure(5.5, 3.6)
    ax = fig.subplots()
    err = [accuracy_ci95(v, m.n_val) for v in val] if m.task == "classification" else None
    ax.errorbar(x, val, yerr=err, marker="o", capsize=3, label=f"val {metric} (95% CI from {m.n_val} val examples)")
    ax.plot(x, train, marker="s", linestyle="--", label=f"train {metric} (on its own subset)")
    a, b = power_law(list(x), list(val))
    if math.isfinite(a):
        xs = np.geomspace(x[0], x[-1] * 2, 50)
        ax.plot(xs, 1 - a * xs ** -b, color="grey", linewidth=1, linestyle=":",
                label=f"power-law fit: {next_doubling_gain(list(x), list(val)):+.3f} at 2x data")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("training examples", fontsize=8)
    ax.set_ylabel(metric, fontsize=8)
    ax.set_title("data scaling: the reference model on nested subsets of train", fontsize=8)
    ax.legend(fontsize=7)
    return fig
