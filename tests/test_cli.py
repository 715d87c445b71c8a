"""The command line through CliRunner: exit codes, the verdict table, JSON, and bad input."""

import json

import pytest
import yaml

from conftest import PLANTED, planted_spec, write_spec


def _one_clean_line(result):
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    return lines[0]


def test_default_inspect_data_prints_the_verdict_table_and_exits_0(cli, in_tmp):
    result = cli("inspect-data")
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "inspect-data — Become one with the data" in out and "10 pass  0 warn  0 fail  0 skip" in out
    for check in ("split-sizes", "label-range", "split-leakage", "outliers"):
        assert check in out
    assert (in_tmp / "runs" / "digits-mlp" / "verdicts.json").exists()


def test_json_goes_alone_to_stdout(cli):
    result = cli("inspect-data", "--json")
    assert result.exit_code == 0
    verdicts = json.loads(result.stdout)
    assert {v["status"] for v in verdicts} == {"pass"} and all(
        set(v) >= {"observed", "expected", "hint"} for v in verdicts
    )
    assert "run directory" in result.stderr  # the humans' lines went to stderr


def test_a_fail_exits_1_and_a_warn_exits_1_only_with_strict(cli, in_tmp):
    assert cli("inspect-data", "--config", planted_spec(in_tmp, "leakage")).exit_code == 1
    assert cli("inspect-data", "--config", planted_spec(in_tmp, "duplicates")).exit_code == 0
    assert cli("inspect-data", "--config", planted_spec(in_tmp, "duplicates"), "--strict").exit_code == 1


def test_run_runs_every_stage_in_order(cli, in_tmp):
    result = cli(
        "run",
        "--json",
        "data.source=synthetic",
        "data.args.class_sep=8",
        "stages.baseline.steps=100",
        "train.steps=300",
        "optim.lr=1e-3",
        "stages.regularize.seeds=1",
        "stages.squeeze.members=2",
        "stages.tune.trials=3",
        "stages.tune.steps=100",
    )
    assert result.exit_code == 0, result.stderr
    assert [v["stage"] for v in json.loads(result.stdout)] == (
        ["inspect-data"] * 10
        + ["baseline"] * 14
        + ["overfit"] * 4
        + ["regularize"] * 10
        + ["tune"] * 3
        + ["squeeze"] * 3
    )
    merged = json.loads((in_tmp / "runs" / "digits-mlp" / "verdicts.json").read_text())
    assert {v["stage"] for v in merged} == {"inspect-data", "baseline", "overfit", "regularize", "tune", "squeeze"}
    summary = json.loads((in_tmp / "runs" / "digits-mlp" / "squeeze" / "summary.json").read_text())
    assert summary["start"] == "tune/best.yaml"  # squeeze starts where tune ended


def test_run_stops_at_the_first_stage_with_a_fail(cli, in_tmp):
    result = cli("run", "--config", planted_spec(in_tmp, "nan_inputs"), "--json")
    assert result.exit_code == 1
    assert {v["stage"] for v in json.loads(result.stdout)} == {"inspect-data"}
    assert "stopping after inspect-data" in result.stdout + result.stderr


def test_output_dir_and_overrides(cli, in_tmp):
    result = cli(
        "inspect-data", "--output-dir", in_tmp / "elsewhere", "name=other", "stages.inspect_data.min_val_size=1000"
    )
    assert result.exit_code == 0  # a warn only
    verdicts = json.loads((in_tmp / "elsewhere" / "other" / "verdicts.json").read_text())
    assert [v["status"] for v in verdicts if v["check"] == "split-sizes"] == ["warn"]
    spec = yaml.safe_load((in_tmp / "elsewhere" / "other" / "spec.yaml").read_text())
    assert spec["stages"]["inspect_data"]["min_val_size"] == 1000  # the resolved spec, as run


def test_validate_prints_the_resolved_spec(cli):
    result = cli("validate", "optim.lr=1e-3")
    assert result.exit_code == 0
    spec = yaml.safe_load(result.stdout)
    assert spec["optim"]["lr"] == 1e-3 and spec["data"]["source"] == "digits"


def test_validate_prints_every_error(cli, in_tmp):
    path = write_spec(in_tmp, {"optim": {"lr": "fast"}, "seeed": 1, "train": {"steps": 0}})
    result = cli("validate", "--config", path)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith(str(path)) for line in lines)
    assert any("optim.lr" in line for line in lines) and any("seeed: unknown key" in line for line in lines)
    assert any("train.steps" in line for line in lines)


