"""The squeeze stage's experiments: ensembles of seeds, distillation, training on.

Ensembles average predicted probabilities (classification) or outputs (regression).
Distillation trains a student on the ensemble's soft targets: the train split's targets
become rows [softmax(log p / T), hard label], so the one engine trains it unchanged.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from nnrecipe.data.bundle import TensorSplit
from nnrecipe.engine import Engine
from nnrecipe.experiments import Logging, Result, TrainPlan
from nnrecipe.loop import History, load_checkpoint
from nnrecipe.tasks import Task


def combine_outputs(outputs: list[torch.Tensor], task: Task, loss: str) -> torch.Tensor:
    """The ensemble's prediction: the mean of what the task averages (probabilities, outputs,
    next-token distributions), as an output its score reads like one member's."""
    return task.ensemble_prediction(torch.stack([task.ensemble_part(o, loss) for o in outputs]).mean(dim=0))


@dataclasses.dataclass
class EnsemblePass:
    """The members and their ensembles on one split, per example (the task's example_scores)."""

    members: list[np.ndarray]  # each member's scores
    prefixes: list[np.ndarray]  # the ensemble of the first k members, k = 1..K
    spread: float  # how far the members' raw outputs are apart: max |o_k - o_0| / mean |o_0|
    disagreement: Optional[float]  # tasks with predicted labels: mean pairwise fraction of differing predictions

    @property
    def ensemble(self) -> np.ndarray:
        return self.prefixes[-1]

    def curve(self) -> list[float]:
        """The metric of the ensemble of the first k members, k = 1..K (accuracy, MSE, nats)."""
        return [float(p.mean()) for p in self.prefixes]


def ensemble_pass(
    engine: Engine, models: list[torch.nn.Module], split, *, task: Task, loss: str, batch_size: int = 256
) -> EnsemblePass:
    """Score every member and every prefix ensemble batch by batch: no member's outputs are
    kept for the whole split (a language model's are windows x context x vocabulary)."""
    k = len(models)
    members: list[list[torch.Tensor]] = [[] for _ in models]
    prefixes: list[list[torch.Tensor]] = [[] for _ in models]
    zero = lambda: torch.zeros((), dtype=torch.float64, device=engine.device)  # noqa: E731
    max_diff, abs_sum, differ = zero(), zero(), torch.zeros(k, k, dtype=torch.float64, device=engine.device)
    count = examples = 0
    labelled = False  # the task predicts a label per example: the members' disagreement is counted
    for outs, y in engine.batches_through(models, split, batch_size=batch_size):
        running = None  # the sum of the first i + 1 members' averaged outputs
        for i in range(k):
            members[i].append(task.example_scores(outs[i], y))
            part = task.ensemble_part(outs[i], loss)
            running = part if running is None else running + part
            prefixes[i].append(task.example_scores(task.ensemble_prediction(running / (i + 1)), y))
        for o in outs[1:]:
            max_diff = torch.maximum(max_diff, (o - outs[0]).abs().max().double())
        abs_sum += outs[0].abs().sum().double()
        count += outs[0].numel()
        labels = [lab for lab in (task.predicted_labels(o) for o in outs) if lab is not None]
        labelled = len(labels) == len(outs)  # the task's: every member has labels, or none has
        if labelled:
            preds = torch.stack(labels)  # (k, batch, *labels per example: a mask's pixels)
            unequal = (preds[:, None] != preds[None, :]).double().reshape(k, k, preds.shape[1], -1)
            differ += unequal.mean(dim=3).sum(dim=2)  # per example, the share of its labels that differ
        examples += len(y)
    as_np = lambda parts: torch.cat(parts).cpu().numpy()  # noqa: E731  (one sync per list, at the end)
    pairs = k * (k - 1) / 2
    spread = float(max_diff / (abs_sum / max(count, 1)).clamp_min(1e-12)) if k > 1 else 0.0
    disagreement = (
        (float(torch.triu(differ, diagonal=1).sum() / pairs / max(examples, 1)) if k > 1 else 0.0) if labelled else None
    )
    return EnsemblePass([as_np(p) for p in members], [as_np(p) for p in prefixes], spread, disagreement)


def soft_targets(teacher_probs: torch.Tensor, hard: torch.Tensor, temperature: float) -> torch.Tensor:
    """Rows [softmax(log p / T) (C columns), hard label (1 column)], float."""
    soft = torch.softmax(torch.log(teacher_probs.clamp_min(1e-12)) / temperature, dim=1)
    return torch.cat([soft, hard.float().reshape(-1, 1).to(soft.device)], dim=1)


