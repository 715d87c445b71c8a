"""The examples/ folder runs as a user would run it: the script, the pytest file (both ways: a
good model passes, a planted softmax fails) and the notebook, executed by a real Jupyter kernel,
exported to HTML and opened in headless Chromium."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

from conftest import REPO

EXAMPLES = REPO / "examples"


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def test_the_script_runs_two_stages_and_exits_0(in_tmp):
    out = subprocess.run(
        [sys.executable, EXAMPLES / "script.py"], capture_output=True, text=True, timeout=300, env=_env()
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert re.search(r"val accuracy after overfit: 0\.9\d\d", out.stdout)
    verdicts = (in_tmp / "runs" / "digits-script" / "verdicts.json").read_text()
    assert '"stage": "overfit"' in verdicts and '"status": "fail"' not in verdicts


def test_the_pytest_example_passes_and_its_planted_bug_is_caught(in_tmp):
    # its own pytest, without this suite's xdist options; the third test expects RecipeFailed
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-o",
            "addopts=",
            EXAMPLES / "test_my_model.py",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=_env(),
    )
    assert out.returncode == 0 and "3 passed" in out.stdout, out.stdout[-3000:]


def test_the_notebook_executes_and_shows_its_reports(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    from nbclient import NotebookClient
    from nbconvert import HTMLExporter

    nb = nbformat.read(EXAMPLES / "notebook.ipynb", as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    cells = [c for c in nb.cells if c.cell_type == "code"]
    shown = [o["data"]["text/html"] for c in cells for o in c.outputs if "text/html" in o.get("data", {})]
    reports = [h for h in shown if h.startswith('<div class="nnrecipe nnrecipe-report">')]
    assert len(reports) == 2, [h[:80] for h in shown]
    good, buggy = reports
    assert '<td class="fail">' not in good and '<td class="pass">pass</td>' in good and "data:image/png" in good
    assert re.search(r'<td>output-form</td><td class="fail">', buggy) and "what to do:" in buggy
    printed = [o for c in cells for o in c.outputs if o["output_type"] == "stream"]
    assert not printed, printed  # no verdict table printed beside the rendered one
    assert "'output-form', 'fail'" in cells[-1].outputs[0]["data"]["text/plain"]

    page = tmp_path / "notebook.html"
    page.write_text(HTMLExporter().from_notebook_node(nb)[0])
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium; .ci/run installs it)")
    dom = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=5000",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    assert dom.count('class="nnrecipe nnrecipe-report"') == 2 and re.search(
        r'<td>output-form</td><td class="fail">fail</td>', dom
    )
