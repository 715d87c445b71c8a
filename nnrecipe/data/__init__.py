"""Data sources: a registry from `data.source` to the function that loads it.

Each loader takes the validated spec and the spec's folder (relative paths resolve
against it) and returns a DataBundle. Loaders are imported on use: scikit-learn and
torchvision cost seconds to import and most runs need one source.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import torch

from nnrecipe import inputs
from nnrecipe.data.bundle import DataBundle, LazySplit, Split, TensorSplit, downsample

SOURCES: dict[str, str] = {
    "digits": "nnrecipe.data.digits:load",
    "mnist1d": "nnrecipe.data.mnist1d:load",
    "synthetic": "nnrecipe.data.synthetic:load",
    "csv": "nnrecipe.data.tabular:load_csv",
    "npz": "nnrecipe.data.tabular:load_npz",
    "image-folder": "nnrecipe.data.images:load_image_folder",
    "torchvision": "nnrecipe.data.images:load_torchvision",
    "text": "nnrecipe.data.text:load",
    "python": "nnrecipe.data.plugin:load",
}


def build_data(spec, *, base: Path) -> DataBundle:
    module, _, func = SOURCES[spec.data.source].partition(":")
    data = getattr(importlib.import_module(module), func)(spec, base)
    _check_usable(data, spec)
    if spec.data.downsample > 1:
        data = downsample(data, spec.data.downsample)
    return data


def _check_usable(data: DataBundle, spec) -> None:
    """Data that no stage can use: an empty split, or what the task cannot learn from (one class)."""
    from nnrecipe.errors import DataError

    where = f"data ({spec.data.source})"
    for name, split in data.splits().items():
        if len(split) == 0:
            raise DataError(f"{where}: the {name} split is empty")
        x, y = split.example(0)
        for what, t in [*((f"inputs {n}" if n != "x" else "inputs", t) for n, t in inputs.leaves(x)), ("targets", y)]:
            if torch.as_tensor(t).numel() == 0:
                raise DataError(
                    f"{where}: the {name} {what} have shape {tuple(torch.as_tensor(t).shape)} per example: no values"
                )
    data.task.check_usable(data, where)


__all__ = ["DataBundle", "LazySplit", "Split", "TensorSplit", "build_data", "SOURCES"]
