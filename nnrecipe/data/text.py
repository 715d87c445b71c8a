"""`data.source: text` and the sequence side of `data.source: python`: next-token examples.

A text (one file, a folder of files, or by default the Python documentation that ships with
CPython) becomes one token stream, split by position: train is the first part, then val,
then test. Each example is a window of `context` tokens x = t[i..i+L-1] with the targets
y = t[i+1..i+L] (the same window shifted by one). Windows are cut inside each split's
stretch, so no window crosses a split boundary and no val token is ever a training input.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from nnrecipe.data.bundle import DataBundle, TensorSplit
from nnrecipe.data.common import resolve_path
from nnrecipe.errors import DataError, PluginError
from nnrecipe.losses import IGNORE_INDEX
from nnrecipe.tasks import LANGUAGE_MODEL

EMBEDDED = "pydoc_data.topics"  # CPython's own documentation text: no download


@dataclasses.dataclass
class SequenceInfo:
    """What a language-model task knows beyond its windows: the vocabulary and the raw streams."""

    vocab: list[str]  # the text of each token id (a character, or a byte shown as latin-1)
    level: str  # char | byte | custom (a plugin's vocabulary)
    context: int  # tokens per window
    prompt: str = "The "  # generated from at every evaluation
    streams: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict, repr=False)  # split -> 1-D ids
    documents: list[tuple[str, int]] = dataclasses.field(default_factory=list)  # (name, characters) per document

    @property
    def size(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`: bytes, or the longest vocabulary entry at each position (a
        plugin's vocabulary may hold words or pieces); characters it cannot match are dropped."""
        if self.level == "byte":
            return list(text.encode("utf-8"))
        lookup = {t: i for i, t in enumerate(self.vocab) if t}
        longest = max((len(t) for t in lookup), default=1)
        ids, i = [], 0
        while i < len(text):
            for n in range(min(longest, len(text) - i), 0, -1):
                if text[i : i + n] in lookup:
                    ids.append(lookup[text[i : i + n]])
                    i += n
                    break
            else:
                i += 1
        return ids

    def decode(self, ids) -> str:
        ids = [int(i) for i in ids]
        if self.level == "byte":
            return bytes(ids).decode("utf-8", errors="replace")
        return "".join(self.vocab[i] if 0 <= i < len(self.vocab) else "\ufffd" for i in ids)


def read_corpus(args, base: Path) -> tuple[str, list[tuple[str, int]]]:
    """The text and its documents (name, length): a file, a folder's files, or the embedded corpus."""
    if args.path is None:
        import pydoc_data.topics as topics

        docs = [(name, topics.topics[name]) for name in sorted(topics.topics)]
    else:
        p = resolve_path(args.path, base, field="data.args.path")
        files = sorted(f for f in p.rglob(args.glob) if f.is_file()) if p.is_dir() else [p]
        if not files:
            raise DataError(f"data.args.path: {p} holds no file matching {args.glob!r}")
        docs = []
        for f in files:
            try:
                docs.append((str(f.relative_to(p)) if p.is_dir() else f.name, f.read_text(encoding="utf-8")))
            except UnicodeDecodeError as exc:
                raise DataError(
                    f"data.args.path: {f} is not UTF-8 text (byte {exc.start}); convert it, or point to text files only"
                ) from None
    if args.max_chars is not None:  # the documents that were read, the last one cut short
        kept, left = [], args.max_chars
        for name, d in docs:
            if left <= 0:
                break
            kept.append((name, d[:left]))
            left -= len(d) + 2  # the blank line that joins two documents
        docs = kept
    text = "\n\n".join(d for _, d in docs)
    if args.max_chars is not None:
        text = text[: args.max_chars]
    return text, [(name, len(d)) for name, d in docs]


