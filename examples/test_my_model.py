"""nnrecipe in your own test suite: "my model passes the baseline stage" in three lines.

    pytest examples/test_my_model.py

`assert_recipe` runs the stages and fails the test with each failing check's message and what
to do; the `nnrecipe_recipe` fixture (installed with nnrecipe as a pytest plugin) does the same
with the run directory under the test's tmp_path. strict=True fails on a warn too.
"""

from __future__ import annotations

import math

import pytest
from torch import nn

from nnrecipe.testing import RecipeFailed, assert_recipe


def make_model(input_shape, num_outputs):
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), 64), nn.ReLU(), nn.Linear(64, num_outputs))


class SoftmaxOutput(nn.Module):
    """A planted bug: probabilities handed to a loss that wants logits."""

    def __init__(self):
        super().__init__()
        self.body = make_model((64,), 10)

    def forward(self, x):
        return self.body(x).softmax(dim=1)


def test_my_model_passes_the_baseline_stage(tmp_path):
    assert_recipe(model=make_model, stages="baseline", output_dir=tmp_path)  # the embedded digits data


def test_the_fixture_does_the_same(nnrecipe_recipe):
    result = nnrecipe_recipe(model=make_model, stages="baseline")
    assert result.verdict("overfit-one-batch").status.value == "pass"


def test_a_softmax_before_cross_entropy_fails_with_what_to_do(tmp_path):
    with pytest.raises(RecipeFailed, match="output-form") as failed:
        assert_recipe(model=SoftmaxOutput(), stages="baseline", output_dir=tmp_path)
    assert any(v.check == "output-form" and v.hint for v in failed.value.verdicts)
