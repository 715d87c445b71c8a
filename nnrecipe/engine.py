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
from typing import TYPE_CHECKING, Any, Callable, Optional

import numpy as np
import torch
from torch import nn

from nnrecipe import distributed, inputs, threads
from nnrecipe.data.bundle import Batch, Split, TensorSplit
from nnrecipe.loop import BatchStream, EvalResult, History, RunState, StepLog, save_checkpoint
from nnrecipe.runtime import autocast_dtype
from nnrecipe.tasks import Task

if TYPE_CHECKING:
    from nnrecipe.experiments import TrainPlan


class Engine:
    """Evaluates and trains models on one device, for one task (its metric and scores); how a
    run is logged, checkpointed and stopped is the plan's (experiments.TrainPlan)."""

    def __init__(
        self,
        *,
        device: torch.device,
        task: Task,
        precision: str = "auto",
        compile: bool = False,
        channels_last: bool = False,
    ):
        self.device = device
        self.task = task
        self.amp_dtype = autocast_dtype(precision, device)
        self.compile = compile  # torch.compile the training forward (the first steps pay the compile)
        self.channels_last = channels_last  # NHWC weights and 4-D inputs: tensor cores' layout
        self._ranks: Optional[distributed.Ranks] = None  # set by train: torchrun's, or None
        self._draws: Optional[distributed.Draws] = None  # torchrun: the shared and the rank's own RNG

    @classmethod
    def for_spec(cls, train_spec, *, device: torch.device, task: Task) -> "Engine":
        """An engine with the spec's speed settings (precision, compile, channels_last)."""
        return cls(
            device=device,
            task=task,
            precision=train_spec.precision,
            compile=train_spec.compile,
            channels_last=train_spec.channels_last,
        )

    # ------------------------------------------------------------------ helpers

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def _to_device(self, batch: Batch) -> Batch:
        x, y = batch
        nb = self.device.type == "cuda"  # pinned host memory + non_blocking overlaps the copy
        x = inputs.to(x, self.device, non_blocking=nb)
        if self.channels_last:
            x = inputs.map_leaves(lambda t: t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t, x)
        return x, y.to(self.device, non_blocking=nb)

    def _prepare(self, model: nn.Module) -> nn.Module:
        model.to(self.device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)  # only 4-D weights change layout
        return model

    # ------------------------------------------------------------------ evaluation

    @torch.inference_mode()
    def evaluate(
        self,
        model: nn.Module,
        split: Split,
        loss_fn: Callable,
        *,
        batch_size: int = 1024,
        keep_outputs: bool = False,
        keep_scores: bool = False,
    ) -> EvalResult:
        """Mean loss and metric over the entire split, accumulated on the device (one sync at the end).
        keep_outputs also returns the outputs (float32, host); keep_scores the per-example scores
        (the task's example_scores), computed batch by batch: a language model's (N, L, V) logits need not
        be kept for them (a 256-token vocabulary on 1 MB of val text would be 1 GB)."""
        was_training = model.training
        self._prepare(model).eval()
        part = distributed.eval_share(split, distributed.current())  # torchrun: this rank's share
        loss_sum = torch.zeros((), device=self.device, dtype=torch.float64)
        meter = self.task.meter(self.device)
        n = 0
        kept, scored = [], []
        for batch in part.iterate(batch_size):
            x, y = self._to_device(batch)
            with self._autocast():
                out = model(x)
            if keep_outputs:
                kept.append(out.float().cpu())
            if keep_scores:
                scored.append(self.task.example_scores(out, y))  # stays on the device until the end
            loss_sum += loss_fn(out, y).double() * len(y)  # losses are batch means
            meter.update(out, y)
            n += len(y)
        model.train(was_training)
        outputs = torch.cat(kept) if keep_outputs else None
        scores = torch.cat(scored).cpu().numpy() if keep_scores else None
        if part is not split:  # torchrun: the whole split's sums, outputs and scores, on every rank
            count = torch.tensor(float(n), device=self.device, dtype=torch.float64)
            distributed.add_over_ranks([loss_sum, count, *meter.sums()])
            n = int(count.item())
            outputs = torch.cat(distributed.gather_in_order(outputs)) if keep_outputs else None
            scores = np.concatenate(distributed.gather_in_order(scores)) if keep_scores else None
        # torchrun: every rank takes its decisions from rank 0's numbers, bit for bit
        loss, metric = distributed.from_rank0(((loss_sum / n).item(), meter.value(n)))
        return EvalResult(loss=loss, metric=metric, metric_name=self.task.metric, n=n, outputs=outputs, scores=scores)

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

    def train(self, plan: "TrainPlan") -> History:
        """Train `plan.model` for `plan.steps` optimizer steps (see experiments.TrainPlan for what
        a plan holds). With `plan.checkpoints.resume` holding a checkpoint written by this loop,
        training continues from its step exactly as if it had never stopped: weights, optimizer,
        schedule, the batch order, the RNG streams (dropout, augmentation) and the history."""
        model = self._prepare(plan.model).train()
        self._settle_threads(plan)
        # Under torchrun each rank trains on its share of every batch (distributed.py). The DDP
        # and compiled modules share the model's parameters; state_dict, evaluation and
        # checkpoints keep using `model` itself (no `module.`/`_orig_mod.` prefixes in weights).
        self._ranks = distributed.current()
        if self._ranks is not None:
            distributed.check_split(len(plan.train), min(plan.batch_size, len(plan.train)), self._ranks)
        forward: Any = distributed.wrap(model, self.device) if self._ranks is not None else model
        forward = torch.compile(forward) if self.compile else forward
        data_device = plan.train.device if isinstance(plan.train, TensorSplit) else torch.device("cpu")
        batches = BatchStream(
            plan.train,
            plan.batch_size,
            torch.Generator(device=data_device).manual_seed(plan.seed),
            pin_memory=self.device.type == "cuda",
        )
        state = RunState(plan.steps, self.device)
        if plan.checkpoints.resume is not None:
            self._restore(plan, plan.checkpoints.resume, state, batches)
        log = StepLog(plan.log, steps=plan.steps, start=state.start)
        with distributed.draws(self._ranks, self.device) as self._draws:  # torchrun: dropout's own per rank
            step = self._loop(plan, forward, batches, state, log)
        self._draws = None
        log.done()
        return state.history(step, steps=plan.steps, early_stopping=plan.early_stopping, stop_early=plan.stop_early)

    def _loop(self, plan: "TrainPlan", forward: nn.Module, batches: BatchStream, state: RunState, log: StepLog) -> int:
        """The steps from state.start on, with their logs and evaluations; returns the last step."""
        step = reduced = state.start  # reduced: the steps whose loss is the ranks' mean (torchrun)
        steps, every, evals = plan.steps, log.every, plan.eval_every if plan.val is not None else 0
        for step in range(state.start + 1, steps + 1):  # the hot loop: no device sync, no call it can spare
            loss, lr = (
                self._step(plan, forward, batches) if self._ranks is None else self._ddp_step(plan, forward, batches)
            )
            state.lrs.append(lr)
            state.losses[step - 1] = loss.detach()
            if step % every == 0 or step == steps:
                if self._ranks is not None:  # the loss of the whole batch: the mean of the shares'
                    reduced = distributed.mean_over_ranks(state.losses, reduced, step)
                log.losses(state, step)
                if state.nonfinite_step is not None:
                    break  # the weights are NaN from here on; stop and let the stage say so
            if evals and (step % evals == 0 or step == steps):
                with self._shared_draws():  # a hook that draws, draws the same on every rank
                    if self._evaluate_during(plan, state, log, batches, step):
                        break
        if self._ranks is not None:  # steps since the last log (early stopping ended the run)
            distributed.mean_over_ranks(state.losses, reduced, step)
        return step

    def _shared_draws(self):
        """torchrun: the RNG stream every rank shares (distributed.Draws); else nothing changes."""
        return self._draws.shared_stream() if self._draws is not None else contextlib.nullcontext()

    def _ddp_step(self, plan: "TrainPlan", forward: nn.Module, batches: BatchStream) -> tuple[torch.Tensor, float]:
        try:
            return self._step(plan, forward, batches)
        except RuntimeError as exc:
            said = distributed.unused_parameters(exc)
            if said is None:
                raise
            raise said from None

    def _settle_threads(self, plan: "TrainPlan") -> None:
        """At the process's first CPU training: the torch thread count its model trains fastest
        with (threads.py; the user's OMP_NUM_THREADS stands)."""
        cpu = self.device.type == "cpu" and distributed.current() is None
        if cpu and threads.pending() and isinstance(plan.train, TensorSplit):
            threads.settle(plan.model, plan.train.take(slice(0, plan.batch_size))[0])

    def _step(self, plan: "TrainPlan", forward: nn.Module, batches: BatchStream) -> tuple[torch.Tensor, float]:
        """One optimizer step on the next batch: (the loss, on the device; the LR it applied)."""
        x, y = self._to_device(next(batches))
        if plan.augment is not None:  # the whole batch, as in one process: then each rank its share
            with torch.no_grad(), self._shared_draws():
                x, y = plan.augment(x, y)
        if self._ranks is not None:
            rows = distributed.share(len(y), self._ranks, y.device)
            x, y = inputs.index(x, rows), y[rows]
        with self._autocast():
            out = forward(x)
        loss = plan.loss_fn(out, y)
        if not loss.requires_grad:  # backward would fail: say whose it is
            from nnrecipe.errors import PluginError

            raise PluginError(
                "model.factory: the training loss does not depend on the model's trainable parameters "
                "(a .detach(), .item() or numpy round-trip in forward?)"
            )
        plan.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if plan.grad_clip is not None:
            nn.utils.clip_grad_norm_(plan.model.parameters(), plan.grad_clip)
        lr = plan.optimizer.param_groups[0]["lr"]  # a Python float: no device sync
        plan.optimizer.step()
        if plan.scheduler is not None:
            plan.scheduler.step()
        return loss, lr

    def _evaluate_during(
        self, plan: "TrainPlan", state: RunState, log: StepLog, batches: BatchStream, step: int
    ) -> bool:
        """The evaluation at `step`: val result, best checkpoint, the caller's hook, early
        stopping, the last checkpoint. True when training stops here."""
        model, ckpt = plan.model, plan.checkpoints
        if plan.val is None:  # nothing to evaluate on (eval_every is then 0: never called)
            return False
        result = self.evaluate(model, plan.val, plan.loss_fn, batch_size=max(plan.batch_size, 512))
        log.val(result, step, model, self.task.val_scalars(result.loss))
        if state.evaluated(step, result) and ckpt.best is not None:
            save_checkpoint(ckpt.best, model=model, step=step)
        # prediction dynamics; tune reports to its pruner, which may end the trial here (True)
        ended = plan.on_eval is not None and bool(plan.on_eval(step, model, result))
        es = plan.early_stopping
        stop = (es is not None and es.update(step, model, result.loss) and plan.stop_early) or ended
        if ckpt.last is not None:
            save_checkpoint(
                ckpt.last,
                model=model,
                optimizer=plan.optimizer,
                scheduler=plan.scheduler,
                step=step,
                resume=state.to_resume(step, batches, es),
                key=ckpt.key,
            )
        return stop

    @staticmethod
    def _restore(plan: "TrainPlan", checkpoint: dict, state: RunState, batches: BatchStream) -> None:
        plan.model.load_state_dict(checkpoint["model"])
        plan.optimizer.load_state_dict(checkpoint["optimizer"])
        if plan.scheduler is not None and checkpoint.get("scheduler") is not None:
            plan.scheduler.load_state_dict(checkpoint["scheduler"])
        state.restore(checkpoint, batches=batches, early_stopping=plan.early_stopping)
