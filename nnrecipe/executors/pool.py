"""A local pool of worker processes that train a stage's independent experiments side by side.

A stage hands its experiments to `Trainer.train_many`; with `--workers N` each goes to one of N
processes, which has the data loaded once (per data variant), trains the experiment exactly as
the stage's process would (`run_experiment`: the experiment seeds itself from its spec's seed),
and sends back its `Result`, the model's weights and the TensorBoard calls it made. Results come
back in the order the experiments were submitted, so a verdict never depends on which worker
finished first. Only the stage's process writes TensorBoard; a worker writes only the
checkpoints an experiment names (squeeze's members), where one process would have.

Workers start once per run and ignore Ctrl-C: the stage's process receives it, stops the pool
and records the interruption. They are forked from multiprocessing's fork server, a process that
imported torch and nnrecipe once and runs nothing else (`_context`), never from the stage's
process, whose OpenMP or CUDA runtime, once started, a fork could hang on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import multiprocessing
import os
import signal
import sys
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import torch

from nnrecipe.errors import DeviceError
from nnrecipe.experiments import Experiment, Result
from nnrecipe.runtime import Workers


@dataclasses.dataclass(frozen=True)
class Job:
    """One experiment as a worker receives it: the experiment, the spec whose data section
    builds its data, and the training rows it keeps (None: the whole train split)."""

    exp: Experiment
    data_spec: Any
    rows: Optional[torch.Tensor] = None


@dataclasses.dataclass
class Shipped:
    """What a worker sends back: the result (its model left out), the model's weights on the
    CPU (when the experiment keeps its model), the TensorBoard calls to replay, and (Ray) the
    checkpoint files it wrote elsewhere than in the run directory."""

    result: Result
    weights: Optional[dict[str, torch.Tensor]]
    events: list[tuple[str, tuple, dict]]
    files: dict[str, bytes] = dataclasses.field(default_factory=dict)  # path -> contents, written by the stage
    warnings: list = dataclasses.field(default_factory=list)  # plugins.CaughtWarning: the user's code's
    apart: str = ""  # why the experiment's group trained one at a time (see experiments.run_group)
    ran: Any = None  # ledger.Ran: which process trained its group, and when


class Recorder:
    """Stands in for a SummaryWriter in a worker: keeps each add_* call, to be replayed by the
    process that owns the run directory."""

    def __init__(self) -> None:
        self.events: list[tuple[str, tuple, dict]] = []

    def __getattr__(self, name: str):
        if not name.startswith("add_"):
            raise AttributeError(name)

        def record(*args, **kwargs) -> None:
            self.events.append((name, args, kwargs))

        return record

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class Pool:
    """N worker processes for one run, started on first use and shared by its stages."""

    def __init__(self, *, base: Path, workers: Workers):
        self.base, self.workers = base, workers
        self._executor: Optional[ProcessPoolExecutor] = None
        self._warming: list[Future] = []  # warm()'s data loads
        self._starting: Optional[threading.Thread] = None  # warm()'s thread, which starts the workers

    def _start(self) -> ProcessPoolExecutor:
        if self._executor is None:
            mp = _context()
            counter = mp.Value("i", 0)  # each worker takes the next index: its device, round-robin
            w = self.workers
            self._executor = ProcessPoolExecutor(
                max_workers=w.count,
                mp_context=mp,
                initializer=_worker_start,
                # the fork server's environment is that of its start: the workers get this one
                initargs=(str(self.base), w.devices, w.threads, counter, dict(os.environ), os.getpid()),
            )
        return self._executor

    def submit(self, groups: Sequence[Sequence[Job]], *, label: str = "workers") -> list[Future]:
        """Start each group of jobs (one architecture, trained as one: experiments.run_group) in
        one worker; each future's result is the list of its jobs' Shipped. A worker that died
        since the last batch (killed, out of memory) is one line."""
        from concurrent.futures.process import BrokenProcessPool

        executor = self._start()
        try:
            with _sigint_blocked():  # the fork server, if started here, and its workers: Ctrl-C blocked
                return [executor.submit(_train, list(group)) for group in groups]
        except BrokenProcessPool:
            raise _died(label) from None

    def call(self, fn, *args) -> Future:
        """`fn(*args)` in one worker, a module-level function that may use the worker's device and
        data (`worker_device`, `worker_data`): tune's workers 1..N-1 (tune_children.PoolTasks)."""
        from concurrent.futures.process import BrokenProcessPool

        executor = self._start()
        try:
            with _sigint_blocked():
                return executor.submit(fn, *args)
        except BrokenProcessPool:
            raise _died("workers") from None

    def warm(self, spec) -> None:
        """Start every worker now and load `spec`'s data in it, while this process has other work.
        From a thread: starting a worker waits until the fork server has imported torch (2-3 s
        at a process's first pool), and this process's first stages run meanwhile."""
        executor = self._start()

        def start() -> None:
            from concurrent.futures.process import BrokenProcessPool

            with _sigint_blocked():  # this thread's mask: what the server and workers inherit
                try:
                    self._warming = [executor.submit(_data, spec) for _ in range(self.workers.count)]
                except (BrokenProcessPool, RuntimeError, OSError):  # broken, or stopped meanwhile:
                    pass  # the next submit says so, in one line

        self._starting = threading.Thread(target=start, name="nnrecipe-pool-start", daemon=True)
        self._starting.start()

    def ready(self) -> bool:
        """Whether the workers are up and idle-ready: warmed, and every warming load done."""
        warming = self._warming
        return self._executor is not None and bool(warming) and all(f.done() for f in warming)

    def arrivals(self, futures: list[Future], *, progress=None, label: str = "") -> Iterator[tuple[int, list[Shipped]]]:
        """(index, [Shipped of each job]) of each group as it finishes; the first error raised in a worker is
        raised here at once (the run then ends and `terminate` stops the rest: a future cancelled
        here would race the executor's own bookkeeping). A worker that died (killed, out of
        memory) is one line."""
        from concurrent.futures.process import BrokenProcessPool

        index = {f: i for i, f in enumerate(futures)}
        bar = progress.add_task(f"{label} ({self.workers.count} workers)", total=len(futures)) if progress else None
        pending = set(futures)
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for f in sorted(done, key=index.__getitem__):
                    yield index[f], f.result()
                if bar is not None:
                    progress.update(bar, completed=len(futures) - len(pending))
        except BrokenProcessPool:
            raise _died(label) from None
        finally:
            if bar is not None:
                progress.remove_task(bar)

    def close(self) -> None:
        """The run is over and every result is in: the idle workers are stopped at once. Left to
        exit on their own, each ran Python's exit with torch loaded: 1.3 s for two on the
        cpu-box, against 0.05 s."""
        self.terminate()

    def terminate(self) -> set[int]:
        """Stop every worker now (Ctrl-C, an error, the run's end, a worker that died): an
        experiment half-way is abandoned, and every process has stopped when this returns (after
        a death, the executor fails its futures before it stops the survivors: one could still
        be claiming a tune trial). Returns their pids; a fresh pool starts on next use."""
        if self._starting is not None:  # warm()'s thread: every worker it starts is stopped below
            self._starting.join(timeout=60)  # it waits for the fork server's imports (2-3 s here)
            self._starting = None
        executor, self._executor, self._warming = self._executor, None, []
        if executor is None:
            return set()
        processes = dict(getattr(executor, "_processes", None) or {})
        executor.shutdown(wait=False, cancel_futures=True)  # what has not started never will
        for process in processes.values():
            process.terminate()
        for process in processes.values():
            process.join(timeout=10)
        return set(processes)


