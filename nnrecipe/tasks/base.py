"""What a task is: the one object that owns everything that differs between tasks.

Stages, probes, checks, the engine and the pictures ask the task (`data.task`, `m.task`) and
never compare task names. A task says:

- what its targets are: how a source's labels become targets, how many outputs a model needs,
  what valid targets are (label-range), how its examples are drawn (`input_kind`);
- how a split is measured: the metric (`meter`, `metric*`, always higher-better), the
  per-example val score that paired comparisons use (`example_scores`, `score*`, and which
  way is better), and their noise;
- what an untrained or dumb model does: the default loss, the dumb and linear baselines, the
  chance level, the ideal final bias and the loss it implies at init;
- how labels and predictions print, which pictures apply, and which checks apply: a check
  whose rule is a task's own (OPT_IN) runs only for the tasks that list it in `supports`; the
  others skip, with the task's reason (`skips`) or saying it has no rule for it.

The defaults here are those of one prediction row per example; a task overrides what differs.
A method a task cannot answer raises NotImplementedError, never answers for another task.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Optional, Protocol, Union

import numpy as np
import torch
from torch import nn

from nnrecipe.stats import halves, paired_z

SEQUENCE_ONLY = "for language models (task: language-model)"
SEQUENCE_CHECKS = ("causal-dependency", "padding-invariance")  # the baseline's checks of next-token models
# Checks whose rule only holds for some tasks: a task opts in by listing them in `supports`.
OPT_IN = (
    "class-balance",
    "conflicting-labels",
    "human-baseline",
    "suspected-label-errors",
    "augment-preserves-labels",
    "distillation",
    *SEQUENCE_CHECKS,
)
HUMAN_ACCURACY = "human accuracy applies to classification"
LABEL_ERRORS = (
    "classification only (regression has no label to doubt, see the residuals; "
    "a language model's targets are its own text)"
)


def binomial_se(metric: float, n: int) -> float:
    """Standard error of a proportion measured on n examples, as if each were one trial (for
    a window of tokens, conservative)."""
    n = max(n, 1)
    return math.sqrt(max(metric * (1 - metric), 1.0 / n) / n)


class Meter(Protocol):
    """A split's metric, accumulated batch by batch on the device (one sync at the end)."""

    def update(self, out: torch.Tensor, y: torch.Tensor) -> None: ...

    def value(self, n: int) -> float: ...

    def sums(self) -> list[torch.Tensor]:
        """Its running sums, the tensors themselves: each adds over disjoint parts of a split
        (torchrun's ranks sum them in place, then `value` reads the whole split's metric)."""
        ...


@dataclasses.dataclass(frozen=True)
class TrainGoal:
    """fits-train's target on the training set: `value(train EvalResult)` against `target`."""

    name: str  # e.g. "train accuracy": the phrase in messages, the observed key with "_" for " "
    target: float
    value: Callable[[Any], float]
    higher_is_better: bool = True
    digits: int = 5  # rounding of the observed value
    passed: str = "{name} {value:.4f} after {steps} steps: the model fits the training set"
    failed: str = "{name} reached only {value:.4f} after {steps} steps"
    hint: str = (
        "a larger model (stages.overfit.model), more steps, a better LR (--lr-range); no regularization "
        "here: weight decay and dropout off"
    )
    extra: Callable[[Any], dict] = lambda e: {}  # more observed values from the train EvalResult

    def met(self, value: float) -> bool:
        return value >= self.target if self.higher_is_better else value <= self.target

    @property
    def expected(self) -> str:
        return f"{self.name} {'>=' if self.higher_is_better else '<='} {self.target}"


@dataclasses.dataclass(frozen=True)
class LossFloor:
    """A batch's irreducible loss (what no model can go below on it) and why, in words."""

    value: float  # in the loss's units (nats for cross-entropy)
    why: str  # e.g. "2 groups of identical inputs with different labels"


