"""nnrecipe init: the scaffolded project validates and runs as it is, and nothing is overwritten."""

import json


def test_init_writes_a_project_that_runs_as_it_is(cli, in_tmp):
    result = cli("init", in_tmp / "proj")
    assert result.exit_code == 0, result.output
    spec = in_tmp / "proj" / "nnrecipe.yaml"
    assert spec.read_text().startswith(f"# nnrecipe run --config {spec}")
    assert cli("validate", "--config", spec).exit_code == 0
    # the first three stages, on a shorter budget (the whole recipe at the template's settings was run by hand:
    # 42 verdicts, no warn or fail)
    result = cli(
        "run", "--config", spec, "--to", "overfit", "--json", "--strict", "train.steps=300", "stages.baseline.steps=100"
    )
    verdicts = json.loads(result.stdout)
    assert result.exit_code == 0, [(v["check"], v["status"], v["message"]) for v in verdicts if v["status"] != "pass"]
    assert {v["stage"] for v in verdicts} == {"inspect-data", "baseline", "overfit"}
    assert (in_tmp / "runs" / "proj" / "overfit" / "confusion.png").exists()


def test_init_never_overwrites_without_force(cli, in_tmp):
    assert cli("init", in_tmp, "--name", "mine").exit_code == 0
    (in_tmp / "model.py").write_text("# my edits\n")
    result = cli("init", in_tmp)
    assert result.exit_code == 2 and "already exists" in result.stderr and "--force" in result.stderr
    assert (in_tmp / "model.py").read_text() == "# my edits\n"
    assert cli("init", in_tmp, "--force").exit_code == 0 and "def make_model" in (in_tmp / "model.py").read_text()
