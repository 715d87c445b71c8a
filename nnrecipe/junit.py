"""Verdicts as JUnit XML (`--junit FILE`), so CI systems list each check natively.

One <testsuite> per stage, one <testcase> per check (classname nnrecipe.<stage>): a fail is a
<failure>, a skip is <skipped>, a warn is a pass with the warning in <system-out> (a
<failure> under --strict, where warns fail the exit code too). Observed, expected and the
hint go into the failure's text, so the CI page says what to do.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Sequence

from nnrecipe import atomic
from nnrecipe.verdict import Status, Verdict


def _details(v: Verdict) -> str:
    lines = [v.message]
    if v.observed not in (None, {}, ""):
        lines.append(f"observed: {json.dumps(v.observed, default=str)}")
    if v.expected not in (None, ""):
        lines.append(f"expected: {v.expected}")
    if v.hint:
        lines.append(f"what to do: {v.hint}")
    if v.artifacts:
        lines.append("pictures and files: " + ", ".join(v.artifacts))
    return "\n".join(lines)


def junit_xml(verdicts: Sequence[Verdict], *, name: str, strict: bool = False) -> str:
    root = ET.Element("testsuites", name=f"nnrecipe {name}")
    stages: dict[str, list[Verdict]] = {}
    for v in verdicts:
        stages.setdefault(v.stage, []).append(v)
    totals = {"tests": 0, "failures": 0, "skipped": 0}
    for stage, vs in stages.items():
        failing = [v.status is Status.FAIL or (strict and v.status is Status.WARN) for v in vs]
        skipped = [v for v in vs if v.status is Status.SKIP]
        suite = ET.SubElement(
            root,
            "testsuite",
            name=stage,
            tests=str(len(vs)),
            failures=str(sum(failing)),
            errors="0",
            skipped=str(len(skipped)),
        )
        for v, fails in zip(vs, failing):
            case = ET.SubElement(suite, "testcase", classname=f"nnrecipe.{stage}", name=v.check)
            if fails:
                f = ET.SubElement(case, "failure", message=f"{v.status.value}: {v.message}", type=v.status.value)
                f.text = _details(v)
            elif v.status is Status.SKIP:
                ET.SubElement(case, "skipped", message=v.message)
            elif v.status is Status.WARN:
                ET.SubElement(case, "system-out").text = "WARN: " + _details(v)
            else:
                ET.SubElement(case, "system-out").text = _details(v)
        totals["tests"] += len(vs)
        totals["failures"] += sum(failing)
        totals["skipped"] += len(skipped)
    for k, n in totals.items():
        root.set(k, str(n))
    root.set("errors", "0")
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write_junit(path: Path, verdicts: Sequence[Verdict], *, name: str, strict: bool = False) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(path, junit_xml(verdicts, name=name, strict=strict))
