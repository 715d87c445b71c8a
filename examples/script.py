"""nnrecipe from a plain script: a model and data built here, the baseline and overfit stages,
the verdicts read back in code.

    python examples/script.py          # exit 0 when no check fails, as `nnrecipe run` would

The data are scikit-learn's digits as tensors (nothing is downloaded); the model is an MLP
written inline. Every argument of nnrecipe.run is documented in its docstring.
"""

from __future__ import annotations

import math
import sys

import torch
from sklearn.datasets import load_digits
from torch import nn

import nnrecipe


def splits(val: int = 360) -> dict:
    """Train and val as pairs of tensors (X, Y), the plugin contract's form."""
    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0  # pixels 0..16 to [0, 1]
    y = torch.tensor(digits.target)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    x, y = x[order], y[order]
    return {"train": (x[val:], y[val:]), "val": (x[:val], y[:val]), "classes": [str(c) for c in range(10)]}


def make_model(input_shape, num_outputs, width: int = 128) -> nn.Module:
    """The plugin contract's model factory: nnrecipe builds one per experiment."""
    return nn.Sequential(
        nn.Flatten(), nn.Linear(math.prod(input_shape), width), nn.ReLU(), nn.Linear(width, num_outputs)
    )


def main() -> int:
    result = nnrecipe.run(
        model=make_model,
        data=splits(),
        stages=["baseline", "overfit"],
        name="digits-script",
        overrides={"optim.lr": 1e-3},
    )
    for v in result.failed + result.warned:
        print(f"{v.stage}/{v.check}: {v.status.value}: {v.message}\n  what to do: {v.hint}")
    if result.ok:
        print(f"val accuracy after overfit: {result.summary('overfit')['final']['val_accuracy']:.3f}")
    return result.exit_code()


if __name__ == "__main__":
    sys.exit(main())
