"""Pictures: PNGs in the run directory and the same images in TensorBoard.

Matplotlib's object API (Figure, not pyplot): no global figure state, safe in tests.
Examples are drawn by kind: images with imshow, 1-D signals as lines, feature vectors
as a heatmap row per example.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from nnrecipe import atomic


def new_figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def save_figure(fig, path: Path, *, writer=None, tag: Optional[str] = None, step: int = 0) -> Path:
    """Write the PNG atomically; log the identical image to TensorBoard when a writer is given.
    In a run, the rendering happens in the painter process (nnrecipe/painter.py) and the file is
    written when it is done (the run flushes it before anything reads the PNGs)."""
    from nnrecipe import painter

    if not painter.submit(fig, path, writer=writer, tag=tag, step=step):
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        write_png(buf.getvalue(), path, writer=writer, tag=tag, step=step)
    return path


def write_png(data: bytes, path: Path, *, writer=None, tag: Optional[str] = None, step: int = 0) -> None:
    atomic.write_bytes(path, data)
    if writer is not None and tag:
        from PIL import Image

        img = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        writer.add_image(tag, img, step, dataformats="HWC")


def _display_range(xs: list[np.ndarray]) -> tuple[float, float]:
    """One robust range for all shown examples, so differences in scale stay visible."""
    v = np.concatenate([x.reshape(-1) for x in xs]) if xs else np.zeros(1)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(v, [0.5, 99.5])
    return (float(lo), float(hi)) if hi > lo else (float(lo) - 0.5, float(lo) + 0.5)


def example_grid(examples: Sequence[tuple[str, list[tuple[torch.Tensor, str]]]], kind: str, *, title: str, scale=None):
    """Rows of examples, [(row label, [(x, caption), ...]), ...], drawn into ONE axes.

    One mosaic image (or one set of offset lines) instead of a subplot per example: a
    10x8 grid of subplots takes seconds to render, the mosaic a fraction of that.
    """
    if kind == "structured":  # a dict or tuple of tensors: a panel per leaf
        from nnrecipe.pictures.structured import structured_grid

        return structured_grid(examples, title=title)
    rows = max(1, len(examples))
    cols = max(1, max((len(r[1]) for r in examples), default=1))
    arrays = [[x.detach().float().cpu().numpy() for x, _ in items] for _, items in examples]
    flat = [a for row in arrays for a in row]
    if kind == "tabular":
        return _tabular_grid(examples, arrays, title=title, scale=scale)
    lo, hi = _display_range(flat)
    fig = new_figure(1.25 * cols + 1.2, 1.15 * rows + 0.7)
    ax = fig.subplots()
    ax.set_title(title, fontsize=9)
    if kind == "image":
        c, h, w = flat[0].shape if flat else (1, 8, 8)
        pad, pad_y = max(1, w // 8), max(2, int(np.ceil(0.4 * h)))  # pad_y leaves room for the caption
        channels = 3 if c == 3 else 1
        cell_h, cell_w = h + pad_y, w + pad
        mosaic = np.full((rows * cell_h, cols * cell_w, channels), np.nan)
        for r, row in enumerate(arrays):
            for k, a in enumerate(row):
                img = a.transpose(1, 2, 0) if channels == 3 else a[:1].transpose(1, 2, 0)
                if img.shape[:2] == (h, w):
                    mosaic[r * cell_h : r * cell_h + h, k * cell_w : k * cell_w + w] = img
        shown = np.clip((mosaic - lo) / (hi - lo), 0, 1)
        if channels == 3:
            ax.imshow(np.nan_to_num(shown, nan=1.0), interpolation="nearest")
        else:
            ax.imshow(shown[..., 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        for r, (_, items) in enumerate(examples):
            for k, (_, caption) in enumerate(items):
                ax.text(k * cell_w - 0.5, r * cell_h + h - 0.3, caption, fontsize=6, va="top", color="tab:blue")
        ax.set_yticks([r * cell_h + h / 2 for r in range(rows)], [label for label, _ in examples], fontsize=7)
        ax.set_xticks([])
    else:  # signals: each example as lines in its own cell, cells laid out by offsets
        length = flat[0].shape[-1] if flat else 1
        gap = max(2, length // 6)
        span = hi - lo
        for r, row in enumerate(arrays):
            for k, a in enumerate(row):
                xs = np.arange(a.shape[-1]) + k * (length + gap)
                for ch in a.reshape(-1, a.shape[-1]):
                    ax.plot(xs, (ch - lo) / span * 0.8 - r, linewidth=0.8)
                ax.text(k * (length + gap), -r - 0.02, examples[r][1][k][1], fontsize=5, va="top", color="tab:blue")
        ax.set_yticks([-r + 0.4 for r in range(rows)], [label for label, _ in examples], fontsize=7)
        ax.set_xticks([])
        ax.set_ylim(-rows + 0.85, 0.95)
    return fig


def _tabular_grid(examples, arrays, *, title: str, scale):
    """Feature vectors as heatmap rows (standardized by train statistics), grouped by row label."""
    strips: list[np.ndarray] = []
    ticks, labels = [], []
    for (label, _), row in zip(examples, arrays):
        if not row:
            continue
        block = np.stack([a.reshape(-1) for a in row])
        if scale is not None:
            block = (block - scale[0]) / np.where(scale[1] > 0, scale[1], 1.0)
        ticks.append(sum(len(s) for s in strips) + len(block) / 2 - 0.5)
        labels.append(label)
        strips.append(block)
    data = np.concatenate(strips) if strips else np.zeros((1, 1))
    fig = new_figure(min(14, 2 + 0.25 * data.shape[1]), min(14, 1 + 0.12 * data.shape[0]))
    ax = fig.subplots()
    im = ax.imshow(data, cmap="coolwarm", vmin=-3, vmax=3, aspect="auto", interpolation="nearest")
    edge = 0
    for s in strips[:-1]:
        edge += len(s)
        ax.axhline(edge - 0.5, color="black", linewidth=0.8)
    ax.set_yticks(ticks, labels, fontsize=7)
    ax.set_xlabel("feature", fontsize=8)
    ax.set_title(title + " (z-scored by train statistics)", fontsize=9)
    fig.colorbar(im, ax=ax, shrink=0.6)
    return fig


def histograms(values: dict[str, dict[str, np.ndarray]], *, title: str):
    """values: panel -> series label -> samples. One panel per statistic, one series per split."""
    panels = list(values)
    fig = new_figure(3.2 * len(panels), 2.6)
    fig.suptitle(title, fontsize=10)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, panel in zip(axes, panels):
        for label, v in values[panel].items():
            v = v[np.isfinite(v)]
            if len(v):
                ax.hist(v, bins=40, histtype="step", density=True, label=f"{label} (n={len(v)})")
        ax.set_title(panel, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6)
    return fig


def bar_counts(counts: dict[str, Sequence[int]], labels: Sequence[str], *, title: str):
    fig = new_figure(min(14, 1.0 + 0.45 * len(labels) * max(1, len(counts)) / 2 + 2), 2.8)
    ax = fig.subplots()
    width = 0.8 / max(1, len(counts))
    pos = np.arange(len(labels))
    for i, (name, c) in enumerate(counts.items()):
        total = max(1, sum(c))
        ax.bar(pos + i * width, np.asarray(c) / total, width=width, label=f"{name} (n={total})")
    ax.set_xticks(
        pos + width * (len(counts) - 1) / 2,
        [str(label) for label in labels],
        fontsize=7,
        rotation=45 if len(labels) > 12 else 0,
    )
    ax.set_ylabel("fraction", fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    return fig


def curves(series: dict[str, tuple[np.ndarray, np.ndarray]], *, title: str, ylabel: str, logy: bool = True):
    """Several (steps, values) curves on one axes, lightly smoothed (window of ~2% of the run)."""
    fig = new_figure(6.5, 3.4)
    ax = fig.subplots()
    for label, (x, y) in series.items():
        y = np.asarray(y, dtype=np.float64)
        k = max(1, len(y) // 50)
        smooth = np.convolve(y, np.ones(k) / k, mode="valid") if len(y) >= k else y
        xs = np.asarray(x)[k - 1 :] if len(y) >= k else np.asarray(x)
        stride = max(1, len(smooth) // 600)  # a 6.5-inch plot shows no more; drawing 10k points costs seconds
        ax.plot(xs[::stride], smooth[::stride], label=label, linewidth=1.2)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel("step", fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    ax.tick_params(labelsize=7)
    return fig


def hbars(values: dict[str, float], *, title: str, xlabel: str, logx: bool = True, highlight: Sequence[str] = ()):
    """Horizontal bars, one per named value (e.g. gradient norm per parameter)."""
    names = list(values)
    fig = new_figure(6.5, 0.9 + 0.22 * len(names))
    ax = fig.subplots()
    v = np.array([values[n] if values[n] is not None else 0.0 for n in names], dtype=np.float64)
    colors = ["tab:red" if n in highlight or not np.isfinite(x) or x == 0 else "tab:blue" for n, x in zip(names, v)]
    shown = np.where(np.isfinite(v) & (v > 0), v, np.nan) if logx else v
    ax.barh(np.arange(len(names)), np.nan_to_num(shown, nan=0.0), color=colors)
    ax.set_yticks(np.arange(len(names)), names, fontsize=6)
    ax.invert_yaxis()
    if logx and np.nanmax(np.where(np.isfinite(shown), shown, np.nan), initial=0) > 0:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_title(title, fontsize=9)
    return fig


def prediction_strip(
    steps: Sequence[int],
    predictions: Sequence[np.ndarray],
    truth: np.ndarray,
    *,
    distributions: bool,
    labels: Optional[Sequence[str]] = None,
):
    """Predictions on a fixed val batch over training.

    `distributions` (class probabilities): one heatmap per evaluation (examples x classes,
    predicted probability), the true class outlined. Else each example's prediction over steps
    vs its target.
    """
    if distributions:
        cols = len(steps)
        fig = new_figure(min(16, 1.0 + 1.1 * cols), 3.6)
        axes = fig.subplots(1, cols, squeeze=False)[0]
        for ax, step, probs in zip(axes, steps, predictions):
            ax.imshow(probs, cmap="viridis", vmin=0, vmax=1, aspect="auto", interpolation="nearest")
            true_rows, true_cols = (
                np.nonzero(truth > 0.5)
                if np.ndim(truth) == 2  # multi-hot: every true label
                else (np.arange(len(truth)), truth)
            )
            ax.scatter(true_cols, true_rows, marker="s", s=14, facecolors="none", edgecolors="red", linewidths=0.8)
            ax.set_title(f"step {step}", fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[0].set_ylabel("val examples (red: true class)", fontsize=7)
        fig.suptitle("prediction dynamics: predicted class probabilities on a fixed val batch", fontsize=9)
        return fig
    fig = new_figure(6.5, 3.4)
    ax = fig.subplots()
    p = np.stack([np.asarray(q).reshape(len(q), -1)[:, 0] for q in predictions], axis=1)  # (examples, evals)
    t = np.asarray(truth).reshape(len(truth), -1)[:, 0]
    for i in range(len(p)):
        (line,) = ax.plot(steps, p[i], linewidth=1.0)
        ax.axhline(t[i], color=line.get_color(), linestyle=":", linewidth=0.8)
    ax.set_xlabel("step", fontsize=8)
    ax.set_title("prediction dynamics: predictions on a fixed val batch (dotted: targets)", fontsize=9)
    return fig


def matrix_image(matrix: np.ndarray, marks: Optional[np.ndarray] = None, scale: int = 8) -> np.ndarray:
    """A (rows, cols) matrix in [0, 1] as a (1, H, W) grayscale image for TensorBoard, cheaply
    (no matplotlib); `marks` (one column index per row) appends a one-hot column block."""
    m = np.clip(np.asarray(matrix, dtype=np.float32), 0, 1)
    if marks is not None:
        onehot = np.zeros_like(m)
        onehot[np.arange(len(m)), np.clip(marks, 0, m.shape[1] - 1)] = 1.0
        m = np.concatenate([m, np.full((len(m), 1), 0.5, dtype=np.float32), onehot], axis=1)
    return np.kron(m, np.ones((scale, scale), dtype=np.float32))[None]