def cut(stream: torch.Tensor, context: int, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) windows of a 1-D stream: x = t[i:i+L], y = t[i+1:i+L+1], i = 0, stride, 2*stride, ..."""
    if len(stream) < context + 1:
        return torch.empty(0, context, dtype=torch.long), torch.empty(0, context, dtype=torch.long)
    w = stream.unfold(0, context + 1, stride)  # (N, L+1), a view
    return w[:, :-1].contiguous(), w[:, 1:].contiguous()


def sequence_bundle(
    streams: dict[str, torch.Tensor],
    info: SequenceInfo,
    *,
    stride: int,
    source: str,
    description: str,
    field: str = "data",
    windows: dict | None = None,
) -> DataBundle:
    """Windows of each split's stream; train at `stride`, val/test without overlap. `windows`
    (a plugin's own (X, Y) per split) are taken as given: their bugs are for the checks to find."""
    splits = {}
    for name, ids in streams.items():
        if windows and name in windows:
            x, y = windows[name]
            if x.shape[1] != info.context:
                raise PluginError(f"{field}: the {name} windows have {x.shape[1]} tokens; context is {info.context}")
            bad = ~((y == IGNORE_INDEX) | ((y >= 0) & (y < info.size)))
            if bad.any():
                raise PluginError(
                    f"{field}: the {name} targets hold {int(y[bad][0])}; token ids lie in "
                    f"[0, {info.size}) and {IGNORE_INDEX} marks padding"
                )
        else:
            x, y = cut(ids.long(), info.context, stride if name == "train" else info.context)
        if len(x) == 0:
            raise DataError(
                f"{field}: the {name} split has {len(ids)} tokens, fewer than one window of "
                f"{info.context} + 1; lower data.args.context or give more text"
            )
        splits[name] = TensorSplit(name, x, y)
    for name, ids in streams.items():
        bad = (ids < 0) | (ids >= info.size)
        if bad.any():
            raise (PluginError if field == "data.factory" else DataError)(
                f"{field}: the {name} token ids must lie in [0, {info.size}) (the vocabulary's size); "
                f"found {int(ids[bad][0])}"
            )
    info.streams = streams
    return DataBundle(
        task=LANGUAGE_MODEL,
        source=source,
        train=splits["train"],
        val=splits["val"],
        test=splits.get("test"),
        num_classes=info.size,
        class_names=[shown(t) for t in info.vocab],
        description=description,
        sequence=info,
    )


def shown(token: str) -> str:
    """A token as it can be printed in a table or a picture: whitespace and controls escaped."""
    return {"\n": "\\n", "\t": "\\t", " ": "␣", "\r": "\\r"}.get(token) or (
        token if token.isprintable() else token.encode("unicode_escape").decode("ascii")
    )


def load(spec, base: Path) -> DataBundle:
    args = spec.data.args
    text, documents = read_corpus(args, base)
    if args.level == "byte":
        ids = torch.tensor(list(text.encode("utf-8")), dtype=torch.long)
        vocab = [bytes([i]).decode("latin-1") for i in range(256)]
    else:
        vocab = sorted(set(text))
        lookup = {c: i for i, c in enumerate(vocab)}
        ids = torch.tensor([lookup[c] for c in text], dtype=torch.long)
    n = len(ids)
    n_val = int(round(spec.data.val_fraction * n))
    n_test = int(round(spec.data.test_fraction * n))
    n_train = n - n_val - n_test
    streams = {"train": ids[:n_train], "val": ids[n_train : n_train + n_val]}
    if n_test:
        streams["test"] = ids[n_train + n_val :]
    info = SequenceInfo(vocab=vocab, level=args.level, context=args.context, prompt=args.prompt, documents=documents)
    where = "the Python documentation (pydoc_data.topics)" if args.path is None else str(args.path)
    return sequence_bundle(
        streams,
        info,
        stride=args.stride or args.context,
        source="text",
        description=f"{where}: {n:,} {args.level}s, vocabulary {len(vocab)}, windows of {args.context}",
        field="data.args",
    )
