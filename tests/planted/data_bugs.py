"""Planted-bug data factories for the plugin contract (data.source: python).

Each returns clean, class-dependent 1x8x8 images in [0, 1] with exactly one problem of the
kind an inspect-data check exists to catch. `clean` has none: every check must pass on it.
"""

from __future__ import annotations

import os

import torch
from torch.utils.data import Dataset


def _images(n: int, num_classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Class c lights up a 2x2 block at position c of a 4x4 layout, over uniform noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % num_classes
    y = y[torch.randperm(n, generator=g)]
    x = 0.3 * torch.rand(n, 1, 8, 8, generator=g)
    for c in range(num_classes):
        r, k = divmod(c, 4)
        x[y == c, :, 2 * r : 2 * r + 2, 2 * k : 2 * k + 2] += 0.7
    return x, y


def clean(n_train: int = 800, n_val: int = 200, num_classes: int = 4, seed: int = 0):
    x, y = _images(n_train + n_val, num_classes, seed)
    return {"train": (x[:n_train], y[:n_train]), "val": (x[n_train:], y[n_train:])}


def only_on_the_drivers_machine(var: str = "NNRECIPE_TEST_DRIVERS_FILE", **kw):
    """`clean`, read where a file exists whose path only the driver's environment names (a Ray
    cluster's nodes were started without it): a spec's file missing on the machine a task runs on."""
    path = os.environ.get(var, "")
    if not path or not os.path.exists(path):
        raise FileNotFoundError(f"{path or var}: no such file on this machine")
    return clean(**kw)


def nan_inputs(count: int = 3, **kw):
    d = clean(**kw)
    x, y = d["train"]
    x = x.clone()
    x[:count, 0, 0, 0] = float("nan")
    return {"train": (x, y), "val": d["val"]}


def labels_out_of_range(**kw):
    """1-based labels 1..C with C declared: label C does not index any output."""
    d = clean(**kw)
    return {k: (x, y + 1) for k, (x, y) in d.items()} | {"classes": ["a", "b", "c", "d"]}


def one_based_labels(**kw):
    """1-based labels 1..C without declaring C: inferred C+1 classes, class 0 empty."""
    d = clean(**kw)
    return {k: (x, y + 1) for k, (x, y) in d.items()}


def float_labels(**kw):
    d = clean(**kw)
    return {k: (x, y.float() + 0.5) for k, (x, y) in d.items()}


def leakage(count: int = 20, **kw):
    """val contains copies of train examples (e.g. augmenting before splitting)."""
    d = clean(**kw)
    (xt, yt), (xv, yv) = d["train"], d["val"]
    xv, yv = xv.clone(), yv.clone()
    xv[:count], yv[:count] = xt[:count], yt[:count]
    return {"train": (xt, yt), "val": (xv, yv)}


def duplicates(count: int = 40, **kw):
    d = clean(**kw)
    x, y = d["train"]
    x, y = x.clone(), y.clone()
    x[-count:], y[-count:] = x[:count], y[:count]
    return {"train": (x, y), "val": d["val"]}


def conflicting_labels(count: int = 4, **kw):
    """A few identical inputs with a different label (annotator disagreement)."""
    d = clean(**kw)
    x, y = d["train"]
    x, y = x.clone(), y.clone()
    x[-count:] = x[:count]
    y[-count:] = (y[:count] + 1) % 4
    return {"train": (x, y), "val": d["val"]}


def imbalance(ratio: int = 100, **kw):
    """Class 0 keeps every example; the others keep 1/ratio of theirs."""
    d = clean(n_train=4000, n_val=1000, **kw)
    out = {}
    for k, (x, y) in d.items():
        keep = (y == 0) | (torch.arange(len(y)) % ratio == 0)
        out[k] = (x[keep], y[keep])
    return out


def pixels_255(**kw):
    """Images left in [0, 255]: the /255 was forgotten."""
    d = clean(**kw)
    return {k: (x * 255.0, y) for k, (x, y) in d.items()}


def outliers(count: int = 3, **kw):
    """A few examples at the wrong scale and one blank: e.g. a decoding bug for one file type."""
    d = clean(**kw)
    x, y = d["train"]
    x = x.clone()
    x[:count] *= 255.0
    x[count] = 0.0
    return {"train": (x, y), "val": d["val"]}


def uint8_inputs(**kw):
    d = clean(**kw)
    return {k: ((x * 255).to(torch.uint8), y) for k, (x, y) in d.items()}


def prior_shift(**kw):
    """val drawn from a different class mix than train (an unstratified, sorted split)."""
    d = clean(n_train=2000, n_val=1000, **kw)
    xv, yv = d["val"]
    keep = (yv == 0) | (torch.arange(len(yv)) % 4 == 0)
    return {"train": d["train"], "val": (xv[keep], yv[keep])}


class _Lazy(Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


def lazy_clean(**kw):
    """The clean data as map-style Datasets (decoded per item, through a DataLoader)."""
    d = clean(**kw)
    return {k: _Lazy(*v) for k, v in d.items()}


def lazy_mixed_shapes(**kw):
    d = clean(**kw)
    x, y = d["train"]
    items = [(x[i] if i % 7 else x[i, :, :6, :6], int(y[i])) for i in range(len(x))]

    class Mixed(Dataset):
        def __len__(self):
            return len(items)

        def __getitem__(self, i):
            return items[i]

    return {"train": Mixed(), "val": _Lazy(*d["val"])}


def raises(**kw):
    raise RuntimeError("cannot open /data/missing.h5")


def returns_list(**kw):
    return [1, 2, 3]


def missing_val(**kw):
    return {"train": clean()["train"]}


def shuffled_labels(**kw):
    """x and y shuffled independently (two separate permutations): train labels no longer
    belong to their inputs; val is untouched."""
    d = clean(**kw)
    x, y = d["train"]
    g = torch.Generator().manual_seed(1)
    return {"train": (x[torch.randperm(len(x), generator=g)], y[torch.randperm(len(y), generator=g)]), "val": d["val"]}


def unseeded(**kw):
    """Noise drawn from a fresh, unseeded generator each time the data is built."""
    import numpy as np

    d = clean(**kw)
    rng = np.random.default_rng()  # planted: not seeded by the experiment
    x, y = d["train"]
    return {"train": (x + torch.as_tensor(rng.normal(0, 0.01, x.shape), dtype=x.dtype), y), "val": d["val"]}


def imbalanced_binary(n_train: int = 2000, n_val: int = 1000, seed: int = 0):
    """10% of class 1: a zero final bias predicts 50/50 at init (the hockey stick)."""
    g = torch.Generator().manual_seed(seed)
    n = n_train + n_val
    y = (torch.rand(n, generator=g) < 0.1).long()
    x = 0.3 * torch.rand(n, 1, 8, 8, generator=g)
    x[:, :, 3:5, 3:5] += 0.7 * y[:, None, None, None]  # class 1 lights the centre
    return {"train": (x[:n_train], y[:n_train]), "val": (x[n_train:], y[n_train:])}


def val_labels_shifted(**kw):
    """The val file encodes classes differently (label c means c+1): fits train, fails val."""
    d = clean(**kw)
    xv, yv = d["val"]
    return {"train": d["train"], "val": (xv, (yv + 1) % 4)}


def exits(**kw):
    """A factory that ends the process itself (a script's habit): sys.exit(3)."""
    import sys

    sys.exit(3)


def object_arrays(**kw):
    """numpy arrays of dtype object (rows read from a CSV by hand, mixed types)."""
    d = clean(**kw)
    x, y = d["train"]
    return {"train": (x.numpy().astype(object), y.numpy()), "val": d["val"]}


def exits_in_getitem(**kw):
    """A Dataset whose __getitem__ calls sys.exit on a bad record."""
    d = clean(**kw)

    class Exits(Dataset):
        def __len__(self):
            return 10

        def __getitem__(self, i):
            import sys

            sys.exit(f"bad record {i}")

    return {"train": Exits(), "val": d["val"]}


def per_example_loss(**kw):
    """A loss factory whose loss keeps reduction='none': one loss per example, not a number."""
    return torch.nn.CrossEntropyLoss(reduction="none")


def detached_loss(**kw):
    """A loss computed outside autograd: no gradient reaches the model."""

    def loss(out, y):
        return torch.nn.functional.cross_entropy(out.detach(), y)

    return loss
