"""inspect-data for a language model's text: look at the tokens, not at pixel statistics.

The vocabulary and its frequencies, control characters, documents and lines against the
context, and val windows that the train text already contains; random windows as text.
"""

from __future__ import annotations

import numpy as np

from nnrecipe import pictures
from nnrecipe.checks.text_checks import duplicate_windows, non_printable, sequence_lengths, text_splits, vocabulary
from nnrecipe.pictures.saver import FigureSaver, attach
from nnrecipe.pictures.text import text_panel, token_bars
from nnrecipe.probes.text_scan import scan_text
from nnrecipe.stages.base import StageContext, StageResult

STAGE = "inspect-data"
CHECKS = (text_splits, vocabulary, non_printable, sequence_lengths, duplicate_windows)


def run(spec, ctx: StageContext, data) -> StageResult:
    cfg = spec.stages.inspect_data
    m = scan_text(data, seed=spec.seed)
    verdicts = [check(m, cfg) for check in CHECKS]

    save = FigureSaver(ctx, STAGE)
    save(
        text_panel(
            [(e.split(":", 1)[0], e.split(": ", 1)[1]) for e in m.examples],
            title=f"random train windows — {data.description}",
        ),
        "examples_grid",
        "split-sizes",
        "sequence-lengths",
    )
    save.text("\n\n".join(m.examples), "examples", "split-sizes")
    for name, counts in m.counts.items():
        if name == "train":
            save(
                token_bars(
                    counts.astype(np.float64), m.shown, title="the 40 most frequent train tokens (share of tokens)"
                ),
                "token_frequencies",
                "vocabulary",
            )
    table = ["token\tid\t" + "\t".join(m.counts)] + [
        f"{m.shown[i]}\t{i}\t" + "\t".join(str(int(c[i])) for c in m.counts.values())
        for i in np.argsort(-m.counts["train"])
    ]
    save.text("\n".join(table), "vocabulary", "vocabulary", "non-printable")
    docs = np.array([n for _, n in m.documents], dtype=np.float64)
    hist = {}
    if len(docs):
        hist["document characters"] = {"train": docs}
    if len(m.line_lengths):
        hist["line tokens (train)"] = {"train": m.line_lengths.astype(np.float64)}
    if hist:
        save(pictures.histograms(hist, title="sequence lengths"), "sequence_lengths", "sequence-lengths")
    if m.leak_examples:
        save.text("\n\n".join(m.leak_examples), "leaked_windows", "duplicate-windows")
    final = attach(verdicts, save.arts)
    summary = {
        "description": data.description,
        "task": data.task.name,
        "kind": data.kind,
        "input_shape": list(data.input_shape),
        "num_classes": data.num_classes,
        "vocabulary": len(m.vocab),
        "level": m.level,
        "splits": m.windows,
        "tokens": {k: int(c.sum()) for k, c in m.counts.items()},
        "train_priors": (m.counts["train"] / max(int(m.counts["train"].sum()), 1)).tolist(),
        "leaked_windows": m.leaked,
    }
    return StageResult(STAGE, final, summary)
