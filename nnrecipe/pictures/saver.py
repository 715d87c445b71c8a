"""How a stage's pictures reach the run directory and its verdicts: `FigureSaver` writes each
figure (a PNG in the stage folder and the same image in TensorBoard) and remembers which
checks it belongs to; `attach` gives every verdict its files, the one way stages do it."""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

from nnrecipe.verdict import Verdict

Artifacts = dict[str, list[str]]  # check id -> relative paths in the run directory


class FigureSaver:
    """Saves a stage's figures and text files; `arts[check] -> [relative paths]`."""

    def __init__(self, ctx, stage: str):
        self.ctx, self.out, self.tb = ctx, ctx.run.stage_dir(stage), ctx.writer(stage)
        self.arts: Artifacts = {}

    def __call__(self, fig, name: str, *checks: str, tag: str = "") -> None:
        """`name`.png, and the image in TensorBoard under `tag` (default: the name)."""
        from nnrecipe import pictures

        self.add(pictures.save_figure(fig, self.out / f"{name}.png", writer=self.tb, tag=tag or name), *checks)

    def text(self, content: str, name: str, *checks: str) -> None:
        """A text artifact (`name`.txt) and the same text in TensorBoard's text tab."""
        path = self.out / f"{name}.txt"
        path.write_text(content)
        # TensorBoard renders text as markdown: four spaces make it a code block (kept verbatim).
        self.tb.add_text(name, "\n".join("    " + line for line in content.splitlines()), 0)
        self.add(path, *checks)

    def add(self, path, *checks: str) -> None:
        """A file the stage wrote itself (a CSV), attached to `checks`."""
        for check in checks:
            self.arts.setdefault(check, []).append(self.ctx.rel(path))


def attach(verdicts: Sequence[Verdict], *arts: Mapping[str, list[str]]) -> list[Verdict]:
    """Each verdict with the files of every `arts` drawn for its check, in order."""
    out = []
    for v in verdicts:
        paths = tuple(p for a in arts for p in a.get(v.check, ()) if p)
        out.append(dataclasses.replace(v, artifacts=tuple(v.artifacts) + paths) if paths else v)
    return out
