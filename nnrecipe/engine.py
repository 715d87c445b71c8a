"""The one training and evaluation engine that every stage uses.

Speed rules, each measured in bench/ against a hand-written loop:
- in-memory data lives on the device and is batched by indexing a device permutation;
- the hot loop never syncs host and device: per-step losses stay in a device buffer and
  are read only every `log_every` steps (and at evaluations);
- evaluation runs under `torch.inference_mode`, over the entire split;
- bf16 autocast on CUDA; channels_last and torch.compile as opt-ins (train.channels_last,
  train.compile): both pay off for convolutions on a GPU, rarely on a CPU.
The engine measures; it never judges. Stages turn its History into verdicts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np
import torch
from torch import nn

from nnrecipe import atomic
from nnrecipe.data.bundle import Batch, Split, TensorSplit
from nnrecipe.runtime import autocast_dtype


@dataclasses.dataclass(frozen=True)
class EvalResult:
    loss: float  # mean loss per example over the whole split
    metric: float  # accuracy (classification), R^2 (regression), next-token accuracy (language-model)
    metric_name: str
    n: int
    outputs: Optional[torch.Tensor] = dataclasses.field(default=None, repr=False, compare=False)  # keep_outputs=True
    scores: Optional[np.ndarray] = dataclasses.field(default=None, repr=False, compare=False)  # keep_scores=True


def example_scores(out: torch.Tensor, y: torch.Tensor, task: str) -> torch.Tensor:
    """Per example, float64, on the outputs' device: correct (0/1, classification), squared
    error (regression), or the window's mean next-token cross-entropy in nats (language-model;
    its padding targets left out); the last two lower-better."""
    out, y = out.float(), y.to(out.device)
    if task == "language-model":
        from nnrecipe.losses import per_example_loss

        return per_example_loss("cross_entropy", out, y).double()
    if task == "classification":
        return (out.argmax(dim=1) == y.long()).double()
    return ((out - y.float().reshape(out.shape)) ** 2).reshape(len(out), -1).mean(dim=1).double()


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


class BatchStream:
    """Endless shuffled batches, epoch after epoch; the last short batch of an epoch is dropped
    when the split holds more than one batch (it would weigh a few examples heavily).

    It can say where it is (the shuffling generator's state at the start of the epoch and the
    batches taken since) and resume exactly there: a resumed run sees the same batches as an
    uninterrupted one."""

    def __init__(self, split: Split, batch_size: int, generator: torch.Generator, *, pin_memory: bool = False):
        self.split, self.batch_size, self.generator, self.pin_memory = split, batch_size, generator, pin_memory
        self.drop = len(split) > batch_size
        self._epoch_state: Optional[torch.Tensor] = None
        self._taken = 0
        self._it: Optional[Iterator[Batch]] = None

    def _new_epoch(self) -> None:
        self._epoch_state = self.generator.get_state()  # before the epoch's permutation is drawn
        self._taken = 0
        if isinstance(self.split, TensorSplit):
            it = self.split.iterate(self.batch_size, shuffle=True, generator=self.generator)
        else:
            it = self.split.iterate(self.batch_size, shuffle=True, generator=self.generator, pin_memory=self.pin_memory)
        self._it = (b for b in it if not (self.drop and len(b[0]) < self.batch_size))

    def __next__(self) -> Batch:
        if self._it is None:
            self._new_epoch()
        while True:
            try:
                batch = next(self._it)
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
            next(self._it)
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
        return {"best_step": self.best_step, "best_loss": self.best_loss, "stop_step": self.stop_step,
                "since": self._since, "state": self.state}

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


class Engine:
    def __init__(self, *, device: torch.device, task: str, precision: str = "auto", log_every: int = 50,
                 writer=None, progress=None, log_histograms: bool = False, compile: bool = False,
                 channels_last: bool = False):
        self.device = device
        self.task = task
        self.amp_dtype = autocast_dtype(precision, device)
        self.compile = compile  # torch.compile the training forward (the first steps pay the compile)
        self.channels_last = channels_last  # NHWC weights and 4-D inputs: tensor cores' layout
        self.log_every = log_every
        self.writer = writer  # a torch.utils.tensorboard.SummaryWriter, or None
        self.progress = progress  # a rich Progress, or None
        self.log_histograms = log_histograms

    @classmethod
    def for_spec(cls, train_spec, *, device: torch.device, task: str, **kwargs) -> "Engine":
        """An engine with the spec's speed settings (precision, compile, channels_last)."""
        return cls(device=device, task=task, precision=train_spec.precision, compile=train_spec.compile,
                   channels_last=train_spec.channels_last, **kwargs)

    # ------------------------------------------------------------------ helpers

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def _to_device(self, batch: Batch) -> Batch:
        x, y = batch
        nb = self.device.type == "cuda"  # pinned host memory + non_blocking overlaps the copy
        x = x.to(self.device, non_blocking=nb)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y.to(self.device, non_blocking=nb)

    def _prepare(self, model: nn.Module) -> nn.Module:
        model.to(self.device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)  # only 4-D weights change layout
        return model

    # ------------------------------------------------------------------ evaluation

    @torch.inference_mode()
    def evaluate(self, model: nn.Module, split: Split, loss_fn: Callable, *, batch_size: int = 1024,
                 keep_outputs: bool = False, keep_scores: bool = False) -> EvalResult:
        """Mean loss and metric over the entire split, accumulated on the device (one sync at the end).
        keep_outputs also returns the outputs (float32, host); keep_scores the per-example scores
        (example_scores), computed batch by batch: a language model's (N, L, V) logits need not
        be kept for them (a 256-token vocabulary on 1 MB of val text would be 1 GB)."""
        was_training = model.training
        self._prepare(model).eval()
        zero = lambda: torch.zeros((), device=self.device, dtype=torch.float64)  # noqa: E731
        loss_sum, hits, sse = zero(), zero(), zero()
        y_sum = y_sq = None  # regression: per-output sums, for SST
        n = 0
        kept, scored = [], []
        for batch in split.iterate(batch_size):
            x, y = self._to_device(batch)
            with self._autocast():
                out = model(x)
            if keep_outputs:
                kept.append(out.float().cpu())
            if keep_scores:
                scored.append(example_scores(out, y, self.task))  # stays on the device until the end
            loss_sum += loss_fn(out, y).double() * len(x)  # losses are batch means
            if self.task == "classification":
                hits += (out.argmax(dim=1) == y).sum()
            elif self.task == "language-model":  # next-token accuracy per window over its real (non-padding) targets
                real = y != -100
                hits += (((out.argmax(dim=-1) == y) & real).sum(dim=1) / real.sum(dim=1).clamp_min(1)).double().sum()
            else:
                yd, od = y.double().reshape(len(y), -1), out.double().reshape(len(y), -1)
                if y_sum is None:
                    y_sum, y_sq = yd.sum(dim=0), (yd**2).sum(dim=0)
                else:
                    y_sum, y_sq = y_sum + yd.sum(dim=0), y_sq + (yd**2).sum(dim=0)
                sse += ((od - yd) ** 2).sum()
            n += len(x)
        model.train(was_training)
        mean_loss = (loss_sum / n).item()
        if self.task == "classification":
            metric, name = (hits / n).item(), "accuracy"
        elif self.task == "language-model":
            metric, name = (hits / n).item(), "token_accuracy"
        else:  # R^2 = 1 - SSE/SST: 0 for the mean predictor, 1 for a perfect one.
            sst = (y_sq - y_sum**2 / n).sum().clamp_min(1e-12)
            metric, name = 1.0 - (sse / sst).item(), "r2"
        return EvalResult(loss=mean_loss, metric=metric, metric_name=name, n=n,
                          outputs=torch.cat(kept) if keep_outputs else None,
                          scores=torch.cat(scored).cpu().numpy() if keep_scores else None)

    @torch.inference_mode()
    def batches_through(self, models: list[nn.Module], split: Split, *, batch_size: int = 1024):
        """Each batch of `split` through every model, in eval mode: yields ([float32 outputs, one
        per model, on the device], targets on the device). Nothing is kept between batches."""
        was = [m.training for m in models]
        for m in models:
            self._prepare(m).eval()
        try:
            for batch in split.iterate(batch_size):
                x, y = self._to_device(batch)
                with self._autocast():
                    outs = [m(x).float() for m in models]
                yield outs, y
        finally:
            for m, w in zip(models, was):
                m.train(w)

    @torch.inference_mode()
    def predict(self, model: nn.Module, split: Split, *, batch_size: int = 1024) -> torch.Tensor:
        """Model outputs for a whole split, in eval mode, as float32 on the host."""
        was_training = model.training
        self._prepare(model).eval()
        outs = []
        for batch in split.iterate(batch_size):
            x, _ = self._to_device(batch)
            with self._autocast():
                outs.append(model(x).float().cpu())
        model.train(was_training)
        return torch.cat(outs)

    # ------------------------------------------------------------------ training

    def train(
        self,
        *,
        model: nn.Module,
        train: Split,
        val: Optional[Split],
        loss_fn: Callable,
        optimizer: torch.optim.Optimizer,
        scheduler=None,
        steps: int,
        batch_size: int,
        seed: int,
        eval_every: int = 0,
        grad_clip: Optional[float] = None,
        checkpoint_path: Optional[Path] = None,
        best_checkpoint_path: Optional[Path] = None,
        tag: str = "train",
        label: Optional[str] = None,
        on_eval: Optional[Callable[[int, nn.Module, EvalResult], None]] = None,
        checkpoint_key: str = "",
        augment: Optional[Callable] = None,
        early_stopping: Optional[EarlyStopping] = None,
        stop_early: bool = True,
        resume: Optional[dict] = None,
    ) -> History:
        """Train for `steps` optimizer steps. `tag` prefixes TensorBoard scalars (keep it equal
        across experiments written to sibling run folders so their curves overlay); `label`
        names the progress bar. `augment(x, y) -> (x, y)` transforms each training batch on
        the device (never the evaluations). `early_stopping` watches each evaluation; with
        `stop_early` training ends when its patience runs out (the caller restores its state).
        `resume` (a checkpoint written by this loop, see `save_checkpoint`) continues training
        from its step exactly as if it had never stopped: weights, optimizer, schedule, the
        batch order, the RNG streams (dropout, augmentation) and the history so far."""
        self._prepare(model).train()
        # The compiled module shares the model's parameters; state_dict, evaluation and
        # checkpoints keep using `model` itself (no `_orig_mod.` prefixes in saved weights).
        forward = torch.compile(model) if self.compile else model
        data_device = train.device if isinstance(train, TensorSplit) else torch.device("cpu")
        generator = torch.Generator(device=data_device).manual_seed(seed)
        batches = BatchStream(train, batch_size, generator, pin_memory=self.device.type == "cuda")
        loss_buf = torch.zeros(steps, device=self.device)  # stays on the device until a log step
        lrs: list[float] = []
        evals: list[tuple[int, EvalResult]] = []
        nonfinite_step = None
        best_step, best_val = None, math.inf
        start = 0
        if resume is not None:
            r = resume["resume"]
            model.load_state_dict(resume["model"])
            optimizer.load_state_dict(resume["optimizer"])
            if scheduler is not None and resume.get("scheduler") is not None:
                scheduler.load_state_dict(resume["scheduler"])
            start = int(resume["step"])
            loss_buf[:start] = r["losses"].to(self.device)
            lrs = list(r["lrs"])
            evals = [(s_, EvalResult(loss=l_, metric=m_, metric_name=n_, n=k_)) for s_, l_, m_, n_, k_ in r["evals"]]
            best_step, best_val = r["best_step"], r["best_val"]
            batches.restore(r["batches"])
            torch.set_rng_state(r["rng"])
            if r.get("cuda_rng") is not None and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(r["cuda_rng"])
            if early_stopping is not None and r.get("early_stopping") is not None:
                early_stopping.load_state_dict(r["early_stopping"])
        lr_written: Optional[float] = None  # the last LR written to TensorBoard
        label = label or tag
        task = self.progress.add_task(label, total=steps, completed=start) if self.progress is not None else None
        step = start

        def resume_state(step: int) -> dict:
            return {"losses": loss_buf[:step].detach().cpu(), "lrs": list(lrs), "batches": batches.state(),
                    "evals": [(s_, e.loss, e.metric, e.metric_name, e.n) for s_, e in evals],
                    "best_step": best_step, "best_val": best_val, "rng": torch.get_rng_state(),
                    "cuda_rng": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else None,
                    "early_stopping": early_stopping.state_dict() if early_stopping is not None else None}

        for step in range(start + 1, steps + 1):
            x, y = self._to_device(next(batches))
            if augment is not None:
                with torch.no_grad():
                    x, y = augment(x, y)
            with self._autocast():
                out = forward(x)
            loss = loss_fn(out, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            lrs.append(optimizer.param_groups[0]["lr"])  # a Python float: no device sync
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            loss_buf[step - 1] = loss.detach()

            last = step == steps
            if step % self.log_every == 0 or last:
                window = loss_buf[max(0, step - self.log_every) : step]
                mean = window.mean().item()  # the one sync per log interval
                if not math.isfinite(mean):  # name the exact step: the window is still on the device
                    first_bad = int(torch.nonzero(~torch.isfinite(window))[0])
                    nonfinite_step = max(0, step - self.log_every) + first_bad + 1
                if self.writer is not None:
                    self.writer.add_scalar(f"{tag}/loss", mean, step)
                    # The LR where it moved by > 1% since the last point written, and at each log
                    # step: a schedule's shape (warm-up, a cut to zero) at a fraction of one
                    # TensorBoard event per step (measured: ~5% of a small MLP's step time).
                    for i in range(max(0, step - self.log_every), step):
                        if lr_written is None or i + 1 == step or abs(lrs[i] - lr_written) > 0.01 * abs(lr_written):
                            self.writer.add_scalar(f"{tag}/lr", lrs[i], i + 1)
                            lr_written = lrs[i]
                if task is not None:
                    self.progress.update(task, completed=step, description=f"{label} loss {mean:.4g}")
                if nonfinite_step is not None:
                    break  # the weights are NaN from here on; stop and let the stage say so
            if val is not None and eval_every and (step % eval_every == 0 or last):
                result = self.evaluate(model, val, loss_fn, batch_size=max(batch_size, 512))
                evals.append((step, result))
                if self.writer is not None:
                    self.writer.add_scalar(f"{tag}/val_loss", result.loss, step)
                    self.writer.add_scalar(f"{tag}/val_{result.metric_name}", result.metric, step)
                    if self.task == "language-model":  # the loss in bits: bits per character for char-level text
                        self.writer.add_scalar(f"{tag}/val_bits_per_token", result.loss / math.log(2), step)
                    if self.log_histograms:
                        for name, p in model.named_parameters():
                            values = p.detach().float().cpu()
                            if torch.isfinite(values).all():  # TensorBoard refuses NaN/Inf (a diverged run)
                                self.writer.add_histogram(f"{tag}/params/{name}", values, step)
                            if p.grad is not None and torch.isfinite(p.grad).all():
                                self.writer.add_histogram(f"{tag}/grads/{name}", p.grad.detach().float().cpu(), step)
                if math.isfinite(result.loss) and result.loss < best_val:
                    best_step, best_val = step, result.loss
                    if best_checkpoint_path is not None:
                        save_checkpoint(best_checkpoint_path, model=model, step=step)
                if on_eval is not None:
                    on_eval(step, model, result)  # prediction dynamics; tune reports to its pruner (may raise)
                stop = early_stopping is not None and early_stopping.update(step, model, result.loss) and stop_early
                if checkpoint_path is not None:
                    save_checkpoint(checkpoint_path, model=model, optimizer=optimizer, scheduler=scheduler, step=step,
                                    resume=resume_state(step), key=checkpoint_key)
                if stop:
                    break
        if task is not None:
            self.progress.update(task, completed=steps)
        return History(losses=loss_buf[:step].float().cpu(), lrs=lrs, evals=evals, steps_run=step,
                       nonfinite_step=nonfinite_step, best_step=best_step,
                       best_val_loss=best_val if best_step is not None else None,
                       stopped_early=bool(early_stopping is not None and early_stopping.stopped and stop_early and step < steps))


def save_checkpoint(path: Path, *, model: nn.Module, optimizer=None, scheduler=None, step: int = 0,
                    resume: Optional[dict] = None, key: str = "") -> None:
    """Atomically: a kill during the write leaves the previous checkpoint loadable. `resume`
    holds what Engine.train needs to continue exactly (history, batch order, RNG states);
    `key` identifies the experiment, so a resumed run never continues someone else's."""
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
