"""The tune stage's other workers on its study: the run's worker processes, processes of their
own on this machine, or Ray tasks.

The stage's own process is worker 0 (tune_worker.run_worker); workers 1..N-1 run the same loop
on the same study, until `trials` have finished across all of them. The kinds here have the
same verbs: `watch()` (a worker's error stops the stage at once, a dead worker's trial is run
again), `wait()` (until each has finished) and `stop()` (Ctrl-C, an error: the rest stopped).

On a CPU, the run's worker processes (`--workers N`, executors.pool) are already started, their
data loaded, when tune comes after other stages: a process of its own took 3-5 s on the cpu-box
to import torch and load the data before its first trial, while the pool's workers sat idle.
On GPUs (worker i on GPU i, which a pool's task cannot choose) and with `stages.tune.workers`
(as many as it says), tune's workers are processes of its own.

Ray tasks (`--executor ray` or `ray://...`, `stages.tune.workers` unset): each one trains its
trials in a Ray worker, in a scratch run directory of its own, and sends back its trials'
TensorBoard curves, which the stage writes into the run directory (only the stage's process
writes there). The study must be where every task can reach it: a Ray started here shares this
machine's journal file; a cluster needs a database (`stages.tune.storage: postgresql://...`),
else tune's trials stay on this machine. A task whose worker process dies is run again by Ray
(`max_retries`); the trial it left RUNNING is failed and queued again, by the database's
heartbeats, or for the journal by the task's next attempt, so no trial is lost or counted twice.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

from nnrecipe.credentials import ENV_STORAGE
from nnrecipe.errors import NNRecipeError
from nnrecipe.executors import tune_worker
from nnrecipe.executors.ray_pool import RETRIES, naming_the_node, node_id, on_a_cluster, result_of
from nnrecipe.executors.tune_worker import Plan


class PoolTasks:
    """Workers 1..count-1 as tasks in the run's worker processes (executors.pool): each one
    writes its trials' curves into the run directory (this machine's) and its lines into
    tune/worker-<i>.log, as a process of its own does. A pool worker killed mid-trial breaks
    the pool, and every worker with it: their trials left RUNNING are failed and queued again,
    and worker 0 runs them and the rest of the study alone (the break is seen when worker 0 is
    idle, near the study's end, where a pool started again would cost more than it saves).
    The pool starts afresh for the stages after. Only on a CPU: the pool's processes have one
    device each, and a task cannot choose its process (on GPUs, `Processes` puts worker i on
    devices[i])."""

    def __init__(self, pool, plan: Plan, count: int, *, storage: str, study, console):
        self.pool, self.study, self.console = pool, study, console
        self.indexes = list(range(1, count))
        self.pending = [pool.call(_pool_worker, dataclasses.asdict(plan), i, storage) for i in self.indexes]

    def __len__(self) -> int:
        return len(self.indexes)

    def watch(self) -> None:
        """Called while worker 0 is idle or done, so every RUNNING trial is another worker's."""
        from concurrent.futures.process import BrokenProcessPool

        from nnrecipe.probes import tune_study as ts

        for future in [f for f in self.pending if f.done()]:
            self.pending.remove(future)
            try:
                future.result()
            except BrokenProcessPool:
                pids = self.pool.terminate()  # every pool worker stopped: its tasks with it
                names = {ts.worker_name(i, pid=pid) for i in self.indexes for pid in pids}
                orphans = [n for name in sorted(names) for n in ts.recover_orphans(self.study, worker=name)]
                self.pending = []
                self.console.print(
                    "[yellow]tune: a worker process died mid-trial (killed, or out of memory?): "
                    f"trials {orphans} run again here, with the rest of the study[/]"
                    if orphans
                    else "[yellow]tune: a worker process died (killed, or out of memory?): the trials go on here[/]"
                )
                return

    def wait(self) -> None:
        from concurrent.futures import wait

        wait(self.pending)
        self.watch()

    def stop(self) -> None:
        """A task cannot be cancelled once it runs: the pool's processes are stopped (a fresh
        pool starts on next use)."""
        if any(not f.done() for f in self.pending):
            self.pool.terminate()
        self.pending = []


def _pool_worker(plan: dict, index: int, storage: str) -> int:
    """In a pool worker process: tune worker `index` on the study with the worker's device and
    data. The storage URL travels as the task's argument (a pickle through a pipe, not a
    command line); the worker's environment is restored after, as the process trains on."""
    from rich.console import Console

    from nnrecipe.executors.pool import flush_output, worker_data, worker_device
    from nnrecipe.executors.tune_worker import run_worker
    from nnrecipe.rundir import RunDir
    from nnrecipe.spec import load_spec
    from nnrecipe.stages.base import StageContext

    here = Plan(**plan)
    before = os.environ.get(ENV_STORAGE)
    os.environ[ENV_STORAGE] = storage  # credentials.storage_url finds the password here
    try:
        start, _ = load_spec(Path(here.start_yaml))
        run = RunDir(Path(here.run_root))
        # line-buffered: a worker killed mid-trial leaves its lines up to then
        with open(run.stage_dir(tune_worker.STAGE) / f"worker-{index}.log", "w", buffering=1) as log:
            ctx = StageContext(
                spec=start,
                base=Path(here.base),
                run=run,
                device=worker_device(),
                console=Console(file=log, width=120),
            )
            ctx._device_data = worker_data(start)  # loaded once per data variant, in this worker
            try:
                return run_worker(here, ctx=ctx, index=index, start=start)
            finally:
                ctx.close()
                flush_output()
    finally:
        if before is None:
            os.environ.pop(ENV_STORAGE, None)
        else:
            os.environ[ENV_STORAGE] = before


class Processes:
    """Workers 1..count-1 as `python -m nnrecipe.executors.tune_worker` on this machine."""

    def __init__(self, out: Path, count: int, *, storage: str, threads: int, study):
        self.study = study
        self.children = [_spawn(out, i, storage=storage, threads=threads) for i in range(1, count)]

    def __len__(self) -> int:
        return len(self.children)

    def watch(self) -> None:
        """A child that failed stops the stage with its error line; one that was killed leaves
        its trial RUNNING: it is failed and queued again here."""
        from nnrecipe.probes import tune_study as ts

        for proc, log in self.children:
            code = proc.poll()
            if code is None or code == 0:
                continue
            log.flush()
            lines = [ln.strip() for ln in open(log.name, errors="replace").read().splitlines() if ln.strip()]
            if code < 0 or code in (137, 143):
                ts.recover_orphans(self.study, worker=ts.worker_name(int(proc.args[-1]), pid=proc.pid))
                continue
            last = lines[-1] if lines else f"exit code {code}"
            raise NNRecipeError(f"tune worker {proc.args[-1]} failed ({log.name}): {last.removeprefix('error: ')}")

    def wait(self) -> None:
        for proc, _log in self.children:
            proc.wait()
        self.watch()

    def stop(self) -> None:
        for proc, log in self.children:
            if proc.poll() is None:
                proc.terminate()
                proc.wait()
            log.close()


def _spawn(out: Path, index: int, *, storage: str, threads: int):
    """A worker process; the storage URL, password and all, goes in its environment: worker.json
    holds it redacted, and a command line is visible to every user of the machine (ps)."""
    log = open(out / f"worker-{index}.log", "w")
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS=str(threads), **{ENV_STORAGE: storage})
    proc = subprocess.Popen(
        [sys.executable, "-m", "nnrecipe.executors.tune_worker", str(out / "worker.json"), str(index)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    return proc, log


class RayTasks:
    """Workers 1..count-1 as Ray tasks, each asking for a GPU where there are GPUs, else a core.
    The storage URL travels as the task's argument (Ray keeps it in its object store, not in a
    command line)."""

    def __init__(self, ray, plan: Plan, count: int, *, storage: str, start_yaml: str, run_root: Path):
        self.ray, self.run_root = ray, run_root
        kind = "cuda" if (plan.devices or (plan.device,))[0].startswith("cuda") else "cpu"
        task = ray.remote(
            num_cpus=0 if kind == "cuda" else 1, num_gpus=1 if kind == "cuda" else 0, max_retries=RETRIES
        )(_ray_worker)
        named = on_a_cluster()  # the user's errors name the node where they were raised
        self.pending = [
            task.remote(dataclasses.asdict(plan), i, storage, start_yaml, kind, named) for i in range(1, count)
        ]

    def __len__(self) -> int:
        return len(self.pending)

    def watch(self, *, block: bool = False) -> None:
        """Write what the finished tasks sent back; a task's error is raised here at once: the
        user's own error as it was raised, a task whose worker died more often than Ray runs it
        again as one line."""
        ray = self.ray
        while self.pending:
            done, self.pending = ray.wait(self.pending, num_returns=1, timeout=None if block else 0)
            if not done:
                return
            self._write(result_of(ray, done[0], dying="tune: a Ray worker died", on="running the study's trials"))

    def wait(self) -> None:
        self.watch(block=True)

    def stop(self) -> None:
        for ref in self.pending:
            self.ray.cancel(ref, force=True)
        self.pending = []

    def _write(self, files: dict[str, bytes]) -> None:
        from nnrecipe import atomic

        for rel, data in files.items():
            atomic.write_bytes(self.run_root / rel, data)


def _ray_worker(plan: dict, index: int, storage: str, start_yaml: str, kind: str, named: bool) -> dict[str, bytes]:
    """In a Ray worker process: tune worker `index` on the study, in a scratch run directory;
    returns its trials' TensorBoard files (path in the run directory -> bytes). `named`: the
    user's errors name this node (ray_pool.naming_the_node)."""
    import torch

    torch.set_num_threads(1)
    # credentials.storage_url finds the password here; removed after, as Ray reuses the process
    os.environ[ENV_STORAGE] = storage
    tune_worker.NODE = node_id()  # on its trials' timeline stamps
    try:
        with naming_the_node(named):
            return _in_scratch(plan, index, start_yaml, torch.device("cuda:0" if kind == "cuda" else "cpu"))
    finally:
        os.environ.pop(ENV_STORAGE, None)


def _in_scratch(plan: dict, index: int, start_yaml: str, device) -> dict[str, bytes]:
    """The worker's loop with a run directory of its own (Ray's GPU for a task is its cuda:0)."""
    import tempfile

    from rich.console import Console

    from nnrecipe.executors.tune_worker import run_worker
    from nnrecipe.rundir import RunDir
    from nnrecipe.spec import load_spec
    from nnrecipe.stages.base import StageContext

    with tempfile.TemporaryDirectory(prefix="nnrecipe-tune-") as tmp:
        root, spec_path = Path(tmp) / "run", Path(tmp) / "start.yaml"
        spec_path.write_text(start_yaml)
        start, _ = load_spec(spec_path)
        here = Plan(**{**plan, "run_root": str(root), "start_yaml": str(spec_path)})
        ctx = StageContext(
            spec=start, base=Path(here.base), run=RunDir(root), device=device, console=Console(quiet=True)
        )
        try:
            run_worker(here, ctx=ctx, index=index, start=start, rerun=True)
        finally:
            ctx.close()
        return {p.relative_to(root).as_posix(): p.read_bytes() for p in (root / "tb").rglob("*") if p.is_file()}


def ray_count(requested: int, ray, kind: str) -> int:
    """Tune workers on a Ray cluster: --workers, or with auto (0) as many as it has GPUs (or CPUs)."""
    if requested > 0:
        return requested
    resources = ray.cluster_resources()
    return max(1, int(resources.get("GPU" if kind == "cuda" else "CPU", 1)))


def unreachable(executor: str, storage: Optional[str]) -> bool:
    """A cluster's tasks cannot reach this machine's journal file."""
    return executor.startswith("ray://") and storage is None
