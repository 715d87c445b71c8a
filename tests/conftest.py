"""Shared fixtures. Tests run on one thread (tiny models are fastest so; see the Makefile)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import yaml

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
PLANTED = REPO / "tests" / "planted"


@pytest.fixture(autouse=True, scope="session")
def _cache_dir(tmp_path_factory):
    # Generated datasets (mnist1d) are cached per test session, never in the user's home.
    os.environ["NNRECIPE_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield


@pytest.fixture
def in_tmp(tmp_path, monkeypatch) -> Path:
    """Run in an empty folder: the default output_dir `runs` lands there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def cli(in_tmp):
    from typer.testing import CliRunner

    from nnrecipe.cli import app

    runner = CliRunner()

    def invoke(*args: str, env: dict | None = None):
        return runner.invoke(app, [str(a) for a in args], env=env)

    return invoke


def write_spec(folder: Path, spec: dict, name: str = "exp.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def planted_spec(folder: Path, factory: str, *, args: dict | None = None, **extra) -> Path:
    """A spec whose data comes from tests/planted/data_bugs.py:<factory>."""
    spec = {
        "name": factory.replace("_", "-"),
        "data": {"source": "python", "factory": f"{PLANTED}/data_bugs.py:{factory}", "args": args or {}},
    }
    for key, value in extra.items():
        spec[key] = value
    return write_spec(folder, spec, name=f"{factory}.yaml")


def run_planted(tmp_path: Path, module, stages, *, data: str, model, overrides: dict):
    """nnrecipe.run on a planted module's data factory `data` (called with no arguments) and
    `model`, every stage's verdicts kept (keep_going), named after the data."""
    import nnrecipe

    return nnrecipe.run(
        model=model,
        data=getattr(module, data)(),
        stages=stages,
        overrides=overrides,
        output_dir=tmp_path / "runs",
        name=data.replace("_", "-"),
        quiet=True,
        keep_going=True,
    )


def pytest_collection_modifyitems(config, items):
    """The slowest tests (every stage on a shipped config) first, so that the two xdist workers
    are not left waiting for one of them at the end of the run."""
    slow = [i for i in items if "no_false_alarm" in i.nodeid]
    slow.sort(
        key=lambda i: ("mnist1d" not in i.nodeid, "torchvision" not in i.nodeid and "image-folder" not in i.nodeid)
    )
    rest = [i for i in items if i not in slow]
    items[:] = slow + rest


def process_cmdline(pid: int) -> str:
    """A process's command line (Linux /proc; its title where it set one), "" once it is gone."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def parent_of(pid: int) -> int:
    """A process's parent pid (Linux /proc), 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except OSError:
        return 0


def pool_workers(pid: int) -> list[int]:
    """The pool workers of process `pid`: forked by its fork server (executors/pool.py)."""
    procs = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    servers = {p for p in procs if parent_of(p) == pid and "multiprocessing.forkserver" in process_cmdline(p)}
    return sorted(p for p in procs if parent_of(p) in servers)


def close_numbers(a, b, rel: float = 1e-3) -> bool:
    """Two verdicts' observed values alike: the same structure and strings, every float within
    `rel` (relative, absolute below 1) of the other: what float rounding may move."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(close_numbers(a[k], b[k], rel) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(close_numbers(x, y, rel) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= rel * max(1.0, abs(a))
    return a == b
