"""nnrecipe as a library: nnrecipe.run on objects in memory, the result object, the per-stage
functions, typed errors instead of exits, and the CLI as a thin layer over the same call.

Models and data come from tests/planted (one good setup, one planted bug per shape)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import nnrecipe
from conftest import PLANTED, write_spec
from nnrecipe.errors import DataError, NNRecipeError, PluginError, SpecError
from nnrecipe.verdict import Status, Verdict
from planted import data_bugs, models

FAST = {
    "stages.baseline.steps": 200,
    "stages.baseline.eval_every": 100,
    "stages.baseline.overfit_steps": 300,
    "optim.lr": 1e-3,
}


def _baseline(tmp_path, **kw):
    kw.setdefault("overrides", FAST)
    return nnrecipe.baseline(output_dir=tmp_path / "runs", quiet=True, **kw)


def test_a_module_and_tensors_in_memory_pass_and_the_result_answers_questions(tmp_path):
    data = data_bugs.clean()
    net = models.mlp((1, 8, 8), 4)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x_before = data["train"][0].clone()
    result = _baseline(tmp_path, model=net, data=data, name="good")
    assert result.ok and not result.failed and not result.warned, result.failed + result.warned
    assert list(result.by_stage) == ["baseline"] and len(result.verdicts) == 14 and result.exit_code() == 0
    assert result.verdict("overfit-one-batch").status is Status.PASS
    assert result.summary("baseline")["model"]["val_accuracy"] > 0.9
    # the same Verdict objects the CLI writes, in the run directory the spec names
    on_disk = json.loads((result.run_dir / "baseline" / "verdicts.json").read_text())
    assert on_disk == json.loads(json.dumps([v.to_dict() for v in result.verdicts]))
    assert all(isinstance(v, Verdict) for v in result.verdicts) and result.run_dir == tmp_path / "runs" / "good"
    # nothing the user handed in was changed: weights and data as they were
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert torch.equal(data["train"][0], x_before)
    assert "good: baseline: 12 pass · 0 warn · 0 fail · 2 skip" in repr(result)


def test_a_planted_bug_in_memory_fails_and_names_the_check(tmp_path):
    result = _baseline(tmp_path, model=models.softmax_output((1, 8, 8), 4), data=data_bugs.clean())
    assert not result.ok and result.exit_code() == 1
    assert result.verdict("output-form").status is Status.FAIL and result.verdict("output-form").hint
    with pytest.raises(KeyError, match="no-such-check"):
        result.verdict("no-such-check")


def test_the_cli_and_the_library_give_the_same_verdicts_on_one_spec(cli, in_tmp):
    spec = {
        "name": "same",
        "data": {"source": "python", "factory": f"{PLANTED}/data_bugs.py:clean"},
        "model": {"arch": "python", "factory": f"{PLANTED}/models.py:log_softmax_output"},
        "optim": {"lr": 1e-3},
        "stages": {"baseline": {"steps": 200, "eval_every": 100, "overfit_steps": 300}},
    }
    path = write_spec(in_tmp, spec)
    out = cli("baseline", "--config", path, "--json")
    assert out.exit_code in (0, 1), out.stderr
    by_cli = [(v["check"], v["status"], v["message"]) for v in json.loads(out.stdout)]
    from_dict = nnrecipe.baseline(spec, quiet=True)  # a dict: the same fields as the file
    from_path = nnrecipe.baseline(path, quiet=True)
    for result in (from_dict, from_path):
        assert [(v.check, v.status.value, v.message) for v in result.verdicts] == by_cli
    assert ("output-form", "warn") in [(c, s) for c, s, _ in by_cli]  # a warn: strict makes it exit 1
    assert from_path.exit_code(strict=True) == 1 and from_path.exit_code() == 0


def test_a_module_is_copied_per_experiment_and_fresh_at_other_seeds():
    from nnrecipe.objects import ModuleCopies
    from nnrecipe.runtime import seed_everything

    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    with torch.no_grad():
        net[0].weight.fill_(0.5)  # "the user's weights": far from any random init
    make = ModuleCopies(net)
    make.run_seed = 7
    seed_everything(7)
    same = make((3,), 2)
    assert same is not net and torch.equal(same[0].weight, net[0].weight)
    seed_everything(8)
    other = make((3,), 2)
    seed_everything(8)
    again = make((3,), 2)
    assert not torch.equal(other[0].weight, net[0].weight) and torch.equal(other[0].weight, again[0].weight)
    assert torch.equal(net[0].weight, torch.full((4, 3), 0.5))  # the original is never touched


def test_factories_of_no_arguments_and_of_the_contract(tmp_path):
    calls = []

    def contract(input_shape, num_outputs, width=16):
        calls.append((tuple(input_shape), num_outputs, width))
        return nn.Sequential(
            nn.Flatten(), nn.Linear(math.prod(input_shape), width), nn.ReLU(), nn.Linear(width, num_outputs)
        )

    def no_arguments():
        return models.mlp((1, 8, 8), 4)

    data = data_bugs.clean()
    assert _baseline(tmp_path, model=contract, data=data, overrides={**FAST, "model.args.width": 32}).ok
    assert calls and all(c == ((1, 8, 8), 4, 32) for c in calls)
    assert _baseline(tmp_path, model=no_arguments, data=data).ok


def test_dataloaders_and_datasets_as_splits(tmp_path):
    (xt, yt), (xv, yv) = data_bugs.clean()["train"], data_bugs.clean()["val"]
    data = {"train": DataLoader(TensorDataset(xt, yt), batch_size=32, shuffle=True), "val": TensorDataset(xv, yv)}
    result = _baseline(tmp_path, model=models.mlp, data=data, name="loaders")
    assert result.ok
    assert "batch_size: 32" in (result.run_dir / "spec.yaml").read_text()  # the loader's batch size is used
    odd = {"train": DataLoader(TensorDataset(xt, yt), batch_size=8, collate_fn=lambda b: b), "val": (xv, yv)}
    with pytest.raises(DataError, match=r"data\['train'\]: a DataLoader with its own collate_fn"):
        _baseline(tmp_path, model=models.mlp, data=odd)


def test_errors_are_typed_and_carry_the_clis_line_never_an_exit(cli, in_tmp):
    class Exits(nn.Module):
        def forward(self, x):
            raise SystemExit(1)  # user code that exits: a PluginError, the interpreter stays

    with pytest.raises(PluginError, match="forward raised SystemExit"):
        _baseline(in_tmp, model=Exits(), data=data_bugs.clean())
    spec = write_spec(
        in_tmp,
        {
            "name": "raises",
            "data": {"source": "python", "factory": f"{PLANTED}/data_bugs.py:clean"},
            "model": {"arch": "python", "factory": f"{PLANTED}/models.py:raises"},
        },
    )
    out = cli("baseline", "--config", spec)
    with pytest.raises(PluginError) as raised:
        nnrecipe.baseline(spec, quiet=True)
    assert out.exit_code == 2 and out.stderr.strip() == f"error: {raised.value}"
    with pytest.raises(NNRecipeError, match="stages: unknown stage 'bseline'"):
        nnrecipe.run(stages="bseline")
    with pytest.raises(NNRecipeError, match="first overfit comes after last baseline"):
        nnrecipe.run(first="overfit", last="baseline")
    with pytest.raises(SpecError, match="optim.lr"):
        nnrecipe.run(overrides={"optim.lr": "fast"}, stages="baseline")


def test_a_recorded_spec_that_names_an_object_says_so_when_run_again(cli, in_tmp):
    result = _baseline(in_tmp, model=models.mlp((1, 8, 8), 4), data=data_bugs.clean(), name="once")
    again = cli("baseline", "--config", result.run_dir / "spec.yaml")
    assert again.exit_code == 2
    assert "was an object handed to nnrecipe.run() in another Python session" in again.stderr
    with pytest.raises(SpecError, match="stages.tune.workers"):  # other processes cannot see the objects
        nnrecipe.tune(
            model=models.mlp,
            data=data_bugs.clean(),
            overrides={"stages.tune.workers": 2},
            output_dir=in_tmp / "runs",
            quiet=True,
        )


def test_the_result_renders_the_report_in_a_notebook(tmp_path):
    result = _baseline(tmp_path, model=models.softmax_output((1, 8, 8), 4), data=data_bugs.clean(), name="shown")
    page = result._repr_html_()
    assert (
        page.startswith('<div class="nnrecipe nnrecipe-report"><style>div.nnrecipe.nnrecipe-report{')
        and "body{" not in page
    )  # styles kept inside
    assert page.count("data:image/png;base64,") == len(list((result.run_dir / "baseline").glob("*.png"))) >= 5
    assert '<td class="fail">fail</td>' in page and "what to do:" in page and "output-form" in page


def test_assert_recipe_fails_with_the_messages_and_hints(tmp_path):
    from nnrecipe.testing import RecipeFailed, assert_recipe

    kw = dict(data=data_bugs.clean(), overrides=FAST, output_dir=tmp_path)
    assert assert_recipe(model=models.mlp, **kw).ok
    with pytest.raises(RecipeFailed) as failed:
        assert_recipe(model=models.softmax_output, **kw)
    text = str(failed.value)
    assert "baseline/output-form: fail:" in text and "what to do:" in text and isinstance(failed.value, AssertionError)
    assert assert_recipe(model=models.log_softmax_output, **kw).warned  # a warn passes...
    with pytest.raises(RecipeFailed, match="baseline/output-form: warn"):
        assert_recipe(model=models.log_softmax_output, strict=True, **kw)  # ...unless strict