def test_validate_checks_that_plugins_and_files_exist(cli, in_tmp):
    path = write_spec(
        in_tmp,
        {
            "data": {"source": "python", "factory": "missing.py:make"},
            "model": {"arch": "python", "factory": f"{PLANTED}/models.py:nope"},
        },
    )
    result = cli("validate", "--config", path)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2 and "data.factory" in lines[0] and "missing.py not found" in lines[0]
    assert "model.factory" in lines[1] and "has no function 'nope'" in lines[1]


BAD = [
    ({"optim": {"lrr": 1}}, "optim.lrr: unknown key"),
    ({"train": {"steps": "many"}}, "train.steps: Input should be a valid integer"),
    ({"data": {"source": "csv", "args": {"path": "nowhere.csv", "target": "y"}}}, "data.args.path: "),
    (
        {"data": {"source": "python", "factory": "no_such_pkg.data:make"}},
        "data.factory: module 'no_such_pkg.data' not found",
    ),
    ({"data": {"source": "python", "factory": f"{PLANTED}/data_bugs.py:no_function"}}, "has no function 'no_function'"),
    ({"data": {"source": "python", "factory": f"{PLANTED}/data_bugs.py:raises"}}, "raised RuntimeError: cannot open"),
    ({"data": {"source": "python", "factory": f"{PLANTED}/broken_import.py:make_data"}}, "failed: ModuleNotFoundError"),
]


@pytest.mark.parametrize(
    "spec, message",
    BAD,
    ids=[
        "unknown-key",
        "wrong-type",
        "missing-file",
        "module-missing",
        "function-missing",
        "factory-raises",
        "import-fails",
    ],
)
def test_bad_specs_exit_2_with_one_line(cli, in_tmp, spec, message):
    result = cli("inspect-data", "--config", write_spec(in_tmp, spec))
    assert result.exit_code == 2
    line = _one_clean_line(result)
    assert line.startswith("error: ") and message in line


def test_missing_config_file(cli, in_tmp):
    result = cli("inspect-data", "--config", in_tmp / "nope.yaml")
    assert result.exit_code == 2 and "nope.yaml: spec file not found" in _one_clean_line(result)


def test_malformed_override(cli):
    result = cli("inspect-data", "optim.lr")
    assert result.exit_code == 2 and "expected key=value" in _one_clean_line(result)


def test_unknown_device(cli):
    result = cli("inspect-data", "--device", "cuda:99")
    assert result.exit_code == 2 and _one_clean_line(result).startswith("error: device: 'cuda:99' requested but")


def test_unknown_option_is_a_usage_error(cli):
    assert cli("inspect-data", "--frobnicate").exit_code == 2


def test_debug_shows_the_traceback(cli, in_tmp):
    result = cli("inspect-data", "--config", in_tmp / "nope.yaml", env={"NNRECIPE_DEBUG": "1"})
    assert result.exit_code != 0 and type(result.exception).__name__ == "SpecError"


def test_an_internal_error_is_one_line_and_exit_3(cli, in_tmp, monkeypatch):
    import nnrecipe.stages.inspect_data as stage

    def broken(spec, ctx):
        return 1 / 0

    monkeypatch.setattr(stage, "run", broken)
    result = cli("inspect-data")
    assert result.exit_code == 3
    assert _one_clean_line(result).startswith("internal error: ZeroDivisionError")


def test_help_lists_every_command(cli):
    result = cli("--help")
    assert result.exit_code == 0
    for command in ("inspect-data", "baseline", "overfit", "regularize", "tune", "squeeze", "run", "validate"):
        assert command in result.stdout


def test_a_ctrl_c_that_escapes_the_cli_as_it_exits_is_still_exit_130(monkeypatch):
    """A second Ctrl-C (or one still pending) raised while the first one's exit 130 runs escapes
    click (it is raised in click's handler of that exit): the process must still exit 130, not
    die by SIGINT (CI saw exit -2 once, after "interrupted")."""
    from nnrecipe import cli as cli_module

    def interrupted_while_exiting():
        raise KeyboardInterrupt

    monkeypatch.delenv("NNRECIPE_EXIT_DIR", raising=False)
    monkeypatch.setattr(cli_module, "app", interrupted_while_exiting)
    with pytest.raises(SystemExit) as exited:
        cli_module.main()
    assert exited.value.code == 130
