"""Initialise well: the final layer's bias at the class log-priors or the target mean
(each task's `ideal_bias`; these are the tools that set it).

"If you have an imbalanced dataset of a ratio 1:10 of positives:negatives, set the bias on
your logits such that your network predicts probability of 0.1 at initialization."
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch import nn


def final_linear(model: nn.Module, num_outputs: int) -> Optional[nn.Linear]:
    """The last nn.Linear (in registration order) that produces the model's outputs."""
    found = None
    for m in model.modules():
        if isinstance(m, nn.Linear) and m.out_features == num_outputs:
            found = m
    return found


@torch.no_grad()
def set_final_bias(model: nn.Module, bias: np.ndarray, num_outputs: int) -> bool:
    layer = final_linear(model, num_outputs)
    if layer is None or layer.bias is None or layer.bias.numel() != len(bias):
        return False
    layer.bias.copy_(torch.as_tensor(bias, dtype=layer.bias.dtype))
    return True


@torch.no_grad()
def center_regression_output(model: nn.Module, x: torch.Tensor, target_mean: np.ndarray, num_outputs: int) -> bool:
    """Shift the final bias so the mean prediction on `x` (train examples) is the target mean.

    With the bias alone at the mean, random final weights times non-zero-mean hidden
    activations (ReLU outputs are positive) still offset every prediction by a constant.
    """
    layer = final_linear(model, num_outputs)
    if layer is None or layer.bias is None:
        return False
    was_training = model.training
    model.eval()
    offset = model(x).float().reshape(len(x), -1).mean(dim=0) - torch.as_tensor(target_mean, dtype=torch.float32)
    model.train(was_training)
    if offset.numel() != layer.bias.numel():
        return False
    layer.bias.sub_(offset.to(layer.bias.device, layer.bias.dtype))
    return True


def load_matching_weights(model: nn.Module, path: str, *, base, field: str) -> int:
    """Load a local state dict into the layers whose names and shapes match (a new head or a
    resized stem usually does not); returns how many tensors were loaded."""
    from pathlib import Path

    from nnrecipe.errors import DataError

    p = Path(path).expanduser()
    p = p if p.is_absolute() else Path(base) / p
    if not p.is_file():
        raise DataError(f"{field}: {p} not found")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)  # never unpickle arbitrary objects
    except Exception as exc:
        raise DataError(f"{field}: {p} is not a loadable state dict ({exc.__class__.__name__})") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]  # an nnrecipe checkpoint: {"model": state_dict, "optimizer": ...}
    if not isinstance(state, dict):
        raise DataError(f"{field}: {p} holds a {type(state).__name__}, not a state dict")
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and isinstance(v, torch.Tensor) and own[k].shape == v.shape}
    if not usable:
        raise DataError(f"{field}: no tensor in {p} matches this model's layers (names and shapes)")
    model.load_state_dict(usable, strict=False)
    return len(usable)
