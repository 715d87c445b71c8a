"""What a stage receives (StageContext) and returns (StageResult)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Optional

import torch
from rich.console import Console

from nnrecipe.rundir import RunDir
from nnrecipe.verdict import Verdict


@dataclasses.dataclass(frozen=True)
class StageResult:
    stage: str
    verdicts: list[Verdict]
    summary: dict[str, Any]


@dataclasses.dataclass
class StageContext:
    spec: Any  # nnrecipe.spec.Spec
    base: Path  # the spec's folder: relative plugin and data paths resolve against it
    run: RunDir
    device: torch.device
    console: Console
    progress: Any = None  # a rich Progress, or None
    options: dict[str, Any] = dataclasses.field(default_factory=dict)  # stage options from the command line
    progress_console: Optional[Console] = None  # where progress bars go, when not `console` (a notebook)
    workers: Any = None  # nnrecipe.runtime.Workers: where independent experiments train (None: here)
    ledger: Any = None  # nnrecipe.ledger.Ledger: the running stage's trained experiments (None: not kept)
    _pool: Any = None
    _data: Any = None
    _device_data: Any = None
    _writers: dict[str, Any] = dataclasses.field(default_factory=dict)

    def data(self):
        """The experiment's data, loaded once per process and shared by the stages."""
        if self._data is None:
            from nnrecipe.data import build_data

            self._data = build_data(self.spec, base=self.base)
        return self._data

    def device_data(self):
        """The data the training stages train on: its targets checked against the task (a
        one-line error where they cannot be trained on), in-memory splits moved to the device
        (once)."""
        if self._device_data is None:
            data = self.data()
            data.task.check_targets(data)
            self._device_data = data.to(self.device)
        return self._device_data

    def writer(self, stage: str, run: Optional[str] = None, *, purge_step: Optional[int] = None):
        """A TensorBoard writer for tb/<stage>/ or, per experiment, tb/<stage>/<run>/: sibling
        runs with equal tags overlay in TensorBoard. Imported on first use (slow to import).
        `purge_step` (a resumed run) hides the interrupted run's events from that step on."""
        key = f"{stage}/{run}" if run else stage
        if key not in self._writers:
            from torch.utils.tensorboard import SummaryWriter

            folder = self.run.tb_dir(stage) / run if run else self.run.tb_dir(stage)
            self._writers[key] = SummaryWriter(log_dir=str(folder), purge_step=purge_step)
        return self._writers[key]

    def close_writer(self, stage: str, run: Optional[str] = None) -> None:
        """Close one experiment's writer (tune's trials: hundreds would exhaust file handles)."""
        w = self._writers.pop(f"{stage}/{run}" if run else stage, None)
        if w is not None:
            w.close()

    def pool(self):
        """Where independent experiments train: the run's worker processes (executors.pool),
        Ray tasks (executors.ray_pool, --executor ray...), or None with one local worker (every
        experiment trains in this process). Made on first use."""
        executor = getattr(self.spec, "executor", "local")
        if self.workers is None or (executor == "local" and self.workers.count < 2):
            return None
        if self._pool is None:
            if executor == "local":
                from nnrecipe.executors.pool import Pool

                self._pool = Pool(base=self.base, workers=self.workers)
            else:
                from nnrecipe.executors.ray_pool import RayPool

                address = None if executor == "ray" else executor
                self._pool = RayPool(base=self.base, workers=self.workers, address=address)
        return self._pool

    def close(self, *, interrupted: bool = False) -> None:
        if self._pool is not None:
            if interrupted:
                self._pool.terminate()
            else:
                self._pool.close()
            self._pool = None
        for w in self._writers.values():
            w.close()
        self._writers.clear()

    def rel(self, path: Path) -> str:
        return self.run.rel(path)