class MeanOfScores:
    """For a task whose metric is the mean of per-example scores in [0, 1] (F1 per example, pixel
    accuracy per image): the metric from the scores, its standard error from their spread."""

    def metric_of(self, scores: np.ndarray, target_var: float = 1.0) -> float:
        return float(np.mean(scores))

    def metric_se(
        self, metric: float, n: int, *, scores: Optional[np.ndarray] = None, target_var: float = 1.0
    ) -> float:
        """SD of the per-example scores over sqrt(n); without them, a proportion's (the scores are in [0, 1])."""
        if scores is not None and len(scores) > 1:
            return float(np.std(scores, ddof=1) / math.sqrt(len(scores)))
        return binomial_se(metric, n)

    def objective(self, metric: float) -> float:
        return float(metric) if math.isfinite(metric) else 0.0


class Task:
    name: ClassVar[str]

    # ---- measures: the metric's name in summaries, messages (title), pictures (symbol) and
    # table columns (short); the per-example score and which way it is better.
    metric: ClassVar[str]
    metric_title: ClassVar[str]
    metric_symbol: ClassVar[str]
    metric_short: ClassVar[str]
    score: ClassVar[str]
    score_title: ClassVar[str]
    higher_is_better: ClassVar[bool]  # of the per-example score (the metric is always higher-better)
    default_loss: ClassVar[str]  # what `loss: auto` resolves to

    # ---- the baselines (the names of their arrays in baseline/val_scores.npz)
    dumb_name: ClassVar[str]
    linear_name: ClassVar[str] = "linear"
    linear_text: ClassVar[str] = "a linear model"

    # ---- how the stages treat it
    stratify: ClassVar[bool] = False  # held-out splits keep train's class shares
    real_targets: ClassVar[bool] = False  # targets are real values: their dtype and scale are judged
    keeps_val_outputs: ClassVar[bool] = True  # val outputs are kept for pictures (mispredictions, residuals)
    seed_spread_first: ClassVar[bool] = False  # seeds differ beyond the per-example noise: measured first
    score_is_loss: ClassVar[bool] = (
        False  # z is computed on the loss (nats): verdicts show the val loss beside the metric
    )
    confirm_seeds: ClassVar[int] = 1  # tune: fresh seeds for the best trial when the spec leaves it null
    supports: ClassVar[frozenset[str]] = frozenset()  # the OPT_IN checks this task has a rule for
    skips: ClassVar[Mapping[str, str]] = {}  # check id -> why it does not apply, in the task's words

    # Val rows that are dependent within groups (crops of one photo, windows of one series), as
    # the data factory declared them (`groups`): standard errors are then taken over groups.
    val_groups: Optional[np.ndarray] = None

    def with_val_groups(self, groups: np.ndarray) -> "Task":
        """This task for one dataset whose val rows come in dependent groups (one id per row)."""
        twin = copy.copy(self)
        twin.val_groups = np.asarray(groups)
        return twin

    def __repr__(self) -> str:
        return f"<task {self.name}>"

    def __str__(self) -> str:  # in messages and JSON, a task is its name
        return self.name

    def spec_problem(self, *, source: str, loss: str) -> str:
        """What in a spec this task cannot work with (a data source, a loss), in one line; "" if none."""
        return ""

    def skip_reason(self, check: str) -> str:
        """Why `check` does not apply to this task ("" when it does)."""
        if check in self.skips:
            return self.skips[check]
        if check in OPT_IN and check not in self.supports:
            return SEQUENCE_ONLY if check in SEQUENCE_CHECKS else f"task {self.name} has no rule for {check}"
        return ""

    # ------------------------------------------------------------------ measures

    def example_scores(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per example, float64, on the outputs' device: the unit of paired comparisons."""
        raise NotImplementedError

    def meter(self, device: torch.device) -> Meter:
        raise NotImplementedError

    def errors(self, scores: np.ndarray) -> np.ndarray:
        """Per-example scores as errors (lower is better)."""
        return 1.0 - scores if self.higher_is_better else scores

    def val_halves(self, n: int, seed: int) -> Optional[tuple[np.ndarray, np.ndarray]]:
        """(select, confirm) masks over n val examples, whole blocks each (stats.halves): tune
        picks its best trial on one half and confirms it on the other. None where the metric
        cannot be read off a half's per-example scores."""
        blocks = self.blocks(n)
        return halves(np.arange(n) if blocks is None else blocks, seed)

    def blocks(self, n: int) -> Optional[np.ndarray]:
        """Block ids of n val examples when neighbours are dependent (standard errors are then
        taken over blocks: stats.block_var): the declared groups; None when the examples are
        independent."""
        if self.val_groups is not None and len(self.val_groups) == n:
            return self.val_groups
        return None

    def better_z(self, a: np.ndarray, b: np.ndarray, *, seeds: int = 1) -> float:
        """z for "A beats B" on the same val examples (scores averaged over `seeds` runs): a
        paired z on the per-example errors, over blocks where examples are dependent."""
        return paired_z(self.errors(a), self.errors(b), blocks=self.blocks(len(a)))

    def rank(self, mean_score: float) -> float:
        """Larger is better: to pick the best of several models by their mean score."""
        return mean_score if self.higher_is_better else -mean_score

    def metric_se(
        self, metric: float, n: int, *, scores: Optional[np.ndarray] = None, target_var: float = 1.0
    ) -> float:
        """Standard error of the metric measured on n examples (from the per-example `scores`
        where the task's metric needs them)."""
        raise NotImplementedError

    def metric_of(self, scores: np.ndarray, target_var: float = 1.0) -> float:
        """The metric from per-example val scores."""
        raise NotImplementedError

    def objective(self, metric: float) -> float:
        """tune's objective (maximised, always finite: importance needs finite values)."""
        raise NotImplementedError

    def loss_fn(self, name: str) -> Callable:
        """The built-in loss `name` (losses.BUILTIN) as this task's outputs and targets need it."""
        from nnrecipe.losses import BUILTIN

        return BUILTIN[name]

    def example_loss(self, name: str, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The built-in loss of each example (N,), averaged over its outputs where the loss is."""
        from nnrecipe.losses import per_example_loss

        return per_example_loss(name, out, y)

    def val_scalars(self, loss: float) -> dict[str, float]:
        """TensorBoard scalars of a val evaluation beyond its loss and metric."""
        return {}

    def train_goal(self, cfg) -> TrainGoal:
        """What fits-train asks of the training set."""
        raise NotImplementedError

    # ------------------------------------------------------------------ targets and data

    def num_outputs(self, data) -> int:
        """Outputs per example (per position, for a sequence)."""
        raise NotImplementedError

    def input_kind(self, input_shape: tuple[int, ...]) -> str:
        """How examples are drawn: (C, H, W) images, (C, L) signals, (D,) feature vectors."""
        return {3: "image", 2: "signal"}.get(len(input_shape), "tabular")

    def bundle_targets(self, y: torch.Tensor) -> torch.Tensor:
        """In-memory targets as the loss takes them."""
        return y

    def declared_outputs(
        self, declared: Optional[int], class_names, ys: list[torch.Tensor]
    ) -> tuple[Optional[int], int]:
        """(num_classes, target_dim) of in-memory targets (after bundle_targets)."""
        return None, 1

    def lazy_outputs(self, declared: Optional[int], class_names, splits: dict) -> tuple[Optional[int], int]:
        """(num_classes, target_dim) of Dataset splits, read only where the task needs it."""
        return None, 1

    def check_usable(self, data, where: str) -> None:
        """Raise DataError for data no stage can use (empty splits are refused before)."""

    def check_targets(self, data) -> None:
        """Raise DataError, one line, when a training stage cannot train on the targets (what
        inspect-data's label-range judges; it reports a fail verdict instead)."""

    def column_targets(self, values: np.ndarray, *, names: Optional[list[str]], field: str, path: Path):
        """(targets, class names) from one CSV column."""
        from nnrecipe.errors import DataError

        raise DataError(f"{field}: {path}: a {self.name} task does not read its targets from one CSV column")

    def array_targets(self, values: np.ndarray) -> torch.Tensor:
        """Targets from an npz array, as they are."""
        return torch.as_tensor(values)

    def synthetic_splits(self, args, generator: torch.Generator, counts: dict[str, int]):
        """(splits, class names, description) of `data.source: synthetic`."""
        from nnrecipe.errors import DataError

        raise DataError(f"data.source: synthetic makes no data for task {self.name}")

    def plugin_bundle(self, out: Mapping, spec, ref: str):
        """The DataBundle of a data factory's mapping: splits of (x, y) pairs (DESIGN.md)."""
        from nnrecipe.data.plugin import pairs_bundle

        return pairs_bundle(out, spec, ref, self)

    def label_range(self, m, cfg):
        """label-range: this task's rule for valid targets (a rule of checks/data_integrity)."""
        from nnrecipe.checks.data_integrity import label_range_skip

        return label_range_skip(m, self.skip_reason("label-range") or f"no target rule for task {self.name}")

    def class_balance(self, m, cfg):
        """class-balance: this task's rule for the shares of its labels (checks/data_distribution)."""
        from nnrecipe.checks.data_distribution import class_shares

        return class_shares(m, cfg)

    def share_counts(self, targets: np.ndarray, num_classes: int) -> np.ndarray:
        """Examples per class (per label) of a split's targets, for the class-balance picture."""
        from nnrecipe.probes.data_scan import class_counts

        return class_counts(targets, num_classes)

    def train_eval_split(self, data):
        """The split a train score is read on."""
        return data.train

    def output_shape(self, x: torch.Tensor, num_outputs: int) -> tuple[int, ...]:
        """What the model must return for the batch x."""
        return (len(x), num_outputs)

    def constant_output(self, values: np.ndarray, like: torch.Tensor) -> torch.Tensor:
        """One value per output (a bias) as the outputs of every example, shaped like `like`."""
        return torch.as_tensor(values, dtype=like.dtype).expand_as(like)

    def output_rows(self, out: torch.Tensor) -> torch.Tensor:
        """The outputs as rows of one prediction each (output-form, init measures)."""
        return out

    # ------------------------------------------------------------------ baselines and init

    def dumb_scores(self, data) -> np.ndarray:
        """Per val example, the score of the dumb predictor (`dumb_name`)."""
        raise NotImplementedError

    def dumb_metric(self, data, scores: np.ndarray) -> float:
        """The dumb predictor's val metric, for later stages' comparisons."""
        raise NotImplementedError

    def chance(self, data) -> float:
        """The val metric of predicting without looking at the input."""
        return 0.0

    def target_variance(self, data) -> float:
        """Var(y) on val where the metric divides by it; 1 otherwise."""
        return 1.0

    def linear_model(self, spec, data, fresh_model: Callable) -> nn.Module:
        """The linear baseline, built by `fresh_model(model_spec)` (the experiments' seed); of
        integer inputs (ids), a linear layer on their one-hot encoding (builtin.IdLinear)."""
        from nnrecipe.spec_sections import LinearModel

        if not data.structured and data.train.example(0)[0].is_floating_point():
            return fresh_model(LinearModel(arch="linear", init_final_bias=True))
        from nnrecipe.losses import loss_name
        from nnrecipe.models.builtin import id_linear, structured_linear

        model = structured_linear(data) if data.structured else id_linear(data)
        loss = loss_name(spec)
        bias = self.data_bias(
            self.default_loss if loss == "custom" else loss, data
        )  # it trains with the task's loss then
        if bias is not None:
            with torch.no_grad():
                model.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))
        return model

    def ideal_bias(
        self, loss: str, *, priors: Optional[np.ndarray] = None, target_mean: Optional[np.ndarray] = None
    ) -> Optional[np.ndarray]:
        """The final bias that makes a model with zero weights predict the training distribution."""
        return None

    def data_bias(self, loss: str, data) -> Optional[np.ndarray]:
        """ideal_bias from the training data."""
        return None

    def init_output_layer(self, model: nn.Module, data, loss: str) -> None:
        """Built-in models start with the final bias at `data_bias`."""
        from nnrecipe.models.init import set_final_bias

        bias = self.data_bias(loss, data)
        if bias is not None:
            set_final_bias(model, bias, data.num_outputs)

    def init_statistics(self, data, rows: torch.Tensor, out: torch.Tensor, loss: str) -> dict[str, Any]:
        """What init-well compares at init (InitMeasure fields), from the val outputs."""
        raise NotImplementedError

    def init_descriptions(self, loss: str) -> dict[str, str]:
        """The names of loss-at-init's references: "uniform" (zero outputs) and "prior"."""
        return {
            "uniform": {
                "cross_entropy": "-log(1/C)",
                "nll": "-log(1/C)",
                "bce": "log 2",
                "mse": "E[y^2] (zero output)",
                "huber": "huber(y) (zero output)",
            }.get(loss, "uniform"),
            "prior": {
                "cross_entropy": "entropy of the priors",
                "nll": "entropy of the priors",
                "bce": "binary entropy of the priors",
                "mse": "Var(y) (bias at the mean)",
                "huber": "huber(y - mean)",
            }.get(loss, "prior"),
        }

    def overfit_examples(self, y: torch.Tensor, k: int, num_outputs: int) -> list[int]:
        """Which k train examples overfit-one-batch memorises."""
        return list(range(min(k, len(y))))

    def overfit_target(self, y: torch.Tensor, target: float) -> float:
        """overfit-one-batch's margin above the batch's floor, on a batch with targets y."""
        return target

    def loss_floor(
        self, x: torch.Tensor, y: torch.Tensor, loss: str, *, receptive: Optional[int] = None, positional: bool = True
    ) -> LossFloor:
        """The lowest mean loss any model can reach on this very batch: above zero where
        identical inputs (or contexts) come with different targets."""
        return LossFloor(0.0, "")

    # ------------------------------------------------------------------ words and pictures

    def label_text(self, data, y) -> str:
        """A target as it prints under a picture."""
        return f"{float(torch.as_tensor(y).reshape(-1)[0]):.3g}"

    def short_label(self, data, y) -> str:
        """A target in a short caption."""
        return f"{float(torch.as_tensor(y).reshape(-1)[0]):.2g}"

    def label_name(self, data, label: float) -> str:
        """examples.csv's label_name column ("" when a label has no name)."""
        return ""

    def outlier_label(self, data, label: float) -> str:
        return f"{label:.3g}"

    def prediction_text(self, data, out: torch.Tensor, loss: str) -> str:
        """One example's output as it prints under a picture."""
        return f"{float(out.reshape(-1)[0]):.3g}"

    def dynamics(self, out: torch.Tensor, loss: str) -> np.ndarray:
        """Outputs on the fixed val batch as prediction_dynamics draws them."""
        return out.float().cpu().numpy()

    def class_probabilities(self, out: torch.Tensor, loss: str) -> torch.Tensor:
        """(N, C) class probabilities from class outputs, by the loss (suspected-label-errors)."""
        raise NotImplementedError

    def probe_wiring(
        self, m, model: nn.Module, data, xv: torch.Tensor, yv: torch.Tensor, loss_fn: Callable, cfg
    ) -> None:
        """The baseline's wiring probes on the untrained model and val examples: batch-independence
        (a next-token model adds its own, for SEQUENCE_CHECKS). Fills BaselineMeasurements `m`."""
        from nnrecipe import inputs
        from nnrecipe.probes.model_probes import batch_dependency
        from nnrecipe.probes.sequence_probes import NoEmbedding, batch_dependency_tokens

        small = inputs.index(xv, slice(0, min(8, len(yv))))
        if inputs.structured(small):  # float leaves directly, id leaves at their embeddings
            m.dependency = batch_dependency(model, small, m.dependency_rows)
            if m.dependency is None:
                m.dependency_skip = (
                    "no float input and no nn.Embedding reads an integer input: nothing to differentiate"
                )
            return
        if small.is_floating_point():
            m.dependency = batch_dependency(model, small, m.dependency_rows)
            return
        try:  # ids: differentiated at the outputs of the embeddings that read them
            m.dependency = batch_dependency_tokens(model, small, m.dependency_rows)
        except NoEmbedding:
            m.dependency_skip = (
                f"inputs are {str(xv.dtype).removeprefix('torch.')} ids and no nn.Embedding of the "
                "model reads them: nothing to differentiate"
            )

    def data_pictures(self, save, data) -> None:
        """inspect-data's pictures of this task's own (a FigureSaver `save`), beside the shared ones."""

    def baseline_pictures(self, ctx, stage: str, data, m, loss: str):
        """The baseline stage's pictures from its measurements (pictures/baseline.py)."""
        from nnrecipe.pictures import baseline

        return baseline.draw(ctx, stage, data, m, loss)

    def sampler(self, spec, data, device: torch.device) -> Optional[Callable]:
        """`(net, writer, step) -> text` the model writes from a prompt (a next-token model's
        prediction dynamics, at each evaluation), or None."""
        return None

    def dynamics_picture(self, steps: list[int], predictions: list[np.ndarray], truth: np.ndarray):
        """prediction_dynamics.png: each example's prediction over training against its target."""
        from nnrecipe import pictures

        return pictures.prediction_strip(steps, predictions, truth, distributions=False)

    def dynamics_image(self, prediction: np.ndarray, truth: np.ndarray) -> Optional[np.ndarray]:
        """The same at one evaluation as a TensorBoard image, where one applies."""
        return None

    def predicted_labels(self, out: torch.Tensor) -> Optional[torch.Tensor]:
        """The predicted label of each example, where there is one (ensemble disagreement)."""
        return None

    def augmented_predictions(self, out: torch.Tensor) -> torch.Tensor:
        """What the augment picture prints as the model's prediction."""
        return out

    def example_groups(self, targets: np.ndarray, k: int, max_groups: int, rng: np.random.Generator, data):
        """Rows of the examples grid, [(title, [(train index, caption)])]: k random examples
        per quartile of the (first) target."""
        t = targets.reshape(len(targets), -1)[:, 0]
        edges = np.nanquantile(t, [0, 0.25, 0.5, 0.75, 1.0])
        rows = []
        for lo, hi in zip(edges[:-1], edges[1:]):
            idx = np.nonzero((t >= lo) & (t <= hi))[0]
            pick: Union[np.ndarray, list[int]] = (
                rng.choice(idx, size=min(k, len(idx)), replace=False) if len(idx) else []
            )
            rows.append((f"y∈[{lo:.3g},{hi:.3g}]", [(int(i), f"#{int(i)} y={t[i]:.3g}") for i in pick]))
        return rows

    def per_output(
        self, outputs: torch.Tensor, targets: torch.Tensor, train_mean: np.ndarray, blocks=None
    ) -> Optional[dict]:
        """For several outputs judged as one: each output's val measures against its own dumb
        predictor ({"r2": [...], "z": [...]}); None where the task has one prediction per example."""
        return None

    def mispredictions(
        self, outputs: torch.Tensor, targets: torch.Tensor, *, num_classes: int, loss: str, class_name=str, k: int = 24
    ):
        """What the model gets wrong on val (probes.mispredictions), or None where no picture applies."""
        return None

    # ------------------------------------------------------------------ squeeze

    def ensemble_part(self, output: torch.Tensor, loss: str) -> torch.Tensor:
        """What an ensemble averages of one member's output."""
        return output

    def ensemble_prediction(self, mean: torch.Tensor) -> torch.Tensor:
        """The averaged parts as an output that scores and losses read like one member's."""
        return mean

    def distill_targets(self, teacher: torch.Tensor, y: torch.Tensor, cfg) -> tuple[torch.Tensor, Callable, Callable]:
        """(train targets carrying the ensemble's outputs, the student's loss on them, the plain
        loss that scores it) for distillation."""
        raise NotImplementedError
