"""Structured inputs drawn as the model receives them: one panel per leaf.

A dict {"input_ids", "attention_mask"} or a tuple (x_cat, x_num) has no single picture; each
leaf is drawn as a heatmap with a row per example and a column per value (flattened, the first
MAX_COLUMNS): integer leaves (token ids, category codes, masks) coloured by id with the id
written in the cell, float leaves z-scored over the shown examples. Rows are grouped as the
caller groups them (per class, per statistic), each labelled with its caption.
"""

from __future__ import annotations

import numpy as np

from nnrecipe import inputs

MAX_COLUMNS = 48  # values of a leaf shown per example
MAX_WRITTEN = 40  # ids written into their cells up to this many columns


def structured_grid(examples, *, title: str):
    """examples: [(row label, [(x, caption), ...]), ...], x a structure of tensors."""
    from nnrecipe.pictures import new_figure

    rows = [(label, x, caption) for label, items in examples for x, caption in items]
    names = [name for name, _ in inputs.leaves(rows[0][1])] if rows else ["x"]
    widths = [min(MAX_COLUMNS, max(1, t.numel())) for _, t in inputs.leaves(rows[0][1])] if rows else [1]
    fig = new_figure(min(18, 2.5 + 0.22 * sum(widths) + 0.8 * len(names)), min(16, 1.4 + 0.2 * max(1, len(rows))))
    axes = fig.subplots(1, len(names), squeeze=False, width_ratios=[w + 4 for w in widths])[0]
    fig.suptitle(title, fontsize=9)
    for k, (ax, name) in enumerate(zip(axes, names)):
        block = np.stack([_row(inputs.leaves(x)[k][1]) for _, x, _ in rows]) if rows else np.zeros((1, 1))
        leaf = inputs.leaves(rows[0][1])[k][1] if rows else None
        _panel(ax, block, ids=leaf is not None and not leaf.is_floating_point())
        shape = tuple(leaf.shape) if leaf is not None else ()
        dtype = str(leaf.dtype).removeprefix("torch.") if leaf is not None else ""
        ax.set_title(f"{name}  {dtype} {shape}", fontsize=7)
        ax.set_yticks(range(len(rows)), [f"{lab} {cap}" for lab, _, cap in rows] if k == 0 else [], fontsize=6)
    return fig


def _row(t) -> np.ndarray:
    flat = t.detach().cpu().reshape(-1)[:MAX_COLUMNS].double().numpy()
    return np.pad(flat, (0, MAX_COLUMNS - len(flat)), constant_values=np.nan)[: max(1, min(MAX_COLUMNS, t.numel()))]


def _panel(ax, block: np.ndarray, *, ids: bool) -> None:
    if ids:
        ax.imshow(np.mod(block, 20), cmap="tab20", vmin=0, vmax=19, aspect="auto", interpolation="nearest")
        if block.shape[1] <= MAX_WRITTEN and block.shape[0] <= 60:
            for (r, c), v in np.ndenumerate(block):
                if np.isfinite(v):
                    ax.text(c, r, f"{int(v)}", ha="center", va="center", fontsize=4)
    else:
        finite = block[np.isfinite(block)]
        mu, sd = (finite.mean(), finite.std()) if finite.size else (0.0, 1.0)
        ax.imshow((block - mu) / (sd if sd > 0 else 1.0), cmap="coolwarm", vmin=-3, vmax=3, aspect="auto")
    ax.set_xticks([])
    ax.tick_params(length=0)
