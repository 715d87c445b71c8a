"""Model factories for the plugin contract, one good and some broken."""

from __future__ import annotations

import math

from torch import nn


def good(input_shape, num_outputs, width: int = 32):
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), width), nn.ReLU(), nn.Linear(width, num_outputs))


def wrong_outputs(input_shape, num_outputs):
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), num_outputs + 1))


def not_a_module(input_shape, num_outputs):
    return "model"


def raises(input_shape, num_outputs):
    raise ValueError("unsupported input shape")
