"""Training experiments: one model, trained with the engine, scored on train and val.

An Experiment keeps what later rules need: the loss history, whole-split results, and
per-example val scores for paired comparisons between experiments.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from torch import nn

from nnrecipe.engine import EarlyStopping, Engine, EvalResult, History, example_scores, load_checkpoint
from nnrecipe.optim import make_optimizer, make_scheduler


@dataclasses.dataclass
class Experiment:
    name: str
    history: History
    train_eval: EvalResult
    val_eval: EvalResult
    val_scores: np.ndarray  # per val example: 1/0 correct (classification) or squared error (regression)
    model: Optional[nn.Module] = None

    def summary(self) -> dict:
        return {
            "val_loss": self.val_eval.loss,
            f"val_{self.val_eval.metric_name}": self.val_eval.metric,
            "train_loss": self.train_eval.loss,
            f"train_{self.train_eval.metric_name}": self.train_eval.metric,
            "steps": self.history.steps_run,
            "diverged": self.history.diverged,
        }


def experiment_key(spec, *, steps: int, every: int, extra: str = "") -> str:
    """Identifies one training experiment (resolved spec minus stage settings and names, budget,
    seed): a checkpoint with another key is never resumed."""
    import hashlib

    text = spec.model_copy(update={"stages": None, "name": "", "output_dir": "", "device": ""}).model_dump_json()
    return hashlib.sha256(f"{text}|{steps}|{every}|{extra}".encode()).hexdigest()[:16]


def resumable(path: Optional[Path], key: str, device) -> Optional[dict]:
    """The checkpoint at `path` when it can continue this experiment, else None."""
    if path is None or not Path(path).exists() or not key:
        return None
    state = load_checkpoint(path, map_location=device)
    return state if state.get("key") == key and state.get("resume") is not None else None


def data_fingerprint(data) -> str:
    """Identifies the train/val split a stage ran on, so a later stage compares per-example
    val scores only with scores from the same val examples (same spec, same split_seed)."""
    import hashlib

    h = hashlib.sha256()
    h.update(f"{data.task}|{data.num_outputs}|{len(data.train)}|{len(data.val)}|{tuple(data.input_shape)}".encode())
    for name in ("train", "val"):
        h.update(data.targets(name).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


class ZeroInput(nn.Module):
    """The same model fed zeros: what it can learn without looking at the data (the priors)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(torch.zeros_like(x))


LM_TRAIN_EVAL_WINDOWS = 2048  # a language model's train loss is read on this many evenly spaced windows


def train_sample(data):
    """The split a train score is read on: all of train, or for a language model an evenly
    spaced sample of LM_TRAIN_EVAL_WINDOWS windows (a corpus's train split is mostly text the
    model has no need to re-read for a loss within ~1%: 2,048 windows of 64 tokens are 131k
    tokens; the CPython-docs corpus has 6,540 windows)."""
    if data.task != "language-model" or len(data.train) <= LM_TRAIN_EVAL_WINDOWS:
        return data.train
    index = torch.linspace(0, len(data.train) - 1, LM_TRAIN_EVAL_WINDOWS).round().long()
    return data.train.subset(index)


def keeps_outputs(task: str) -> bool:
    """Whether a val evaluation keeps the outputs for pictures (mispredictions, residuals): not
    a language model's (N, L, V) logits, which its stages do not draw."""
    return task != "language-model"


def val_scores(outputs: torch.Tensor, targets: torch.Tensor, task: str) -> np.ndarray:
    """Per val example, from outputs already at hand (engine.example_scores)."""
    return example_scores(outputs, targets, task).cpu().numpy()


def train_experiment(
    name: str, *, spec, data, model: nn.Module, loss_fn: Callable, device: torch.device, steps: int, base: Path,
    writer=None, progress=None, on_eval=None, eval_every: int = 0, keep_model: bool = False,
    last_checkpoint: Optional[Path] = None, best_checkpoint: Optional[Path] = None, histograms: bool = False,
    augment: Optional[Callable] = None, early_stopping: Optional[EarlyStopping] = None, stop_early: bool = True,
    resume_from: Optional[Path] = None, checkpoint_key: str = "",
) -> Experiment:
    """Train with the spec's optimizer, schedule and batch size; score on whole splits.

    With `best_checkpoint`, val is judged at that checkpoint (the lowest val loss seen), not at
    the last step; the model itself is left at its last step. With `early_stopping` and
    `stop_early`, training ends when its patience runs out and the model is restored to the
    best evaluation's weights, where both splits are then scored (train.early_stopping).
    """
    engine = Engine.for_spec(spec.train, device=device, task=data.task, log_every=min(spec.train.log_every, steps),
                    writer=writer, progress=progress, log_histograms=histograms)
    model.to(device)
    optimizer = make_optimizer(spec.optim, model.parameters())
    scheduler = make_scheduler(optimizer, spec.optim.schedule, total_steps=steps, base=base)
    resume = resumable(resume_from, checkpoint_key, device)
    history = engine.train(model=model, train=data.train, val=data.val, loss_fn=loss_fn, optimizer=optimizer,
                           scheduler=scheduler, steps=steps, batch_size=spec.data.batch_size, seed=spec.seed,
                           eval_every=eval_every, grad_clip=spec.optim.grad_clip, tag="train", label=name,
                           on_eval=on_eval, checkpoint_path=last_checkpoint, best_checkpoint_path=best_checkpoint,
                           augment=augment, early_stopping=early_stopping, stop_early=stop_early, resume=resume,
                           checkpoint_key=checkpoint_key)
    if early_stopping is not None and stop_early and early_stopping.state is not None and not history.diverged:
        model.load_state_dict(early_stopping.state)
    train_eval = engine.evaluate(model, train_sample(data), loss_fn)
    keep = keeps_outputs(data.task)
    if best_checkpoint is not None and best_checkpoint.exists() and not history.diverged:
        final_state = {k: v.clone() for k, v in model.state_dict().items()}
        model.load_state_dict(load_checkpoint(best_checkpoint, map_location=device)["model"])
        val_eval = engine.evaluate(model, data.val, loss_fn, keep_outputs=keep, keep_scores=True)
        model.load_state_dict(final_state)
    else:
        val_eval = engine.evaluate(model, data.val, loss_fn, keep_outputs=keep, keep_scores=True)
    scores = val_eval.scores
    if writer is not None:
        writer.add_scalar("final/train_loss", train_eval.loss, history.steps_run)
        writer.add_scalar(f"final/train_{train_eval.metric_name}", train_eval.metric, history.steps_run)
        writer.add_scalar("final/val_loss", val_eval.loss, history.steps_run)
        writer.add_scalar(f"final/val_{val_eval.metric_name}", val_eval.metric, history.steps_run)
    return Experiment(name, history, train_eval, val_eval, scores, model if keep_model else None)