# What the fork server imports once, before it forks any worker. Spawned, each worker imported
# them itself: a pool of two warm in 2.6-3.2 s, 5.5 s of CPU, every time. Forked from the server:
# the first pool of a process warm in 2.9-3.0 s with 3.1 s of CPU (2.4 s less beside the stage
# that runs meanwhile), every later one (a notebook's or a test suite's next run) in 0.22 s with
# 0.76 s (cpu-box, bench/pool_start.py). Importing runs no OpenMP region and initializes no CUDA
# (checked on the cpu-box's CUDA build: no device count asked); numpy's OpenBLAS may start its
# threads, which it rebuilds in a forked child (pthread_atfork).
PRELOAD = ["torch", "torch._dynamo", "nnrecipe.executors.pool", "nnrecipe.executors.forkserver"]


def _context() -> Any:
    """The fork server on Linux, else spawn (macOS frameworks and MPS are not safe to fork
    without exec; Windows has no fork). The server is started by the first pool's first worker,
    with Ctrl-C blocked (`_sigint_blocked`): the workers it forks inherit that mask, so a Ctrl-C
    cannot reach one before it ignores Ctrl-C.

    The server serves the whole process. What a worker takes from the stage's process when its
    pool starts: os.environ, the working directory and sys.path. What it keeps from the server's
    start: the modules imported (and the settings torch read as it was imported), the file
    descriptors (stdout, stderr), resource limits and CPU affinity. A server started earlier by
    the user's own code (a DataLoader's forkserver context) serves too, without the preload: each
    worker then imports torch itself, as spawned ones did."""
    if not sys.platform.startswith("linux"):
        return multiprocessing.get_context("spawn")
    mp = multiprocessing.get_context("forkserver")
    mp.set_forkserver_preload(PRELOAD)  # no effect once the server runs (it keeps its modules)
    return mp


def _died(label: str) -> DeviceError:
    return DeviceError(
        f"{label}: a worker process died mid-experiment (killed, or out of memory?); "
        "run the stage again, with fewer --workers if memory is short"
    )


@contextlib.contextmanager
def _sigint_blocked():
    """SIGINT blocked in this thread while it starts workers (and the fork server, at the first):
    the mask is inherited through fork and exec, so a Ctrl-C while a worker still starts cannot
    interrupt it (a traceback per worker); the worker ignores SIGINT from its start on. A Ctrl-C
    here meanwhile is delivered when the block ends, not lost."""
    if not hasattr(signal, "pthread_sigmask"):  # Windows
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


