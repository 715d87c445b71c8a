"""Segmentation data (masks (N, H, W), -100 on shape borders) and models: the shipped plugin's
scenes (configs/plugins/segmentation.py) small, and the bugs of its kind."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
import torch.nn.functional as F

_spec = importlib.util.spec_from_file_location(
    "segmentation_plugin", Path(__file__).resolve().parents[2] / "configs" / "plugins" / "segmentation.py"
)
plugin = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(plugin)
PRIORS = [0.83, 0.09, 0.08]  # the scenes' pixel shares (inspect-data's class-balance measures them)


def clean(n_train: int = 300, n_val: int = 200, size: int = 16, seed: int = 0):
    return plugin.make_data(n_train=n_train, n_val=n_val, size=size, seed=seed)


def _pairs(d: dict):
    return [(k, v) for k, v in d.items() if k != "classes"]


def bilinear_masks(**kw):
    """Masks made at half size and resized with bilinear interpolation (as an image would be):
    fractional ids along every boundary."""
    d = clean(**kw)
    out = {}
    for split, (x, y) in _pairs(d):
        small = y.clamp_min(0)[:, ::2, ::2].float()[:, None]
        out[split] = (x, F.interpolate(small, size=y.shape[-2:], mode="bilinear", align_corners=False)[:, 0])
    return out


def void_255(**kw):
    """Shape borders labelled 255 (VOC's void) where the loss ignores -100."""
    d = clean(**kw)
    return {k: (x, torch.where(y == -100, torch.full_like(y, 255), y)) for k, (x, y) in _pairs(d)}


def one_label(**kw):
    """The image's majority class as its only label: classification data declared segmentation."""
    d = clean(**kw)
    return {k: (x, y.clamp_min(0).flatten(1).mode(dim=1).values) for k, (x, y) in _pairs(d)}


def flip_image_only():
    """A horizontal flip of half the images that leaves their masks as they were."""

    def augment(x, y):
        flip = torch.rand(len(x), device=x.device) < 0.5
        return torch.where(flip[:, None, None, None], x.flip(-1), x), y

    return augment


def fcn(input_shape, num_outputs, width: int = 16, priors=PRIORS):
    return plugin.make_fcn(input_shape, num_outputs, width=width, priors=priors)
