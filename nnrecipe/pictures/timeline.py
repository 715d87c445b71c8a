"""A stage's experiments on a timeline: a row per process that trained (here, each local worker,
each Ray node's worker), a bar per stretch of training (a group trained as one, a tune round),
named by its experiments.
Gaps in a row are a process waiting (for a round, for the stage's own model); the axis runs
from the stage's start to now (its end: the picture is drawn last)."""

from __future__ import annotations

import time

from nnrecipe import pictures
from nnrecipe.pictures.saver import FigureSaver


def draw(ctx, ledger, s: dict, *, stage: str) -> None:
    """`s`: the ledger's summary."""
    save = FigureSaver(ctx, stage)
    spans = ledger.spans()  # (process, start, end, its experiments)
    order = sorted({w for w, *_ in spans}, key=lambda w: (w != "here", w))  # the stage's process first
    row = {w: i for i, w in enumerate(order)}
    fig = pictures.new_figure(8.0, 1.2 + 0.45 * len(order))
    ax = fig.add_subplot(1, 1, 1)
    for n, (where, start, end, names) in enumerate(spans):
        x0, width = start - ledger.started, max(end - start, 1e-3)
        ax.barh(row[where], width, left=x0, height=0.6, color=f"C{n % 10}", alpha=0.8, edgecolor="black", lw=0.5)
        label = names[0] if len(names) == 1 else f"{names[0]} +{len(names) - 1}"
        ax.text(x0 + width / 2, row[where], label, ha="center", va="center", fontsize=6, clip_on=True)
    ax.set_xlim(0, max(time.time(), *(e for _, _, e, _ in spans)) - ledger.started)  # the stage so far: idle shows
    ax.set_yticks(range(len(order)), order, fontsize=7)
    ax.invert_yaxis()
    ax.set(
        xlabel="seconds since the stage started",
        title=f"{stage}: {s['experiments']} experiments in {s['processes']} process(es), "
        f"{s['training_seconds']:.1f} s of training in {s['span_seconds']:.1f} s",
    )
    ax.title.set_fontsize(9)
    save(fig, "timeline")
