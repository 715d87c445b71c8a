"""data.source: text and the language-model plugin contract: windows, splits, vocabularies, errors."""

from pathlib import Path

import pytest
import torch

from conftest import PLANTED
from nnrecipe.data import build_data
from nnrecipe.errors import DataError, PluginError, SpecError
from nnrecipe.spec import build_spec
from nnrecipe.tasks import LANGUAGE_MODEL


def lm_spec(**data) -> object:
    return build_spec({"task": "language-model", "data": {"source": "text", **data}, "model": {"arch": "gpt"}})


def test_the_embedded_corpus_is_cut_into_shifted_windows_split_by_position():
    data = build_data(lm_spec(args={"context": 32, "max_chars": 20_000}), base=Path("."))
    info = data.sequence
    assert data.task is LANGUAGE_MODEL and data.kind == "sequence" and data.input_shape == (32,)
    assert data.num_outputs == info.size == len(data.class_names)
    x, y = data.train.x, data.train.y
    assert torch.equal(x[:, 1:], y[:, :-1]) and torch.equal(x[1:, 0], y[:-1, -1])  # shifted by one, back to back
    # train is the first 90% of the tokens (text's val_fraction 0.1), val the rest: no val token is a train input
    n_train, n_val = len(info.streams["train"]), len(info.streams["val"])
    assert n_train + n_val == 20_000 and n_val == 2000
    assert torch.equal(data.val.x[0], info.streams["val"][:32])
    assert info.decode(info.encode("The ")) == "The "
    assert (
        sum(n for _, n in info.documents) + 2 * (len(info.documents) - 1)
        >= 20_000
        > sum(n for _, n in info.documents[:-1])
    )


def test_a_folder_of_files_at_byte_level_and_overlapping_train_windows(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("héllo world " * 40)
    (tmp_path / "docs" / "b.txt").write_text("second file " * 40)
    (tmp_path / "docs" / "skip.md").write_text("not read")
    data = build_data(lm_spec(args={"path": "docs", "level": "byte", "context": 8, "stride": 4}), base=tmp_path)
    info = data.sequence
    assert info.size == 256 and [name for name, _ in info.documents] == ["a.txt", "b.txt"]
    assert torch.equal(data.train.x[1, :4], data.train.x[0, 4:])  # stride 4: train windows overlap by half
    assert torch.equal(data.val.x[1, 0], data.val.y[0, -1])  # val windows do not overlap
    assert "é" in info.decode(info.streams["train"][:20].tolist())


@pytest.mark.parametrize(
    "args, message",
    [
        ({"path": "missing.txt"}, "data.args.path: .*missing.txt does not exist"),
        ({"path": "latin1.txt"}, "is not UTF-8 text"),
        ({"path": "short.txt", "context": 64}, "the val split has .* tokens, fewer than one window"),
    ],
)
def test_bad_text_inputs_name_the_field(tmp_path, args, message):
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 ".encode("latin-1") * 50)
    (tmp_path / "short.txt").write_text("x" * 200)
    with pytest.raises(DataError, match=message):
        build_data(lm_spec(args=args), base=tmp_path)


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"task": "classification", "data": {"source": "text"}}, "data.source: text makes next-token examples"),
        ({"task": "language-model", "data": {"source": "digits"}}, "needs token sequences"),
        ({"task": "language-model", "data": {"source": "text"}, "model": {"arch": "mlp"}}, "not a sequence model"),
        ({"task": "classification", "model": {"arch": "gru"}}, "is a next-token model"),
        (
            {"task": "language-model", "data": {"source": "text"}, "model": {"arch": "gpt"}, "loss": "mse"},
            "does not fit",
        ),
        (
            {
                "task": "language-model",
                "data": {"source": "text", "augment": [{"name": "shift"}]},
                "model": {"arch": "gpt"},
            },
            "not token windows",
        ),
        (
            {"task": "language-model", "data": {"source": "text"}, "model": {"arch": "gpt", "args": {"n_embd": 30}}},
            "not a multiple of n_head",
        ),
    ],
)
def test_task_source_and_model_must_agree(raw, message):
    with pytest.raises(SpecError, match=message):
        build_spec(raw)


def _plugin(factory: str, **args):
    return build_spec(
        {
            "task": "language-model",
            "model": {"arch": "gpt"},
            "data": {"source": "python", "factory": f"{PLANTED}/sequence.py:{factory}", "args": args},
        }
    )


def test_the_plugin_contract_streams_or_hand_cut_windows():
    data = build_data(_plugin("streams", context=16), base=Path("."))
    assert data.input_shape == (16,) and torch.equal(data.train.x[:, 1:], data.train.y[:, :-1])
    hand = build_data(_plugin("unshifted_windows", context=16), base=Path("."))
    assert torch.equal(hand.train.x, hand.train.y)  # taken as given: causal-dependency is there to catch it


def test_plugin_mistakes_are_one_line_errors(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import torch\n"
        "def no_vocab():\n    return {'train': torch.arange(100), 'val': torch.arange(50), 'context': 8}\n"
        "def floats():\n    return {'train': torch.rand(100), 'val': torch.rand(50), 'vocab': ['a'], 'context': 8}\n"
        "def too_big():\n    return {'train': torch.arange(100), 'val': torch.arange(50), 'vocab': ['a'], 'context': 8}\n"
        "def bad_stride():\n    return {'train': torch.zeros(100, dtype=torch.long), 'val': torch.zeros(50, dtype=torch.long),"
        " 'vocab': ['a'], 'context': 8, 'stride': -1}\n"
        "def vocab_none():\n    return {'train': torch.zeros(100, dtype=torch.long), 'val': torch.zeros(50, dtype=torch.long),"
        " 'vocab': None, 'context': 8}\n"
    )
    for factory, message in (
        ("no_vocab", "missing vocab"),
        ("floats", "1-D tensor of integer token ids"),
        ("too_big", r"train token ids must lie in \[0, 1\) .*found 1"),
        ("bad_stride", "stride -1; expected an integer >= 1"),
        ("vocab_none", "returned vocab NoneType"),
    ):
        spec = build_spec(
            {
                "task": "language-model",
                "model": {"arch": "gpt"},
                "data": {"source": "python", "factory": f"{bad}:{factory}"},
            }
        )
        with pytest.raises(PluginError, match=message):
            build_data(spec, base=tmp_path)


def test_a_prompt_in_a_word_vocabulary_is_matched_longest_first():
    from nnrecipe.data.text import SequenceInfo

    info = SequenceInfo(vocab=["t", "h", "e", "the", " ", "cat", "c", "a"], level="custom", context=4)
    assert info.encode("the cat") == [3, 4, 5]  # "the", " ", "cat" — not t, h, e, ...
    assert info.decode(info.encode("the cat")) == "the cat"
    assert info.encode("thex") == [3]  # "x" is not in the vocabulary: dropped
    chars = SequenceInfo(vocab=["a", "b"], level="char", context=4)
    assert chars.encode("abba") == [0, 1, 1, 0]
