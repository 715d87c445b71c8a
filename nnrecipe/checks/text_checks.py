"""inspect-data rules for a language model's text: (measurements, settings) -> Verdict."""

from __future__ import annotations

import numpy as np

from nnrecipe.probes.text_scan import TextMeasurements, unseen
from nnrecipe.spec_stages import InspectDataSpec
from nnrecipe.stats import wilson_interval
from nnrecipe.verdict import Status, Verdict

STAGE = "inspect-data"


def text_splits(m: TextMeasurements, cfg: InspectDataSpec) -> Verdict:
    """Tokens and windows per split; enough val windows to measure a loss."""
    tokens = {k: int(c.sum()) for k, c in m.counts.items()}
    observed = {"tokens": tokens, "windows": m.windows, "context": m.context}
    expected = f"val >= {cfg.min_val_size} windows"
    text = ", ".join(f"{k} {tokens[k]:,} tokens ({m.windows[k]:,} windows)" for k in tokens)
    if m.windows["val"] < cfg.min_val_size:
        return Verdict(
            STAGE,
            "split-sizes",
            Status.WARN,
            observed=observed,
            expected=expected,
            message=f"val has {m.windows['val']} windows of {m.context} tokens: its loss is a coarse measure",
            hint="raise data.val_fraction or give more text",
        )
    return Verdict(
        STAGE,
        "split-sizes",
        Status.PASS,
        observed=observed,
        expected=expected,
        message=f"{text}; split by position, no window crosses a boundary",
    )


def vocabulary(m: TextMeasurements, cfg: InspectDataSpec) -> Verdict:
    """The vocabulary and its frequencies; val tokens the train text never shows."""
    n_unseen, n_val, which = unseen(m, "val")
    train = m.counts["train"]
    order = np.argsort(-train)[:10]
    total = max(int(train.sum()), 1)
    p = train[train > 0] / total
    entropy_bits = float(-(p * np.log2(p)).sum())
    used = int((train > 0).sum())
    observed = {
        "vocabulary": len(m.vocab),
        "used_in_train": used,
        "unigram_entropy_bits": round(entropy_bits, 4),
        "top_tokens": {m.shown[i]: round(float(train[i]) / total, 4) for i in order},
        "val_tokens_unseen_in_train": n_unseen,
        "unseen": which[:20],
    }
    expected = f"val tokens unseen in train <= {cfg.max_unseen_fraction:g} of val"
    low, _ = wilson_interval(n_unseen, max(n_val, 1))
    if low > cfg.max_unseen_fraction:
        return Verdict(
            STAGE,
            "vocabulary",
            Status.WARN,
            observed=observed,
            expected=expected,
            message=f"{n_unseen} of {n_val:,} val tokens ({n_unseen / max(n_val, 1):.2%}) never occur in train "
            f"({', '.join(which[:8])}): the model cannot have learnt them",
            hint="split differently (val drawn from the same text), normalise the text, or accept a higher val loss",
        )
    return Verdict(
        STAGE,
        "vocabulary",
        Status.PASS,
        observed=observed,
        expected=expected,
        message=f"{len(m.vocab)} tokens ({m.level}), {used} used in train; unigram entropy {entropy_bits:.2f} "
        f"bits per token; {n_unseen} val tokens unseen in train",
    )


def non_printable(m: TextMeasurements, cfg: InspectDataSpec) -> Verdict:
    """Control characters (other than newline and tab) in the text."""
    total = sum(int(c.sum()) for c in m.counts.values())
    n = sum(m.nonprintable.values())
    by_character = dict(sorted(m.nonprintable.items(), key=lambda kv: -kv[1])[:20])
    observed = {"count": n, "by_character": by_character, "characters": total}
    expected = f"<= {cfg.max_nonprintable_fraction:g} of the characters"
    if m.level == "custom":
        return Verdict(
            STAGE, "non-printable", Status.SKIP, message="a plugin's vocabulary: its tokens are not characters"
        )
    low, _ = wilson_interval(n, max(total, 1))
    if low > cfg.max_nonprintable_fraction:
        top = ", ".join(f"{k} x{v}" for k, v in list(by_character.items())[:5])
        return Verdict(
            STAGE,
            "non-printable",
            Status.WARN,
            observed=observed,
            expected=expected,
            message=f"{n:,} control characters ({n / total:.2%}): {top}",
            hint="\\r: convert CRLF line endings; \\x00 or \\x0c: binary or form-feed debris from a conversion; "
            "the model spends capacity predicting them",
        )
    return Verdict(
        STAGE,
        "non-printable",
        Status.PASS,
        observed=observed,
        expected=expected,
        message=f"{n} control characters other than newline and tab" + (f" ({', '.join(by_character)})" if n else ""),
    )


