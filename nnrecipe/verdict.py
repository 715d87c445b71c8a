"""Verdicts: the one output of every check, and how they are rendered.

A verdict is frozen: checks build it once from measurements and nothing edits it later.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
from typing import Any, Iterable, Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text


class Status(str, enum.Enum):
    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"

    def __str__(self) -> str:  # so f-strings print "pass", not "Status.PASS"
        return self.value


@dataclasses.dataclass(frozen=True)
class Verdict:
    stage: str
    check: str
    status: Status
    observed: Any = None
    expected: Any = None
    message: str = ""
    hint: str = ""
    artifacts: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "check": self.check,
            "status": self.status.value,
            "observed": jsonable(self.observed),
            "expected": jsonable(self.expected),
            "message": self.message,
            "hint": self.hint,
            "artifacts": list(self.artifacts),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Verdict":
        return cls(
            stage=d["stage"],
            check=d["check"],
            status=Status(d["status"]),
            observed=d.get("observed"),
            expected=d.get("expected"),
            message=d.get("message", ""),
            hint=d.get("hint", ""),
            artifacts=tuple(d.get("artifacts", ())),
        )


def jsonable(value: Any) -> Any:
    """Turn numpy/torch scalars, tuples and non-finite floats into plain JSON values."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        # JSON has no NaN/Inf; keep them readable instead of producing invalid JSON.
        return value if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "tolist"):  # numpy arrays and scalars, torch tensors
        return jsonable(value.tolist())
    if isinstance(value, enum.Enum):
        return value.value
    return str(value)


def exit_code(verdicts: Iterable[Verdict], *, strict: bool = False) -> int:
    """0 when nothing failed; 1 on any fail (with --strict, on any warn too)."""
    bad = {Status.FAIL, Status.WARN} if strict else {Status.FAIL}
    return 1 if any(v.status in bad for v in verdicts) else 0


STATUS_STYLE = {
    Status.PASS: "bold green",
    Status.WARN: "bold yellow",
    Status.FAIL: "bold red",
    Status.SKIP: "dim",
}


STATUS_MARK = {Status.PASS: "✅ pass", Status.WARN: "⚠️ warn", Status.FAIL: "❌ fail", Status.SKIP: "⏭️ skip"}


def short(value: Any, width: int = 60) -> str:
    """A compact one-line rendering of an observed/expected value for the table."""
    if value is None:
        return ""
    if isinstance(value, float):
        text = f"{value:.4g}"
    elif isinstance(value, dict):
        text = ", ".join(f"{k}={short(v, width)}" for k, v in value.items())
    elif isinstance(value, (list, tuple)):
        text = "[" + ", ".join(short(v, width) for v in value) + "]"
    else:
        text = str(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def verdict_table(verdicts: Sequence[Verdict], *, title: str = "verdicts") -> Table:
    """Readable in an 80-column CI log: one row per check; the message cell carries the
    observed and expected values (cut to one line) and, for warn/fail, the hint.

    The stage column appears only when the verdicts span several stages; full values are in
    verdicts.json, --json and report.md.
    """
    several = len({v.stage for v in verdicts}) > 1
    table = Table(title=title, title_justify="left", expand=False, pad_edge=False, show_lines=True)
    if several:
        table.add_column("stage", style="cyan", no_wrap=True)
    table.add_column("check", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("result", overflow="fold", ratio=1, min_width=30)
    for v in verdicts:
        cells = [Text(v.check), Text(v.status.value, style=STATUS_STYLE[v.status]), _result_cell(v)]
        table.add_row(*([Text(v.stage, style="cyan")] if several else []), *cells)
    return table


def _result_cell(v: Verdict) -> Text:
    # Text objects, not markup strings: messages contain brackets such as "[0, 255]".
    cell = Text(v.message)
    if v.observed is not None or v.expected is not None:
        cell.append(f"\nobserved {short(v.observed, 70)}", style="dim")
        if v.expected is not None:
            cell.append(f" · expected {short(v.expected, 50)}", style="dim")
    if v.hint and v.status in (Status.WARN, Status.FAIL):
        cell.append(f"\n→ {v.hint}", style="italic")
    return cell


def print_verdicts(console: Console, verdicts: Sequence[Verdict], *, title: str = "verdicts") -> None:
    console.print(verdict_table(verdicts, title=title))
    counts = {s: sum(v.status is s for v in verdicts) for s in Status}
    console.print("  ".join(f"[{STATUS_STYLE[s]}]{counts[s]} {s.value}[/]" for s in Status))


def verdicts_json(verdicts: Sequence[Verdict]) -> str:
    return json.dumps([v.to_dict() for v in verdicts], indent=2)
