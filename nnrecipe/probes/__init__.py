"""Measuring, apart from judging: each probe returns numbers the checks (nnrecipe/checks) read."""

from __future__ import annotations

import contextlib
from typing import Iterator

from torch import nn


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """The model in eval mode for the block (no dropout, BatchNorm's running statistics), put
    back in the mode it was in afterwards, whatever the block raised."""
    was = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was)
