"""The first-layer filter measure: smooth filters score high, random ones like their init."""

import numpy as np
import torch
from torch import nn

from nnrecipe.probes.filters import Filters, first_layer, measure_filters, neighbour_corr


def _smooth_linear(out=32, shape=(1, 8, 8), seed=0):
    """A Linear layer whose rows are smooth blobs over an 8x8 image."""
    g = torch.Generator().manual_seed(seed)
    layer = nn.Linear(int(np.prod(shape)), out)
    yy, xx = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
    with torch.no_grad():
        for i in range(out):
            cy, cx = torch.rand(2, generator=g) * 8
            layer.weight[i] = torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 8).reshape(-1) * torch.randn(
                1, generator=g
            )
    return nn.Sequential(nn.Flatten(), layer)


def test_smooth_filters_beat_the_init_distribution_and_random_ones_do_not():
    torch.manual_seed(0)
    init = nn.Sequential(nn.Flatten(), nn.Linear(64, 32))
    smooth = measure_filters(_smooth_linear(), init, (1, 8, 8))
    assert smooth.trained_corr > 0.5 and smooth.filter_size == 64 and smooth.pairs == 32 * 2 * 8 * 7
    assert (smooth.trained_corr - smooth.null_mean) / smooth.null_std > 10
    torch.manual_seed(1)
    other = nn.Sequential(nn.Flatten(), nn.Linear(64, 32))  # "trained" = another random draw
    rough = measure_filters(other, init, (1, 8, 8))
    assert abs(rough.trained_corr - rough.null_mean) / rough.null_std < 4


def test_conv_filters_and_what_cannot_be_judged():
    conv = nn.Sequential(nn.Conv2d(3, 8, 5), nn.ReLU())
    f, why = first_layer(conv, (3, 16, 16))
    assert f.weights.shape == (8, 3, 5, 5) and f.spatial == (5, 5) and not why
    assert first_layer(nn.Sequential(nn.Conv2d(3, 8, 1)), (3, 16, 16))[0] is None
    f, why = first_layer(nn.Sequential(nn.Linear(10, 4)), (10,))
    assert f is None and "feature vectors" in why
    assert measure_filters(nn.Linear(10, 4), nn.Linear(10, 4), (10,)).skip


def test_neighbour_corr_of_a_ramp_is_one():
    w = np.tile(np.arange(10.0), (4, 1, 1))  # (filters, channels, L): every filter a ramp
    r, pairs = neighbour_corr(Filters("w", w, (10,)))
    assert 0.9 < r <= 1.0 and pairs == 4 * 9  # centred on the whole filter's mean, not each pair's
