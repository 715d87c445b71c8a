"""docs/checks.md lists every check the code can emit (and no check the code has lost)."""

import re

from conftest import REPO

# The ways a check id reaches a Verdict in nnrecipe/: Verdict(STAGE, "id", ...), a local
# `check = "id"` (or `check, metric = "id", ...`), a regularize knob Knob("id", ...) or _resized("id", ...),
# overfit's ladder.
PATTERNS = [
    r'Verdict\(\s*\w+,\s*"([a-z][a-z0-9-]+)"',
    r'\bcheck(?:,\s*\w+)*\s*=\s*"([a-z][a-z0-9-]+)"',
    r'Knob\(\s*"([a-z][a-z0-9-]+)"',
    r'_resized\(\s*"([a-z-]+)"',
]  # the model-size knobs


def code_check_ids() -> set[str]:
    ids = set()
    for path in (REPO / "nnrecipe").rglob("*.py"):
        text = path.read_text()
        for pattern in PATTERNS:
            for found in re.findall(pattern, text):
                ids |= {found} if isinstance(found, str) else set(found)
    if 'f"ladder-{i}"' in (REPO / "nnrecipe" / "checks" / "overfit_checks.py").read_text():
        ids.add("ladder-N")
    return ids


def doc_check_ids() -> set[str]:
    ids = set()
    for heading in re.findall(r"^### (.+)$", (REPO / "docs" / "checks.md").read_text(), flags=re.M):
        names = heading.split(" (")[0]  # "model-on-data (`--model RUN_DIR` only)"
        ids |= {n.strip() for n in names.split(",")}
    return ids


def test_every_check_in_the_code_is_documented_and_nothing_else():
    code, docs = code_check_ids(), doc_check_ids()
    assert len(code) > 40  # the patterns still find the checks
    assert code - docs == set(), f"checks without an entry in docs/checks.md: {sorted(code - docs)}"
    assert docs - code == set(), f"docs/checks.md documents checks the code no longer has: {sorted(docs - code)}"
