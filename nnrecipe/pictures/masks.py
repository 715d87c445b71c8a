"""Segmentation pictures: each example as its input, the target mask over it, the predicted
mask over it (one colour per class, ignored pixels hatched grey), so a mask that does not sit
on its image (flipped, shifted, transposed) or a prediction that ignores the image shows."""

from __future__ import annotations

from typing import Optional, Sequence, cast

import numpy as np
import torch

from nnrecipe import pictures
from nnrecipe.pictures.saver import Artifacts, FigureSaver

ALPHA = 0.45  # mask opacity over the image
IGNORED = np.array([0.6, 0.6, 0.6])


def _rgb(x: torch.Tensor) -> np.ndarray:
    """(C, H, W) -> (H, W, 3) in [0, 1], per image min-max (first channel as grey unless C == 3)."""
    a = x.detach().float().cpu().numpy()
    a = a if a.shape[0] == 3 else np.repeat(a[:1], 3, axis=0)
    lo, hi = float(a.min()), float(a.max())
    return np.clip((a - lo) / max(hi - lo, 1e-8), 0, 1).transpose(1, 2, 0)


def _overlay(image: np.ndarray, mask: np.ndarray, colours: np.ndarray) -> np.ndarray:
    ids = mask.astype(np.int64)
    real = (ids >= 0) & (ids < len(colours))
    paint = np.where(real[..., None], colours[np.clip(ids, 0, len(colours) - 1)], IGNORED)
    return (1 - ALPHA) * image + ALPHA * paint


def mask_grid(
    rows: Sequence[tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor], str]],
    *,
    num_classes: int,
    names,
    title: str,
):
    """One row per example (x, target mask, predicted mask, caption): input | target | prediction."""
    import matplotlib
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    cmap = cast(ListedColormap, matplotlib.colormaps["tab10" if num_classes <= 10 else "tab20"])  # both are lists
    colours = np.asarray(cmap.colors)[:num_classes]
    if len(colours) < num_classes:  # more classes than the colour map: repeat it
        colours = np.resize(colours, (num_classes, 3))
    cols = 3 if rows and rows[0][2] is not None else 2
    fig = pictures.new_figure(1.8 * cols - 0.2, 0.5 + 1.55 * len(rows))
    axes = fig.subplots(len(rows), cols, squeeze=False)
    for r, (x, target, pred, caption) in enumerate(rows):
        image = _rgb(x)
        panels = [(image, "input"), (_overlay(image, target.cpu().numpy(), colours), "target")]
        if pred is not None:
            panels.append((_overlay(image, pred.cpu().numpy(), colours), "prediction"))
        for c, (panel, what) in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(panel, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(what, fontsize=8)
        axes[r, 0].set_ylabel(caption, fontsize=6)
    handles = [Patch(color=colours[c], label=names(c)) for c in range(num_classes)]
    fig.legend(handles=handles, loc="lower center", ncol=min(num_classes, 6), fontsize=6, frameon=False)
    fig.suptitle(title, fontsize=9)
    return fig


def draw_data(save: FigureSaver, data, n: int = 6) -> None:
    """masks_train.png: the first n train images, each with its mask over it (where the number
    of classes is known: masks of fractional ids have none, label-range says why)."""
    if data.kind != "image" or not data.num_outputs:
        return
    rows = []
    for i in range(min(n, len(data.train))):
        x, y = data.train.example(i)
        rows.append((x, torch.as_tensor(y), None, f"train #{i}"))
    fig = mask_grid(rows, num_classes=data.num_outputs, names=data.class_name, title="train images and their masks")
    save(fig, "masks_train", "label-range", "class-balance", tag="data/masks_train")


def draw_baseline(ctx, stage: str, data, m) -> Artifacts:
    """masks_overfit_batch.png (the memorised batch) and masks_val.png (the trained baseline on
    the first val images), where the inputs are images."""
    save = FigureSaver(ctx, stage)
    if data.kind != "image":
        return save.arts
    C, names = data.num_outputs, data.class_name
    o, xo, yo = m.overfit, m.overfit_x, m.overfit_y
    if o is not None and xo is not None:
        rows = [(xo[i], yo[i], o.outputs[i].argmax(dim=0), f"#{i}") for i in range(min(len(yo), 6))]
        save(
            mask_grid(rows, num_classes=C, names=names, title=f"overfit one batch after {o.steps_run} steps"),
            "masks_overfit_batch",
            "overfit-one-batch",
        )
    ev = m.model.val_eval if m.model is not None else None
    if ev is not None and ev.outputs is not None:
        rows = []
        for i in range(min(len(ev.outputs), 6)):
            x, y = data.val.example(i)
            acc = float(data.task.example_scores(ev.outputs[i : i + 1], torch.as_tensor(y)[None])[0])
            rows.append((x, torch.as_tensor(y), ev.outputs[i].argmax(dim=0), f"val #{i}\npix acc {acc:.2f}"))
        save(
            mask_grid(rows, num_classes=C, names=names, title="the baseline model on val: target and predicted masks"),
            "masks_val",
            "dumb-baselines",
            "input-independent",
        )
    return save.arts
