"""Segmentation data through the plugin contract: synthetic scenes of squares and disks on a
textured background, drawn here (nothing downloaded), and the models that segment them.

make_data(**data.args) returns {"train": (X, Y), "val": ..., "classes": [...]}: X images
(N, 3, S, S) float, Y masks (N, S, S) int64 of class ids (0 background, 1 square, 2 disk),
with a one-pixel ring around each shape set to -100 (ignored, as VOC's borders are): at a
shape's edge the label is a matter of rounding.

make_lraspp is torchvision's LR-ASPP MobileNetV3 (weights=None), unmodified: it returns a dict
whose "out" nnrecipe reads. make_fcn is a small fully convolutional net for quick checks.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

CLASSES = ["background", "square", "disk"]
IGNORE = -100


def _scene(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    # background: a random smooth gradient plus pixel noise
    g = rng.normal(size=3)[:, None, None] * (xx / size - 0.5) + rng.normal(size=3)[:, None, None] * (yy / size - 0.5)
    image = 0.3 * g + 0.15 * rng.normal(size=(3, size, size))
    mask = np.zeros((size, size), dtype=np.int64)
    ring = np.zeros((size, size), dtype=bool)
    for _ in range(rng.integers(1, 4)):
        kind = int(rng.integers(1, 3))
        r = rng.uniform(0.12, 0.22) * size
        cy, cx = rng.uniform(r, size - r, size=2)
        if kind == 1:  # a square (axis-aligned): Chebyshev distance
            dist = np.maximum(np.abs(yy - cy), np.abs(xx - cx))
        else:  # a disk
            dist = np.hypot(yy - cy, xx - cx)
        inside, edge = dist <= r - 0.5, np.abs(dist - r) < 0.5
        # colour: each class has its own hue family, brightness varies per shape
        base = np.array([1.0, -0.2, -0.4]) if kind == 1 else np.array([-0.4, 0.1, 1.0])
        colour = base * rng.uniform(0.6, 1.2) + 0.2 * rng.normal(size=3)
        image[:, inside] = colour[:, None] + 0.1 * rng.normal(size=(3, int(inside.sum())))
        mask[inside] = kind
        ring |= edge
        ring[inside] = False
    mask[ring] = IGNORE
    return image.astype(np.float32), mask


def make_data(n_train: int = 600, n_val: int = 300, size: int = 32, seed: int = 0):
    rng = np.random.default_rng(seed)
    scenes = [_scene(rng, size) for _ in range(n_train + n_val)]
    x = torch.tensor(np.stack([s[0] for s in scenes]))
    y = torch.tensor(np.stack([s[1] for s in scenes]))
    return {"train": (x[:n_train], y[:n_train]), "val": (x[n_train:], y[n_train:]), "classes": CLASSES}


@torch.no_grad()
def _start_at(classifier: nn.Conv2d, priors) -> None:
    """The classifier's bias at the log pixel shares (inspect-data's class-balance reports them):
    the untrained model predicts the class frequencies, not a uniform guess (init-well)."""
    if priors is not None:
        classifier.bias.copy_(torch.log(torch.as_tensor(priors, dtype=torch.float32)))


def make_lraspp(input_shape: tuple[int, ...], num_outputs: int, priors=None, bn_momentum=None) -> nn.Module:
    """torchvision's LR-ASPP on MobileNetV3-Large, no pretrained weights (nothing downloaded).
    Its output is the sum of two 1x1 classifiers: the high-level one starts at the priors.
    `bn_momentum` replaces MobileNetV3's BatchNorm momentum (0.01, tuned for ImageNet's long
    schedules: on a few hundred steps the running statistics lag the weights)."""
    from torchvision.models.segmentation import lraspp_mobilenet_v3_large

    model = lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=num_outputs)
    if bn_momentum is not None:
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = bn_momentum
    _start_at(model.classifier.high_classifier, priors)
    nn.init.zeros_(model.classifier.low_classifier.bias)
    return model


def make_fcn(input_shape: tuple[int, ...], num_outputs: int, width: int = 32, priors=None) -> nn.Module:
    """Conv-BN-ReLU at growing dilations (a receptive field of 31 pixels), a 1x1 classifier."""
    layers, channels = [], input_shape[0]
    for dilation in (1, 2, 4, 8):
        layers += [nn.Conv2d(channels, width, 3, padding=dilation, dilation=dilation), nn.BatchNorm2d(width), nn.ReLU()]
        channels = width
    head = nn.Conv2d(width, num_outputs, 1)
    _start_at(head, priors)
    return nn.Sequential(*layers, head)
