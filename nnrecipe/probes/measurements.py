"""What the baseline stage's experiments measured: the one input of its rules.

Every field is optional: a rule reads only its own, and unit tests fill only that.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np
import torch

from nnrecipe.experiments import Result
from nnrecipe.probes.diagnosis import Collapse, ModeGap
from nnrecipe.probes.mask_probes import MaskPadding
from nnrecipe.probes.model_probes import GradStep, InitMeasure, LossShapes, OverfitResult
from nnrecipe.probes.sequence_probes import CausalMeasure, PaddingMeasure, PerturbMeasure, TargetLeak
from nnrecipe.tasks import Task


@dataclasses.dataclass
class BaselineMeasurements:
    task: Task
    device_type: str = "cpu"
    reproducible: Optional[tuple[np.ndarray, np.ndarray]] = None  # per-step losses of two runs from scratch
    init: Optional[InitMeasure] = None
    dependency: Optional[np.ndarray] = None  # (rows, N): gradient of out[row] on each input
    dependency_rows: list[int] = dataclasses.field(default_factory=list)
    dependency_skip: str = ""  # why batch-independence could not run
    dependency_by: str = "gradient"  # how it was measured: "gradient", or "change" (inputs changed, outputs watched)
    eval_diff: Optional[float] = None
    eval_scale: float = 1.0  # typical output magnitude, for the CUDA tolerance
    grad: Optional[GradStep] = None
    model: Optional[Result] = None
    zero_input: Optional[Result] = None
    linear: Optional[Result] = None
    larger: Optional[Result] = None
    larger_skip: str = ""  # why there is no larger model
    dumb_scores: Optional[np.ndarray] = (
        None  # the task's dumb predictor (majority class, mean, unigram), per val example
    )
    dumb_name: str = ""
    overfit: Optional[OverfitResult] = None
    broadcast: Optional[LossShapes] = None  # the user's loss on nnrecipe's target shape and on the data's own
    broadcast_skip: str = ""
    # diagnoses (probes/diagnosis.py): the trained model's outputs collapsed to one; the trained
    # model in train mode and in eval mode on training examples (and on val, for input-independent)
    collapse: Optional[Collapse] = None
    modes: Optional[ModeGap] = None
    modes_val: Optional[ModeGap] = None
    modes_skip: str = ""
    batch_size: int = 0  # the training batch size (BatchNorm's statistics are per batch)
    # for the pictures: the exact first batch that entered model(x) (InputCapture), predictions
    # (or a next-token model's samples) on a fixed val batch over training, the overfit batch
    input_x: Optional[torch.Tensor] = None
    input_y: Optional[torch.Tensor] = None
    dynamics: list = dataclasses.field(default_factory=list)  # (step, prediction array or text)
    dynamics_y: Optional[torch.Tensor] = None
    overfit_x: Optional[torch.Tensor] = None
    overfit_y: Optional[torch.Tensor] = None
    # language models (probes/sequence_probes.py)
    causal: Optional[CausalMeasure] = None  # gradients, where an embedding reads the ids
    perturb: Optional[PerturbMeasure] = None  # tokens changed, outputs watched: any model
    causal_skip: str = ""
    leak: Optional[TargetLeak] = None  # on training windows
    padding: Optional[PaddingMeasure] = None
    padding_skip: str = ""
    # masked inputs (a dict with an attention_mask; probes/mask_probes.py)
    mask_key: str = ""  # the mask leaf, when the inputs carry one
    mask_padding: Optional[MaskPadding] = None


@dataclasses.dataclass
class LRRangeResult:
    lrs: np.ndarray  # the LR of each sweep step
    losses: np.ndarray  # raw batch loss at each step (NaN where it diverged)
    smoothed: np.ndarray  # bias-corrected EMA of the loss
    suggested_lr: Optional[float]  # steepest descent of the smoothed loss, before its minimum
    min_loss_lr: Optional[float]  # the LR at the smoothed loss's minimum
    diverge_lr: Optional[float]  # the first LR where the loss passed diverge_factor x its best, or NaN


@dataclasses.dataclass
class OverfitMeasurements:
    task: Task
    model: Optional[Result] = None  # the stage's model, trained for the stage's steps
    lr0: float = 0.0  # the spec's starting LR
    schedule: str = "constant"  # the schedule's name, or "custom" for a factory
    baseline_scores: Optional[dict[str, np.ndarray]] = None  # per-example val scores from the baseline stage
    baseline_skip: str = ""  # why there is nothing to compare against
    lr_range: Optional[LRRangeResult] = None
    ladder: list[Result] = dataclasses.field(default_factory=list)
    ladder_names: list[str] = dataclasses.field(default_factory=list)
    resumed_from: Optional[int] = None  # --resume: the step the model's training continued from
    collapse: Optional[Collapse] = None  # the trained model gives every example the same output
    # Several real targets: each output's val R^2 and paired z against its own train mean
    # (Task.per_output), so that one output left unlearnt does not hide in the overall number
    per_output: Optional[dict] = None
