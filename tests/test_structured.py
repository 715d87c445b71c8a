"""Structured inputs (nnrecipe/inputs.py): dict and tuple batches through the stages, the
padding-invariance of masked inputs both ways, and bad structure refused in one line.

The shipped configs configs/text-bag.yaml and configs/text-bert.yaml run every stage with no
false alarm in tests/test_configs.py; here: the verbs, the rule's false-alarm rate, the planted
bugs (tests/planted/text.py, tests/planted/tabular.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

import nnrecipe
from nnrecipe import inputs
from nnrecipe.checks.mask_checks import mask_padding as judge
from nnrecipe.data.bundle import TensorSplit
from nnrecipe.errors import DataError
from nnrecipe.plugins import guard_module
from nnrecipe.probes.mask_probes import mask_leaf, mask_padding
from nnrecipe.verdict import Status
from planted import tabular, text

ROOT = Path(__file__).resolve().parents[1]
PLANTED = ROOT / "tests" / "planted"


def _plugin():
    spec = importlib.util.spec_from_file_location(
        "text_classification", ROOT / "configs/plugins/text_classification.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TEXT = _plugin()


# ----------------------------------------------------------------------------- the verbs


def test_leaves_are_named_by_path_in_a_fixed_order():
    t = torch.zeros(4, 2)
    x = {"a": t, "b": (t, {"c": t.long()})}
    assert [n for n, _ in inputs.leaves(x)] == ["a", "b[0]", "b[1].c"]
    assert [n for n, _ in inputs.leaves(t)] == ["x"]
    assert inputs.describe(x).startswith("a float32 (4, 2), b[0] float32 (4, 2), b[1].c int64 (4, 2)")


def test_index_cat_and_stack_keep_the_structure():
    x = {"ids": torch.arange(12).reshape(6, 2), "pair": (torch.randn(6, 3), torch.randn(6))}
    parts = [inputs.index(x, slice(0, 4)), inputs.index(x, slice(4, 6))]
    whole = inputs.cat(parts)
    assert all(torch.equal(a, b) for a, b in zip(inputs.tensors(whole), inputs.tensors(x)))
    stacked = inputs.stack([inputs.index(x, i) for i in range(6)])
    assert all(torch.equal(a, b) for a, b in zip(inputs.tensors(stacked), inputs.tensors(x)))
    assert isinstance(whole["pair"], tuple) and inputs.batch_len(whole) == 6
    assert inputs.row_bytes(x)[0] != inputs.row_bytes(x)[1]


def test_problem_names_the_leaf():
    assert inputs.problem({"a": torch.zeros(3, 2), "b": torch.zeros(2, 2)}) == (
        "its leaves have different numbers of rows (a 3, b 2)"
    )
    assert inputs.problem({"a": torch.zeros(3), "b": [1, 2, 3]}) == "b is a list, not a tensor" or inputs.problem(
        {"a": torch.zeros(3), "b": "text"}
    )
    assert inputs.problem({"a": torch.zeros(3), "b": "text"}) == "b is a str, not a tensor"
    assert inputs.problem({}) == "an empty dict"
    assert inputs.problem((torch.zeros(3), torch.zeros(3))) == ""


def test_the_model_is_called_by_the_structure_or_by_model_call():
    seen = []

    class Probe(torch.nn.Module):
        def forward(self, *args, **kwargs):
            seen.append((len(args), sorted(kwargs)))
            return torch.zeros(2, 1)

    model = guard_module(Probe(), field="model.factory", ref="probe")
    a, b = torch.zeros(2, 3), torch.zeros(2, 4)
    model({"a": a, "b": b})
    model((a, b))
    model(a)
    guard_module(model, field="model.factory", ref="probe", call="single")({"a": a, "b": b})
    assert seen == [(0, ["a", "b"]), (2, []), (1, []), (1, [])]


def test_a_tensor_split_of_dicts_batches_and_shuffles_every_leaf_alike():
    n = 10
    x = {"ids": torch.arange(n).reshape(n, 1).repeat(1, 3), "mask": torch.arange(n).reshape(n, 1)}
    split = TensorSplit("train", x, torch.arange(n))
    seen = []
    for xb, yb in split.iterate(4, shuffle=True, generator=torch.Generator().manual_seed(0)):
        assert torch.equal(xb["ids"][:, 0], yb) and torch.equal(xb["mask"][:, 0], yb)
        seen += yb.tolist()
    assert sorted(seen) == list(range(n))
    assert len(split.subset(torch.tensor([1, 3]))) == 2
    with pytest.raises(DataError, match="the train split's inputs cannot be batched: its leaves have different"):
        TensorSplit("train", {"ids": torch.zeros(4, 2), "mask": torch.zeros(3, 2)}, torch.zeros(4))


# ----------------------------------------------------------------------------- padding-invariance, both ways


def _judge(model, x, rtol=1e-4):
    model = guard_module(model, field="model.factory", ref="m")
    p, why = mask_padding(model, x, mask_leaf(x), pad=8)
    return (judge(p, rtol), p) if p is not None else (why, None)


def _val(seed: int, n: int = 64):
    return TEXT.make_data(n_train=10, n_val=n, seed=seed)["val"][0]


@pytest.mark.parametrize("seed", range(5))
def test_models_that_read_the_mask_pass_and_the_one_that_ignores_it_fails(seed):
    """The false-alarm rate by simulation: 5 data seeds x 2 correct models (a masked mean, a
    transformers BERT), each at a fresh init: no fail; the planted model fails at every seed."""
    x = _val(seed)
    torch.manual_seed(seed)
    for model in (TEXT.make_bag(None, 2), TEXT.make_bert({"input_ids": (32,)}, 2)):
        verdict, p = _judge(model, x)
        assert verdict.status is Status.PASS, verdict.message
        assert p.how == "appended" and p.padded == ["input_ids", "attention_mask"]
    verdict, _ = _judge(text.ignores_mask(None, 2), x)
    assert verdict.status is Status.FAIL and "does not respect attention_mask" in verdict.message


def test_a_model_of_one_length_is_skipped_with_the_reason():
    why, _ = _judge(text.FixedLength(64, 2, 32), _val(0))
    assert why == "the model takes only sequences of 32 positions: padding cannot be added or removed"


def test_only_a_0_1_leaf_named_as_masks_are_is_a_mask():
    ids = torch.randint(0, 5, (4, 6))
    assert mask_leaf({"input_ids": ids, "attention_mask": (ids > 0).long()}) == "attention_mask"
    assert mask_leaf({"input_ids": ids, "attention_mask": ids}) is None  # not 0/1
    assert mask_leaf({"input_ids": ids, "labels": (ids > 0).long()}) is None
    assert mask_leaf(ids) is None


def test_a_mask_the_spec_names_is_used_and_a_wrong_one_is_one_line():
    ids = torch.randint(0, 5, (4, 6))
    assert mask_leaf((ids, (ids > 0).long()), "[1]") == "[1]"
    with pytest.raises(DataError, match=r"data\.mask: no input leaf 'valid' \(the leaves: \[0\], \[1\]\)"):
        mask_leaf((ids, (ids > 0).long()), "valid")
    with pytest.raises(DataError, match=r"data\.mask: leaf '\[0\]' is int64 \(6,\) per example; a padding mask holds"):
        mask_leaf((ids, (ids > 0).long()), "[0]")


# ----------------------------------------------------------------------------- through the stages

FAST = {"stages.baseline.steps": 300, "stages.baseline.eval_every": 100, "train.steps": 600, "train.eval_every": 200}


def test_the_planted_text_model_fails_padding_invariance_in_the_baseline(tmp_path):
    result = nnrecipe.run(
        model=text.ignores_mask,
        data=TEXT.make_data(n_train=600, n_val=300),
        stages="baseline",
        overrides=FAST,
        output_dir=tmp_path / "runs",
        quiet=True,
    )
    v = result.verdict("padding-invariance")
    assert v.status is Status.FAIL and v.observed["mask"] == "attention_mask", v
    assert [x.check for x in result.failed] == ["padding-invariance"]  # nothing else cries wolf


def test_a_mask_without_a_mask_name_is_judged_where_data_mask_names_it(tmp_path):
    """(ids, mask) tuples: no leaf is named as masks are, so padding-invariance needs data.mask."""
    made = TEXT.make_data(n_train=300, n_val=200)
    data = {k: ((x["input_ids"], x["attention_mask"]), y) for k, (x, y) in made.items() if k in ("train", "val")}
    light = {"stages.baseline.steps": 30, "stages.baseline.eval_every": 30, "stages.baseline.overfit_steps": 30}
    run = lambda **o: nnrecipe.run(  # noqa: E731  (padding-invariance is measured on the untrained model)
        model=text.ignores_mask, data=data, stages="baseline", overrides={**light, **o}, output_dir=tmp_path, quiet=True
    )
    assert "padding-invariance" not in {v.check for v in run().verdicts}  # no mask found: not judged
    v = run(**{"data.mask": "[1]"}).verdict("padding-invariance")
    assert v.status is Status.FAIL and v.observed["mask"] == "[1]", v


def test_tuple_inputs_of_codes_and_numbers_pass_inspect_data_to_overfit(tmp_path):
    """(x_cat, x_num) called model(*x): no alarm; per-leaf verdicts; the structured linear baseline."""
    result = nnrecipe.run(
        model=tabular.embedded,
        data=tabular.mixed(),
        stages=["inspect-data", "baseline", "overfit"],
        overrides={**FAST, "optim.lr": 3e-3},
        output_dir=tmp_path / "runs",
        quiet=True,
    )
    alarms = [(v.stage, v.check, v.message) for v in result.failed + result.warned]
    assert not alarms, alarms
    assert set(result.verdict("shapes-dtypes").observed) == {"[0]", "[1]"}  # one per leaf
    assert result.verdict("input-scale").observed["[0]"]["ids"]
    assert result.verdict("batch-independence").status is Status.PASS  # x_num directly, x_cat at its embeddings
    linear = result.summary("baseline")["baselines"]["linear"]["val_accuracy"]
    assert linear > 0.7  # one-hot codes and the numbers, linearly
    assert (result.run_dir / "inspect-data" / "examples_grid.png").stat().st_size > 10_000


# ----------------------------------------------------------------------------- refused in one line


def _spec(tmp_path, data: str, model: str) -> Path:
    import yaml

    spec = {
        "name": "bad",
        "data": {"source": "python", "factory": data},
        "model": {"arch": "python", "factory": model},
    }
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.parametrize(
    "data, model, needle",
    [
        (
            f"{PLANTED}/text.py:mismatched_rows",
            f"{ROOT}/configs/plugins/text_classification.py:make_bag",
            "inputs that cannot be batched: its leaves have different numbers of rows (input_ids 100, attention_mask 90)",
        ),
        (
            f"{ROOT}/configs/plugins/text_classification.py:make_data",
            f"{PLANTED}/text.py:needs_token_types",
            "missing 1 required positional argument: 'token_type_ids'",
        ),
    ],
)
def test_bad_structure_is_one_line_exit_2_in_validate_and_run(cli, tmp_path, data, model, needle):
    path = _spec(tmp_path, data, model)
    for command in (("validate", "--config", path), ("baseline", "--config", path)):
        result = cli(*command)
        assert result.exit_code == 2, (command, result.stderr)
        assert needle in result.stderr and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_a_dataset_of_dict_examples_is_collated_and_materialized():
    from torch.utils.data import Dataset

    from nnrecipe.data.bundle import LazySplit

    class Dicts(Dataset):
        def __len__(self):
            return 5

        def __getitem__(self, i):
            return {"ids": torch.full((3,), i), "mask": torch.ones(3, dtype=torch.long)}, i % 2

    split = LazySplit("train", Dicts(), owner="data.factory")
    (xb, yb), *_ = list(split.iterate(4))
    assert set(xb) == {"ids", "mask"} and xb["ids"].shape == (4, 3) and yb.tolist() == [0, 1, 0, 1]
    whole = split.materialize(batch_size=2)
    assert torch.equal(whole.x["ids"][:, 0], torch.arange(5)) and len(whole) == 5
    assert inputs.shape(split.example(0)[0]) == {"ids": (3,), "mask": (3,)}
