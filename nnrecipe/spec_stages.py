"""Per-stage settings of the spec (`stages.<name>`): thresholds and options, with their defaults."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

from pydantic import Field, model_validator

from nnrecipe.spec_sections import ModelSpec, Section

Positive = Annotated[float, Field(gt=0.0)]
Fraction01 = Annotated[float, Field(ge=0.0, le=1.0)]


class InspectDataSpec(Section):
    # split-sizes: with n val examples the 95% CI of an accuracy near 0.5 is about ±1/sqrt(n);
    # below 100 examples that is ±10 points, too coarse to tell most changes apart.
    min_val_size: Annotated[int, Field(ge=1)] = 100
    # duplicates: warn when more than this fraction of train examples are extra copies.
    max_duplicate_fraction: Fraction01 = 0.0
    # split-leakage: fail when more than this fraction of val/test examples also occur in train.
    max_leak_fraction: Fraction01 = 0.0
    # conflicting-labels: warn on any; fail when this fraction of examples sit in conflicting groups.
    conflict_fail_fraction: Fraction01 = 0.01
    # class-balance: warn when the largest/smallest class count ratio in train passes this.
    imbalance_warn_ratio: Annotated[float, Field(ge=1.0)] = 10.0
    # class-balance: warn when val priors differ from train priors beyond sampling noise
    # (chi-square test); a p-value under this is not chance.
    prior_shift_p: Annotated[float, Field(gt=0.0, lt=1.0)] = 1e-4
    # input-scale: per channel/feature at the model's entry; standardized data has mean 0, std 1.
    scale_max_abs_mean: Positive = 3.0
    scale_min_std: Positive = 0.05
    scale_max_std: Positive = 10.0
    # outliers: robust z-score (median, a scale per side from the 1st/99th percentiles) of
    # per-example statistics; warn when more than
    # `outlier_max_fraction` of train examples lie beyond `outlier_z`.
    outlier_z: Positive = 8.0
    outlier_max_fraction: Fraction01 = 0.001
    # pictures
    examples_per_class: Annotated[int, Field(ge=1, le=32)] = 8
    outliers_per_axis: Annotated[int, Field(ge=1, le=16)] = 6
    # inspect-data --model: a trained model's val metric here below the one it was trained
    # to by this many standard errors fails model-on-data.
    model_drop_z: Positive = 3.0
    max_classes_in_grid: Annotated[int, Field(ge=1, le=100)] = 20
    # Language models (text). duplicate-windows: the share of val windows (context + 1 tokens)
    # found verbatim anywhere in the train text; natural text repeats a few passages (CPython's
    # docs: ~0.3% of 65-character windows), a document in both splits repeats most of it.
    window_leak_warn: Fraction01 = 0.01
    window_leak_fail: Fraction01 = 0.1
    # vocabulary: val tokens never seen in train (the model cannot have learnt to predict them).
    max_unseen_fraction: Fraction01 = 0.001
    # non-printable: control characters other than newline and tab (stray \r of CRLF files, \x00,
    # form feeds), as a share of all characters.
    max_nonprintable_fraction: Fraction01 = 1e-4

    @model_validator(mode="after")
    def _std_range(self):
        if self.scale_min_std >= self.scale_max_std:
            raise ValueError("scale_min_std must be below scale_max_std")
        return self


class BaselineSpec(Section):
    # Each training experiment of the stage (the model, zero inputs, a larger model, the linear
    # baseline) runs this many optimizer steps with the spec's optimizer and batch size.
    steps: Annotated[int, Field(ge=10)] = 500
    eval_every: Annotated[int, Field(ge=1)] = 100
    # reproducible: two short runs from scratch; bitwise on CPU, this relative tolerance on CUDA.
    reproducible_steps: Annotated[int, Field(ge=1)] = 20
    cuda_rtol: Positive = 1e-4
    # Paired comparisons on the val set (McNemar for accuracy, a paired z for squared error):
    # a difference counts when it is this many standard errors from zero.
    significance_z: Positive = 3.0
    # loss-at-init: |observed - expected| <= significance_z * SE + init_allowance * expected.
    # The allowance covers the spread of randomly initialised outputs around the bias: logits
    # of std s raise a cross-entropy by about s^2/2, so 0.25 * log(10) allows s ~ 1.
    init_allowance: Annotated[float, Field(ge=0.0)] = 0.25
    # init-well: KL(train priors || mean predicted distribution at init), in nats; regression:
    # |mean prediction - target mean| in target stds.
    init_kl_warn: Positive = 0.1
    init_kl_fail: Positive = 1.0
    init_mean_warn: Positive = 0.5
    # overfit-one-batch: a few examples, a higher LR, until the loss (eval mode) is this low;
    # regression: relative to the batch's target variance.
    overfit_examples: Annotated[int, Field(ge=2, le=256)] = 8
    overfit_steps: Annotated[int, Field(ge=10)] = 500
    overfit_lr: Positive = 1e-3
    overfit_target: Positive = 0.05
    # Above the target at the end but its excess over the floor shrank to at most this share over
    # the last fifth of the steps: still learning (warn), not stuck (fail).
    overfit_falling_ratio: Fraction01 = 0.5
    # loss-decreases: user models are made larger by merging these into model.args
    # (built-ins double their widths); None skips the larger-model comparison for user models.
    larger_model_args: Optional[dict[str, Any]] = None
    # loss-broadcasting: the user's loss on targets as the data holds them vs. as nnrecipe shapes
    # them, relative difference (the same operations on the same numbers: float noise at most)
    loss_shape_rtol: Positive = 1e-5
    # gradients-flow
    ignore_params: list[str] = []  # parameter-name prefixes that may legitimately get no gradient
    vanish_ratio: Positive = 1e-3  # RMS grad of the first weight / RMS grad of the last weight
    explode_norm: Positive = 1e4  # global gradient norm after one batch
    dead_unit_warn: Fraction01 = 0.5  # fraction of ReLU units never positive over a val batch
    # human-baseline: compared when given (classification accuracy in [0, 1]).
    human_accuracy: Optional[Fraction01] = None
    # Language models. causal-dependency: the gradient of output t on the embeddings after t,
    # relative to the largest on those up to t (exactly 0 for a causal model; the tolerance
    # covers fused GPU kernels), at this many positions; and the share of targets equal to the
    # input k = 0, 1, 2 positions earlier, which for correctly shifted windows is the inputs' own
    # repeat rate at distance k + 1: a fail needs it above that rate by leak_excess beyond both
    # 95% intervals (unshifted windows: 1.0 against ~0.1 on English text).
    causal_rtol: Positive = 1e-6
    # Models with no nn.Embedding are tested by changing tokens: an output may move by at most
    # this much, relative to the outputs' largest value (float32 noise), when a token it must
    # not read changes (causal-dependency; batch-independence across windows).
    perturb_rtol: Positive = 1e-5
    causal_positions: Annotated[int, Field(ge=2)] = 8
    leak_excess: Fraction01 = 0.2
    # padding-invariance: this many padding positions (targets ignore_index) appended to
    # shortened windows may change the loss by at most padding_rtol, relative.
    padding_tokens: Annotated[int, Field(ge=1)] = 8
    padding_rtol: Positive = 1e-4


class LRRangeSpec(Section):
    # An exponential sweep from min_lr to max_lr over `steps` optimizer steps on a fresh model;
    # it stops early once the smoothed loss passes `diverge_factor` x its best (or is NaN).
    enabled: bool = False  # also: nnrecipe overfit --lr-range
    steps: Annotated[int, Field(ge=20)] = 300
    min_lr: Positive = 1e-7
    max_lr: Positive = 10.0
    diverge_factor: Annotated[float, Field(gt=1.0)] = 4.0
    smoothing: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.9  # exponential moving average of the loss

    @model_validator(mode="after")
    def _range(self):
        if self.min_lr >= self.max_lr:
            raise ValueError("min_lr must be below max_lr")
        return self


class OverfitSpec(Section):
    # The stage's own model (e.g. larger than the spec's); None: the spec's model.
    model: Optional[ModelSpec] = None
    steps: Optional[Annotated[int, Field(ge=1)]] = None  # None: train.steps
    eval_every: Optional[Annotated[int, Field(ge=1)]] = None  # None: train.eval_every
    # fits-train, on the whole train split in eval mode at the end of training.
    target_train_accuracy: Fraction01 = 0.99  # classification
    target_train_r2: Fraction01 = 0.95  # regression: 1 - MSE / Var(y) on train
    # language-model: the train loss in bits per token (a char-level English unigram model gives
    # ~4.5, small transformers ~1.5-2 after minutes on a CPU; memorising the text gives ~0).
    target_train_bits: Positive = 2.5
    # beats-baselines: paired comparison on val against baseline/val_scores.npz.
    significance_z: Positive = 3.0
    # lr-schedule: fail when the applied LR falls below `lr_min_fraction` of its start before
    # `lr_min_progress` of the steps are done; a decaying schedule at all is a warn here.
    lr_min_fraction: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.1
    lr_min_progress: Annotated[float, Field(gt=0.0, le=1.0)] = (
        0.75  # a full cosine reaches 10% at 80%: a warn, not a fail
    )
    lr_range: LRRangeSpec = LRRangeSpec()
    # "Complexify only one at a time": model variants trained in order, each with the same
    # budget; each must end with a lower training loss than the rung before.
    ladder: list[ModelSpec] = []
    ladder_steps: Optional[Annotated[int, Field(ge=1)]] = None  # None: the stage's steps


class KnobsSpec(Section):
    """The regularize stage's experiments: each knob that is set is one training run against the
    reference (the overfit stage's model), with the same seed and budget; null turns it off."""

    augment: bool = True  # train with data.augment (skipped, saying so, when the list is empty)
    dropout: Optional[Annotated[float, Field(gt=0.0, lt=1.0)]] = (
        0.2  # built-ins' args.dropout; user factories that take `dropout`
    )
    weight_decay: Optional[Positive] = (
        1e-3  # optim.weight_decay (L2 added to the gradient for adam/sgd, decoupled for adamw)
    )
    batch_size: Optional[Annotated[int, Field(ge=1)]] = None  # a smaller batch: noisier gradients
    downsample: Optional[Annotated[int, Field(ge=2)]] = None  # smaller input: data.downsample (images, signals)
    smaller_model: Optional[Annotated[float, Field(gt=0.0, lt=1.0)]] = None  # built-ins: widths x this
    larger_model: Optional[Annotated[float, Field(gt=1.0)]] = None  # built-ins: widths x this, with early stopping
    smaller_model_args: Optional[dict[str, Any]] = None  # user models: merged into model.args instead
    larger_model_args: Optional[dict[str, Any]] = None
    pretrained: Optional[str] = None  # a local state dict: model.pretrained
    early_stopping: bool = True  # patience on val loss (free: read off the reference run)


class LabelErrorsSpec(Section):
    """suspected-label-errors: out-of-fold predictions over the training split (confident learning)."""

    enabled: bool = True  # classification only
    folds: Annotated[int, Field(ge=2, le=20)] = 4  # each fold model trains on (folds-1)/folds of train
    steps: Optional[Annotated[int, Field(ge=1)]] = None  # per fold model; None: the stage's budget
    # Warn when the suspects' share of the training set is above this beyond noise (the lower
    # end of its 95% Wilson interval). Curated benchmarks hold ~0.1-3% label errors (Northcutt
    # et al. 2021); a clean dataset still yields a few suspects: the genuinely ambiguous examples.
    max_rate: Fraction01 = 0.05
    show: Annotated[int, Field(ge=0, le=64)] = 24  # suspects drawn in the picture


class DataScalingSpec(Section):
    """data-scaling: the reference trained on nested random subsets of the training set."""

    enabled: bool = True
    fractions: list[Annotated[float, Field(gt=0.0, lt=1.0)]] = [0.25, 0.5]  # besides the whole set (the reference run)

    @model_validator(mode="after")
    def _increasing(self):
        if self.fractions != sorted(set(self.fractions)):
            raise ValueError("fractions must be distinct and increasing")
        return self


class RegularizeSpec(Section):
    knobs: KnobsSpec = KnobsSpec()
    label_errors: LabelErrorsSpec = LabelErrorsSpec()
    data_scaling: DataScalingSpec = DataScalingSpec()
    steps: Optional[Annotated[int, Field(ge=1)]] = None  # None: the overfit stage's budget
    eval_every: Optional[Annotated[int, Field(ge=1)]] = None  # None: the overfit stage's
    # early stopping: evaluations in a row without a lower val loss before stopping.
    patience: Annotated[int, Field(ge=1)] = 3
    # A knob's difference from the reference counts when it is this many standard errors from
    # zero (paired over val examples: McNemar for accuracy, paired z for squared error).
    significance_z: Positive = 3.0
    # When the first seed's difference is within noise, the reference and the knob are both
    # re-trained with further seeds, up to this many in all, and compared on their
    # seed-averaged per-example scores (less seed noise, same val examples).
    seeds: Annotated[int, Field(ge=1, le=10)] = 3
    # generalization-gap: train minus val metric (accuracy or R^2) above this, beyond noise, warns
    # unless the best configuration closed it significantly.
    max_gap: Fraction01 = 0.1
    # augment-preserves-labels: the reference model's above-chance accuracy on augmented val as
    # a fraction of that on clean val; below `augment_fail_retention` fails, below `_warn_` warns.
    augment_fail_retention: Fraction01 = 0.5
    augment_warn_retention: Fraction01 = 0.8
    verify_combined: bool = True  # train the combination of the knobs that helped once more

    @model_validator(mode="after")
    def _retention_order(self):
        if self.augment_fail_retention > self.augment_warn_retention:
            raise ValueError("augment_fail_retention must not exceed augment_warn_retention")
        return self


class DistillSpec(Section):
    enabled: bool = True
    model: Optional[ModelSpec] = None  # the student; None: the members' architecture
    # Hinton et al. 2015: soft targets softmax(log p_ensemble / T); the soft loss is scaled by T^2
    # so its gradients keep their size as T changes.
    temperature: Positive = 4.0
    alpha: Fraction01 = 0.9  # weight of the soft-target loss; 1 - alpha goes to the hard labels
    steps: Optional[Annotated[int, Field(ge=1)]] = None  # None: the members' budget


class LongerSpec(Section):
    enabled: bool = True
    extra_steps: Optional[Annotated[int, Field(ge=1)]] = None  # None: as many again as the members trained
    # The reloaded checkpoint must reproduce the val loss recorded when it was saved, within
    # this relative tolerance (CPU runs reproduce bit for bit; CUDA kernels may not).
    reload_rtol: Annotated[float, Field(ge=0.0)] = 1e-5


class SqueezeSpec(Section):
    # Where to start: "auto" takes tune/best.yaml from the run directory when it exists, else
    # regularize/best.yaml, else this spec; "spec" always this spec.
    start: Literal["auto", "spec"] = "auto"
    members: Annotated[int, Field(ge=2, le=50)] = 5  # ensemble size: seeds seed, seed+1, ...
    steps: Optional[Annotated[int, Field(ge=1)]] = None  # None: the starting spec's train.steps
    eval_every: Optional[Annotated[int, Field(ge=1)]] = None  # None: the starting spec's
    significance_z: Positive = 3.0  # paired over val examples, as everywhere
    distill: DistillSpec = DistillSpec()
    longer: LongerSpec = LongerSpec()


Scalar = Union[bool, int, float, str, None]
# Module-level: inside SpaceDim the field named `int` hides the builtin.
FloatPair = tuple[float, float]
PositivePair = tuple[Positive, Positive]
IntPair = tuple[int, int]
PositiveIntPair = tuple[Annotated[int, Field(ge=1)], Annotated[int, Field(ge=1)]]


class SpaceDim(Section):
    """One dimension of the tune stage's search space: exactly one of these keys."""

    uniform: Optional[FloatPair] = None  # [low, high], sampled uniformly
    log_uniform: Optional[PositivePair] = None  # [low, high], uniform in log space (LRs, weight decay)
    int: Optional[IntPair] = None  # [low, high], integers, both ends included
    log_int: Optional[PositiveIntPair] = None  # integers, log-uniform
    choice: Optional[list[Scalar]] = None  # one of these values (numbers, strings, booleans)

    @model_validator(mode="after")
    def _one_kind(self):
        given = [k for k in ("uniform", "log_uniform", "int", "log_int", "choice") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of uniform, log_uniform, int, log_int, choice"
                + (f" (got {', '.join(given)})" if given else "")
            )
        kind = given[0]
        if kind == "choice":
            if not self.choice:
                raise ValueError("choice: an empty list; give at least one value")
            if len(set(map(repr, self.choice))) != len(self.choice):
                raise ValueError("choice: a value is listed twice")
        else:
            low, high = getattr(self, kind)
            if not low < high:
                raise ValueError(f"{kind}: low {low:g} must be below high {high:g}")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in ("uniform", "log_uniform", "int", "log_int", "choice") if getattr(self, k) is not None)