def distill_loss(temperature: float, alpha: float):
    """Soft-target loss for training rows (N, C + 1); plain cross-entropy on hard labels (val)."""
    t2 = temperature * temperature

    def loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = out.float()
        if y.dim() == 2:
            soft, hard = y[:, :-1], y[:, -1].long()
            log_q = F.log_softmax(out / temperature, dim=1)
            kl = (soft * (torch.log(soft.clamp_min(1e-12)) - log_q)).sum(dim=1).mean()
            return alpha * t2 * kl + (1 - alpha) * F.cross_entropy(out, hard)
        return F.cross_entropy(out, y.long())

    return loss


def regression_distill_loss(alpha: float):
    """Regression: MSE to the ensemble's mean output (weight alpha) and to the target."""

    def loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = out.float()
        if y.dim() == 2 and y.shape[1] == 2 * out.shape[1]:
            k = out.shape[1]
            return alpha * F.mse_loss(out, y[:, :k]) + (1 - alpha) * F.mse_loss(out, y[:, k:])
        return F.mse_loss(out, y.float().reshape(out.shape))

    return loss


def train_student(
    spec,
    *,
    model,
    data,
    teacher_train: torch.Tensor,
    device,
    steps: int,
    every: int,
    seed: int,
    base: Path,
    augment=None,
    writer=None,
    progress=None,
) -> Result:
    """Train `model` on the ensemble's soft targets over the train split (in memory), then
    score it on the real train and val splits like any other experiment (Result.model: it)."""
    cfg = spec.stages.squeeze.distill
    train = data.train if isinstance(data.train, TensorSplit) else data.train.materialize()
    y = train.y.to(device)
    targets, loss_fn, plain = data.task.distill_targets(teacher_train.to(device), y, cfg)
    soft = TensorSplit("train", train.x.to(device), targets)
    plan = TrainPlan.for_spec(
        spec,
        model=model,
        train=soft,
        val=data.val,
        loss_fn=loss_fn,
        steps=steps,
        base=base,
        seed=seed,
        eval_every=every,
        augment=augment,
        log=Logging(
            writer=writer, progress=progress, label="student (soft targets)", every=min(spec.train.log_every, steps)
        ),
    )
    engine = Engine.for_spec(spec.train, device=device, task=data.task)
    return _scored(engine, model, data, plain, name="student", seed=seed, history=engine.train(plan))


def _scored(
    engine, model, data, loss_fn, *, name: str, seed: int, history: Optional[History] = None, steps: int = 0
) -> Result:
    """The model on whole train and val splits; without a history, as loaded (at `steps`)."""
    tr = engine.evaluate(model, data.train, loss_fn)
    va = engine.evaluate(model, data.val, loss_fn, keep_scores=True)
    if history is not None:
        return Result.scored(name, seed, history, tr, va, model=model)
    return Result(
        seed=seed,
        val_scores=va.scores,
        val_loss=va.loss,
        val_metric=va.metric,
        train_loss=tr.loss,
        train_metric=tr.metric,
        steps=steps,
        diverged=False,
        evals=[],
        name=name,
        train_eval=tr,
        val_eval=va,
        val_step=steps,
        train_step=steps,
    )


def continue_training(
    spec,
    *,
    model,
    checkpoint: Path,
    data,
    loss_fn,
    device,
    steps: int,
    every: int,
    seed: int,
    writer=None,
    progress=None,
) -> tuple[Result, Result]:
    """Reload a member's last checkpoint (weights and optimizer state, so Adam's moments and the
    LR the schedule had reached carry on) and train `steps` more at that LR. Returns the
    reloaded model's scores (steps = the checkpoint's step) and the scores at the end."""
    from nnrecipe.optim import make_optimizer

    state = load_checkpoint(checkpoint, map_location=device)
    model.load_state_dict(state["model"])
    optimizer = make_optimizer(spec.optim, model.parameters())
    if state.get("optimizer") is not None:
        optimizer.load_state_dict(state["optimizer"])
    engine = Engine.for_spec(spec.train, device=device, task=data.task)
    before = _scored(engine, model, data, loss_fn, name="reloaded", seed=seed, steps=int(state.get("step", 0)))
    plan = TrainPlan(
        model=model,
        train=data.train,
        val=data.val,
        loss_fn=loss_fn,
        optimizer=optimizer,
        steps=steps,
        batch_size=spec.data.batch_size,
        seed=seed,
        eval_every=every,
        grad_clip=spec.optim.grad_clip,
        log=Logging(writer=writer, progress=progress, label="longer training", every=min(spec.train.log_every, steps)),
    )
    after = _scored(engine, model, data, loss_fn, name="longer", seed=seed, history=engine.train(plan))
    return before, after


def checkpoint_val_loss(member_evals: list, step: int) -> Optional[float]:
    """The val loss recorded at the evaluation where the last checkpoint was written."""
    for s, loss, _ in member_evals:
        if s == step:
            return loss
    return None
