"""The squeeze stage's pictures: val (and test) metric against ensemble size, the students
against the ensemble, and the val loss of the best member trained on."""

from __future__ import annotations

import numpy as np

from nnrecipe import pictures
from nnrecipe.pictures.saver import FigureSaver


def draw(ctx, m, *, test_curve, stage: str) -> dict[str, list[str]]:
    save = FigureSaver(ctx, stage)
    metric = m.task.score_title

    if m.size_curve:
        k = np.arange(1, len(m.size_curve) + 1)
        series = {"ensemble, val": (k, np.array(m.size_curve))}
        if test_curve:
            series["ensemble, test"] = (k, np.array(test_curve))
        fig = pictures.curves(
            series, title=f"{metric} of the ensemble of the first k members", ylabel=metric, logy=False
        )
        ax = fig.axes[0]
        ax.set_xlabel("members", fontsize=8)
        for r in m.members:
            ax.plot([1], [float(r.val_scores.mean())], ".", color="tab:gray", markersize=5)
        save(fig, "ensemble_size", "ensemble-gain")
    if m.student is not None and m.hard is not None:
        values = {
            "hard labels (same student)": float(m.hard.val_scores.mean()),
            "soft targets (distilled)": float(m.student.val_scores.mean()),
            "ensemble (teacher)": float(m.ensemble_scores.mean()),
        }
        best = m.best_member()
        if best is not None:
            values["best member"] = float(m.members[best].val_scores.mean())
        fig = pictures.hbars(values, title=f"distillation: val {metric}", xlabel=metric, logx=False)
        lo = min(values.values())
        fig.axes[0].set_xlim(max(0.0, lo - 0.1 * abs(lo) - 0.02), max(values.values()) * 1.01 + 1e-9)
        save(fig, "distillation", "distillation")
    if m.longer_after is not None and m.longer_before is not None and m.longer_after.evals:
        start = m.longer_before.steps
        series = {
            "trained on (val loss)": (
                np.array([start + s for s, _, _ in m.longer_after.evals]),
                np.array([v for _, v, _ in m.longer_after.evals]),
            )
        }
        best = m.best_member()
        if best is not None and m.members[best].evals:
            ev = m.members[best].evals
            series["member (val loss)"] = (np.array([s for s, _, _ in ev]), np.array([v for _, v, _ in ev]))
        vals = np.concatenate([v for _, v in series.values()])
        fig = pictures.curves(
            series,
            title="leave it training: val loss of the best member, then trained on",
            ylabel="val loss",
            logy=bool(np.isfinite(vals).all() and (vals > 0).all()),
        )
        save(fig, "longer_training", "longer-training")
    return save.arts
