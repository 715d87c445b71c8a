"""How long the run's end takes to stop its worker processes (by hand; never a test).

    OMP_NUM_THREADS=1 python bench/pool_close.py [--workers 2] [--rounds 3]

A pool of N spawned workers is started and warmed (torch imported, the digits data loaded),
then stopped as the run's end stops it (`Pool.close`), and, for comparison, as Python's own
`ProcessPoolExecutor.shutdown(wait=True)` would: each worker then runs Python's exit with
torch loaded.
"""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import wait
from pathlib import Path

import torch

from nnrecipe.executors.pool import Pool
from nnrecipe.runtime import plan_workers
from nnrecipe.spec import Spec


def warm_pool(workers: int) -> Pool:
    pool = Pool(base=Path("."), workers=plan_workers(workers, torch.device("cpu")))
    pool.warm(Spec())
    wait([pool.call(time.sleep, 0.5) for _ in range(workers)])  # every worker started and idle
    time.sleep(1.0)
    return pool


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    took: dict[str, list[float]] = {"Pool.close (SIGTERM)": [], "shutdown(wait=True)": []}
    for _ in range(args.rounds):
        for how in took:
            pool = warm_pool(args.workers)
            t = time.perf_counter()
            if how.startswith("Pool.close"):
                pool.close()
            else:
                assert pool._executor is not None
                pool._executor.shutdown(wait=True)
            took[how].append(time.perf_counter() - t)
    for how, seconds in took.items():
        print(f"{how}: median {statistics.median(seconds):.2f} s of {[round(s, 2) for s in seconds]}")


if __name__ == "__main__":
    main()
