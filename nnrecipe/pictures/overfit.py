"""The overfit stage's pictures: training and val loss, the LR the optimizer applied at every
step, the LR range test, and the ladder's training curves."""

from __future__ import annotations

import numpy as np

from nnrecipe import pictures
from nnrecipe.pictures.saver import Artifacts, FigureSaver


def draw(ctx, stage: str, m) -> Artifacts:
    """Training and val loss, the LR applied at each step, the LR range test, the ladder."""
    save = FigureSaver(ctx, stage)

    h = m.model.history
    losses = h.losses.numpy()
    series = {"train (per step)": (np.arange(1, len(losses) + 1), losses)}
    if h.evals:
        series["val (whole split)"] = (np.array([s for s, _ in h.evals]), np.array([r.loss for _, r in h.evals]))
    finite = np.isfinite(losses)
    save(
        pictures.curves(
            series,
            title="overfit: training and validation loss",
            ylabel="loss",
            logy=bool(finite.all() and (losses > 0).all()),
        ),
        "curves",
        "fits-train",
        "beats-baselines",
    )
    lrs = np.asarray(h.lrs)
    save(
        pictures.curves(
            {"applied lr": (np.arange(1, len(lrs) + 1), lrs)},
            title="the LR the optimizer applied at each step",
            ylabel="lr",
            logy=bool((lrs > 0).all()),
        ),
        "lr",
        "lr-schedule",
    )
    if m.lr_range is not None:
        r = m.lr_range
        ok = np.isfinite(r.smoothed)
        fig = pictures.curves(
            {
                "smoothed loss": (r.lrs[ok], r.smoothed[ok]),
                "batch loss": (r.lrs[np.isfinite(r.losses)], r.losses[np.isfinite(r.losses)]),
            },
            title=f"LR range test (suggested {r.suggested_lr:.2g})" if r.suggested_lr else "LR range test",
            ylabel="loss",
            logy=False,
        )
        ax = fig.axes[0]
        ax.set_xscale("log")
        ax.set_xlabel("learning rate", fontsize=8)
        if r.suggested_lr:
            ax.axvline(r.suggested_lr, color="tab:green", linestyle="--", linewidth=1, label="suggested lr")
        ax.axvline(m.lr0, color="tab:red", linestyle=":", linewidth=1, label="spec lr")
        ax.legend(fontsize=7)
        save(fig, "lr_range", "lr-range")
    if m.ladder:
        series = {
            n: (np.arange(1, len(e.history.losses) + 1), e.history.losses.numpy())
            for n, e in zip(m.ladder_names, m.ladder)
        }
        fig = pictures.curves(
            series,
            title="the ladder: one change at a time (training loss)",
            ylabel="loss",
            logy=all((v[1] > 0).all() for v in series.values()),
        )
        save(fig, "ladder", *[f"ladder-{i}" for i in range(len(m.ladder))])
    return save.arts
