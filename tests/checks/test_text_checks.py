"""inspect-data's text rules on synthetic measurements."""

import dataclasses

import numpy as np

from nnrecipe.checks.text_checks import duplicate_windows, non_printable, sequence_lengths, text_splits, vocabulary
from nnrecipe.probes.text_scan import TextMeasurements
from nnrecipe.spec_stages import InspectDataSpec
from nnrecipe.verdict import Status

CFG = InspectDataSpec()


def text(**kw) -> TextMeasurements:
    vocab = list("abc \n")
    base = dict(
        level="char",
        vocab=vocab,
        shown=["a", "b", "c", "␣", "\\n"],
        context=64,
        counts={"train": np.array([400, 300, 200, 90, 10]), "val": np.array([40, 30, 20, 9, 1])},
        windows={"train": 6000, "val": 700},
        documents=[("a", 2000), ("b", 3000)],
        line_lengths=np.array([40, 50, 60]),
        nonprintable={},
        leaked={"val": 2},
        train_repeats=3,
        examples=["#1: abc"],
        leak_examples=[],
    )
    base.update(kw)
    return TextMeasurements(**base)


def test_clean_text_passes_every_rule():
    m = text()
    for rule in (text_splits, vocabulary, non_printable, sequence_lengths, duplicate_windows):
        v = rule(m, CFG)
        assert v.status is Status.PASS, (v.check, v.message)


def test_a_document_in_both_splits_fails_and_boilerplate_warns():
    assert duplicate_windows(text(leaked={"val": 600}), CFG).status is Status.FAIL  # 86% of val windows
    v = duplicate_windows(text(leaked={"val": 40}), CFG)  # 5.7%: lower bound 4.2% > 1%
    assert v.status is Status.WARN and "5.7%" in v.message
    assert duplicate_windows(text(leaked={"val": 9}), CFG).status is Status.PASS  # 1.3%: lower bound under 1%


def test_val_tokens_never_seen_in_train_warn():
    m = text(counts={"train": np.array([400, 300, 200, 90, 0]), "val": np.array([40, 30, 20, 9, 50])})
    v = vocabulary(m, CFG)
    assert v.status is Status.WARN and "\\n" in v.message


def test_control_characters_warn_and_a_plugin_vocabulary_skips():
    m = text(
        nonprintable={"\\r": 500},
        counts={"train": np.array([40000, 30000, 20000, 9000, 1000]), "val": np.array([4000, 3000, 2000, 900, 100])},
    )
    v = non_printable(m, CFG)
    assert v.status is Status.WARN and "\\r" in v.message
    assert non_printable(dataclasses.replace(m, level="custom"), CFG).status is Status.SKIP


def test_documents_shorter_than_the_context_warn_and_a_tiny_val_warns():
    assert sequence_lengths(text(documents=[("a", 20), ("b", 30), ("c", 3000)]), CFG).status is Status.WARN
    assert text_splits(text(windows={"train": 6000, "val": 20}), CFG).status is Status.WARN
