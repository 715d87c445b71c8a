"""The regularize stage's pictures of what the models say about the data: the learning curve
over nested subsets of train (data_scaling.png) and the suspected label errors (a ranked CSV and
the examples, given label -> what out-of-fold models say)."""

from __future__ import annotations

import math

import numpy as np

from nnrecipe import pictures
from nnrecipe.checks.data_value_checks import LabelErrorMeasurements, ScalingMeasurements, next_doubling_gain, power_law
from nnrecipe.pictures.mispredictions import write_csv
from nnrecipe.pictures.saver import Artifacts, FigureSaver


def draw(ctx, stage: str, scaling: ScalingMeasurements, labels: LabelErrorMeasurements, *, data, cfg) -> Artifacts:
    save = FigureSaver(ctx, stage)
    if len(scaling.points) >= 2:
        save(_scaling_figure(scaling), "data_scaling", "data-scaling")
    e = labels.errors
    if e is not None:
        rows = e.rows(data.class_name)
        csv_path = ctx.run.stage_dir(stage) / "suspected_label_errors.csv"
        write_csv(csv_path, rows)
        if rows and cfg.label_errors.show:
            items = [
                (
                    data.train.example(r["train_index"])[0],
                    f"#{r['train_index']} {r['given']}→{r['suggested']} {r['p_given']:.2f}",
                )
                for r in rows[: cfg.label_errors.show]
            ]
            save(
                pictures.example_grid(
                    [("train", items)],
                    data.kind,
                    title="suspected label errors (given→what out-of-fold models say, p of given)",
                ),
                "suspected_label_errors",
                "suspected-label-errors",
            )
        if rows:
            save.add(csv_path, "suspected-label-errors")
    return save.arts


def _scaling_figure(m: ScalingMeasurements):
    metric = m.task.metric_symbol
    x = np.array([p.examples for p in m.points])
    val = np.array([np.mean([r.val_metric for r in p.result.runs]) for p in m.points])
    train = np.array([np.mean([r.train_metric for r in p.result.runs]) for p in m.points])
    fig = pictures.new_figure(5.5, 3.6)
    ax = fig.subplots()
    err = [1.96 * m.task.metric_se(v, m.n_val) for v in val]
    ax.errorbar(x, val, yerr=err, marker="o", capsize=3, label=f"val {metric} (95% CI from {m.n_val} val examples)")
    ax.plot(x, train, marker="s", linestyle="--", label=f"train {metric} (on its own subset)")
    a, b = power_law(list(x), list(val))
    if math.isfinite(a):
        xs = np.geomspace(x[0], x[-1] * 2, 50)
        ax.plot(
            xs,
            1 - a * xs**-b,
            color="grey",
            linewidth=1,
            linestyle=":",
            label=f"power-law fit (no floor); expected {next_doubling_gain(list(x), list(val)):+.3f} at 2x data",
        )
    ax.set_xscale("log", base=2)
    ax.set_xlabel("training examples", fontsize=8)
    ax.set_ylabel(metric, fontsize=8)
    ax.set_title("data scaling: the reference model on nested subsets of train", fontsize=8)
    ax.legend(fontsize=7)
    return fig
