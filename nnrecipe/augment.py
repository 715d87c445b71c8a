"""Data augmentation on training batches: the built-ins and the user's factories.

Built-ins work on a whole batch on the training device, with a separate random draw per
example (torchvision.transforms.v2 applied to a batch tensor draws once for the whole
batch, and a per-example Python loop would cost more than the training step). Rotation
and fractional translation go through `affine_grid`/`grid_sample`, integer shifts
through indexing; uncovered areas are filled with 0, the background of unit-scaled
images and the mean of standardized data.

Each built-in is `make_<name>(kind, **args) -> callable(x, y) -> (x, y)`, where `kind` is
the data's kind ("image" (N, C, H, W), "signal" (N, C, L) or (N, L), "tabular" (N, D)).
Randomness comes from torch's global generator, which `seed_everything` seeds.
"""

from __future__ import annotations

import inspect
import math
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from nnrecipe.errors import PluginError, SpecError
from nnrecipe.losses import IGNORE_INDEX  # what a mask's uncovered pixels become: no loss reads them
from nnrecipe.plugins import call_factory, load_factory, user_code

Augment = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def _need(kind: str, allowed: tuple[str, ...], name: str) -> None:
    if kind not in allowed:
        raise ValueError(f"{name} needs {' or '.join(allowed)} data; these inputs are {kind}")


def _per_example(x: torch.Tensor, p: float) -> torch.Tensor:
    """A boolean mask (N, 1, ..., 1) drawn per example with probability p, broadcastable to x."""
    mask = torch.rand(len(x), device=x.device) < p
    return mask.reshape(len(x), *([1] * (x.dim() - 1)))


def dense(x: torch.Tensor, y: torch.Tensor) -> bool:
    """Targets with a label per position of x (segmentation masks (N, *S) for x (N, C, *S)):
    the geometric augmentations move them with the input."""
    return x.dim() >= 3 and y.dim() == x.dim() - 1 and y.shape[1:] == x.shape[2:]


def _flip(x: torch.Tensor, y: torch.Tensor, p: float, axis: int) -> tuple[torch.Tensor, torch.Tensor]:
    flip = _per_example(x, p)
    if dense(x, y):
        y = torch.where(flip.reshape(len(y), *([1] * (y.dim() - 1))), y.flip(axis), y)
    return torch.where(flip, x.flip(axis), x), y


def make_hflip(kind: str, p: float = 0.5) -> Augment:
    """Mirror left-right (images: the W axis; signals: time reversed); masks with them."""
    _need(kind, ("image", "signal"), "hflip")

    def hflip(x, y):
        return _flip(x, y, p, -1)

    return hflip


def make_vflip(kind: str, p: float = 0.5) -> Augment:
    """Mirror top-bottom (images only); masks with them."""
    _need(kind, ("image",), "vflip")

    def vflip(x, y):
        return _flip(x, y, p, -2)

    return vflip


def _shift_last_axes(x: torch.Tensor, max_shift: int, axes: int) -> torch.Tensor:
    """Translate each example by a random integer offset in [-max_shift, max_shift] along its
    last `axes` axes, zero fill: the same as zero-padding by max_shift and cropping back."""
    n = len(x)
    pad = [max_shift] * (2 * axes)
    xp = F.pad(x, pad)
    out = xp
    for axis in range(1, axes + 1):  # the last axis first, then the one before
        size = x.shape[-axis]
        off = torch.randint(0, 2 * max_shift + 1, (n,), device=x.device)
        idx = off[:, None] + torch.arange(size, device=x.device)[None, :]  # (N, size)
        shape = [n] + [1] * (out.dim() - 1)
        shape[-axis] = size
        idx = idx.reshape(shape).expand(*out.shape[:-axis], size, *out.shape[out.dim() - axis + 1 :])
        out = out.gather(out.dim() - axis, idx)
    return out


