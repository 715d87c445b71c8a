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
from nnrecipe.engine import Engine, example_scores, load_checkpoint
from nnrecipe.probes.regularize import Run


def as_probabilities(outputs: torch.Tensor, loss: str) -> torch.Tensor:
    """What a classifier's outputs mean as class probabilities, by its loss."""
    if loss == "nll":  # the model returns log-probabilities
        return outputs.exp() / outputs.exp().sum(dim=1, keepdim=True)
    if loss == "bce":  # one sigmoid per class
        p = torch.sigmoid(outputs)
        return p / p.sum(dim=1, keepdim=True).clamp_min(1e-12)
    return torch.softmax(outputs.float(), dim=1)  # logits (cross_entropy and user losses)


def _averaged(output: torch.Tensor, task: str, loss: str) -> torch.Tensor:
    """What an ensemble averages of one member's output: class probabilities, the next-token
    distribution, or the regression output itself."""
    if task == "language-model":
        return torch.softmax(output.float(), dim=-1)
    if task == "classification":
        return as_probabilities(output, loss)
    return output


def _as_prediction(mean: torch.Tensor, task: str) -> torch.Tensor:
    """A language model's mean distribution as its log (valid logits: per-window cross-entropy
    and argmax read them as they read one member's); the others as they are."""
    return torch.log(mean.clamp_min(1e-12)) if task == "language-model" else mean


def combine_outputs(outputs: list[torch.Tensor], task: str, loss: str) -> torch.Tensor:
    """The ensemble's prediction: mean probabilities, or mean outputs for regression; for a
    language model the log of the mean next-token distribution."""
    return _as_prediction(torch.stack([_averaged(o, task, loss) for o in outputs]).mean(dim=0), task)


@dataclasses.dataclass
class EnsemblePass:
    """The members and their ensembles on one split, per example (engine.example_scores)."""

    members: list[np.ndarray]  # each member's scores
    prefixes: list[np.ndarray]  # the ensemble of the first k members, k = 1..K
    spread: float  # how far the members' raw outputs are apart: max |o_k - o_0| / mean |o_0|
    disagreement: Optional[float]  # classification: mean pairwise fraction of differing predictions

    @property
    def ensemble(self) -> np.ndarray:
        return self.prefixes[-1]

    def curve(self) -> list[float]:
        """The metric of the ensemble of the first k members, k = 1..K (accuracy, MSE, nats)."""
        return [float(p.mean()) for p in self.prefixes]


def ensemble_pass(engine: Engine, models: list[torch.nn.Module], split, *, task: str, loss: str,
                  batch_size: int = 256) -> EnsemblePass:
    """Score every member and every prefix ensemble batch by batch: no member's outputs are
    kept for the whole split (a language model's are windows x context x vocabulary)."""
    k = len(models)
    members, prefixes = [[] for _ in models], [[] for _ in models]
    zero = lambda: torch.zeros((), dtype=torch.float64, device=engine.device)  # noqa: E731
    max_diff, abs_sum, differ = zero(), zero(), torch.zeros(k, k, dtype=torch.float64, device=engine.device)
    count = examples = 0
    for outs, y in engine.batches_through(models, split, batch_size=batch_size):
        running = None  # the sum of the first i + 1 members' averaged outputs
        for i in range(k):
            members[i].append(example_scores(outs[i], y, task))
            part = _averaged(outs[i], task, loss)
            running = part if running is None else running + part
            prefixes[i].append(example_scores(_as_prediction(running / (i + 1), task), y, task))
        for o in outs[1:]:
            max_diff = torch.maximum(max_diff, (o - outs[0]).abs().max().double())
        abs_sum += outs[0].abs().sum().double()
        count += outs[0].numel()
        if task == "classification":
            preds = torch.stack([o.argmax(dim=1) for o in outs])  # (k, batch)
            differ += (preds[:, None, :] != preds[None, :, :]).double().sum(dim=2)
        examples += len(y)
    as_np = lambda parts: torch.cat(parts).cpu().numpy()  # noqa: E731  (one sync per list, at the end)
    pairs = k * (k - 1) / 2
    spread = float(max_diff / (abs_sum / max(count, 1)).clamp_min(1e-12)) if k > 1 else 0.0
    disagreement = (float(torch.triu(differ, diagonal=1).sum() / pairs / max(examples, 1)) if k > 1 else 0.0) \
        if task == "classification" else None
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


