"""The whole recipe with --workers 1 and --workers N, alternated in one run (by hand; never a test).

    OMP_NUM_THREADS=1 python bench/workers.py [--config configs/digits.yaml] [--workers 2]
                                              [--rounds 2] [--json bench/results/workers_cpu.json]

Each round runs `nnrecipe run --keep-going` once per setting, in its own process and run
directory, the order alternating between rounds (1, N, N, 1, ...) so that a slow spell of the
machine hits both. Reported per setting: the process's wall time and each stage's seconds (its
summary.json), the ratio of the medians, and whether every verdict (check, status, observed)
is the same as at --workers 1.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STAGES = ("inspect-data", "baseline", "overfit", "regularize", "tune", "squeeze")


def one_run(config: str, workers: int, out: Path) -> dict:
    cmd = [sys.executable, "-m", "nnrecipe.cli", "run", "--config", config, "--keep-going", "--json"]
    cmd += ["--workers", str(workers), f"output_dir={out}"]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}")
    verdicts = [(v["stage"], v["check"], v["status"], v["observed"]) for v in json.loads(proc.stdout)]
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    stages = {}
    for stage in STAGES:
        summary = run_dir / stage / "summary.json"
        if summary.exists():
            stages[stage] = json.loads(summary.read_text()).get("seconds")
    return {"workers": workers, "wall_s": round(wall, 1), "stages_s": stages, "verdicts": verdicts}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/digits.yaml")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            order = (1, args.workers) if r % 2 == 0 else (args.workers, 1)
            for w in order:
                row = one_run(args.config, w, Path(tmp) / f"r{r}-w{w}")
                rows.append(row)
                print(f"round {r}: --workers {w}: {row['wall_s']} s  stages {row['stages_s']}", flush=True)
    base = [r for r in rows if r["workers"] == 1]
    par = [r for r in rows if r["workers"] == args.workers]
    same = all(r["verdicts"] == base[0]["verdicts"] for r in rows)
    med1 = statistics.median(r["wall_s"] for r in base)
    medn = statistics.median(r["wall_s"] for r in par)
    stage_sum = {
        w: statistics.median(sum(v for v in r["stages_s"].values() if v) for r in rs)
        for w, rs in ((1, base), (args.workers, par))
    }
    print(
        f"wall: --workers 1 {med1:.1f} s, --workers {args.workers} {medn:.1f} s: {med1 / medn:.2f}x; "
        f"stages {stage_sum[1]:.1f} s vs {stage_sum[args.workers]:.1f} s: {stage_sum[1] / stage_sum[args.workers]:.2f}x; "
        f"identical verdicts: {same}"
    )
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
                    "machine": f"{platform.machine()}, {len(__import__('os').sched_getaffinity(0))} cores",
                    "identical_verdicts": same,
                    "ratio_wall": round(med1 / medn, 2),
                    "ratio_stages": round(stage_sum[1] / stage_sum[args.workers], 2),
                    "rows": rows,
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
