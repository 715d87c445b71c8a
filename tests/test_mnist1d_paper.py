"""A short version of the MNIST-1D paper's table (Greydanus 2020): with the three shipped configs'
data, models and optimizers, the CNN clearly beats the MLP, which clearly beats logistic
regression, which clearly beats chance.

Each model trains briefly through nnrecipe's own training function (the one the regularize
stage uses), plain (no augmentation, as baseline and overfit train). "Clearly" is the project's
convention: paired over the same val examples (McNemar), beyond 3 standard errors. The full
recipe on each config, with its test accuracies against the paper's, is measured in
docs/mnist1d.md.
"""

import math

import numpy as np
import torch

from conftest import CONFIGS
from nnrecipe.data import build_data
from nnrecipe.experiments import Experiment, run_experiment
from nnrecipe.spec import load_spec
from nnrecipe.stats import mcnemar_z

ROWS = ("linear", "mlp", "cnn")  # the paper's order: 32%, 68%, 94% test accuracy
STEPS = 400  # a tenth of the paper's 6,000 steps keeps the test to a few seconds on one CPU thread
Z = 3.0  # stages.*.significance_z's default


def test_cnn_beats_mlp_beats_logistic_regression_beyond_noise():
    specs = {row: load_spec(CONFIGS / f"mnist1d-{row}.yaml") for row in ROWS}
    # One table: the three rows train and are judged on the same data and split.
    assert len({s.data.model_dump_json(exclude={"augment"}) for s, _ in specs.values()}) == 1
    spec0, base0 = specs["linear"]
    data = build_data(spec0, base=base0).to(torch.device("cpu"))
    correct = {}
    for row, (spec, base) in specs.items():
        spec = spec.model_copy(update={"data": spec.data.model_copy(update={"augment": []})})
        run = run_experiment(
            Experiment(row, spec, steps=STEPS, eval_every=STEPS, seed=0),
            data=data,
            base=base,
            device=torch.device("cpu"),
        )
        assert not run.diverged and run.steps == STEPS
        correct[row] = np.asarray(run.val_scores) > 0.5
    n = len(correct["linear"])
    accuracy = {row: float(c.mean()) for row, c in correct.items()}
    chance = 1 / 10
    z_chance = (accuracy["linear"] - chance) / math.sqrt(chance * (1 - chance) / n)  # binomial, 10 balanced classes
    z_mlp, *_ = mcnemar_z(correct["mlp"], correct["linear"])
    z_cnn, *_ = mcnemar_z(correct["cnn"], correct["mlp"])
    assert z_chance >= Z and z_mlp >= Z and z_cnn >= Z, (accuracy, z_chance, z_mlp, z_cnn)
