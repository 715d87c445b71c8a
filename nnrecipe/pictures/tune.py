"""The tune stage's pictures: the optimisation history, each parameter against the val
metric (pruned and diverged trials marked), and the importance of each parameter."""

from __future__ import annotations

import math

import numpy as np

from nnrecipe import pictures
from nnrecipe.pictures.saver import FigureSaver


def draw(ctx, m, space: dict, *, stage: str) -> dict[str, list[str]]:
    save = FigureSaver(ctx, stage)
    metric = f"val {m.task.metric_symbol}"
    recs = [r for r in m.trials if r.value is not None]
    if not recs:
        return save.arts

    # optimisation history: each trial, and the best so far among complete ones
    fig = pictures.new_figure(7.0, 3.6)
    ax = fig.add_subplot(1, 1, 1)
    _scatter(ax, [r.number for r in recs], recs, m)
    best, xs, ys = -math.inf, [], []
    for r in sorted(recs, key=lambda r: r.number):
        if r.state == "complete" and not r.diverged:
            best = max(best, r.value)
        if math.isfinite(best):
            xs.append(r.number)
            ys.append(best)
    ax.step(xs, ys, where="post", color="tab:green", label="best so far")
    ax.set(xlabel="trial", ylabel=metric, title=f"optimisation history ({len(recs)} trials)")
    ax.legend(fontsize=7, loc="lower right")
    save(fig, "history", "tune-improves")

    # each parameter against the val metric
    n = len(space)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig = pictures.new_figure(3.4 * cols, 3.0 * rows)
    for i, (path, dim) in enumerate(space.items()):
        ax = fig.add_subplot(rows, cols, i + 1)
        if dim.kind == "choice":
            labels = [str(c) for c in dim.choice]
            x = [labels.index(str(r.params[path])) for r in recs if path in r.params]
            ax.set_xticks(range(len(labels)), labels, fontsize=7)
        else:
            x = [r.params[path] for r in recs if path in r.params]
            if dim.kind.startswith("log"):
                ax.set_xscale("log")
            lo, hi = getattr(dim, dim.kind)
            ax.axvspan(lo, hi, color="tab:blue", alpha=0.04)
        _scatter(ax, x, [r for r in recs if path in r.params], m)
        ax.set_title(path, fontsize=8)
        ax.tick_params(labelsize=7)
        if i % cols == 0:
            ax.set_ylabel(metric, fontsize=8)
    fig.suptitle("o complete · x pruned · red diverged · ★ best", fontsize=8)
    save(fig, "parameters", "search-coverage", "sensitivity")

    if m.importance is not None:
        imp = m.importance
        order = sorted(imp.share, key=lambda k: imp.share[k])
        fig = pictures.new_figure(6.0, 0.5 + 0.45 * len(order))
        ax = fig.add_subplot(1, 1, 1)
        colours = ["tab:green" if imp.p[k] <= 0.05 else "tab:gray" for k in order]
        ax.barh(np.arange(len(order)), [imp.share[k] for k in order], color=colours)
        ax.set_yticks(np.arange(len(order)), [f"{k} (p={imp.p[k]:.2f})" for k in order], fontsize=7)
        ax.set(xlabel="fANOVA importance (share)", title=f"which parameters mattered ({imp.n} complete trials)")
        save(fig, "importance", "sensitivity")
    return save.arts


def _scatter(ax, x, recs, m) -> None:
    x = np.asarray(x, dtype=float if not isinstance(x[0], str) else object) if len(x) else np.array([])
    for state, marker in (("complete", "o"), ("pruned", "x")):
        idx = [i for i, r in enumerate(recs) if r.state == state]
        if not idx:
            continue
        colours = ["tab:red" if recs[i].diverged else "tab:blue" for i in idx]
        ax.scatter(
            [x[i] for i in idx], [recs[i].value for i in idx], marker=marker, c=colours, s=18, alpha=0.8, label=state
        )
    if m.best is not None:
        j = next((i for i, r in enumerate(recs) if r.number == m.best.number), None)
        if j is not None:
            ax.scatter([x[j]], [recs[j].value], marker="*", s=120, c="gold", edgecolors="k", zorder=5)
