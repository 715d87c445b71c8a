"""nnrecipe report, --junit and run --from/--to: the run's story as files a person and a CI
system read; report.html opened in a real headless Chromium (Debian's package, which .ci/run
installs) shows every picture and raises no script error."""

import json
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET

import pytest

from conftest import planted_spec

FAST = ("data.source=synthetic", "data.args.class_sep=8", "stages.baseline.steps=100", "train.steps=200")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """inspect-data and baseline of one quick experiment (run --to baseline)."""
    import os

    from typer.testing import CliRunner

    from nnrecipe.cli import app

    folder = tmp_path_factory.mktemp("report")
    old = os.getcwd()
    os.chdir(folder)
    try:
        result = CliRunner().invoke(app, ["run", "--to", "baseline", "--junit", str(folder / "junit.xml"), *FAST])
    finally:
        os.chdir(old)
    assert result.exit_code == 0, result.output
    return folder / "runs" / "digits-mlp", folder / "junit.xml"


def test_run_to_stops_at_the_named_stage_and_junit_lists_every_check(run_dir):
    root, junit = run_dir
    verdicts = json.loads((root / "verdicts.json").read_text())
    assert {v["stage"] for v in verdicts} == {"inspect-data", "baseline"}
    tree = ET.parse(junit).getroot()
    cases = tree.findall(".//testcase")
    assert len(cases) == len(verdicts) == int(tree.get("tests"))
    assert {s.get("name") for s in tree.findall("testsuite")} == {"inspect-data", "baseline"}
    assert tree.get("failures") == "0" and not tree.findall(".//failure")
    assert int(tree.get("skipped")) == sum(v["status"] == "skip" for v in verdicts)


def test_report_writes_markdown_and_a_self_contained_html(cli, run_dir):
    root, _ = run_dir
    result = cli("report", root)
    assert result.exit_code == 0, result.output
    assert "inspect-data" in result.output and "baseline" in result.output
    md = (root / "report.md").read_text()
    assert "## inspect-data" in md and "## baseline" in md and "> *Become one with the data*" in md
    pictures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert pictures and all((root / p).exists() for p in pictures)  # every picture linked exists
    page = (root / "report.html").read_text()
    srcs = re.findall(r'src="([^"]*)"', page)
    assert len(srcs) == len(pictures) and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert 'href="http' not in page and "<link" not in page  # nothing fetched from elsewhere


def test_a_fail_is_a_junit_failure_with_what_to_do(cli, in_tmp):
    result = cli("inspect-data", "--config", planted_spec(in_tmp, "nan_inputs"), "--junit", in_tmp / "ci" / "j.xml")
    assert result.exit_code == 1
    failures = ET.parse(in_tmp / "ci" / "j.xml").getroot().findall(".//failure")
    assert [f.get("type") for f in failures] == ["fail"]
    assert "what to do:" in failures[0].text and "observed:" in failures[0].text
    # the report of a run with a fail exits 1 too (a CI job can run it alone)
    assert cli("report", in_tmp / "runs" / "nan-inputs").exit_code == 1


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--from", "tuning"], "--from: unknown stage 'tuning'"),
        (["--from", "tune", "--to", "overfit"], "--from tune comes after --to overfit"),
    ],
)
def test_run_slice_errors_are_one_line_exit_2(cli, args, needle):
    result = cli("run", *args)
    assert result.exit_code == 2 and needle in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_report_of_a_folder_without_verdicts_is_exit_2(cli, in_tmp):
    result = cli("report", in_tmp)
    assert result.exit_code == 2 and "no verdicts.json" in result.stderr


def _chromium_dom(page) -> tuple[dict, str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium; .ci/run installs it)")
    proc = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=10000",
            "--enable-logging=stderr",
            "--v=0",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    body = re.search(r"<body([^>]*)>", proc.stdout)
    assert body, proc.stderr[-2000:]
    return dict(re.findall(r'data-([a-z-]+)="([^"]*)"', body.group(1))), proc.stderr


def test_report_html_opens_in_headless_chromium_with_every_picture_and_no_errors(run_dir, tmp_path):
    root, _ = run_dir
    from nnrecipe import report
    from nnrecipe.rundir import RunDir
    from nnrecipe.stages import STAGE_NAMES

    report.write(root, RunDir(root, stage_order=STAGE_NAMES).read_verdicts(), STAGE_NAMES)
    marks, log = _chromium_dom(root / "report.html")
    loaded, total = map(int, marks["images"].split("/"))
    assert total >= 5 and loaded == total and marks["broken"] == "0" and marks["js-errors"] == "0", marks
    assert "Uncaught" not in log
    # the same check sees a broken picture: one image's data cut short
    page = (root / "report.html").read_text()
    broken = tmp_path / "broken.html"
    broken.write_text(page.replace("data:image/png;base64,iVBOR", "data:image/png;base64,AAAA", 1))
    marks, _ = _chromium_dom(broken)
    assert marks["broken"] == "1", marks
