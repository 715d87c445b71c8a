"""Pictures for language models: what the model may look at, token frequencies, and text
(windows, samples over training) rendered as images for the run directory and TensorBoard."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from nnrecipe.pictures import new_figure
from nnrecipe.pictures.saver import Artifacts, FigureSaver


def causal_map(matrix: np.ndarray, positions: Sequence[int], *, title: str, what: str = "gradient"):
    """log10 |d out[t] / d input[s]| (or the relative change of out[t] when input s changes) for
    each tested output position t (rows) and input s: a causal model is white right of the red
    marks (nothing after t reaches output t)."""
    fig = new_figure(8, 0.45 * len(positions) + 1.4)
    ax = fig.subplots()
    with np.errstate(divide="ignore"):
        shown = np.log10(np.where(matrix > 0, matrix, np.nan))
    im = ax.imshow(shown, aspect="auto", interpolation="nearest", cmap="viridis")
    ax.set_yticks(range(len(positions)), [f"out {t}" for t in positions], fontsize=7)
    ax.set_xlabel(f"input position (white: no {what} at all)", fontsize=8)
    for r, t in enumerate(positions):  # the last position each output may see
        ax.plot([t + 0.5, t + 0.5], [r - 0.5, r + 0.5], color="red", lw=1.2)
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, label=f"log10 |{what}|" + (" / largest output" if what == "change" else ""), fraction=0.03)
    return fig


def token_bars(counts: np.ndarray, names: Sequence[str], *, title: str, top: int = 40):
    order = np.argsort(-counts)[:top]
    fig = new_figure(max(6, 0.22 * len(order) + 1.5), 2.8)
    ax = fig.subplots()
    total = max(int(counts.sum()), 1)
    ax.bar(range(len(order)), counts[order] / total, color="#4c72b0")
    ax.set_xticks(range(len(order)), [names[i].replace("$", r"\$") for i in order], fontsize=7, family="monospace")
    ax.set_ylabel("share of tokens", fontsize=8)
    ax.set_title(title, fontsize=9)
    return fig


def text_panel(blocks: Sequence[tuple[str, str]], *, title: str, width: int = 100):
    """(label, text) blocks in a monospace font; long lines wrap at `width` characters."""
    lines: list[tuple[str, bool]] = []
    for label, text in blocks:
        lines.append((label, True))
        for raw in text.replace("\t", "    ").split("\n"):
            # control characters as escapes (\x0c): fonts have no glyph for them
            raw = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in raw) or " "
            lines.extend((raw[i : i + width], False) for i in range(0, len(raw), width))
    lines = lines[:120]  # a picture, not a book
    fig = new_figure(0.075 * width + 1, 0.16 * len(lines) + 0.8)
    ax = fig.subplots()
    ax.axis("off")
    ax.set_title(title, fontsize=9)
    for i, (text, is_label) in enumerate(lines):
        ax.text(
            0,
            1 - (i + 0.5) / max(len(lines), 1),
            text,
            family="monospace",
            fontsize=7,
            color="#a33" if is_label else "black",
            weight="bold" if is_label else "normal",
            va="center",
            transform=ax.transAxes,
            parse_math=False,
        )
    return fig


def baseline(ctx, stage: str, data, m) -> Artifacts:
    """The baseline stage's pictures for a next-token model: the windows entering the model,
    samples over training, what each output may see, the overfit batch, curves, gradient norms."""
    from nnrecipe import pictures

    save = FigureSaver(ctx, stage)
    info = data.sequence
    if m.input_x is not None:
        rows = [
            (f"x[{i}] -> y[{i}]", f"{info.decode(m.input_x[i].long())}\n{info.decode(m.input_y[i].long())}")
            for i in range(min(6, len(m.input_x)))
        ]
        save(
            text_panel(
                rows, title="the exact windows entering model(x) in the first training step (input, then target)"
            ),
            "model_input",
            "dumb-baselines",
            "input-independent",
        )
        save.text("\n\n".join(f"{label}\n{body}" for label, body in rows), "model_input")
    if m.dynamics:
        blocks = [(f"step {s}", t) for s, t in m.dynamics]
        save(
            text_panel(blocks, title=f"samples from the prompt {info.prompt!r} over training (same sampling seed)"),
            "prediction_dynamics",
            "loss-decreases",
        )
        save.text("\n\n".join(f"--- step {s}\n{t}" for s, t in m.dynamics), "samples", "loss-decreases")
    if m.causal is not None:
        save(
            causal_map(
                m.causal.matrix,
                m.causal.positions,
                title="what each output position may see: gradient on each input position (red: the diagonal)",
            ),
            "causal_dependency",
            "causal-dependency",
        )
    elif m.perturb is not None:  # no embedding to differentiate: one input token changed at a time
        save(
            causal_map(
                m.perturb.matrix,
                m.perturb.positions,
                what="change",
                title="what each output reads: its change when one input token changes (red: the diagonal)",
            ),
            "causal_dependency",
            "causal-dependency",
        )
    o, yo = m.overfit, m.overfit_y
    if o is not None:
        pred = o.outputs.argmax(dim=-1)
        rows = [
            (f"window {i}: target, then prediction", f"{info.decode(yo[i])}\n{info.decode(pred[i])}")
            for i in range(min(4, len(yo)))
        ]
        save(
            text_panel(rows, title=f"overfit one batch: targets vs greedy predictions after {o.steps_run} steps"),
            "overfit_one_batch",
            "overfit-one-batch",
        )
    series = {
        e.name: (np.arange(1, len(e.history.losses) + 1), e.history.losses.numpy())
        for e in (m.model, m.zero_input, m.larger, m.linear)
        if e is not None
    }
    save(
        pictures.curves(
            series, title="training loss of each baseline experiment (nats per token)", ylabel="loss", logy=True
        ),
        "curves",
        "loss-decreases",
        "input-independent",
        "dumb-baselines",
    )
    save(
        pictures.hbars(
            dict(zip(m.grad.names, m.grad.grad_norm)),
            xlabel="gradient L2 norm",
            title="gradient norm per parameter after one batch (red: none or zero)",
        ),
        "gradient_norms",
        "gradients-flow",
    )
    return save.arts


def samples(ctx, stage: str, data, written: list[tuple[int, str]], *checks: str) -> Artifacts:
    """samples.txt and its picture: what the model wrote from the prompt at each evaluation."""
    save = FigureSaver(ctx, stage)
    if written:
        save(
            text_panel(
                [(f"step {s}", t) for s, t in written[-6:]],
                title=f"samples from the prompt {data.sequence.prompt!r} (same sampling seed)",
            ),
            "samples",
            *checks,
        )
        save.text("\n\n".join(f"--- step {s}\n{t}" for s, t in written), "samples", *checks)
    return save.arts
