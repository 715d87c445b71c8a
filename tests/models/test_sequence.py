"""The built-in next-token models and the refusal of the stages that cannot judge them yet."""

from pathlib import Path

import pytest
import torch

from conftest import write_spec
from nnrecipe.data import build_data
from nnrecipe.models import larger_model_spec, prepare_model
from nnrecipe.spec import build_spec


@pytest.mark.parametrize(
    "arch, args, wider",
    [
        ("gpt", {"n_layer": 1, "n_head": 2, "n_embd": 16}, ("n_embd", 32)),
        ("gru", {"n_embd": 8, "hidden": 16}, ("hidden", 32)),
    ],
)
def test_builtin_sequence_models_return_logits_per_position(arch, args, wider):
    spec = build_spec(
        {
            "task": "language-model",
            "data": {"source": "text", "args": {"context": 16, "max_chars": 5000}},
            "model": {"arch": arch, "args": args},
        }
    )
    data = build_data(spec, base=Path("."))
    model = prepare_model(spec, data, base=Path("."))
    x = data.train.x[:3]
    assert model(x).shape == (3, 16, data.num_outputs)
    assert getattr(larger_model_spec(spec).args, wider[0]) == wider[1]


def test_gpt_refuses_windows_longer_than_its_context():
    from nnrecipe.models.sequence import GPT

    with pytest.raises(ValueError, match="longer than the model's context"):
        GPT(10, 8, n_layer=1, n_head=1, n_embd=8, dropout=0.0)(torch.zeros(1, 9, dtype=torch.long))


def test_a_language_model_must_measure_its_seed_spread(cli, in_tmp):
    """regularize and tune compare separately trained language models against the spread
    between seeds, which takes two seeds or more: fewer is one line, exit 2, before any work."""
    spec = write_spec(
        in_tmp,
        {
            "name": "lm",
            "task": "language-model",
            "model": {"arch": "gpt"},
            "data": {"source": "text", "args": {"max_chars": 5000}},
        },
    )
    for override, field in (
        ("stages.regularize.seeds=1", "stages.regularize.seeds"),
        ("stages.tune.confirm_seeds=1", "stages.tune.confirm_seeds"),
    ):
        result = cli("run", "--config", spec, override)
        assert result.exit_code == 2 and field in result.stderr and "2 or more" in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert not (in_tmp / "runs" / "lm").exists()


def test_inspect_data_with_a_model_refuses_a_language_model_in_one_line(cli, in_tmp):
    spec = write_spec(
        in_tmp,
        {
            "name": "lm",
            "task": "language-model",
            "model": {"arch": "gpt"},
            "data": {"source": "text", "args": {"max_chars": 5000}},
        },
    )
    result = cli("inspect-data", "--config", spec, "--model", in_tmp)
    assert result.exit_code == 2 and "inspect-data --model: not for language models yet" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
