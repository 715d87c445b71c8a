"""What a trained model gets wrong on val, as files and pictures (overfit, regularize and
`inspect-data --model`): mispredictions.csv and per_class.csv, the confusion matrix, the most
confidently wrong examples; for real targets the residual plots and the largest residuals."""

from __future__ import annotations

import csv
import io

import numpy as np

from nnrecipe import pictures
from nnrecipe.atomic import write_text
from nnrecipe.pictures.saver import FigureSaver


def write_csv(path, rows: list[dict]) -> None:
    if rows:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        write_text(path, buf.getvalue())


def draw(ctx, stage: str, data, wrong, *checks: str, outputs=None, at: str = "") -> dict[str, list[str]]:
    """Files and figures for `wrong` (Task.mispredictions) in the stage's folder; `outputs`
    (the val outputs) adds the residual plots for real targets; `at` names the weights (e.g.
    "step 100, the best checkpoint") in the titles."""
    out = ctx.run.stage_dir(stage)
    save = FigureSaver(ctx, stage)
    write_csv(out / "mispredictions.csv", wrong.top)
    write_csv(out / "per_class.csv", wrong.per_class)
    if wrong.confusion is not None:
        save(_confusion(wrong.confusion, data, at), "confusion", *checks)
    if wrong.top:
        shown = wrong.top[:16]
        if "caption" in shown[0]:  # the task wrote its own (multi-label: true labels → predicted labels)
            items = [(data.val.example(r["index"])[0], r["caption"]) for r in shown]
            title = "the val examples with the highest loss (true→predicted labels)" + (f"; {at}" if at else "")
        elif wrong.confusion is not None:  # class targets
            items = [
                (data.val.example(r["index"])[0], f"{r['true']}→{r['predicted']} {r['p_predicted']:.2f}") for r in shown
            ]
            title = "the most confidently wrong val examples (true→predicted, p)" + (f"; {at}" if at else "")
        else:
            items = [(data.val.example(r["index"])[0], f"{r['target']:.2g}→{r['prediction']:.2g}") for r in shown]
            title = "the largest val residuals (target→prediction)" + (f"; {at}" if at else "")
        save(pictures.example_grid([("val", items)], data.kind, title=title), "mispredictions", *checks)
    if wrong.real and outputs is not None:  # real targets: the residuals
        pred = outputs.float().reshape(len(outputs), -1)[:, 0].numpy()
        target = data.targets("val").float().reshape(len(outputs), -1)[:, 0].numpy()
        finite = np.isfinite(pred) & np.isfinite(target)  # a diverged model has no residuals to draw
        if finite.any():
            save(_residuals(pred[finite], target[finite]), "residuals", *checks)
    return save.arts


def _confusion(c: np.ndarray, data, at: str = ""):
    fig = pictures.new_figure(1.6 + 0.45 * len(c), 1.2 + 0.45 * len(c))
    ax = fig.subplots()
    rates = c / np.maximum(c.sum(axis=1, keepdims=True), 1)
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    if len(c) <= 20:
        for i in range(len(c)):
            for j in range(len(c)):
                if c[i, j]:
                    ax.text(
                        j,
                        i,
                        str(c[i, j]),
                        ha="center",
                        va="center",
                        fontsize=6,
                        color="white" if rates[i, j] > 0.5 else "black",
                    )
    names = [data.class_name(i) for i in range(len(c))]
    ax.set_xticks(range(len(c)), names, fontsize=6, rotation=90)
    ax.set_yticks(range(len(c)), names, fontsize=6)
    ax.set_xlabel("predicted", fontsize=8)
    ax.set_ylabel("true", fontsize=8)
    ax.set_title(
        "confusion matrix on val (counts; colour: share of the true class)" + (f"\n{at}" if at else ""), fontsize=8
    )
    return fig


def _residuals(pred: np.ndarray, target: np.ndarray):
    """Prediction vs. target (the diagonal is perfect), residual vs. prediction (structure left
    in it is signal the model missed) and the residuals' histogram (heavy tails: outliers)."""
    fig = pictures.new_figure(11, 3.4)
    a, b, c = fig.subplots(1, 3)
    res = target - pred
    a.scatter(target, pred, s=4, alpha=0.5)
    lo, hi = float(min(target.min(), pred.min())), float(max(target.max(), pred.max()))
    a.plot([lo, hi], [lo, hi], color="tab:red", linewidth=1)
    a.set_xlabel("target", fontsize=8)
    a.set_ylabel("prediction", fontsize=8)
    a.set_title("prediction vs target (val)", fontsize=8)
    b.scatter(pred, res, s=4, alpha=0.5)
    b.axhline(0, color="tab:red", linewidth=1)
    b.set_xlabel("prediction", fontsize=8)
    b.set_ylabel("residual (target - prediction)", fontsize=8)
    b.set_title("residuals vs prediction", fontsize=8)
    c.hist(res, bins=40)
    c.set_xlabel("residual", fontsize=8)
    c.set_title(f"residuals: mean {res.mean():.3g}, std {res.std():.3g}", fontsize=8)
    return fig
