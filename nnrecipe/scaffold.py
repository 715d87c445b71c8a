"""`nnrecipe init`: a spec plus data.py / model.py for the user's own project, which run as they
are (on synthetic data) and are meant to be edited: replace the body of make_data with your
loading code and make_model with your network; the spec's comments say what each field does."""

from __future__ import annotations

from pathlib import Path

from nnrecipe.errors import NNRecipeError

SPEC = """\
# nnrecipe run --config {spec}
#
# Your experiment. data.py and model.py beside this file are yours to edit: they run as they
# are on synthetic {what}, so `nnrecipe run --config {spec}` works before you change anything.
# Every field and its default: `nnrecipe validate --config {spec}`.
name: {name}
task: classification            # or regression (make_data returns float targets, make_model 1 output each)
data:
  source: python
  factory: data.py:make_data    # function(**args) -> {{"train": ..., "val": ..., "classes": [...]}}
  args: {{n_train: 1200, n_val: 600, seed: 0}}
  batch_size: 64
model:
  arch: python
  factory: model.py:make_model  # function(input_shape, num_outputs, **args) -> nn.Module returning logits
  args: {{width: 32}}
optim: {{name: adam, lr: 3.0e-3}}
train: {{steps: 600, eval_every: 100}}   # optimizer steps; every stage's budget unless it sets its own
stages:
  tune: {{trials: 8}}            # random search over optim.lr by default; add paths under `space:`
  squeeze: {{members: 3}}
"""

DATA_IMAGE = '''\
"""Your data for nnrecipe: make_data(**data.args) returns the splits.

Return {"train": ..., "val": ..., "test": ... (optional), "classes": [...] (optional)} where each
split is a pair of tensors (X, Y) or a torch Dataset of (x, y) pairs. X: float inputs, one
example per row ((C, H, W) images, (C, L) signals or (D,) features); Y: integer class labels
0..C-1 (classification) or float targets (regression). Do not shuffle val into train: nnrecipe
checks the splits for leakage and duplicates, and judges every model on val.

This template makes synthetic 1x16x16 images of three kinds (a horizontal bar, a vertical bar,
a square) at random places with noise, so that everything runs before you change anything.
Replace the body with your loading code, e.g. torchvision.datasets.ImageFolder(root, transform)
for a folder of images per class.
"""

from __future__ import annotations

import torch

CLASSES = ["horizontal bar", "vertical bar", "square"]


def _images(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    y = torch.randint(0, len(CLASSES), (n,), generator=g)
    x = 0.3 * torch.randn(n, 1, 16, 16, generator=g)
    at = torch.randint(2, 11, (n, 2), generator=g)  # top-left corner of the shape
    for i in range(n):
        r, c = int(at[i, 0]), int(at[i, 1])
        if y[i] == 0:
            x[i, 0, r + 1, c : c + 5] += 1.0
        elif y[i] == 1:
            x[i, 0, r : r + 5, c + 1] += 1.0
        else:
            x[i, 0, r : r + 3, c : c + 3] += 1.0
    return x, y


def make_data(n_train: int = 1200, n_val: int = 600, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return {"train": _images(n_train, g), "val": _images(n_val, g), "classes": CLASSES}
'''

MODEL_IMAGE = '''\
"""Your model for nnrecipe: make_model(input_shape, num_outputs, **model.args) -> nn.Module.

The module maps a batch (N, *input_shape) to (N, num_outputs): raw logits for classification
(no softmax: the loss applies it; the baseline stage fails a model that ends in a softmax),
one value per target for regression. Keep the examples of a batch independent (no view that
mixes them): the baseline stage checks that too.
"""

from __future__ import annotations

from torch import nn


def make_model(input_shape: tuple[int, ...], num_outputs: int, width: int = 32) -> nn.Module:
    channels = input_shape[0]
    return nn.Sequential(
        nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(),
        nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
        nn.AdaptiveMaxPool2d(1), nn.Flatten(),
        nn.Linear(width, num_outputs),
    )
'''


def init_project(folder: Path, *, name: str, force: bool = False) -> list[Path]:
    """Write nnrecipe.yaml, data.py and model.py into `folder`; refuse to overwrite unless `force`."""
    folder = Path(folder)
    files = {
        "nnrecipe.yaml": SPEC.format(spec=str(folder / "nnrecipe.yaml"), name=name, what="images"),
        "data.py": DATA_IMAGE,
        "model.py": MODEL_IMAGE,
    }
    existing = [folder / f for f in files if (folder / f).exists()]
    if existing and not force:
        raise NNRecipeError(
            f"{existing[0]}: already exists; nnrecipe init never overwrites (use --force, or another folder)"
        )
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for fname, text in files.items():
        (folder / fname).write_text(text)
        written.append(folder / fname)
    return written