def make_crop(kind: str, padding: int = 1) -> Augment:
    """torchvision's RandomCrop(size, padding): zero-pad by `padding` pixels (images) or
    positions (signals), then crop back to the original size at a random offset."""
    _need(kind, ("image", "signal"), "crop")
    if padding < 1:
        raise ValueError("crop: padding must be >= 1")
    axes = 2 if kind == "image" else 1

    def crop(x, y):
        if dense(x, y):  # the mask rides along as one more channel (its uncovered pixels ignored: -100)
            both = torch.cat([x.float(), (y.float() - IGNORE_INDEX)[:, None]], dim=1)
            out = _shift_last_axes(both, padding, axes)
            return out[:, :-1].to(x.dtype), (out[:, -1].round() + IGNORE_INDEX).to(y.dtype)
        squeeze = kind == "signal" and x.dim() == 2
        xs = x.unsqueeze(1) if squeeze else x
        out = _shift_last_axes(xs, padding, axes)
        return (out.squeeze(1) if squeeze else out), y

    return crop


def make_shift(kind: str, max_shift: int = 2) -> Augment:
    """Signals: translate by up to `max_shift` positions along time, zero fill."""
    _need(kind, ("signal",), "shift")
    return make_crop(kind, padding=max_shift)


def _affine(
    x: torch.Tensor, y: torch.Tensor, angle_deg: torch.Tensor, tx: torch.Tensor, ty: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate by angle (degrees) and translate by (tx, ty) in fractions of the image size, per
    example: the image bilinear, a mask (dense targets) nearest with uncovered pixels ignored."""
    a = angle_deg * math.pi / 180.0
    cos, sin = torch.cos(a), torch.sin(a)
    theta = torch.stack([torch.stack([cos, -sin, 2 * tx], dim=1), torch.stack([sin, cos, 2 * ty], dim=1)], dim=1)
    grid = F.affine_grid(theta.to(torch.float32), list(x.shape), align_corners=False)
    moved = F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False).to(x.dtype)
    if dense(x, y):  # ids shifted so that the zero fill reads back as the ignore label
        ids = F.grid_sample((y.float() - IGNORE_INDEX)[:, None], grid, mode="nearest", align_corners=False)
        y = (ids[:, 0].round() + IGNORE_INDEX).to(y.dtype)
    return moved, y


def make_rotate(kind: str, degrees: float = 10.0) -> Augment:
    """Rotate each image by a uniform angle in [-degrees, degrees] (bilinear, zero fill)."""
    _need(kind, ("image",), "rotate")

    def rotate(x, y):
        n = len(x)
        angle = (torch.rand(n, device=x.device) * 2 - 1) * degrees
        zero = torch.zeros(n, device=x.device)
        return _affine(x, y, angle, zero, zero)

    return rotate


def make_translate(kind: str, fraction: float = 0.1) -> Augment:
    """Translate each image by up to `fraction` of its width and height (bilinear, zero fill)."""
    _need(kind, ("image",), "translate")

    def translate(x, y):
        n = len(x)
        tx = (torch.rand(n, device=x.device) * 2 - 1) * fraction
        ty = (torch.rand(n, device=x.device) * 2 - 1) * fraction
        return _affine(x, y, torch.zeros(n, device=x.device), tx, ty)

    return translate


def make_noise(kind: str, std: float = 0.1) -> Augment:
    """Add Gaussian noise of `std`, in the units of the inputs as the model sees them."""

    def noise(x, y):
        return x + std * torch.randn_like(x), y

    return noise


def make_scale(kind: str, low: float = 0.9, high: float = 1.1) -> Augment:
    """Multiply each example by a random factor in [low, high] (amplitude jitter)."""
    if not 0 < low <= high:
        raise ValueError("scale: need 0 < low <= high")

    def scale(x, y):
        f = low + (high - low) * torch.rand(len(x), device=x.device, dtype=x.dtype)
        return x * f.reshape(len(x), *([1] * (x.dim() - 1))), y

    return scale


def make_cutout(kind: str, size: int = 2, p: float = 1.0) -> Augment:
    """Zero a random size x size square (images) or a window of `size` positions (signals)."""
    _need(kind, ("image", "signal"), "cutout")

    def cutout(x, y):
        n, dev = len(x), x.device
        if kind == "image":
            h, w = x.shape[-2:]
            cy = torch.randint(0, h, (n, 1, 1), device=dev)
            cx = torch.randint(0, w, (n, 1, 1), device=dev)
            rows = torch.arange(h, device=dev)[None, :, None]
            cols = torch.arange(w, device=dev)[None, None, :]
            hole = (
                (rows >= cy - size // 2)
                & (rows < cy - size // 2 + size)
                & (cols >= cx - size // 2)
                & (cols < cx - size // 2 + size)
            )
            keep = ~hole[:, None, :, :].expand_as(x)
        else:
            length = x.shape[-1]
            c = torch.randint(0, length, (n, 1), device=dev)
            pos = torch.arange(length, device=dev)[None, :]
            hole = (pos >= c - size // 2) & (pos < c - size // 2 + size)
            keep = ~(hole.reshape(n, *([1] * (x.dim() - 2)), length).expand_as(x))
        apply = _per_example(x, p)
        return torch.where(apply & ~keep, torch.zeros_like(x), x), y

    return cutout


BUILTIN: dict[str, Callable[..., Augment]] = {
    "hflip": make_hflip,
    "vflip": make_vflip,
    "crop": make_crop,
    "shift": make_shift,
    "rotate": make_rotate,
    "translate": make_translate,
    "noise": make_noise,
    "scale": make_scale,
    "cutout": make_cutout,
}


def _builtin(name: str, args: dict, kind: str, field: str) -> Augment:
    make = BUILTIN[name]
    params = [p for p in inspect.signature(make).parameters if p != "kind"]
    unknown = sorted(set(args) - set(params))
    if unknown:
        raise SpecError(
            f"{field}.args: {name} takes {', '.join(params) or 'no arguments'}; unknown {', '.join(unknown)}"
        )
    try:
        return make(kind, **args)
    except (TypeError, ValueError) as exc:
        raise SpecError(f"{field}: {exc}") from None


def build_augment(augments, *, kind: str, base: Path) -> Optional[Augment]:
    """One callable applying `data.augment`'s entries in order, or None when there are none."""
    steps: list[Augment] = []
    for i, a in enumerate(augments):
        field = f"data.augment.{i}"
        if a.name is not None:
            steps.append(_builtin(a.name, dict(a.args), kind, field))
        else:
            fn = load_factory(a.factory, base=base, field=f"{field}.factory")
            made = call_factory(fn, field=f"{field}.factory", ref=a.factory, **a.args)
            if not callable(made):
                raise PluginError(
                    f"{field}.factory: {a.factory} returned {type(made).__name__}; expected callable(x, y) -> (x, y)"
                )
            steps.append(_checked(made, f"{field}.factory", a.factory))
    if not steps:
        return None

    def augment(x, y):
        for step in steps:
            x, y = step(x, y)
        return x, y

    return augment


def _checked(fn: Callable, field: str, ref: str) -> Augment:
    """A user augmentation must return a pair shaped like its input."""

    def wrapped(x, y):
        with user_code(field, ref):
            out = fn(x, y)
        if not (isinstance(out, (tuple, list)) and len(out) == 2 and all(isinstance(t, torch.Tensor) for t in out)):
            raise PluginError(f"{field}: {ref} must return (x, y) tensors; got {type(out).__name__}")
        if out[0].shape[1:] != x.shape[1:] or len(out[0]) != len(out[1]):
            raise PluginError(f"{field}: {ref} changed the batch shape from {tuple(x.shape)} to {tuple(out[0].shape)}")
        return out[0], out[1]

    return wrapped
