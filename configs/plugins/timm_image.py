"""A timm image model as it ships (pretrained=False: nothing downloaded), for any image data.

timm is an optional extra (pip install -e '.[timm]'); nnrecipe's core never imports it.
"""

from __future__ import annotations

from torch import nn


def make_model(input_shape: tuple[int, ...], num_outputs: int, name: str = "resnet10t") -> nn.Module:
    import timm

    return timm.create_model(name, pretrained=False, num_classes=num_outputs, in_chans=input_shape[0])
