"""How long a run's pool of workers takes to be warm, started as before or from the fork server
(by hand; never a test).

    OMP_NUM_THREADS=1 python bench/pool_start.py [--workers 2] [--pools 3] [--rounds 3]

Each round runs two fresh Python processes, one per way of starting workers, alternated. In
each, `--pools` pools are started one after the other, as a notebook's or a test suite's
successive runs start them: warmed (torch imported, the digits data loaded) and stopped. Printed:
seconds to a warm pool, the first and the later ones, and the CPU seconds the workers (and the
fork server) spent, from /proc, per pool.

- spawn: every worker a fresh interpreter that imports torch itself (before 2026-12-07).
- forkserver: workers forked by multiprocessing's fork server, which imported torch once
  (executors/pool.py `_context`, `PRELOAD`).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and of its waited-for children (/proc/<pid>/stat)."""
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def one_process(how: str, workers: int, pools: int) -> dict:
    """In this process: `pools` pools started, warmed and stopped, one after the other."""
    import torch

    from nnrecipe.executors import pool as pool_module
    from nnrecipe.runtime import plan_workers
    from nnrecipe.spec import Spec

    if how == "spawn":  # the way before the fork server
        pool_module._context = lambda: multiprocessing.get_context("spawn")
    warm, cpu, server_cpu = [], [], {}  # server_cpu: each fork server's CPU seconds counted so far
    for _ in range(pools):
        pool = pool_module.Pool(base=Path("."), workers=plan_workers(workers, torch.device("cpu")))
        t = time.perf_counter()
        pool.warm(Spec())
        while not pool.ready():
            time.sleep(0.005)
        warm.append(time.perf_counter() - t)
        procs = list((pool._executor._processes or {}).values())  # type: ignore[union-attr]
        servers = {int(open(f"/proc/{p.pid}/stat").read().rsplit(")", 1)[1].split()[1]) for p in procs}
        servers.discard(os.getpid())  # spawned workers are this process's children
        spent = sum(_cpu_seconds(p.pid) for p in procs)
        for s in servers:  # the server's share: what it spent since the last pool (its imports, once)
            now = _cpu_seconds(s)
            spent += now - server_cpu.get(s, 0.0)
            server_cpu[s] = now
        cpu.append(spent)
        pool.close()
    return {"how": how, "warm_s": warm, "workers_cpu_s": cpu}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--pools", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # a child process's setting
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one_process(args.one, args.workers, args.pools)))
        return
    rows = []
    for r in range(args.rounds):
        for how in ("spawn", "forkserver") if r % 2 == 0 else ("forkserver", "spawn"):
            cmd = [sys.executable, __file__, "--one", how, "--workers", str(args.workers), "--pools", str(args.pools)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
            print(f"round {r} {how}: warm {[round(s, 2) for s in rows[-1]['warm_s']]} s", flush=True)
    summary = {}
    for how in ("spawn", "forkserver"):
        mine = [row for row in rows if row["how"] == how]
        summary[how] = {
            "first_warm_s": round(statistics.median(row["warm_s"][0] for row in mine), 2),
            "later_warm_s": round(statistics.median(s for row in mine for s in row["warm_s"][1:]), 2),
            "first_cpu_s": round(statistics.median(row["workers_cpu_s"][0] for row in mine), 2),
            "later_cpu_s": round(statistics.median(s for row in mine for s in row["workers_cpu_s"][1:]), 2),
        }
        print(how, summary[how])
    if args.json:
        machine = f"{os.uname().machine}, {os.cpu_count()} cores"
        args.json.write_text(
            json.dumps({"workers": args.workers, "machine": machine, "summary": summary, "rows": rows}, indent=1)
        )


if __name__ == "__main__":
    main()
