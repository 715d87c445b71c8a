"""Outputs of any structure (nnrecipe/outputs.py): the prediction taken by the libraries'
conventions or by model.output, the whole output handed to a user loss, and one line (exit 2)
where there is no prediction to take. Models: tests/planted/outputs.py."""

from __future__ import annotations

from collections import namedtuple

import pytest
import torch

import nnrecipe
from conftest import PLANTED, write_spec
from nnrecipe.errors import PluginError
from nnrecipe.outputs import prediction, whole
from nnrecipe.verdict import Status
from planted import data_bugs, outputs

FAST = {
    "stages.baseline.steps": 200,
    "stages.baseline.eval_every": 100,
    "stages.baseline.overfit_steps": 300,
    "optim.lr": 1e-3,
}


def _baseline(tmp_path, model, **kw):
    overrides = {**FAST, **kw.pop("overrides", {})}
    return nnrecipe.baseline(
        model=model, data=data_bugs.clean(), overrides=overrides, output_dir=tmp_path / "runs", quiet=True, **kw
    )


def _pick(raw, key=None):
    return prediction(raw, key, field="model.factory", ref="m.py:net")


def test_the_prediction_by_convention_and_by_name():
    a, b = torch.randn(4, 3), torch.randn(4, 2)
    Out = namedtuple("Out", "scores extra")
    assert _pick(a) is a
    for raw, key, want in [
        ((a, b), None, a),
        ([b, a], 1, a),
        ({"out": a, "aux": b}, None, a),
        ({"loss": b, "logits": a}, None, a),
        (outputs.ModelOutput(logits=a), None, a),
        ({"scores": a}, "scores", a),
        (Out(a, b), "scores", a),
        (Out(a, b), 0, a),
    ]:
        got = _pick(raw, key)
        assert torch.equal(got, a if want is a else want) and whole(got) is raw, (raw, key)
    assert whole(a) is a  # a plain tensor is its own whole output


@pytest.mark.parametrize(
    "raw, key, needle",
    [
        (
            {"scores": torch.zeros(2, 2)},
            None,
            "forward returned a dict with keys scores with no logits or out; name the prediction with model.output",
        ),
        ({"logits": [[0.0]]}, None, "whose prediction is a list, not a tensor"),
        ((torch.zeros(2, 2),), 3, "model.output 3 is not in it"),
        ({"out": torch.zeros(2, 2)}, "logits", "model.output 'logits' is not in it"),
        ((), None, "a tuple of 0"),
    ],
)
def test_no_prediction_to_take_is_one_line(raw, key, needle):
    with pytest.raises(PluginError, match="^model.factory: m.py:net: ") as err:
        _pick(raw, key)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_an_auxiliary_head_trains_through_a_user_loss_and_is_named_when_a_builtin_loss_drops_it(tmp_path):
    good = _baseline(tmp_path, outputs.with_aux, loss=outputs.main_and_aux_loss(), name="aux-loss")
    assert good.ok and not good.warned, [(v.check, v.message) for v in good.failed + good.warned]
    dropped = _baseline(tmp_path, outputs.with_aux, name="aux-dropped")  # cross_entropy reads the first element only
    flow = dropped.verdict("gradients-flow")
    assert flow.status is Status.FAIL and "aux.weight" in str(flow.observed), flow


@pytest.mark.parametrize("factory", ["hf_style", "torchvision_style"])
def test_library_style_outputs_pass_the_baseline(tmp_path, factory):
    result = _baseline(tmp_path, getattr(outputs, factory), name=factory.replace("_", "-"))
    assert result.ok and not result.warned, [(v.check, v.message) for v in result.failed + result.warned]


def test_a_dict_without_logits_needs_model_output(cli, in_tmp):
    spec = write_spec(
        in_tmp,
        {
            "name": "scores",
            "data": {"source": "python", "factory": f"{PLANTED}/data_bugs.py:clean"},
            "model": {"arch": "python", "factory": f"{PLANTED}/outputs.py:named_scores"},
            "stages": {"baseline": {"steps": 200, "eval_every": 100, "overfit_steps": 300}},
            "optim": {"lr": 1e-3},
        },
    )
    out = cli("baseline", "--config", spec)
    assert out.exit_code == 2 and out.stderr.count("\n") == 1, out.stderr
    assert "with no logits or out; name the prediction with model.output" in out.stderr
    assert cli("baseline", "--config", spec, "model.output=scores").exit_code == 0


@pytest.mark.parametrize(
    "data, model, needle",
    [
        ("clean", "named_scores", "with no logits or out; name the prediction with model.output"),
        ("labels_out_of_range", "mlp", "labels lie outside [0, 4)"),
        ("clean", "logits_as_list", "whose prediction is a list, not a tensor"),
    ],
)
def test_validate_meets_what_the_first_stage_would(cli, in_tmp, data, model, needle):
    """validate loads the data and passes one batch through the model and the loss: wrong
    structure is one line, exit 2, before any stage runs (--no-data checks the spec only)."""
    where = "outputs" if model != "mlp" else "models"
    spec = write_spec(
        in_tmp,
        {
            "name": "v",
            "data": {"source": "python", "factory": f"{PLANTED}/data_bugs.py:{data}"},
            "model": {"arch": "python", "factory": f"{PLANTED}/{where}.py:{model}"},
        },
    )
    out = cli("validate", "--config", spec)
    assert out.exit_code == 2 and out.stderr.count("\n") == 1 and needle in out.stderr, out.stderr
    assert cli("validate", "--config", spec, "--no-data").exit_code == 0