def train_student(spec, *, model, data, teacher_train: torch.Tensor, device, steps: int, every: int, seed: int, base: Path,
                  augment=None, writer=None, progress=None) -> tuple[Run, torch.nn.Module]:
    """Train `model` on the ensemble's soft targets over the train split (in memory), then
    score it on the real train and val splits like any other experiment."""
    from nnrecipe.optim import make_optimizer, make_scheduler

    cfg = spec.stages.squeeze.distill
    train = data.train if isinstance(data.train, TensorSplit) else data.train.materialize()
    y = train.y.to(device)
    if data.task == "classification":
        targets = soft_targets(teacher_train.to(device), y, cfg.temperature)
        loss_fn = distill_loss(cfg.temperature, cfg.alpha)
    else:
        targets = torch.cat([teacher_train.to(device).reshape(len(y), -1), y.float().reshape(len(y), -1)], dim=1)
        loss_fn = regression_distill_loss(cfg.alpha)
    soft = TensorSplit("train", train.x.to(device), targets)
    engine = Engine.for_spec(spec.train, device=device, task=data.task, log_every=min(spec.train.log_every, steps),
                    writer=writer, progress=progress)
    optimizer = make_optimizer(spec.optim, model.parameters())
    scheduler = make_scheduler(optimizer, spec.optim.schedule, total_steps=steps, base=base)
    h = engine.train(model=model, train=soft, val=data.val, loss_fn=loss_fn, optimizer=optimizer, scheduler=scheduler,
                     steps=steps, batch_size=spec.data.batch_size, seed=seed, eval_every=every,
                     grad_clip=spec.optim.grad_clip, label="student (soft targets)", augment=augment)
    plain = distill_loss(1.0, 0.0) if data.task == "classification" else regression_distill_loss(0.0)
    run = _scored(engine, model, data, plain, seed=seed, steps=h.steps_run, diverged=h.diverged,
                  evals=[(s, r.loss, r.metric) for s, r in h.evals])
    return run, model


def _scored(engine, model, data, loss_fn, *, seed: int, steps: int, diverged: bool = False, evals=()) -> Run:
    tr = engine.evaluate(model, data.train, loss_fn)
    va = engine.evaluate(model, data.val, loss_fn, keep_scores=True)
    return Run(seed=seed, val_scores=va.scores, val_loss=va.loss,
               val_metric=va.metric, train_loss=tr.loss, train_metric=tr.metric, steps=steps, diverged=diverged,
               evals=list(evals))


def continue_training(spec, *, model, checkpoint: Path, data, loss_fn, device, steps: int, every: int, seed: int,
                      writer=None, progress=None) -> tuple[Run, Run]:
    """Reload a member's last checkpoint (weights and optimizer state, so Adam's moments and the
    LR the schedule had reached carry on) and train `steps` more at that LR. Returns the
    reloaded model's scores (steps = the checkpoint's step) and the scores at the end."""
    from nnrecipe.optim import make_optimizer

    state = load_checkpoint(checkpoint, map_location=device)
    model.load_state_dict(state["model"])
    optimizer = make_optimizer(spec.optim, model.parameters())
    if state.get("optimizer") is not None:
        optimizer.load_state_dict(state["optimizer"])
    engine = Engine.for_spec(spec.train, device=device, task=data.task, log_every=min(spec.train.log_every, steps),
                    writer=writer, progress=progress)
    before = _scored(engine, model, data, loss_fn, seed=seed, steps=int(state.get("step", 0)))
    h = engine.train(model=model, train=data.train, val=data.val, loss_fn=loss_fn, optimizer=optimizer, steps=steps,
                     batch_size=spec.data.batch_size, seed=seed, eval_every=every, grad_clip=spec.optim.grad_clip,
                     label="longer training")
    after = _scored(engine, model, data, loss_fn, seed=seed, steps=h.steps_run, diverged=h.diverged,
                    evals=[(s, r.loss, r.metric) for s, r in h.evals])
    return before, after


def checkpoint_val_loss(member_evals: list, step: int) -> Optional[float]:
    """The val loss recorded at the evaluation where the last checkpoint was written."""
    for s, loss, _ in member_evals:
        if s == step:
            return loss
    return None


