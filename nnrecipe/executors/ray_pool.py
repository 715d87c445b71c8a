"""A stage's independent experiments as Ray tasks: on a Ray started here (`--executor ray`) or on
a cluster (`--executor ray://HOST:PORT`: `ray start --head` on one machine, `ray start --address
HOST:6379` on the others, each with nnrecipe installed and the spec's files at the same paths).

The same contract as the local pool (executors/pool.py): each task trains one experiment exactly
as the stage's process would and returns its result, weights and TensorBoard calls; results are
collected in the order submitted; only the stage's process writes the run directory (a task
writes the checkpoint files its experiment names in a folder of its own and sends them back with
its result: the run directory may not exist where the task ran). A task whose worker
process dies (killed, out of memory, its machine lost) is run again by Ray (`max_retries`), and
counted once: its result is the retry's. Ray is an optional extra; the core never imports it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
import warnings
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from nnrecipe.errors import DeviceError, NNRecipeError
from nnrecipe.executors import pool as local
from nnrecipe.runtime import Workers

RETRIES = 3  # a task whose worker process died is run again this many times at most


class RayPool:
    def __init__(self, *, base: Path, workers: Workers, address: Optional[str]):
        self.base, self.workers, self.address = base, workers, address
        self._remote: Any = None
        self._started_here = False
        self._submitted: list = []  # every task's ref: those unfinished are cancelled by terminate

    def _start(self):
        if self._remote is not None:
            return self._remote
        ray = self.connect()
        gpu = self.workers.devices[0].startswith("cuda")
        self._remote = ray.remote(num_cpus=0 if gpu else 1, num_gpus=1 if gpu else 0, max_retries=RETRIES)(_ray_train)
        return self._remote

    def connect(self):
        """The ray module, connected for this run: to the cluster, or to a Ray started here."""
        where = self.address or "ray"
        try:
            import ray
        except ImportError:
            raise NNRecipeError(
                f"executor: {where} needs Ray, which is not installed here (pip install 'nnrecipe[ray]')"
            ) from None
        if not ray.is_initialized():
            if self.address is not None:
                _answers(self.address)
            try:
                self._init(ray)
            except Exception as exc:  # ConnectionError, grpc errors, timeouts: one line
                raise NNRecipeError(
                    f"executor: cannot reach the Ray cluster at {where}: {_one_line(exc)} (a cluster with "
                    "token authentication needs RAY_AUTH_MODE=token and its token here too)"
                ) from None
            self._started_here = True
        return ray

    def _init(self, ray) -> None:
        """ray.init, quietly; a client server that failed to start on the head is asked for again,
        twice at most. Seen on a loaded head: the proxy forks a server per client, and the fork
        died at once (gRPC's "epoll_wait error: Bad file descriptor") or was gone before the proxy
        read its command line; the next one started. Ray's client says either as "Initialization
        failure from server"."""
        logging.getLogger("ray").setLevel(logging.ERROR)  # Ray's notices would add lines to ours
        # The first task's error stops the stage as one line; the others' errors, never fetched,
        # would each be logged with its traceback as "Unhandled error" when Ray frees them: by
        # this process (a Ray started here; the variable is read when it logs) or, on a cluster,
        # by the client's server, whose log lines Ray's client logs here
        os.environ.setdefault("RAY_IGNORE_UNHANDLED_ERRORS", "1")
        streamed = logging.getLogger("ray.util.client.logsclient")
        if not any(isinstance(f, _Unfetched) for f in streamed.filters):
            streamed.addFilter(_Unfetched())
        for attempt in (1, 2, 3):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    ray.init(
                        address=self.address or "local",  # local: a new Ray for this run, not one found running
                        include_dashboard=False,
                        log_to_driver=False,
                        configure_logging=False,
                        **({"num_cpus": self._local_cpus()} if self.address is None else {}),
                    )
                return
            except Exception as exc:
                if attempt == 3 or "Initialization failure from server" not in str(exc):
                    raise
                time.sleep(2.0)

    def _local_cpus(self) -> int:
        """A Ray started here runs --workers tasks at once (default: one per usable core)."""
        from nnrecipe.runtime import usable_cores

        return self.workers.count if self.workers.count > 1 else usable_cores()

    def submit(self, groups: Sequence[Sequence[local.Job]], *, label: str = "workers") -> list:
        """A task per group of jobs (one architecture, trained as one: experiments.run_group).
        (`label` is the local pool's; a task whose worker died is said by `arrivals`.)"""
        remote = self._start()
        kind = "cuda" if self.workers.devices[0].startswith("cuda") else "cpu"
        named = self.address is not None
        refs = [remote.remote(str(self.base), kind, list(group), named) for group in groups]
        self._submitted += refs
        return refs

    def warm(self, spec) -> None:
        self._start()

    def arrivals(self, refs: list, *, progress=None, label: str = "") -> Iterator[tuple[int, list[local.Shipped]]]:
        """(index, [Shipped of each job]) of each task as it finishes; a task's error is raised here at once:
        the user's error as it was raised (a one-line NNRecipeError stays one line), a task
        whose worker died more often than Ray retries it as one line."""
        import ray

        index = {ref: i for i, ref in enumerate(refs)}
        bar = progress.add_task(f"{label} (Ray)", total=len(refs)) if progress else None
        pending = list(refs)
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                yield (
                    index[done[0]],
                    result_of(ray, done[0], dying=f"{label}: a Ray worker died", on="on one experiment"),
                )
                if bar is not None:
                    progress.update(bar, completed=len(refs) - len(pending))
        finally:
            self._submitted = [r for r in self._submitted if r not in index]  # finished: not pinned any more
            if bar is not None:
                progress.remove_task(bar)

    def close(self) -> None:
        if self._started_here:
            import ray

            ray.shutdown()
        self._remote, self._started_here = None, False

    def terminate(self) -> None:
        """Ctrl-C or an error: the tasks not finished are cancelled (their worker processes
        stopped), then Ray is left."""
        if self._remote is not None:
            import ray

            _, unfinished = ray.wait(self._submitted, num_returns=len(self._submitted), timeout=0)
            for ref in unfinished:
                ray.cancel(ref, force=True)
        self.close()


class _Unfetched(logging.Filter):
    """Drops Ray's "Unhandled error" lines: errors of tasks after the one the stage stopped on."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().lstrip().startswith("Unhandled error")


def _ray_train(base: str, kind: str, jobs: list[local.Job], named: bool) -> list[local.Shipped]:
    """In a Ray worker process (reused between tasks): a group of experiments. Ray gives a GPU
    task its GPU as cuda:0 (CUDA_VISIBLE_DEVICES) and a CPU task one core. The checkpoint files
    the experiments name are written in a folder of the task's own and sent back with the results.
    `named`: the user's errors name this node (naming_the_node)."""
    with naming_the_node(named):
        return _train_here(base, kind, jobs)


def _train_here(base: str, kind: str, jobs: list[local.Job]) -> list[local.Shipped]:
    import tempfile

    import torch

    if local._STATE.get("base") != Path(base):
        torch.set_num_threads(1)
        local._STATE.update(base=Path(base), device=torch.device("cuda:0" if kind == "cuda" else "cpu"), data={})
    with tempfile.TemporaryDirectory(prefix="nnrecipe-") as tmp:
        moved, named = [], []
        for n, job in enumerate(jobs):
            ckpt = job.exp.checkpoints
            there = {k: getattr(ckpt, k) for k in ("last", "best") if getattr(ckpt, k) is not None}
            here = {k: Path(tmp) / f"{n}-{k}.pt" for k in there}
            exp = dataclasses.replace(
                job.exp, checkpoints=dataclasses.replace(ckpt, last=here.get("last"), best=here.get("best"))
            )
            moved.append(dataclasses.replace(job, exp=exp))
            named.append((there, here))
        shipped = local._train(moved)
        for one, (there, here) in zip(shipped, named):
            one.files = {str(there[k]): here[k].read_bytes() for k in there if here[k].exists()}
    node = node_id()
    # the node, for the stage's timeline (on one machine, Ray's nodes share a host name), and a
    # GPU task's GPU as the node numbers it (Ray gives each task its own as cuda:0)
    gpu = f"cuda (GPU {os.environ.get('CUDA_VISIBLE_DEVICES', '?')})" if kind == "cuda" else None
    for one in shipped:
        one.ran = dataclasses.replace(one.ran, node=node, device=gpu or one.ran.device)
    return shipped


def node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()[:8]


def result_of(ray, ref, *, dying: str, on: str):
    """A finished task's result; its error raised as one line: the user's own error as it was
    raised (a one-line NNRecipeError stays one line), a task whose worker died more often than
    Ray runs it again as `dying` ... `on`."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        raise exc.cause from None  # the user's own error, not Ray's wrapper (its traceback)
    except (ray.exceptions.WorkerCrashedError, ray.exceptions.OutOfMemoryError) as exc:
        raise DeviceError(
            f"{dying} {RETRIES + 1} times {on} ({type(exc).__name__}); see the cluster's logs (out of memory?)"
        ) from None


@contextlib.contextmanager
def naming_the_node(named: bool) -> Iterator[None]:
    """In a Ray task: the user's one-line error, naming the node it ran on where `named` (a
    cluster, ray://): a spec's file missing on one machine (each needs them at the same paths)
    then reads as what it is. A Ray started here runs its tasks on this machine: its errors are
    said as one process says them."""
    try:
        yield
    except NNRecipeError as exc:
        if named and exc.args and isinstance(exc.args[0], str):
            import socket

            where = f"{socket.gethostname()}, node {node_id()}"  # the timeline's name for the node
            exc.args = (f"{exc.args[0]} (in a Ray task on {where})", *exc.args[1:])
        raise


def on_a_cluster() -> bool:
    """Whether this process reaches Ray as a client of a cluster (ray://), not a Ray started here."""
    from ray.util.client import ray as client

    return client.is_connected()


def _answers(address: str) -> None:
    """A client address whose port refuses or does not answer: said at once, not after Ray's
    own retries (30 s)."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except (OSError, ValueError) as exc:
        raise NNRecipeError(f"executor: cannot reach the Ray cluster at {address}: {_one_line(exc)}") from None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]