class TuneSpec(Section):
    # Random search (Bergstra & Bengio 2012) over any spec fields, by dotted path, e.g.
    # {optim.lr: {log_uniform: [1e-4, 1e-2]}, data.batch_size: {choice: [32, 64, 128]}}.
    # Trial 0 is always the starting point (regularize/best.yaml, else the spec) where its
    # values lie inside the space, so the search is measured against where it started.
    space: dict[str, SpaceDim] = {"optim.lr": SpaceDim(log_uniform=(1e-4, 1e-2))}
    trials: Annotated[int, Field(ge=2, le=10000)] = 20  # finished trials (complete + pruned), across all workers
    sampler: Literal["random", "tpe"] = "random"  # tpe: Optuna's TPE after its random start-up trials
    steps: Optional[Annotated[int, Field(ge=1)]] = None  # per trial; None: the starting spec's train.steps
    eval_every: Optional[Annotated[int, Field(ge=1)]] = None  # None: the starting spec's
    # Pruning stops a trial whose intermediate val metric is worse than the median of earlier
    # trials at the same step (median), or by successive halving (halving); none: every trial runs its budget.
    pruner: Literal["median", "halving", "none"] = "median"
    prune_warmup: Fraction01 = 0.25  # share of a trial's steps before it can be pruned (median)
    start: Literal["auto", "spec"] = "auto"  # auto: regularize/best.yaml when it exists
    # Where the study lives: null is a journal file in the run directory (tune/study.journal,
    # safe for --workers on one machine); a database URL (postgresql://user@host/db) shares
    # one study between machines; a path is a journal file elsewhere (e.g. on a shared disk).
    storage: Optional[str] = None
    study: Optional[Annotated[str, Field(min_length=1, max_length=200)]] = None  # null: the spec's name
    # local processes on one study; None: the run's workers (--workers)
    workers: Optional[Annotated[int, Field(ge=1, le=64)]] = None
    # RDB storages: a worker's trial whose heartbeat stops for `grace_period` seconds is failed
    # and run again by another worker (a killed machine loses no trial).
    heartbeat_interval: Annotated[int, Field(ge=1)] = 10
    grace_period: Annotated[int, Field(ge=2)] = 60
    # tune-improves: the best trial and the starting point, re-trained with a fresh seed (the
    # best of N on one seed is flattered by that seed), paired over val examples.
    significance_z: Positive = 3.0
    # Fresh seeds for that confirmation, each side. None: 1, and 3 for a language model, whose
    # seeds differ far beyond the per-window noise: with two or more, the spread between seeds
    # is measured and counts as noise too.
    confirm_seeds: Optional[Annotated[int, Field(ge=1, le=10)]] = None
    # sensitivity: each parameter's leave-one-out R^2 of the val metric against its
    # distribution with the metric shuffled across trials; a parameter matters at
    # p <= sensitivity_p (family-wise: the null is the maximum over parameters).
    permutations: Annotated[int, Field(ge=19, le=9999)] = 999
    sensitivity_p: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.05
    # search-coverage: the largest stretch of a dimension without a usable trial, against the
    # largest gap random sampling leaves with probability coverage_p.
    coverage_p: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.01

    @model_validator(mode="after")
    def _space(self):
        if not self.space:
            raise ValueError("space: empty; give at least one dimension, e.g. {optim.lr: {log_uniform: [1e-4, 1e-2]}}")
        # a permutation p-value is at least 1/(permutations + 1): below it nothing could ever matter
        if self.sensitivity_p < 1.0 / (self.permutations + 1):
            raise ValueError(
                f"sensitivity_p {self.sensitivity_p:g} is below 1/(permutations + 1) = "
                f"{1.0 / (self.permutations + 1):.2g}, the smallest p {self.permutations} permutations can give: "
                "no parameter could ever matter; raise permutations or sensitivity_p"
            )
        return self


class StagesSpec(Section):
    inspect_data: InspectDataSpec = InspectDataSpec()
    baseline: BaselineSpec = BaselineSpec()
    overfit: OverfitSpec = OverfitSpec()
    regularize: RegularizeSpec = RegularizeSpec()
    tune: TuneSpec = TuneSpec()
    squeeze: SqueezeSpec = SqueezeSpec()