def sequence_lengths(m: TextMeasurements, cfg: InspectDataSpec) -> Verdict:
    """Documents and lines against the context: a window should mostly see one document."""
    docs = np.array([n for _, n in m.documents], dtype=np.int64)
    lines = m.line_lengths
    observed: dict[str, float] = {"context": m.context, "documents": len(docs)}
    if len(docs):
        observed.update(
            {
                "document_chars_median": int(np.median(docs)),
                "document_chars_min": int(docs.min()),
                "document_chars_max": int(docs.max()),
            }
        )
    if len(lines):
        observed.update(
            {
                "line_tokens_median": float(np.median(lines)),
                "line_tokens_p99": float(np.quantile(lines, 0.99)),
                "empty_line_share": round(float((lines == 0).mean()), 4),
            }
        )
    expected = "median document >= the context (windows mostly inside one document)"
    if len(docs) > 1 and np.median(docs) < m.context:
        return Verdict(
            STAGE,
            "sequence-lengths",
            Status.WARN,
            observed=observed,
            expected=expected,
            message=f"half the documents are shorter than the context ({int(np.median(docs))} < {m.context} "
            "characters): most windows join unrelated documents",
            hint="shorten data.args.context, or join fewer, longer documents",
        )
    parts = []
    if len(docs):
        parts.append(f"{len(docs)} documents, median {int(np.median(docs)):,} characters")
    if len(lines):
        parts.append(f"lines median {np.median(lines):.0f} tokens (99th percentile {np.quantile(lines, 0.99):.0f})")
    return Verdict(
        STAGE,
        "sequence-lengths",
        Status.PASS,
        observed=observed,
        expected=expected,
        message="; ".join(parts) + f"; windows of {m.context}" if parts else f"windows of {m.context} tokens",
    )


def duplicate_windows(m: TextMeasurements, cfg: InspectDataSpec) -> Verdict:
    """Val (and test) windows found verbatim in the train text: val then measures memory."""
    observed = {
        "leaked": m.leaked,
        "windows": {k: m.windows[k] for k in m.leaked},
        "train_repeated_windows": m.train_repeats,
        "examples": m.leak_examples[:3],
    }
    expected = f"share of val windows found in train: warn > {cfg.window_leak_warn:g}, fail > {cfg.window_leak_fail:g}"
    worst, share, low = None, 0.0, 0.0
    for name, k in m.leaked.items():
        lo, _ = wilson_interval(k, max(m.windows[name], 1))
        if lo >= low:
            worst, share, low = name, k / max(m.windows[name], 1), lo
    text = ", ".join(f"{k} of {m.windows[n]} {n} windows" for n, k in m.leaked.items())
    if worst is not None and low > cfg.window_leak_fail:
        return Verdict(
            STAGE,
            "duplicate-windows",
            Status.FAIL,
            observed=observed,
            expected=expected,
            message=f"{share:.0%} of the {worst} windows occur verbatim in the train text: a document is in both splits",
            hint="deduplicate the documents before the split; val then measures generalisation, not memory",
        )
    if worst is not None and low > cfg.window_leak_warn:
        return Verdict(
            STAGE,
            "duplicate-windows",
            Status.WARN,
            observed=observed,
            expected=expected,
            message=f"{share:.1%} of the {worst} windows occur verbatim in the train text",
            hint="repeated passages (licences, boilerplate) flatter the val loss: deduplicate them",
        )
    return Verdict(
        STAGE,
        "duplicate-windows",
        Status.PASS,
        observed=observed,
        expected=expected,
        message=f"{text} occur verbatim in train; {m.train_repeats} train windows repeat another",
    )
