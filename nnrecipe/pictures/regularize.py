"""The regularize stage's pictures: experiments compared, val curves overlaid, the augmented
batch with its labels, and the first layer's filters at init and after training."""

from __future__ import annotations

import numpy as np

from nnrecipe import pictures
from nnrecipe.pictures.saver import FigureSaver
from nnrecipe.probes.filters import filter_mosaic


def draw(ctx, m, *, data, shown, preds, stage: str) -> dict[str, list[str]]:
    save = FigureSaver(ctx, stage)

    results = [
        r
        for r in [m.reference]
        + m.knobs
        + ([m.early] if m.early is not None else [])
        + ([m.combined] if m.combined else [])
        if r is not None and r.runs and not r.skip
    ]
    names = [r.name for r in results]
    if results:
        save(_compare(m, results), "experiments", *names, "generalization-gap", "combined")
        series = {}
        for r in results:
            run = r.runs[0]
            if run.evals:
                series[r.name] = (np.array([s for s, _, _ in run.evals]), np.array([v for _, v, _ in run.evals]))
        if series:
            finite = all(np.isfinite(v).all() and (v > 0).all() for _, v in series.values())
            save(
                pictures.curves(series, title="val loss along training (first seed)", ylabel="val loss", logy=finite),
                "val_curves",
                "early-stopping",
                *names,
            )
    if shown is not None:
        clean, augmented, labels = shown

        def caption(i, pred=None):
            y = labels[i]
            text = data.task.short_label(data, y)
            return text if pred is None else f"{text}→{pred}"

        p = [data.task.short_label(data, v) for v in preds]
        rows = [
            ("clean", [(clean[i], caption(i)) for i in range(len(clean))]),
            ("augmented", [(augmented[i], caption(i, p[i])) for i in range(len(augmented))]),
        ]
        save(
            pictures.example_grid(
                rows,
                data.kind,
                title="val batch, clean and augmented (label→prediction of the model trained with it)"
                if m.augment_trained is not None
                else "val batch, clean and augmented (label→reference model's prediction)",
            ),
            "augment",
            "augment-preserves-labels",
            "augmentation",
        )
    f = m.filters
    if f is not None and f.trained is not None:
        save(_filters(f), "filters", "first-layer-filters")
    return save.arts


def _compare(m, results):
    """Val metric (95% interval over the val set) and train metric per experiment."""
    metric = m.task.metric_symbol
    fig = pictures.new_figure(6.8, 1.0 + 0.32 * len(results))
    ax = fig.subplots()
    ys = np.arange(len(results))
    for i, r in enumerate(results):
        vals = [x.val_metric for x in r.runs]
        v = float(np.mean(vals))
        se = m.task.metric_se(v, m.n_val, scores=r.runs[0].val_scores, target_var=m.val_target_var)
        ax.errorbar(
            v, i, xerr=1.96 * se, fmt="o", color="tab:blue", capsize=3, label="val (95% interval)" if i == 0 else None
        )
        ax.plot(
            [x.train_metric for x in r.runs], [i] * len(r.runs), "x", color="tab:red", label="train" if i == 0 else None
        )
        if len(vals) > 1:
            ax.plot(
                vals, [i] * len(vals), ".", color="tab:gray", markersize=4, label="val per seed" if i == 0 else None
            )
    ref = float(np.mean([x.val_metric for x in m.reference.runs])) if m.reference.runs else None
    if ref is not None:
        ax.axvline(ref, color="tab:blue", linestyle=":", linewidth=1)
    ax.set_yticks(ys, [r.description for r in results], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(metric, fontsize=8)
    ax.set_title(f"regularize: val {metric} per experiment (dotted: reference)", fontsize=9)
    ax.legend(fontsize=7, loc="lower left")
    ax.tick_params(labelsize=7)
    return fig


def _filters(f):
    fig = pictures.new_figure(8.0, 3.6)
    axes = fig.subplots(1, 2)
    for ax, filt, title in ((axes[0], f.init, "at random init"), (axes[1], f.trained, "trained")):
        img = filter_mosaic(filt)
        if img.ndim == 3:
            ax.imshow(np.nan_to_num(img, nan=1.0), interpolation="nearest")
        elif len(filt.spatial) == 2:
            ax.imshow(img, cmap="gray", interpolation="nearest")
        else:
            ax.imshow(img, cmap="coolwarm", vmin=-1, vmax=1, aspect="auto", interpolation="nearest")
        ax.set_title(title, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(
        f"first layer {f.layer}: neighbour correlation {f.init_corr:.3f} at init, {f.trained_corr:.3f} trained",
        fontsize=9,
    )
    return fig
