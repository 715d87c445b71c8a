"""The first layer's weights, laid out over the input, and how smooth they are.

Trained first-layer filters of a model that learned from images or signals vary smoothly
from one pixel (or time step) to the next; at random init they are independent noise. A
view() where a permute() was meant, or labels that carry no signal, leave the trained
filters as noisy as at init. The measure: the correlation of neighbouring weights within
each filter (each filter centred first), pooled over all filters.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional

import numpy as np
import torch
from torch import nn


@dataclasses.dataclass
class Filters:
    layer: str  # the parameter's name, e.g. "1.weight"
    weights: np.ndarray  # (filters, channels, *spatial): each filter over its input window
    spatial: tuple[int, ...]  # the spatial shape of one filter (H, W) or (L,)


@dataclasses.dataclass
class FilterMeasure:
    layer: str
    trained_corr: float  # pooled neighbour correlation of the trained weights
    init_corr: float  # the same layer at the run's random init
    null_mean: float  # the layer re-initialised `draws` times: mean and std of the correlation
    null_std: float
    pairs: int  # neighbour pairs pooled
    filter_size: int  # positions one filter covers (kernel taps, or the whole input for a Linear layer)
    trained: Optional[Filters] = None
    init: Optional[Filters] = None
    skip: str = ""


def first_layer(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[Optional[Filters], str]:
    """The first Conv/Linear layer's weights as filters over the input; or None and why not."""
    if not (isinstance(input_shape, tuple) and all(isinstance(d, int) for d in input_shape)):
        return None, "the inputs are a structure of tensors: no one layer sees them as an image or signal"
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d)):
            w = module.weight.detach().float().cpu().numpy()
            spatial = w.shape[2:]
            if int(np.prod(spatial)) < 2:
                return None, f"the first layer ({name}) has 1x1 kernels: no neighbouring weights"
            return Filters(f"{name}.weight", w, tuple(spatial)), ""
        if isinstance(module, nn.Linear):
            w = module.weight.detach().float().cpu().numpy()
            if len(input_shape) < 2:
                return None, "the inputs are feature vectors: their order carries no neighbourhood"
            if w.shape[1] != int(np.prod(input_shape)):
                return None, f"the first layer ({name}) does not see the raw input"
            return Filters(f"{name}.weight", w.reshape(w.shape[0], *input_shape), tuple(input_shape[1:])), ""
    return None, "no Conv1d, Conv2d or Linear layer found"


def neighbour_corr(f: Filters) -> tuple[float, int]:
    """Pooled correlation of adjacent weights along each spatial axis, each filter centred."""
    w = f.weights.reshape(-1, *f.spatial).astype(np.float64)  # one row per (filter, channel)
    w = w - w.reshape(len(w), -1).mean(axis=1).reshape(-1, *([1] * len(f.spatial)))
    num = den_a = den_b = 0.0
    pairs = 0
    for axis in range(1, len(f.spatial) + 1):
        if w.shape[axis] < 2:
            continue
        a = np.take(w, range(0, w.shape[axis] - 1), axis=axis)
        b = np.take(w, range(1, w.shape[axis]), axis=axis)
        num += float((a * b).sum())
        den_a += float((a * a).sum())
        den_b += float((b * b).sum())
        pairs += a.size
    if pairs == 0 or den_a == 0 or den_b == 0:
        return math.nan, pairs
    return num / math.sqrt(den_a * den_b), pairs


def measure_filters(
    trained: nn.Module, init: nn.Module, input_shape: tuple[int, ...], *, draws: int = 20, seed: int = 0
) -> FilterMeasure:
    """Neighbour correlation of the trained first layer, of the same layer at init, and its null
    distribution: the layer's own reset_parameters() drawn `draws` times (default inits)."""
    import copy

    ft, why = first_layer(trained, input_shape)
    fi, _ = first_layer(init, input_shape)
    if ft is None or fi is None:
        return FilterMeasure("", math.nan, math.nan, math.nan, math.nan, 0, 0, skip=why)
    rt, pairs = neighbour_corr(ft)
    ri, _ = neighbour_corr(fi)
    module = dict(init.named_modules())[ft.layer.rsplit(".", 1)[0]]
    null = []
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed + 12345)
        for _ in range(draws):
            fresh = copy.deepcopy(module)
            fresh.reset_parameters()
            f, _ = first_layer(fresh, input_shape)
            assert f is not None  # a copy of the layer first_layer found above, same type and shape
            null.append(neighbour_corr(f)[0])
    finally:
        torch.random.set_rng_state(state)
    null_arr = np.asarray(null)
    return FilterMeasure(
        ft.layer, rt, ri, float(null_arr.mean()), float(null_arr.std(ddof=1)), pairs, int(np.prod(ft.spatial)), ft, fi
    )


def filter_mosaic(f: Filters, *, max_filters: int = 64) -> np.ndarray:
    """Image filters as one mosaic (each filter scaled to its own range), rows of 8;
    1-D filters as a (filters, length) matrix."""
    w = f.weights[:max_filters]
    if len(f.spatial) == 2:
        w = w.mean(axis=1) if w.shape[1] != 3 else w.transpose(0, 2, 3, 1)  # colour filters stay colour
        n, h, wd = w.shape[:3]
        cols = min(8, n)
        rows = math.ceil(n / cols)
        extra = w.shape[3:] if w.ndim == 4 else ()
        mosaic = np.full((rows * (h + 1), cols * (wd + 1), *extra), np.nan)
        for i in range(n):
            r, c = divmod(i, cols)
            x = w[i]
            lo, hi = np.nanmin(x), np.nanmax(x)
            mosaic[r * (h + 1) : r * (h + 1) + h, c * (wd + 1) : c * (wd + 1) + wd] = (
                (x - lo) / (hi - lo) if hi > lo else 0.5
            )
        return mosaic
    flat = w.reshape(len(w), -1, f.spatial[-1]).mean(axis=1)
    scale = np.abs(flat).max(axis=1, keepdims=True)
    return flat / np.where(scale > 0, scale, 1.0)
