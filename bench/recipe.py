"""The whole recipe under two or more settings, alternated in one run (by hand; never a test).

    OMP_NUM_THREADS=1 python bench/recipe.py --settings "batch_models=false" "" [--config ...]
                                             [--rounds 2] [--json bench/results/recipe_cpu.json]

Each setting is extra `nnrecipe run` arguments (overrides, flags; "" = the defaults), and may
start with `at=DIR` to run the nnrecipe of another checkout (a `git worktree` of an earlier
commit: before/after in one run). Each round
runs `nnrecipe run --keep-going` once per setting, in its own process and run directory, the
order reversed every other round so that a slow spell of the machine hits every setting.
Reported per setting: the medians of the process's wall time, of each stage's seconds (its
summary.json) and of its seconds of training (its timeline: every process's, added), each
setting's ratio to the first, and whether every verdict's (check, status) equals the first
setting's, and its observed numbers too.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]  # this checkout
STAGES = ("inspect-data", "baseline", "overfit", "regularize", "tune", "squeeze")


def one_run(config: str, setting: str, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    args, env = shlex.split(setting), dict(os.environ)
    code = args.pop(0).removeprefix("at=") if args and args[0].startswith("at=") else str(HERE)
    # `python -m` puts its working directory first on sys.path: run in `out`, so that the
    # checkout on PYTHONPATH is the one imported (from the repository root, it was this one)
    env["PYTHONPATH"] = code
    where = subprocess.run(
        [sys.executable, "-c", "import nnrecipe; print(nnrecipe.__file__)"],
        capture_output=True,
        text=True,
        env=env,
        cwd=out,
        check=True,
    ).stdout.strip()
    if not where.startswith(str(Path(code).resolve())):
        raise SystemExit(f"{setting!r} would import {where}, not the checkout at {code}")
    cmd = [sys.executable, "-m", "nnrecipe.cli", "run", "--config", str(Path(config).resolve()), "--keep-going"]
    cmd += ["--json", *args, f"output_dir={out}"]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=out)
    wall = time.perf_counter() - t
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}")
    verdicts = [(v["stage"], v["check"], v["status"], v["observed"]) for v in json.loads(proc.stdout)]
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    stages, trained = {}, {}
    for stage in STAGES:
        summary = run_dir / stage / "summary.json"
        if summary.exists():
            stages[stage] = json.loads(summary.read_text()).get("seconds")
            # the stage's timeline: experiments, processes, seconds of training, seconds spanned
            trained[stage] = json.loads(summary.read_text()).get("timeline")
    return {"setting": setting, "wall_s": round(wall, 1), "stages_s": stages, "timeline": trained, "verdicts": verdicts}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/digits.yaml")
    ap.add_argument("--settings", nargs="+", default=["batch_models=false", ""])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            order = args.settings if r % 2 == 0 else args.settings[::-1]
            for i, setting in enumerate(order):
                row = one_run(args.config, setting, Path(tmp) / f"r{r}-s{i}")
                rows.append(row)
                print(f"round {r}: [{setting}] {row['wall_s']} s  stages {row['stages_s']}", flush=True)
    first = [r for r in rows if r["setting"] == args.settings[0]]
    summary = []
    for setting in args.settings:
        mine = [r for r in rows if r["setting"] == setting]
        stages = {s: statistics.median(r["stages_s"].get(s) or 0.0 for r in mine) for s in STAGES}
        training = {  # seconds of training in each stage (a group counted once), where it has a timeline
            s: statistics.median((r["timeline"].get(s) or {}).get("training_seconds") or 0.0 for r in mine)
            for s in STAGES
        }
        summary.append(
            {
                "setting": setting,
                "wall_s": statistics.median(r["wall_s"] for r in mine),
                "stages_total_s": round(sum(stages.values()), 1),
                "stages_s": stages,
                "training_s": training,
                "statuses_as_first": all(
                    [v[:3] for v in r["verdicts"]] == [v[:3] for v in first[0]["verdicts"]] for r in mine
                ),
                "numbers_as_first": all(r["verdicts"] == first[0]["verdicts"] for r in mine),
            }
        )
    base = summary[0]
    for s in summary:
        s["ratio_wall"] = round(base["wall_s"] / s["wall_s"], 2)
        s["ratio_stages"] = round(base["stages_total_s"] / s["stages_total_s"], 2)
        print(json.dumps(s))
    if args.json:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        for r in rows:
            r["verdicts"] = len(r["verdicts"])
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "config": args.config,
                    "commit": commit,
                    "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores",
                    "summary": summary,
                    "rows": rows,
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
