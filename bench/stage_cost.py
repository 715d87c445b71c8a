"""What each stage costs, and how the cost grows (run by hand; never a test).

    OMP_NUM_THREADS=1 python bench/stage_cost.py [--config configs/digits.yaml ...] [--light]
                                                  [--scaling] [--json bench/results/stage_cost.json]

1. Each stage of each config, in order, as its own `nnrecipe <stage>` process on one run
   directory (so later stages read earlier results, as a user's would): wall time, and the peak
   resident memory of that process (os.wait4's ru_maxrss). The first line times a bare
   `import nnrecipe.cli` process: every stage's wall time includes that start-up.
2. --scaling: inspect-data on MNIST-1D with 1x, 4x and 16x the examples (the data cached first,
   so generation is not timed), and the overfit stage at 1x, 2x and 4x its steps. Each process
   pays a fixed start-up, so the growth is read from the differences: the cost per added example
   (flat for linear work, growing by the ratio of log n for n log n) and per added 1000 steps.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STAGES = ("inspect-data", "baseline", "overfit", "regularize", "tune", "squeeze")
# The shipped-config test's light settings: every stage at a fraction of its default work.
LIGHT = [
    "stages.regularize.seeds=1",
    "stages.tune.trials=4",
    "stages.tune.steps=200",
    "stages.squeeze.members=2",
    "stages.squeeze.steps=300",
    "stages.squeeze.distill.enabled=false",
    "stages.squeeze.longer.extra_steps=100",
]
NNRECIPE = [sys.executable, "-m", "nnrecipe.cli"]


def timed(cmd: list[str]) -> tuple[float, float, int]:
    """(wall seconds, peak RSS in MiB, exit code) of one child process."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, 1):  # 1 is a stage with a fail verdict: still a cost to report
        err = proc.stderr.read().decode()[-400:] if proc.stderr else ""
        raise SystemExit(f"{' '.join(cmd)} exited {code}: {err}")
    return wall, usage.ru_maxrss / 1024, code  # ru_maxrss is in KiB on Linux


def stage(name: str, config: str, out: str, overrides: list[str]) -> tuple[float, float, int]:
    return timed(NNRECIPE + [name, "--config", config, "--output-dir", out, *overrides])


def exponent(sizes: list[float], times: list[float]) -> float:
    """Least-squares slope of log time on log size."""
    lx, ly = [math.log(s) for s in sizes], [math.log(t) for t in times]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)


def per_stage(configs: list[str], light: bool) -> list[dict]:
    rows = []
    start, rss, _ = timed([sys.executable, "-c", "import nnrecipe.cli"])
    print(f"{'start-up (import nnrecipe.cli)':44s} {start:7.1f} s  {rss:7.0f} MiB")
    rows.append({"config": "-", "stage": "start-up", "seconds": start, "peak_rss_mib": rss})
    for config in configs:
        with tempfile.TemporaryDirectory() as out:
            total = 0.0
            for name in STAGES:
                wall, rss, code = stage(name, config, out, LIGHT if light else [])
                total += wall
                print(
                    f"{Path(config).stem + ' ' + name:44s} {wall:7.1f} s  {rss:7.0f} MiB"
                    + ("  (a fail)" if code else "")
                )
                rows.append({"config": config, "stage": name, "seconds": wall, "peak_rss_mib": rss, "exit": code})
            print(f"{Path(config).stem + ' all six':44s} {total:7.1f} s")
    return rows


def scaling() -> dict:
    result = {}
    with tempfile.TemporaryDirectory() as out:
        sizes, times = [5000, 20000, 80000], []
        for n in sizes:
            over = [f"data.args.num_samples={n}"]
            stage("inspect-data", "configs/mnist1d.yaml", out, over)  # generates and caches the data
            wall, rss, _ = stage("inspect-data", "configs/mnist1d.yaml", out, over)
            times.append(wall)
            print(f"mnist1d inspect-data  n={n:>6}  {wall:6.1f} s  {rss:6.0f} MiB")
        k = exponent(sizes, times)
        nlogn = exponent([sizes[0], sizes[-1]], [sizes[0] * math.log(sizes[0]), sizes[-1] * math.log(sizes[-1])])
        # The cost of each added example, from the differences (the fixed start-up cancels):
        # linear work keeps it flat, n log n lets it grow by the ratio of the logs.
        per_ex = [(times[i + 1] - times[i]) / (sizes[i + 1] - sizes[i]) for i in range(len(sizes) - 1)]
        print(
            f"  growth exponent {k:.2f} with the fixed start-up (n log n over this range: {nlogn:.2f}); "
            f"ms per added example: {', '.join(f'{1000 * p:.3f}' for p in per_ex)} "
            f"(n log n would grow it {math.log(sizes[-1]) / math.log(sizes[1]):.2f}x)"
        )
        result["inspect_data"] = {
            "examples": sizes,
            "seconds": times,
            "exponent": k,
            "nlogn_exponent": nlogn,
            "ms_per_added_example": [1000 * p for p in per_ex],
        }

        steps, times = [1000, 2000, 4000], []
        for s in steps:
            wall, rss, _ = stage("overfit", "configs/mnist1d.yaml", out, [f"train.steps={s}", "train.eval_every=500"])
            times.append(wall)
            print(f"mnist1d overfit  steps={s:>5}  {wall:6.1f} s  {rss:6.0f} MiB")
        # Cost per extra step from the differences, so start-up and fixed probes cancel out.
        per_step = [(times[i + 1] - times[i]) / (steps[i + 1] - steps[i]) for i in range(len(steps) - 1)]
        print(f"  seconds per 1000 steps: {', '.join(f'{1000 * p:.2f}' for p in per_step)} (linear: equal)")
        result["overfit"] = {"steps": steps, "seconds": times, "seconds_per_1000_steps": [1000 * p for p in per_step]}
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", nargs="+", default=["configs/digits.yaml", "configs/mnist1d.yaml"])
    ap.add_argument("--light", action="store_true", help="the shipped-config test's lighter settings")
    ap.add_argument("--scaling", action="store_true", help="also measure growth with examples and steps")
    ap.add_argument("--skip-stages", action="store_true", help="only the scaling measurements")
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}"
    )
    report: dict = {"light": args.light}
    if not args.skip_stages:
        report["stages"] = per_stage(args.config, args.light)
    if args.scaling:
        report["scaling"] = scaling()
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
