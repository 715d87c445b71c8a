"""A timm image model as it ships (pretrained=False: nothing downloaded), for any image data.

timm is an optional extra (pip install -e '.[timm]'); nnrecipe's core never imports it.
"""

from __future__ import annotations

from torch import nn


def make_model(input_shape: tuple[int, ...], num_outputs: int, name: str = "resnet10t", dropout: float = 0.0) -> nn.Module:
    """`dropout` is timm's drop_rate (before the classifier): regularize's dropout knob sets it."""
    import timm

    return timm.create_model(
        name, pretrained=False, num_classes=num_outputs, in_chans=input_shape[0], drop_rate=dropout
    )
