"""The multi-label task (nnrecipe/tasks/multi_label.py) end to end: a correct setup passes
inspect-data, baseline and overfit with no warn; each bug of its kind is caught, both ways.
Data and models: tests/planted/multilabel.py; the shipped config: configs/multilabel.yaml."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import nnrecipe
from conftest import PLANTED, run_planted, write_spec
from nnrecipe.errors import SpecError
from nnrecipe.tasks import MULTI_LABEL
from nnrecipe.tasks.multi_label import example_f1
from nnrecipe.verdict import Status
from planted import multilabel

FAST = {
    "task": "multi-label",
    "optim.lr": 1e-3,
    "stages.baseline.steps": 300,
    "stages.baseline.eval_every": 100,
    "stages.baseline.overfit_steps": 300,
    "train.steps": 1500,
    "train.eval_every": 300,
}


def _run(tmp_path, stages, *, data="clean", model=multilabel.mlp, **kw):
    return run_planted(tmp_path, multilabel, stages, data=data, model=model, overrides={**FAST, **kw})


def test_example_f1_is_sklearns_samples_average():
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(0)
    truth, pred = rng.random((200, 6)) < 0.3, rng.random((200, 6)) < 0.3
    truth[:5], pred[:5] = False, False  # empty and empty: 1, as zero_division=1 scores them
    ours = example_f1(torch.as_tensor(pred), torch.as_tensor(truth)).mean().item()
    assert ours == pytest.approx(f1_score(truth, pred, average="samples", zero_division=1.0), abs=1e-12)


def test_a_correct_setup_passes_inspect_data_baseline_and_overfit(tmp_path):
    result = _run(tmp_path, ["inspect-data", "baseline", "overfit"])
    alarms = [(v.stage, v.check, v.message) for v in result.failed + result.warned]
    assert not alarms, alarms
    assert result.verdict("label-range").status is Status.PASS and result.verdict("class-balance").status is Status.PASS
    base = result.summary("baseline")
    # the dumb predictor (each label's prevalence) and loss at init = mean binary entropy of the prevalences
    y = multilabel.clean()["train"][1]
    p = y.mean(dim=0).double()
    entropy = float((-(p * p.log() + (1 - p) * (1 - p).log())).mean())
    assert result.verdict("loss-at-init").expected["binary entropy of the priors"] == pytest.approx(entropy, abs=0.02)
    assert base["baselines"]["prevalence"]["val_f1"] < 0.5 < base["model"]["val_f1"]
    assert result.verdict("fits-train").status is Status.PASS
    assert (result.run_dir / "inspect-data" / "class_balance.png").stat().st_size > 1000
    overall = result.summary("overfit")["overall"]  # reported beside the judged metric
    assert 0.5 < overall["micro_f1"] <= 1 and 0.5 < overall["mean_average_precision"] <= 1
    for name in ("per_class.csv", "mispredictions.csv", "mispredictions.png", "prediction_dynamics.png"):
        folder = "baseline" if name == "prediction_dynamics.png" else "overfit"
        assert (result.run_dir / folder / name).stat().st_size > 100, name


def test_label_errors_agree_with_sklearn():
    from sklearn.metrics import average_precision_score, f1_score

    from nnrecipe.probes.mispredictions import label_errors

    g = torch.Generator().manual_seed(0)
    y = (torch.rand(300, 4, generator=g) < 0.3).float()
    out = 2 * (y - 0.5) + torch.randn(300, 4, generator=g) * 1.5
    wrong = label_errors(out, y)
    pred = (out > 0).numpy()
    assert wrong.overall["micro_f1"] == pytest.approx(f1_score(y.numpy(), pred, average="micro"), abs=1e-4)
    assert wrong.overall["mean_average_precision"] == pytest.approx(
        average_precision_score(y.numpy(), torch.sigmoid(out).numpy(), average="macro"), abs=1e-4
    )
    assert [r["f1"] for r in wrong.per_class] == pytest.approx(list(f1_score(y.numpy(), pred, average=None)), abs=1e-4)
    assert wrong.top and all(r["true"] != r["predicted"] for r in wrong.top)


@pytest.mark.parametrize(
    "data, model, check, status",
    [
        ("class_indices", "mlp", "label-range", "fail"),
        ("soft_labels", "mlp", "label-range", "fail"),
        ("never_on", "mlp", "class-balance", "warn"),
        ("clean", "softmax_head", "output-form", "fail"),
    ],
)
def test_each_planted_bug_is_caught(tmp_path, data, model, check, status):
    stage = "baseline" if check == "output-form" else "inspect-data"
    result = _run(tmp_path, [stage], data=data, model=getattr(multilabel, model))
    v = result.verdict(check)
    assert v.status.value == status and v.hint, v
    if model == "softmax_head":
        assert "softmax" in v.message and "compete" in v.message


def test_a_softmax_loss_for_multi_label_is_refused_in_one_line():
    with pytest.raises(
        SpecError, match="loss: cross_entropy does not fit task multi-label: a softmax makes the labels compete"
    ):
        nnrecipe.run(
            model=multilabel.mlp,
            data=multilabel.clean(),
            stages="baseline",
            overrides={"task": "multi-label", "loss": "cross_entropy"},
        )


def test_a_source_with_one_label_per_example_is_refused_for_multi_label(cli):
    out = cli("validate", "task=multi-label", "--no-data")  # the default source: digits
    assert out.exit_code == 2 and "task: multi-label needs multi-hot targets (N, K)" in out.stderr


def test_class_indices_cannot_be_trained_on_as_multi_hot(cli, in_tmp):
    spec = write_spec(
        in_tmp,
        {
            "name": "idx",
            "task": "multi-label",
            "data": {"source": "python", "factory": f"{PLANTED}/multilabel.py:class_indices"},
            "model": {"arch": "python", "factory": f"{PLANTED}/multilabel.py:mlp"},
        },
    )
    out = cli("baseline", "--config", spec)
    assert out.exit_code == 2 and "class indices? multi-label trains on K values of 0 or 1" in out.stderr


def test_the_task_objects_answers():
    assert MULTI_LABEL.default_loss == "bce" and MULTI_LABEL.skip_reason("conflicting-labels")
    bias = MULTI_LABEL.ideal_bias("bce", priors=np.array([0.5, 0.1]))
    assert bias == pytest.approx([0.0, np.log(0.1 / 0.9)])
