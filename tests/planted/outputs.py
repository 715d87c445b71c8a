"""Models whose forward returns more than logits, as library models do, and the losses that
read the whole output. Each is one line away from the plain MLP of models.py."""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from planted.models import _MLP


class _WithAux(_MLP):
    """(logits, aux_logits): an auxiliary head on the features, as Inception and DeepLab have."""

    def __init__(self, input_shape, num_outputs, width=64):
        super().__init__(input_shape, num_outputs, width)
        self.aux = nn.Linear(width, num_outputs)

    def forward(self, x):
        h = self.features(x)
        return self.head(h), self.aux(h)


def with_aux(input_shape, num_outputs):
    return _WithAux(input_shape, num_outputs)


def main_and_aux_loss(weight: float = 0.4):
    """The loss that trains both heads (torchvision's recipe for its auxiliary classifiers)."""

    def loss(out, y):
        logits, aux = out
        return F.cross_entropy(logits, y) + weight * F.cross_entropy(aux, y)

    return loss


class ModelOutput(OrderedDict):
    """The shape of Hugging Face's ModelOutput: an OrderedDict whose keys are also attributes."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class _HfStyle(_MLP):
    def forward(self, x):
        h = self.features(x)
        return ModelOutput(logits=self.head(h), hidden_states=(h,))


def hf_style(input_shape, num_outputs):
    return _HfStyle(input_shape, num_outputs)


class _Scores(_MLP):
    def forward(self, x):
        return {"scores": self.head(self.features(x)), "features": self.features(x)}


def named_scores(input_shape, num_outputs):
    """A dict without `logits` or `out`: model.output must name the prediction."""
    return _Scores(input_shape, num_outputs)


class _NoTensor(_MLP):
    def forward(self, x):
        return {"logits": self.head(self.features(x)).tolist()}


def logits_as_list(input_shape, num_outputs):
    return _NoTensor(input_shape, num_outputs)


class _Segmentation(_MLP):
    """torchvision's segmentation models return {"out": ..., "aux": ...}."""

    def forward(self, x):
        return OrderedDict(out=self.head(self.features(x)), aux=torch.zeros(len(x), 1))


def torchvision_style(input_shape, num_outputs):
    return _Segmentation(input_shape, num_outputs)
