"""Synthetic data with known properties, for demos and for planting bugs on purpose.

Classification: Gaussian blobs, one per class, unit noise, centres `class_sep` noise-stds
apart; optional class imbalance and label noise (train only, so val stays clean).
Regression: y = x·w/√d + noise, so Var(y) ≈ |w|²/d + noise_std² is known in advance.
"""

from __future__ import annotations

from pathlib import Path

import torch

from nnrecipe.data.bundle import DataBundle
from nnrecipe.data.common import tensor_bundle
from nnrecipe.tasks import get_task


def _class_sizes(n: int, num_classes: int, imbalance: float) -> list[int]:
    # Geometric sizes from 1 down to 1/imbalance: the largest/smallest ratio is `imbalance`.
    weights = [imbalance ** (-i / max(num_classes - 1, 1)) for i in range(num_classes)]
    sizes = [max(1, int(round(n * w / sum(weights)))) for w in weights]
    sizes[0] += n - sum(sizes)
    return sizes


def blobs(a, g: torch.Generator, counts: dict[str, int]):
    """Classification: (splits, class names, description)."""
    # Centres on a sphere of radius class_sep/√2 are about class_sep apart (random directions
    # in d dims are nearly orthogonal).
    centres = torch.randn(a.num_classes, a.num_features, generator=g)
    centres = centres / centres.norm(dim=1, keepdim=True) * a.class_sep / 2**0.5
    splits = {}
    for name, n in counts.items():
        if n == 0:
            continue
        sizes = _class_sizes(n, a.num_classes, a.imbalance)
        y = torch.cat([torch.full((s,), c, dtype=torch.int64) for c, s in enumerate(sizes)])
        y = y[torch.randperm(len(y), generator=g)]
        x = centres[y] + torch.randn(len(y), a.num_features, generator=g)
        if name == "train" and a.label_noise > 0:
            flip = torch.rand(len(y), generator=g) < a.label_noise
            y = torch.where(flip, torch.randint(0, a.num_classes, y.shape, generator=g), y)
        splits[name] = (x, y)
    names = [f"class{c}" for c in range(a.num_classes)]
    return (
        splits,
        names,
        f"synthetic blobs: {a.num_classes} classes, {a.num_features} features, separation {a.class_sep}",
    )


def linear(a, g: torch.Generator, counts: dict[str, int]):
    """Regression: (splits, None, description)."""
    w = torch.randn(a.num_features, generator=g)
    splits = {}
    for name, n in counts.items():
        if n == 0:
            continue
        x = torch.randn(n, a.num_features, generator=g)
        y = x @ w / a.num_features**0.5 + a.noise_std * torch.randn(n, generator=g)
        splits[name] = (x, y)
    return splits, None, f"synthetic linear regression: {a.num_features} features, noise std {a.noise_std}"


def load(spec, base: Path) -> DataBundle:
    a = spec.data.args
    g = torch.Generator().manual_seed(a.seed)
    counts = {"train": a.num_train, "val": a.num_val, "test": a.num_test}
    task = get_task(spec.task)
    splits, names, desc = task.synthetic_splits(a, g, counts)  # blobs or linear, as the task's targets are
    return tensor_bundle(
        splits,
        task=task,
        source="synthetic",
        declared_classes=spec.data.num_classes,
        class_names=names,
        description=desc,
    )