# ----------------------------------------------------------------------------- in the worker

_STATE: dict[str, Any] = {}


def _worker_start(
    base: str, devices: tuple[str, ...], threads: int, counter, environ: dict[str, str], stage_pid: int
) -> None:
    from nnrecipe.runtime import resolve_device

    os.environ.clear()  # the stage's environment now (CUDA_VISIBLE_DEVICES, the user's variables)
    os.environ.update(environ)
    if os.getppid() == stage_pid:  # spawned (not on Linux): the stage's own child
        from nnrecipe.executors.tune_worker import die_with_parent

        die_with_parent()  # a stage process killed outright takes its workers with it
    else:  # forked by the fork server
        _die_with(stage_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the stage process's to handle
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # blocked since its start
    with counter.get_lock():
        index = counter.value
        counter.value += 1
    torch.set_num_threads(threads)
    # torch's first optimizer step imports torch._dynamo (1.2-1.5 s on the cpu-box): imported
    # here (by the fork server, PRELOAD), not in the worker's first experiment
    importlib.import_module("torch._dynamo")

    device = resolve_device(devices[index % len(devices)])
    if device.type == "cpu":
        from nnrecipe import threads as thread_choice

        thread_choice.enable(most=threads)  # measured at this worker's first training
    _STATE.update(base=Path(base), device=device, data={})


def _die_with(pid: int) -> None:
    """SIGTERM to this worker when process `pid` (the stage's) ends, even by SIGKILL. A worker's
    parent is the fork server, so the kernel's parent-death signal (tune_worker.die_with_parent)
    does not serve; nor do the executor's pipes, whose ends every worker holds too. A thread
    blocks on the process's pidfd (Linux 5.3+), else looks every second whether it is there
    (POSIX: the fork server runs on Linux alone)."""

    def watch() -> None:
        try:
            fd = os.pidfd_open(pid)
        except OSError:  # no pidfd: a kernel older than 5.3
            fd = None
        if fd is not None:
            import select

            select.select([fd], [], [])  # readable once the process has ended
        else:
            import time

            while _alive(pid):
                time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="nnrecipe-die-with-stage", daemon=True).start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):  # gone, or another user's: its pid taken again
        return False
    return True


def _data(spec):
    """The data of `spec` on this worker's device, built once per data variant (the data section
    less what only training reads: augmentation and batch size)."""
    key = spec.task + spec.data.model_copy(update={"augment": [], "batch_size": 1}).model_dump_json()
    cache = _STATE["data"]
    if key not in cache:
        from nnrecipe.data import build_data

        data = build_data(spec, base=_STATE["base"])
        data.task.check_targets(data)
        cache[key] = data.to(_STATE["device"])
    return cache[key]


def worker_device() -> torch.device:
    """This worker's device (in a worker only)."""
    return _STATE["device"]


def worker_data(spec):
    """`spec`'s data on this worker's device, loaded once (in a worker only)."""
    return _data(spec)


def _train(jobs: list[Job]) -> list[Shipped]:
    """A group of experiments (experiments.run_group), each sent back with its weights and the
    TensorBoard calls it made."""
    from nnrecipe.experiments import ran_here, run_group
    from nnrecipe.plugins import user_warnings

    datas = []
    for job in jobs:
        data = _data(job.data_spec)
        datas.append(data if job.rows is None else data.with_train(data.train.subset(job.rows)))
    writers = [Recorder() for _ in jobs]
    with user_warnings() as caught:  # the user's code's warnings, for the stage's verdict
        results, why = run_group(
            [j.exp for j in jobs], datas=datas, device=_STATE["device"], base=_STATE["base"], writers=writers
        )
    shipped = []
    for result, writer in zip(results, writers):
        ran = ran_here(result, _STATE["device"], together=1 if why else len(jobs))
        weights = None
        if result.model is not None:
            weights = {k: v.detach().cpu() for k, v in result.model.state_dict().items()}
            result.model = None
        shipped.append(Shipped(result=_on_cpu(result), weights=weights, events=writer.events, apart=why, ran=ran))
    shipped[0].warnings = list(caught)  # once per group: the stage counts each warning once
    flush_output()
    return shipped


def flush_output() -> None:
    """The user's code's prints so far, out of this worker's buffers: the run's end stops idle
    workers with SIGTERM, which flushes nothing."""
    sys.stdout.flush()
    sys.stderr.flush()


def _on_cpu(result: Result) -> Result:
    """The result with its tensors on the CPU: the stage's process may not have this GPU."""
    for field in ("train_eval", "val_eval"):
        ev = getattr(result, field)
        if ev is not None and ev.outputs is not None:
            setattr(result, field, dataclasses.replace(ev, outputs=_cpu(ev.outputs)))
    if result.early_state is not None:
        result.early_state = {k: v.detach().cpu() for k, v in result.early_state.items()}
    if result.early is not None:
        result.early = _on_cpu(result.early)
    return result


def _cpu(x):
    if isinstance(x, torch.Tensor):
        return x.cpu()
    if isinstance(x, dict):
        return {k: _cpu(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_cpu(v) for v in x)
    return x
