"""What a language model's text holds: token counts, documents and lines, control characters,
and the val windows that occur verbatim in the train text. Measures only; checks/text_checks.py
judges."""

from __future__ import annotations

import dataclasses
import unicodedata
from typing import Union

import numpy as np

WHITESPACE_OK = ("\n", "\t")


@dataclasses.dataclass
class TextMeasurements:
    level: str  # char | byte | custom
    vocab: list[str]
    shown: list[str]  # the vocabulary as it prints
    context: int
    counts: dict[str, np.ndarray]  # split -> count of each token id (over the split's stream)
    windows: dict[str, int]  # split -> windows cut from it
    documents: list[tuple[str, int]]  # (name, characters); empty for a plugin's streams
    line_lengths: np.ndarray  # tokens per line (between newline tokens) over the train stream
    nonprintable: dict[str, int]  # shown token -> count over all splits
    leaked: dict[str, int]  # split -> its windows (L + 1 tokens) found verbatim in the train stream
    train_repeats: int  # train windows equal to an earlier train window
    examples: list[str]  # a few train windows, decoded
    leak_examples: list[str]  # a few val windows that occur in train, decoded


def _window_keys(stream: np.ndarray, length: int, vocab_size: int, stride: int = 1) -> np.ndarray:
    """Every `length`-token window of a stream at `stride`, as one bytes object per window.
    The packing depends on the vocabulary only, so keys of different splits compare."""
    if len(stream) < length:
        return np.zeros(0, dtype=object)
    view = np.lib.stride_tricks.sliding_window_view(stream, length)[::stride]
    dtype = np.uint8 if vocab_size <= 256 else np.int32
    packed = np.ascontiguousarray(view.astype(dtype))
    return packed.view(np.dtype((np.void, packed.shape[1] * packed.itemsize))).ravel()


def _nonprintable(token: str, level: str) -> bool:
    """Control (Cc) and invisible format (Cf: zero-width) characters; Unicode spaces are text."""
    if level == "custom" or token in WHITESPACE_OK:
        return False
    if level == "byte":  # bytes >= 128 are parts of UTF-8 characters, not control characters
        return len(token) == 1 and (ord(token) < 32 or ord(token) == 127)
    return len(token) == 1 and unicodedata.category(token) in ("Cc", "Cf")


def scan_text(data, *, examples: int = 6, seed: int = 0) -> TextMeasurements:
    info = data.sequence
    v = info.size
    streams = {k: s.cpu().numpy().astype(np.int64) for k, s in info.streams.items()}
    counts = {k: np.bincount(s, minlength=v)[:v] for k, s in streams.items()}
    total = sum(counts.values(), np.zeros(v, dtype=np.int64))
    nonprintable = {
        _shown(info.vocab[i]): int(total[i]) for i in range(v) if total[i] and _nonprintable(info.vocab[i], info.level)
    }
    newline = info.encode("\n") if info.level != "custom" else []
    train = streams["train"]
    if len(newline) == 1:
        cuts = np.flatnonzero(train == newline[0])
        line_lengths = np.diff(np.concatenate([[-1], cuts, [len(train)]])) - 1
    else:
        line_lengths = np.zeros(0, dtype=np.int64)
    # Leakage: every (L + 1)-token stretch of the train text, at every offset, against the
    # val/test windows exactly as the model sees them (x and the last target).
    length = info.context + 1
    train_keys = set(_window_keys(train, length, v).tolist())
    leaked, leak_examples = {}, []
    for name in streams:
        if name == "train":
            continue
        keys = _window_keys(streams[name], length, v, stride=info.context)
        hits = np.array([k in train_keys for k in keys.tolist()], dtype=bool)
        leaked[name] = int(hits.sum())
        for i in np.flatnonzero(hits)[:3]:
            leak_examples.append(
                f"{name} window {i}: {info.decode(streams[name][i * info.context : i * info.context + length])}"
            )
    x = data.train.x if hasattr(data.train, "x") else None
    train_repeats = 0
    if x is not None and len(x):
        rows = x.cpu().numpy()
        train_repeats = len(rows) - len(np.unique(rows, axis=0))
    rng = np.random.default_rng(seed)
    n_train = len(data.train)
    pick: Union[np.ndarray, list[int]] = (
        rng.choice(n_train, size=min(examples, n_train), replace=False) if n_train else []
    )
    shown_examples = [f"#{int(i)}: {info.decode(data.train.example(int(i))[0])}" for i in pick]
    return TextMeasurements(
        level=info.level,
        vocab=info.vocab,
        shown=[_shown(t) for t in info.vocab],
        context=info.context,
        counts=counts,
        windows={k: len(sp) for k, sp in data.splits().items()},
        documents=list(info.documents),
        line_lengths=line_lengths,
        nonprintable=nonprintable,
        leaked=leaked,
        train_repeats=int(train_repeats),
        examples=shown_examples,
        leak_examples=leak_examples,
    )


def _shown(token: str) -> str:
    from nnrecipe.data.text import shown

    return shown(token)


def unseen(m: TextMeasurements, split: str = "val") -> tuple[int, int, list[str]]:
    """(tokens of `split` whose id never occurs in train, all tokens of `split`, those ids shown)."""
    c, train = m.counts[split], m.counts["train"]
    mask = (c > 0) & (train == 0)
    return int(c[mask].sum()), int(c.sum()), [m.shown[i] for i in np.flatnonzero(mask)]
