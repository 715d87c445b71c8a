"""MNIST-1D (Greydanus, 2020): 1-D signals of 40 samples in 10 classes, generated locally.

The mnist1d package's `make_dataset` builds the data from templates; nothing is downloaded.
Its own train/test split becomes train(+val)/test here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from nnrecipe.cache import cached_arrays
from nnrecipe.data.bundle import DataBundle
from nnrecipe.data.common import carve_splits, tensor_bundle
from nnrecipe.tasks import get_task


def load(spec, base: Path) -> DataBundle:
    a = spec.data.args
    key = {
        k: getattr(a, k)
        for k in ("num_samples", "train_split", "seed", "shuffle_seq", "iid_noise_scale", "corr_noise_scale")
    }
    d = cached_arrays("mnist1d", key, lambda: _generate(key))  # generation takes seconds; cache it
    x = torch.as_tensor(d["x"], dtype=torch.float32).unsqueeze(1)  # (N, 1, 40): one channel
    y = torch.as_tensor(d["y"], dtype=torch.int64)
    xt = torch.as_tensor(d["x_test"], dtype=torch.float32).unsqueeze(1)
    yt = torch.as_tensor(d["y_test"], dtype=torch.int64)
    splits = carve_splits(
        x,
        y,
        task=get_task(spec.task),
        val_fraction=spec.data.val_fraction,
        test_fraction=0.0,
        seed=spec.data.split_seed,
        test=(xt, yt) if len(yt) else None,
    )
    return tensor_bundle(
        splits,
        task=get_task(spec.task),
        source="mnist1d",
        declared_classes=spec.data.num_classes,
        class_names=[str(i) for i in range(10)],
        description=f"MNIST-1D: {a.num_samples} generated 1-D signals of length {x.shape[-1]}",
    )


def _generate(key: dict) -> dict[str, np.ndarray]:
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    for k, v in key.items():
        setattr(args, k, v)
    # make_dataset reseeds numpy's global generator; keep the caller's stream untouched.
    state = np.random.get_state()
    try:
        d = make_dataset(args)
    finally:
        np.random.set_state(state)
    return {k: np.asarray(d[k]) for k in ("x", "y", "x_test", "y_test")}
