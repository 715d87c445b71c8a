"""scikit-learn's bundled 8x8 handwritten digits (1,797 examples, 10 classes), as 1x8x8 images."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

from nnrecipe.data.bundle import DataBundle
from nnrecipe.data.common import carve_splits, standardize, tensor_bundle
from nnrecipe.tasks import get_task


def _read_digits() -> tuple[np.ndarray, np.ndarray]:
    """The CSV that scikit-learn ships, read directly: importing sklearn.datasets takes ~2 s."""
    found = importlib.util.find_spec("sklearn")
    path = Path(found.origin).parent / "datasets" / "data" / "digits.csv.gz" if found and found.origin else None
    if path is not None and path.exists():
        raw = np.loadtxt(path, delimiter=",")
        return raw[:, :-1], raw[:, -1]
    from sklearn.datasets import load_digits  # bundled with scikit-learn: nothing is downloaded

    d = load_digits()
    return d.data, d.target


def load(spec, base: Path) -> DataBundle:
    data, target = _read_digits()
    x = torch.as_tensor(data, dtype=torch.float32).reshape(-1, 1, 8, 8)
    y = torch.as_tensor(target, dtype=torch.int64)
    if spec.data.args.scale == "unit":
        x = x / 16.0  # pixels are integers in [0, 16]
    splits = carve_splits(
        x,
        y,
        task=get_task(spec.task),
        val_fraction=spec.data.val_fraction,
        test_fraction=spec.data.test_fraction,
        seed=spec.data.split_seed,
    )
    if spec.data.args.scale == "standardize":
        splits = standardize(splits)
    return tensor_bundle(
        splits,
        task=get_task(spec.task),
        source="digits",
        declared_classes=spec.data.num_classes,
        class_names=[str(i) for i in range(10)],
        description="scikit-learn digits: 8x8 grayscale images of handwritten digits",
    )
