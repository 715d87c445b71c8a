"""Passwords never reach a recorded file: redaction of URLs, and finding the password again
when a recorded spec is run once more (the end-to-end test against PostgreSQL is in
tests/stages/test_tune.py)."""

import json
import sys

import pytest

from nnrecipe.credentials import MissingPassword, is_redacted, redact, redact_tree, storage_url
from nnrecipe.rundir import RunDir
from nnrecipe.spec import build_spec


@pytest.mark.parametrize(
    "url, expected",
    [
        ("postgresql://alice:s3cret@db:5432/tune", "postgresql://alice:***@db:5432/tune"),
        (
            "postgresql+psycopg://alice:p%40ss@db/tune?sslmode=require",
            "postgresql+psycopg://alice:***@db/tune?sslmode=require",
        ),
        (
            "postgresql://db/tune?user=alice&password=s3cret&sslmode=require",
            "postgresql://db/tune?user=alice&password=***&sslmode=require",
        ),
        ("see mysql://u:pw@h/d and s3://key:secret@bucket/x", "see mysql://u:***@h/d and s3://key:***@bucket/x"),
        ("postgresql://alice@db/tune", "postgresql://alice@db/tune"),  # no password: unchanged
        ("runs/study.journal", "runs/study.journal"),
    ],
)
def test_redact_keeps_user_and_host_and_hides_the_password(url, expected):
    assert redact(url) == expected
    assert redact(expected) == expected  # idempotent
    assert is_redacted(expected) == (expected != url)


def test_redact_tree_reaches_nested_strings_and_keeps_other_values():
    tree = {"a": ["x", ("postgresql://u:pw@h/d", 3)], "b": {"c": "postgresql://u:pw@h/d"}, "d": None, "e": 1.5}
    assert redact_tree(tree) == {
        "a": ["x", ("postgresql://u:***@h/d", 3)],
        "b": {"c": "postgresql://u:***@h/d"},
        "d": None,
        "e": 1.5,
    }


def test_a_url_with_its_password_is_used_as_it_is():
    assert storage_url("postgresql://u:pw@h/d", environ={}) == "postgresql://u:pw@h/d"
    assert storage_url("/shared/study.journal", environ={}) == "/shared/study.journal"


def test_a_redacted_url_takes_the_whole_url_from_the_environment_only_when_it_is_the_same_one():
    env = {"NNRECIPE_TUNE_STORAGE": "postgresql://u:pw@h/d"}
    assert storage_url("postgresql://u:***@h/d", environ=env) == "postgresql://u:pw@h/d"
    with pytest.raises(MissingPassword):  # another host's URL is not this one's password
        storage_url("postgresql://u:***@other/d", environ=env)


def test_a_redacted_url_leaves_the_password_to_libpq_when_pgpassword_or_a_password_file_has_it(tmp_path):
    assert storage_url("postgresql://u:***@h/d", environ={"PGPASSWORD": "pw"}) == "postgresql://u@h/d"
    assert (
        storage_url("postgresql://h/d?user=u&password=***&sslmode=require", environ={"PGPASSWORD": "pw"})
        == "postgresql://h/d?user=u&sslmode=require"
    )
    (tmp_path / ".pgpass").write_text("h:5432:d:u:pw\n")
    assert storage_url("postgresql://u:***@h/d", environ={"HOME": str(tmp_path)}) == "postgresql://u@h/d"
    other = tmp_path / "elsewhere"
    other.write_text("*:*:*:u:pw\n")
    assert storage_url("postgresql://u:***@h/d", environ={"PGPASSFILE": str(other)}) == "postgresql://u@h/d"


def test_a_redacted_url_with_no_password_anywhere_says_where_to_put_it(tmp_path):
    with pytest.raises(
        MissingPassword,
        match=r"postgresql://u:\*\*\*@h/d: the password is never kept in the run directory;"
        r" .*--storage or NNRECIPE_TUNE_STORAGE, or .*PGPASSWORD or ~/.pgpass",
    ):
        storage_url("postgresql://u:***@h/d", environ={"HOME": str(tmp_path)})


def test_the_recorded_spec_and_argv_hold_no_password(tmp_path, monkeypatch):
    spec = build_spec({"name": "s", "stages": {"tune": {"storage": "postgresql://alice:s3cret@db/tune"}}})
    assert spec.stages.tune.storage == "postgresql://alice:s3cret@db/tune"  # in memory: what connects
    assert "s3cret" not in spec.to_yaml() and "postgresql://alice:***@db/tune" in spec.to_yaml()
    monkeypatch.setattr(sys, "argv", ["nnrecipe", "tune", "--storage", "postgresql://alice:s3cret@db/tune"])
    run = RunDir.create(str(tmp_path), "s")
    run.write_env(device="cpu", seed=0, spec_path=None)
    argv = json.loads((run.root / "env.json").read_text())["argv"]
    assert argv == ["nnrecipe", "tune", "--storage", "postgresql://alice:***@db/tune"]
