"""Helpers shared by the data sources: paths, held-out splits, standardization, bundling."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch

from nnrecipe import inputs
from nnrecipe.data.bundle import DataBundle, TensorSplit
from nnrecipe.errors import DataError
from nnrecipe.tasks import Task


def resolve_path(path: str, base: Path, *, field: str, must_exist: bool = True) -> Path:
    """Relative paths resolve against the spec's folder, like plugin files."""
    p = Path(path).expanduser()
    p = p if p.is_absolute() else (base / p)
    if must_exist and not p.exists():
        raise DataError(f"{field}: {p} does not exist")
    return p


def held_out_indices(
    y: torch.Tensor, *, fraction: float, seed: int, stratify: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split indices into (kept, held out). Stratified by class so val priors match train's."""
    n = len(y)
    g = torch.Generator().manual_seed(seed)
    if not stratify or y.dtype.is_floating_point or y.ndim != 1:
        order = torch.randperm(n, generator=g)
        k = int(round(fraction * n))
        return order[k:].sort().values, order[:k].sort().values
    held = []
    for c in torch.unique(y):
        idx = torch.nonzero(y == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        held.append(idx[: int(round(fraction * len(idx)))])
    held_idx = torch.cat(held).sort().values
    mask = torch.ones(n, dtype=torch.bool)
    mask[held_idx] = False
    return torch.nonzero(mask).flatten(), held_idx


def carve_splits(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    task: Task,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    val: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
    test: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Train/val/test from one pool; only the splits the source lacks are carved out."""
    from nnrecipe.errors import DataError

    if inputs.batch_len(x) == 0:
        raise DataError("data: the train split is empty (no examples to carve train/val from)")
    stratify = task.stratify
    out: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    if test is None and test_fraction > 0:
        keep, held = held_out_indices(y, fraction=test_fraction, seed=seed + 1, stratify=stratify)
        test = (inputs.index(x, held), y[held])
        x, y = inputs.index(x, keep), y[keep]
    if val is None:
        keep, held = held_out_indices(y, fraction=val_fraction, seed=seed, stratify=stratify)
        val = (inputs.index(x, held), y[held])
        x, y = inputs.index(x, keep), y[keep]
    out["train"] = (x, y)
    out["val"] = val
    if test is not None:
        out["test"] = test
    return out


def standardize(splits: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per feature/channel mean 0, std 1, fitted on train only (fitting on val would leak); of
    structured inputs, each float leaf on its own (ids and codes stay as they are)."""
    fitted: list[Optional[tuple[torch.Tensor, torch.Tensor]]] = []  # (mean, std) per leaf, None for an integer leaf
    for _, t in inputs.leaves(splits["train"][0]):
        if not t.is_floating_point():
            fitted.append(None)
            continue
        x = t.double()
        dims = [0] + list(range(2, x.ndim))  # all but the channel/feature axis
        fitted.append((x.mean(dim=dims, keepdim=True), x.std(dim=dims, keepdim=True).clamp_min(1e-8)))  # constant: 0

    def scale(xs):
        it = iter(fitted)
        return inputs.map_leaves(lambda t: t if (f := next(it)) is None else ((t.double() - f[0]) / f[1]).float(), xs)

    return {k: (scale(xs), ys) for k, (xs, ys) in splits.items()}


def standardize_targets(
    splits: dict[str, tuple[torch.Tensor, torch.Tensor]],
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Regression targets to mean 0, std 1 per column, fitted on train: losses then read in
    units of the target's spread, and an MSE of 1 is the mean predictor's."""
    y = splits["train"][1].double().reshape(len(splits["train"][1]), -1)
    mean, std = y.mean(dim=0), y.std(dim=0).clamp_min(1e-8)
    return {
        k: (xs, ((ys.double().reshape(len(ys), -1) - mean) / std).float().reshape(ys.shape))
        for k, (xs, ys) in splits.items()
    }


def infer_num_classes(
    declared: Optional[int], class_names: Optional[list[str]], ys: list[torch.Tensor]
) -> Optional[int]:
    """Declared C wins; else the class names; else max integer label + 1. None for float labels."""
    if declared is not None:
        return declared
    if class_names:
        return len(class_names)
    if (
        ys
        and all(not y.dtype.is_floating_point and not y.dtype == torch.bool for y in ys)
        and any(y.numel() for y in ys)
    ):
        top = max(int(y.max()) for y in ys if y.numel())
        return max(top + 1, 2)
    return None


def _float32(t) -> torch.Tensor:
    t = torch.as_tensor(t)
    return t.float() if t.dtype == torch.float64 else t


def tensor_bundle(
    splits: dict[str, tuple[torch.Tensor, torch.Tensor]],
    *,
    task: Task,
    source: str,
    declared_classes: Optional[int],
    class_names: Optional[list[str]] = None,
    description: str = "",
) -> DataBundle:
    """Bundle in-memory splits: float32 inputs, targets as the task takes them (regression: (N, k) floats)."""
    for name in ("train", "val"):
        if name not in splits or len(splits[name][1]) == 0:
            raise DataError(f"data: the {name} split is empty")
    made: dict[str, TensorSplit] = {}
    for name, (x, y) in splits.items():
        x = inputs.map_leaves(_float32, x)  # each leaf of structured inputs
        made[name] = TensorSplit(name, x, task.bundle_targets(torch.as_tensor(y)))
    num_classes, target_dim = task.declared_outputs(declared_classes, class_names, [s.y for s in made.values()])
    raw = tuple(torch.as_tensor(splits["train"][1]).shape[1:])
    return DataBundle(
        raw_target_shape=raw if raw != tuple(made["train"].y.shape[1:]) else None,
        task=task,
        source=source,
        train=made["train"],
        val=made["val"],
        test=made.get("test"),
        num_classes=num_classes,
        class_names=class_names,
        target_dim=target_dim,
        description=description,
    )


def integral_labels(values: np.ndarray) -> tuple[torch.Tensor, Optional[list[str]]]:
    """Class labels from a column: integers stay; strings map to sorted names."""
    if values.dtype.kind in "iub":
        return torch.as_tensor(values.astype(np.int64)), None
    if values.dtype.kind == "f":
        if np.all(np.isfinite(values)) and np.all(values == np.round(values)):
            return torch.as_tensor(values.astype(np.int64)), None
        return torch.as_tensor(values), None  # float labels: label-range will say so
    names = sorted({str(v) for v in values})
    lookup = {n: i for i, n in enumerate(names)}
    return torch.as_tensor(np.array([lookup[str(v)] for v in values], dtype=np.int64)), names
