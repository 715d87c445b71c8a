"""The small pieces the engine's training loop calls, and what it returns: an evaluation
(EvalResult), a run's History, the batch stream, what a run has done so far (and what resuming
restores), early stopping, checkpoints, and the step log.

Each piece owns one concern, so `Engine.train` reads as the loop itself: take a batch, step,
log, evaluate, checkpoint, stop.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import torch
from torch import nn

from nnrecipe import atomic
from nnrecipe.data.bundle import Batch, Split, TensorSplit


@dataclasses.dataclass(frozen=True)
class EvalResult:
    loss: float  # mean loss per example over the whole split
    metric: float  # the task's metric (accuracy, R^2, next-token accuracy): higher is better
    metric_name: str
    n: int
    outputs: Optional[torch.Tensor] = dataclasses.field(default=None, repr=False, compare=False)  # keep_outputs=True
    scores: Optional[np.ndarray] = dataclasses.field(default=None, repr=False, compare=False)  # keep_scores=True


@dataclasses.dataclass
class History:
    losses: torch.Tensor  # per-step training loss, on the host, length = steps run
    lrs: list[float]  # the LR the optimizer actually applied at each step
    evals: list[tuple[int, EvalResult]]  # (step, val result)
    steps_run: int
    nonfinite_step: Optional[int] = None  # first logged step whose loss was NaN/Inf
    best_step: Optional[int] = None  # the evaluation with the lowest val loss
    best_val_loss: Optional[float] = None
    stopped_early: bool = False  # early stopping's patience ran out before `steps`

    @property
    def diverged(self) -> bool:
        return self.nonfinite_step is not None


def _count(rows: torch.Tensor | slice) -> int:
    return rows.stop - rows.start if isinstance(rows, slice) else len(rows)


class BatchStream:
    """Endless shuffled batches, epoch after epoch; the last short batch of an epoch is dropped
    when the split holds more than one batch (it would weigh a few examples heavily). A split
    that fits in one batch is taken whole and in order: shuffling it would change nothing but
    the float summation order, which makes runs differ by seed where nothing else does.

    It can say where it is (the shuffling generator's state at the start of the epoch and the
    batches taken since) and resume exactly there: a resumed run sees the same batches as an
    uninterrupted one."""

    def __init__(self, split: Split, batch_size: int, generator: torch.Generator, *, pin_memory: bool = False):
        self.split, self.batch_size, self.generator, self.pin_memory = split, batch_size, generator, pin_memory
        self.drop = len(split) > batch_size
        self._epoch_state: Optional[torch.Tensor] = None
        self._taken = 0
        self._it: Optional[Iterator[Any]] = None  # rows of a TensorSplit, else batches

    def _new_epoch(self) -> None:
        self._epoch_state = self.generator.get_state()  # before the epoch's permutation is drawn
        self._taken = 0
        shuffle = self.drop  # more than one batch
        if isinstance(self.split, TensorSplit):  # rows, taken by __next__
            rows = self.split.rows(self.batch_size, shuffle=shuffle, generator=self.generator)
            self._it = (r for r in rows if not (self.drop and _count(r) < self.batch_size))
        else:
            it = self.split.iterate(
                self.batch_size, shuffle=shuffle, generator=self.generator, pin_memory=self.pin_memory
            )
            self._it = (b for b in it if not (self.drop and len(b[1]) < self.batch_size))

    def __next__(self) -> Batch:
        item = self._next()
        return self.split.take(item) if isinstance(self.split, TensorSplit) else item

    def next_rows(self) -> torch.Tensor | slice:
        """An in-memory split's next batch as its rows (the batch is split.take(rows)): K
        streams on one split are taken in one gather (together.Group.batch)."""
        if not isinstance(self.split, TensorSplit):
            raise TypeError("next_rows: the split is read by a DataLoader")
        return self._next()

    def _next(self):
        if self._it is None:
            self._new_epoch()
        while True:
            try:
                batch = next(self._it)  # type: ignore[arg-type]
            except StopIteration:
                self._new_epoch()
                continue
            self._taken += 1
            return batch

    def state(self) -> dict:
        return {"epoch_generator": self._epoch_state, "taken": self._taken}

    def restore(self, state: dict) -> None:
        self.generator.set_state(state["epoch_generator"])
        self._new_epoch()
        for _ in range(state["taken"]):
            next(self._it)  # type: ignore[arg-type]
        self._taken = state["taken"]


class EarlyStopping:
    """Patience on the val loss: keeps a copy of the weights of the best evaluation until
    `patience` evaluations in a row bring no lower val loss, then says stop.

    The engine stops there when asked (train.early_stopping); the regularize stage instead
    trains on and compares this snapshot with the end of training ("what did training past
    the best cost?").
    """

    def __init__(self, patience: int):
        self.patience = patience
        self.best_step: Optional[int] = None
        self.best_loss = math.inf
        self.stop_step: Optional[int] = None  # the evaluation at which patience ran out
        self.state: Optional[dict[str, torch.Tensor]] = None  # weights at best_step (host copies)
        self._since = 0

    @property
    def stopped(self) -> bool:
        return self.stop_step is not None

    def state_dict(self) -> dict:
        return {
            "best_step": self.best_step,
            "best_loss": self.best_loss,
            "stop_step": self.stop_step,
            "since": self._since,
            "state": self.state,
        }

    def load_state_dict(self, d: dict) -> None:
        self.best_step, self.best_loss, self.stop_step = d["best_step"], d["best_loss"], d["stop_step"]
        self._since, self.state = d["since"], d["state"]

    def update(self, step: int, model: nn.Module, val_loss: float) -> bool:
        if self.stopped:
            return True
        if math.isfinite(val_loss) and val_loss < self.best_loss:
            self.best_step, self.best_loss, self._since = step, val_loss, 0
            self.state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        else:
            self._since += 1
            if self._since >= self.patience:
                self.stop_step = step
        return self.stopped


class RunState:
    """What a training run has done so far: the loss of every step (a device buffer, read only
    at log steps), the LR applied at each step, the evaluations and the best of them. It is
    what a checkpoint carries for an exact resume, with the batch order and the RNG streams."""

    def __init__(self, steps: int, device: torch.device):
        self.device = device
        self.losses = torch.zeros(steps, device=device)  # stays on the device until a log step
        self.lrs: list[float] = []
        self.evals: list = []  # (step, EvalResult)
        self.nonfinite_step: Optional[int] = None
        self.best_step: Optional[int] = None
        self.best_val = math.inf
        self.start = 0  # the step a resumed run continues after

    def evaluated(self, step: int, result) -> bool:
        """Add an evaluation; True when it has the lowest finite val loss so far."""
        self.evals.append((step, result))
        if math.isfinite(result.loss) and result.loss < self.best_val:
            self.best_step, self.best_val = step, result.loss
            return True
        return False

    def history(self, ran: int, *, steps: int, early_stopping: Optional[EarlyStopping], stop_early: bool) -> History:
        """What the run did, having run `ran` of its `steps` steps."""
        es = early_stopping
        return History(
            losses=self.losses[:ran].float().cpu(),
            lrs=self.lrs,
            evals=self.evals,
            steps_run=ran,
            nonfinite_step=self.nonfinite_step,
            best_step=self.best_step,
            best_val_loss=self.best_val if self.best_step is not None else None,
            stopped_early=bool(es is not None and es.stopped and stop_early and ran < steps),
        )

    def to_resume(self, step: int, batches: BatchStream, early_stopping: Optional[EarlyStopping]) -> dict:
        return {
            "losses": self.losses[:step].detach().cpu(),
            "lrs": list(self.lrs),
            "batches": batches.state(),
            "evals": [(s, e.loss, e.metric, e.metric_name, e.n) for s, e in self.evals],
            "best_step": self.best_step,
            "best_val": self.best_val,
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else None,
            "early_stopping": early_stopping.state_dict() if early_stopping is not None else None,
        }

    def restore(self, checkpoint: dict, *, batches: BatchStream, early_stopping: Optional[EarlyStopping]) -> None:
        """Continue from `checkpoint` (see to_resume) exactly as if the run had never stopped."""
        r = checkpoint["resume"]
        self.start = int(checkpoint["step"])
        self.losses[: self.start] = r["losses"].to(self.device)
        self.lrs = list(r["lrs"])
        self.evals = [(s, EvalResult(loss=loss, metric=m, metric_name=n, n=k)) for s, loss, m, n, k in r["evals"]]
        self.best_step, self.best_val = r["best_step"], r["best_val"]
        batches.restore(r["batches"])
        torch.set_rng_state(r["rng"])
        if r.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(r["cuda_rng"])
        if early_stopping is not None and r.get("early_stopping") is not None:
            early_stopping.load_state_dict(r["early_stopping"])


class StepLog:
    """The training loss every `every` steps (one device sync each) to TensorBoard and the
    progress bar; the LR where it moved; val results and, optionally, weight histograms."""

    def __init__(self, log, *, steps: int, start: int):
        self.writer, self.progress, self.tag, self.every = (
            log.writer,
            log.progress,
            log.tag,
            max(1, min(log.every, steps)),
        )
        self.label, self.histograms, self.steps = log.label or log.tag, log.histograms, steps
        self._lr_written: Optional[float] = None  # the last LR written to TensorBoard
        self._bar = (
            self.progress.add_task(self.label, total=steps, completed=start) if self.progress is not None else None
        )

    def losses(self, state: RunState, step: int) -> None:
        """Read the loss window ending at `step`; set state.nonfinite_step at the first NaN/Inf."""
        lo = max(0, step - self.every)
        window = state.losses[lo:step]
        mean = window.mean().item()  # the one sync per log interval
        if not math.isfinite(mean):  # name the exact step: the window is still on the device
            state.nonfinite_step = lo + int(torch.nonzero(~torch.isfinite(window))[0]) + 1
        if self.writer is not None:
            self.writer.add_scalar(f"{self.tag}/loss", mean, step)
            # The LR where it moved by > 1% since the last point written, and at each log step: a
            # schedule's shape (warm-up, a cut to zero) at a fraction of one TensorBoard event per
            # step (measured: ~5% of a small MLP's step time).
            for i in range(lo, step):
                lr = state.lrs[i]
                if (
                    self._lr_written is None
                    or i + 1 == step
                    or abs(lr - self._lr_written) > 0.01 * abs(self._lr_written)
                ):
                    self.writer.add_scalar(f"{self.tag}/lr", lr, i + 1)
                    self._lr_written = lr
        if self._bar is not None:
            self.progress.update(self._bar, completed=step, description=f"{self.label} loss {mean:.4g}")

    def val(self, result, step: int, model: nn.Module, extra: dict[str, float]) -> None:
        if self.writer is None:
            return
        self.writer.add_scalar(f"{self.tag}/val_loss", result.loss, step)
        self.writer.add_scalar(f"{self.tag}/val_{result.metric_name}", result.metric, step)
        for name, value in extra.items():  # the task's (a language model's bits per token)
            self.writer.add_scalar(f"{self.tag}/{name}", value, step)
        if self.histograms:
            for name, p in model.named_parameters():
                values = p.detach().float().cpu()
                if torch.isfinite(values).all():  # TensorBoard refuses NaN/Inf (a diverged run)
                    self.writer.add_histogram(f"{self.tag}/params/{name}", values, step)
                if p.grad is not None and torch.isfinite(p.grad).all():
                    self.writer.add_histogram(f"{self.tag}/grads/{name}", p.grad.detach().float().cpu(), step)

    def done(self) -> None:
        if self._bar is not None:
            self.progress.update(self._bar, completed=self.steps)


def save_checkpoint(
    path: Path,
    *,
    model: nn.Module,
    optimizer=None,
    scheduler=None,
    step: int = 0,
    resume: Optional[dict] = None,
    key: str = "",
) -> None:
    """Atomically: a kill during the write leaves the previous checkpoint loadable. `resume`
    holds what the loop needs to continue exactly (RunState.to_resume); `key` identifies the
    experiment, so a resumed run never continues someone else's."""
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "step": step,
        "key": key,
        "resume": resume,
    }
    atomic.torch_save(path, state)


def load_checkpoint(path: Path, *, map_location="cpu") -> dict:
    return torch.load(path, map_location=map_location, weights_only=True)


def resumable(path: Optional[Path], key: str, device) -> Optional[dict]:
    """The checkpoint at `path` when it can continue the experiment `key`, else None."""
    if path is None or not Path(path).exists() or not key:
        return None
    state = load_checkpoint(path, map_location=device)
    return state if state.get("key") == key and state.get("resume") is not None else None
