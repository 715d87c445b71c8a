"""The inspect-data stage end to end through the CLI: clean data passes, each planted bug is caught."""

import csv
import json

import pytest

from conftest import planted_spec

EXPECTED_FILES = [
    "examples_grid.png",
    "stat_histograms.png",
    "outliers.png",
    "class_balance.png",
    "examples.csv",
    "summary.json",
    "verdicts.json",
]


def _verdicts(result):
    return {v["check"]: v for v in json.loads(result.stdout)}


def test_clean_data_passes_every_check_and_writes_the_run_directory(cli, in_tmp):
    result = cli("inspect-data", "--config", planted_spec(in_tmp, "clean"), "--json")
    assert result.exit_code == 0, result.stderr
    verdicts = _verdicts(result)
    assert len(verdicts) == 10 and all(v["status"] == "pass" for v in verdicts.values())
    run = in_tmp / "runs" / "clean"
    for name in EXPECTED_FILES:
        assert (run / "inspect-data" / name).stat().st_size > 0, name
    for name in ("spec.yaml", "env.json", "verdicts.json", "report.md"):
        assert (run / name).exists(), name
    report = (run / "report.md").read_text()
    assert "## inspect-data" in report and "![outliers](inspect-data/outliers.png)" in report
    assert verdicts["outliers"]["artifacts"][0] == "inspect-data/outliers.png"
    with (run / "inspect-data" / "examples.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1000 and {r["split"] for r in rows} == {"train", "val"}


def test_tensorboard_can_read_the_images_and_verdict_text(cli, in_tmp):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert cli("inspect-data", "--config", planted_spec(in_tmp, "clean")).exit_code == 0
    acc = EventAccumulator(str(in_tmp / "runs" / "clean" / "tb" / "inspect-data"), size_guidance={"images": 0})
    acc.Reload()
    assert {"data/examples_grid", "data/outliers", "data/stat_histograms", "data/class_balance"} <= set(
        acc.Tags()["images"]
    )
    image = acc.Images("data/examples_grid")[0]
    assert image.width > 100 and image.height > 100 and image.encoded_image_string[:4] == b"\x89PNG"
    assert "verdicts/text_summary" in acc.Tags()["tensors"]


PLANTED = [
    # factory, check that must catch it, its status, exit code
    ("nan_inputs", "non-finite", "fail", 1),
    ("labels_out_of_range", "label-range", "fail", 1),
    ("one_based_labels", "label-range", "warn", 0),
    ("float_labels", "label-range", "fail", 1),
    ("leakage", "split-leakage", "fail", 1),
    ("duplicates", "duplicates", "warn", 0),
    ("conflicting_labels", "conflicting-labels", "warn", 0),
    ("imbalance", "class-balance", "warn", 0),
    ("prior_shift", "class-balance", "warn", 0),
    ("pixels_255", "input-scale", "warn", 0),
    ("outliers", "outliers", "warn", 0),
    ("uint8_inputs", "shapes-dtypes", "fail", 1),
]


@pytest.mark.parametrize("factory, check, status, code", PLANTED, ids=[p[0] for p in PLANTED])
def test_planted_bug_is_caught_by_its_check(cli, in_tmp, factory, check, status, code):
    result = cli("inspect-data", "--config", planted_spec(in_tmp, factory), "--json")
    assert result.exit_code == code, result.stderr
    verdicts = _verdicts(result)
    assert verdicts[check]["status"] == status, verdicts[check]
    assert verdicts[check]["message"] and verdicts[check]["hint"]
    if status == "warn":
        assert cli("inspect-data", "--config", planted_spec(in_tmp, factory), "--strict").exit_code == 1


def test_lazy_clean_data_passes(cli, in_tmp):
    result = cli("inspect-data", "--config", planted_spec(in_tmp, "lazy_clean"), "data.num_workers=0", "--json")
    assert result.exit_code == 0, result.stderr
    assert all(v["status"] == "pass" for v in json.loads(result.stdout))


def test_lazy_data_of_mixed_shapes_is_bad_input(cli, in_tmp):
    result = cli("inspect-data", "--config", planted_spec(in_tmp, "lazy_mixed_shapes"), "data.num_workers=0")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: data.factory: reading the train split failed: examples differ in shape")


def test_sort_and_filter_the_per_example_table(cli, in_tmp):
    spec = planted_spec(in_tmp, "outliers")
    result = cli("inspect-data", "--config", spec, "--sort-by", "z_max", "--limit", "3", "--split", "train")
    assert result.exit_code == 0, result.stderr
    table = result.stdout[result.stdout.index("examples (") :]
    rows = [line for line in table.splitlines() if line.startswith("│ train")]
    assert len(rows) == 3 and {r.split("│")[2].strip() for r in rows} <= {"0", "1", "2", "3"}
    result = cli("inspect-data", "--config", spec, "--class", "2", "--limit", "5")
    rows = [line for line in result.stdout.splitlines() if line.startswith("│ train") or line.startswith("│ val")]
    assert len(rows) == 5 and all(r.split("│")[3].strip() == "2" for r in rows)


def test_unknown_sort_column_is_bad_input(cli, in_tmp):
    result = cli("inspect-data", "--config", planted_spec(in_tmp, "clean"), "--sort-by", "loudness")
    assert result.exit_code == 2 and result.stderr.startswith("error: --sort-by: unknown column 'loudness'")
    assert not (in_tmp / "runs").exists()  # rejected before any work


def test_regression_data_runs_with_label_checks_skipped(cli, in_tmp):
    result = cli("inspect-data", "data.source=synthetic", "task=regression", "name=reg", "--json")
    assert result.exit_code == 0, result.stderr
    verdicts = _verdicts(result)
    assert {k for k, v in verdicts.items() if v["status"] == "skip"} == {
        "label-range",
        "conflicting-labels",
        "class-balance",
    }
    summary = json.loads((in_tmp / "runs" / "reg" / "inspect-data" / "summary.json").read_text())
    assert summary["target_var"][0] > 0.5
