"""Every shipped config: it validates, opens with its command, and has zero false alarms."""

import json

import pytest

from nnrecipe.spec import load_spec

from conftest import CONFIGS

ALL = sorted(CONFIGS.glob("*.yaml"))
NEEDS_USER_DATA = {"torchvision-cifar10.yaml"}  # needs CIFAR-10 on disk (or a download)


def test_there_is_a_config_per_builtin_source():
    sources = {load_spec(p)[0].data.source for p in ALL}
    assert sources == {"digits", "mnist1d", "synthetic", "csv", "npz", "image-folder", "torchvision", "python"}


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_config_validates_and_opens_with_its_command(path, cli):
    first = path.read_text().splitlines()[0]
    assert first.startswith("# nnrecipe ") and f"configs/{path.name}" in first
    result = cli("validate", "--config", path)
    assert result.exit_code == 0, result.stderr
    assert "name:" in result.stdout


@pytest.mark.parametrize("path", [p for p in ALL if p.name not in NEEDS_USER_DATA], ids=lambda p: p.name)
def test_inspect_data_has_no_false_alarm_on_shipped_config(path, cli):
    result = cli("inspect-data", "--config", path, "--json", "--strict")
    assert result.exit_code == 0, result.stdout + result.stderr
    verdicts = json.loads(result.stdout)
    assert {v["check"] for v in verdicts} >= {"split-sizes", "shapes-dtypes", "non-finite", "duplicates", "split-leakage",
                                              "input-scale", "outliers"}
    assert all(v["status"] in ("pass", "skip") for v in verdicts), [v for v in verdicts if v["status"] not in ("pass", "skip")]


def test_config_needing_user_data_says_which_field(cli, tmp_path):
    result = cli("inspect-data", "--config", CONFIGS / "torchvision-cifar10.yaml", f"data.args.root={tmp_path / 'none'}")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: data.args.root: CIFAR10 not found") and "download=true" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
