import json

import pytest

from nnrecipe import atomic
from nnrecipe.errors import RunDirError
from nnrecipe.rundir import RunDir
from nnrecipe.stages import STAGE_NAMES
from nnrecipe.verdict import Status, Verdict


def _v(stage, check, status=Status.PASS):
    return Verdict(stage, check, status, observed=1, expected=1, message=f"{stage}/{check}")


def test_merged_verdicts_replace_a_rerun_stage_and_keep_stage_order(tmp_path):
    run = RunDir.create(str(tmp_path), "exp", stage_order=STAGE_NAMES)
    for stage in ("baseline", "inspect-data"):
        run.reset_stage(stage)
    run.record("baseline", [_v("baseline", "b1")], {})
    run.record("inspect-data", [_v("inspect-data", "a1"), _v("inspect-data", "a2", Status.WARN)], {"n": 1})
    run.record("inspect-data", [_v("inspect-data", "a3", Status.FAIL)], {"n": 2})  # a re-run replaces
    merged = json.loads((run.root / "verdicts.json").read_text())
    assert [(v["stage"], v["check"]) for v in merged] == [("inspect-data", "a3"), ("baseline", "b1")]
    assert json.loads((run.root / "inspect-data" / "summary.json").read_text()) == {"n": 2}
    report = (run.root / "report.md").read_text()
    assert report.index("## inspect-data") < report.index("## baseline") and "❌ fail" in report


def test_reset_stage_clears_old_files(tmp_path):
    run = RunDir.create(str(tmp_path), "exp")
    (run.reset_stage("inspect-data") / "old.png").write_bytes(b"x")
    run.tb_dir("inspect-data").mkdir(parents=True)
    (run.tb_dir("inspect-data") / "events").write_bytes(b"x")
    run.reset_stage("inspect-data")
    assert list(run.stage_dir("inspect-data").iterdir()) == [] and not run.tb_dir("inspect-data").exists()


def test_env_json(tmp_path):
    run = RunDir.create(str(tmp_path), "exp")
    run.write_env(device="cpu", seed=3, spec_path=None)
    env = json.loads((run.root / "env.json").read_text())
    assert env["seed"] == 3 and env["device"] == "cpu" and env["torch"] and env["nnrecipe"]
    assert "git_commit" in env


def test_unwritable_output_dir_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(RunDirError, match="output_dir: cannot write the run directory"):
        RunDir.create(str(blocker), "exp")


def test_a_foreign_verdicts_file_is_a_clear_error(tmp_path):
    run = RunDir.create(str(tmp_path), "exp")
    (run.root / "verdicts.json").write_text("{not json")
    with pytest.raises(RunDirError, match="not a verdicts file"):
        run.read_verdicts()


def test_atomic_write_leaves_old_file_when_the_writer_fails(tmp_path):
    path = tmp_path / "f.json"
    atomic.write_json(path, {"a": 1})

    class Boom(Exception):
        pass

    def explode(f):
        f.write("half")
        raise Boom

    with pytest.raises(Boom):
        atomic._atomic(path, explode, "w")
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]  # no temporary left behind


def test_atomic_files_get_the_usual_permissions(tmp_path):
    import os
    import stat

    from nnrecipe import atomic

    atomic.write_text(tmp_path / "a.txt", "x")
    mask = os.umask(0o022)
    os.umask(mask)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o666 & ~mask  # not mkstemp's 0600


def test_reset_stage_can_keep_what_a_resumed_stage_reuses(tmp_path):
    run = RunDir.create(str(tmp_path), "r", stage_order=["squeeze"])
    folder = run.stage_dir("squeeze")
    (folder / "members").mkdir(parents=True)
    (folder / "members" / "member-0.json").write_text("{}")
    (folder / "summary.json").write_text("{}")
    run.reset_stage("squeeze", keep=("members",))
    assert (folder / "members" / "member-0.json").exists() and not (folder / "summary.json").exists()
    run.reset_stage("squeeze")
    assert not (folder / "members").exists()
