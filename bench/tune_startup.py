"""tune alone (the digits default, --workers 2), two rules for the median pruner's start-up trials,
alternated (by hand; never a test).

    OMP_NUM_THREADS=1 python bench/tune_startup.py --rounds 6 [--cold]

"as is": the first worker to ask takes the 4 start-up trials as one round; "shared": each worker
takes its share of them (2 and 2) where the pool was warm when the stage began (Plan.share_startup,
as committed). Warm (default): the run's pool of two is started and idle before the stage, as in
a whole run; --cold: the stage starts it, as a standalone `nnrecipe tune --workers 2` does (then
the two are the same code). Prints each stage's seconds and verdicts.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from concurrent.futures import wait
from pathlib import Path

import torch
from rich.console import Console

from nnrecipe.executors.pool import Pool
from nnrecipe.rundir import RunDir
from nnrecipe.runtime import plan_workers
from nnrecipe.spec import Spec
from nnrecipe.stages import tune
from nnrecipe.stages.base import StageContext

READY = Pool.ready


def one(rule: str, *, cold: bool) -> tuple[float, list]:
    # "as is": the first worker takes the start-up trials whatever the pool's state
    Pool.ready = READY if rule == "shared" else (lambda self: False)
    spec, cpu = Spec(), torch.device("cpu")
    root = Path(tempfile.mkdtemp()) / "run"
    (root / "tune").mkdir(parents=True)
    ctx = StageContext(
        spec=spec,
        base=Path("."),
        run=RunDir(root),
        device=cpu,
        console=Console(quiet=True),
        workers=plan_workers(2, cpu),
    )
    if not cold:
        pool = ctx.pool()
        pool.warm(spec)
        wait([pool.call(time.sleep, 0.3) for _ in range(2)])  # both workers up and idle
        time.sleep(1.0)
    ctx.device_data()
    t = time.perf_counter()
    result = tune.run(spec, ctx)
    took = time.perf_counter() - t
    ctx.close()
    shutil.rmtree(root.parent)
    return took, [(v.check, v.status.value) for v in result.verdicts]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--cold", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    took: dict[str, list[float]] = {"as is": [], "shared": []}
    for i in range(args.rounds):
        for rule in ("as is", "shared") if i % 2 == 0 else ("shared", "as is"):
            seconds, verdicts = one(rule, cold=args.cold)
            took[rule].append(seconds)
            print(f"{rule}: {seconds:.2f} s {verdicts}", flush=True)
    for rule, seconds in took.items():
        print(f"{rule}: median {statistics.median(seconds):.2f} s of {[round(s, 2) for s in seconds]}")


if __name__ == "__main__":
    main()
