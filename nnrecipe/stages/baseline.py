"""Stage 2, "set up the end-to-end training/evaluation skeleton + get dumb baselines".

run() reads top to bottom: set up, measure (the untrained model, the training experiments,
one batch overfit), judge, draw, record. Augmentation is always off here. summary.json's
`baselines` and val_scores.npz are what the overfit and regularize stages compare against.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from typing import Any, Callable

import numpy as np
import torch

from nnrecipe import inputs
from nnrecipe.checks.model_checks import (
    batch_independence,
    eval_deterministic,
    gradients_flow,
    init_well,
    loss_at_init,
    output_form,
    reproducible,
)
from nnrecipe.checks.plugin_checks import loss_broadcasting
from nnrecipe.checks.sequence_checks import causal_dependency, padding_invariance
from nnrecipe.checks.training_checks import (
    dumb_baselines,
    human_baseline,
    input_independent,
    loss_decreases,
    overfit_one_batch,
    train_eval_consistency,
)
from nnrecipe.data import build_data
from nnrecipe.engine import Engine
from nnrecipe.experiments import Experiment, Job, Logging, Trainer, TrainPlan, run_in_stage
from nnrecipe.handoff import data_fingerprint
from nnrecipe.losses import loss_name, make_loss
from nnrecipe.models import BUILTIN_ARCHS, larger_model_spec, prepare_model, seeded_model
from nnrecipe.optim import make_optimizer
from nnrecipe.pictures.saver import attach
from nnrecipe.probes import evaluating
from nnrecipe.probes.diagnosis import collapse, constant_loss, mode_gap, trained_collapse
from nnrecipe.probes.mask_probes import mask_leaf, mask_padding
from nnrecipe.probes.measurements import BaselineMeasurements
from nnrecipe.probes.model_probes import (
    InputCapture,
    dead_units,
    eval_twice,
    first_examples,
    gradient_step,
    loss_on_raw_targets,
    measure_init,
    overfit_batch,
)
from nnrecipe.runtime import seed_everything
from nnrecipe.stages.base import StageContext, StageResult

STAGE = "baseline"
CHECKS = (
    reproducible,
    loss_at_init,
    init_well,
    output_form,
    loss_broadcasting,
    dumb_baselines,
    input_independent,
    overfit_one_batch,
    loss_decreases,
    gradients_flow,
    batch_independence,
    eval_deterministic,
    train_eval_consistency,
    human_baseline,
)
TASK_CHECKS = {
    "causal-dependency": causal_dependency,
    "padding-invariance": padding_invariance,
}  # where Task.supports them
DYNAMICS_EXAMPLES = 16  # fixed val examples whose predictions are drawn over training
MODE_EXAMPLES = 256  # training examples the trained model is scored on in train and in eval mode
VAL_SCORES = "val_scores.npz"  # per-example val scores of every baseline experiment


@dataclasses.dataclass
class Setup:
    spec: Any
    ctx: StageContext
    data: Any
    loss_fn: Callable
    loss: str  # the loss's name
    engine: Engine
    untrained: Any = None  # the untrained model the wiring probes looked at

    def fresh_model(self, model_spec=None):
        """The spec's model (or `model_spec`), from the spec's seed: every experiment starts alike."""
        return seeded_model(self.spec, self.data, base=self.ctx.base, device=self.ctx.device, model_spec=model_spec)


def run(spec, ctx: StageContext) -> StageResult:
    s = _setup(spec, ctx)
    m = BaselineMeasurements(task=s.data.task, device_type=ctx.device.type, batch_size=spec.data.batch_size)
    m.reproducible = (_short_run(spec, ctx, s.loss_fn), _short_run(spec, ctx, s.loss_fn))
    xv, yv = _measure_untrained(s, m)
    _measure_training(s, m, xv, yv)
    _measure_overfit_batch(s, m)
    wanted = set(s.data.task.supports) | ({"padding-invariance"} if m.mask_key else set())  # masked inputs too
    checks = CHECKS + tuple(check for c, check in TASK_CHECKS.items() if c in wanted)
    verdicts = [check(m, spec.stages.baseline) for check in checks]
    arts = s.data.task.baseline_pictures(ctx, STAGE, s.data, m, s.loss)
    return StageResult(STAGE, attach(verdicts, arts), _record(s, m))


def _setup(spec, ctx: StageContext) -> Setup:
    data = ctx.device_data()
    return Setup(
        spec=spec,
        ctx=ctx,
        data=data,
        loss_fn=make_loss(spec, base=ctx.base),
        loss=loss_name(spec),
        engine=Engine.for_spec(spec.train, device=ctx.device, task=data.task),
    )


def _short_run(spec, ctx: StageContext, loss_fn) -> np.ndarray:
    """reproducible: the losses of a short run built from nothing but the spec (fresh data, fresh
    model), as a new process would."""
    seed_everything(spec.seed, deterministic=spec.train.deterministic)
    data = build_data(spec, base=ctx.base).to(ctx.device)
    model = prepare_model(spec, data, base=ctx.base).to(ctx.device)
    steps = spec.stages.baseline.reproducible_steps
    plan = TrainPlan(
        model=model,
        train=data.train,
        loss_fn=loss_fn,
        optimizer=make_optimizer(spec.optim, model.parameters()),
        steps=steps,
        batch_size=spec.data.batch_size,
        seed=spec.seed,
        log=Logging(label="reproducible", every=steps),
    )
    return Engine.for_spec(spec.train, device=ctx.device, task=data.task).train(plan).losses.double().numpy()


def _measure_untrained(s: Setup, m: BaselineMeasurements) -> tuple[torch.Tensor, torch.Tensor]:
    """The untrained model: loss at init, init well, output form, the wiring on one batch.
    Returns a fixed val batch (on the device)."""
    spec, data, device = s.spec, s.data, s.ctx.device
    model = s.fresh_model()
    builtin_init = spec.model.arch in BUILTIN_ARCHS and spec.model.init_final_bias
    m.init = measure_init(model, data, loss_name=s.loss, builtin_bias_init=builtin_init, predict=s.engine.predict)
    xv, yv = first_examples(data.val, 512, device=device)  # lazy splits live on the host
    small = min(8, len(yv))
    m.dependency_rows = sorted({0, small // 2, small - 1})
    data.task.probe_wiring(m, model, data, xv, yv, s.loss_fn, spec.stages.baseline)
    m.eval_diff, m.eval_scale = eval_twice(model, inputs.index(xv, slice(0, 64)))
    xt, yt = first_examples(data.train, spec.data.batch_size, device=device)
    probe = copy.deepcopy(model)
    m.grad = gradient_step(probe, xt, yt, s.loss_fn, make_optimizer(spec.optim, probe.parameters()))
    s.untrained = model  # dead units are judged on it and on the trained model (_measure_diagnoses)
    m.mask_key = mask_leaf(xv, spec.data.mask) or ""
    if m.mask_key:  # an attention mask: appending padding must not move the predictions
        shown = inputs.index(xv, slice(0, 64))
        m.mask_padding, m.padding_skip = mask_padding(model, shown, m.mask_key, pad=spec.stages.baseline.padding_tokens)
    _measure_loss_shapes(s, m, model, xt, yt)
    return xv, yv


def _measure_loss_shapes(s: Setup, m: BaselineMeasurements, model, x: torch.Tensor, y: torch.Tensor) -> None:
    """loss-broadcasting: the user's loss on the targets as the data holds them, where nnrecipe
    reshaped them (a loss that broadcasts trains here and stays broken in the user's script)."""
    raw = s.data.raw_target_shape
    if s.loss != "custom":
        m.broadcast_skip = f"the built-in loss ({s.loss}) is nnrecipe's: it takes the targets as nnrecipe shapes them"
    elif raw is None:
        m.broadcast_skip = "the targets reach the loss exactly as the data holds them"
    else:
        with evaluating(model), torch.no_grad():
            out = model(x)
        m.broadcast = loss_on_raw_targets(s.loss_fn, out, y, raw)


def _measure_training(s: Setup, m: BaselineMeasurements, xv: torch.Tensor, yv: torch.Tensor) -> None:
    """The model, the same model on zeroed inputs, a larger one, the linear baseline (one
    TensorBoard run each, so their curves overlay), and the dumb predictor; for the pictures,
    the batch that entered the model and the prediction dynamics on a fixed val batch. The
    three beside the model are independent of it: with --workers they train in the run's
    workers while the model trains here."""
    spec, data, ctx = s.spec, s.data, s.ctx
    cfg = spec.stages.baseline
    trainer = Trainer(ctx, stage=STAGE, steps=cfg.steps, every=cfg.eval_every)
    jobs = _beside_the_model(s)
    pending = trainer.submit(list(jobs.values()), parallel=len(jobs) > 1)
    shown = slice(0, DYNAMICS_EXAMPLES)
    record = DynamicsRecorder(s, ctx.writer(STAGE, "model"), inputs.index(xv, shown), yv[shown])
    model = s.fresh_model()
    capture = InputCapture(model, s.loss_fn)
    record.step(0, model)
    exp = Experiment(
        "model",
        spec,
        steps=cfg.steps,
        eval_every=min(cfg.eval_every, cfg.steps),
        model=model,
        loss_fn=capture.loss_fn,
        regularized=False,
        on_eval=record.step,
    )
    m.model = run_in_stage(ctx, STAGE, exp, data=data)
    capture.remove()
    m.input_x, m.input_y = capture.x, capture.y
    m.dynamics, m.dynamics_y = record.dynamics, record.y
    trained = dict(zip(jobs, pending.results()))
    m.zero_input, m.linear, m.larger = trained["zero-input"], trained["linear"], trained.get("larger")
    if m.larger is None:
        m.larger_skip = (
            "set stages.baseline.larger_model_args for your model"
            if spec.model.arch == "python"
            else f"no wider variant of {spec.model.arch}"
        )
    m.dumb_name, m.dumb_scores = data.task.dumb_name, data.task.dumb_scores(data)
    _measure_diagnoses(s, m, xv, yv)


def _beside_the_model(s: Setup) -> dict[str, Job]:
    """The model on zeroed inputs, a larger model (where there is one) and the linear baseline
    (a language model's: a bigram table), each from the spec's seed, without augmentation."""
    spec, alike = s.spec, {"regularized": False}
    jobs = {"zero-input": Job("zero-input", spec, spec.seed, more={**alike, "variant": "zero-input"})}
    bigger = larger_model_spec(spec)
    if bigger is not None:
        jobs["larger"] = Job("larger", spec.model_copy(update={"model": bigger}), spec.seed, more=alike)
    name = s.data.task.linear_name  # its val scores' name; its curves in tb/baseline/linear
    jobs["linear"] = Job(name, spec, spec.seed, more={**alike, "variant": "linear"}, folder="linear")
    return jobs


def _measure_diagnoses(s: Setup, m: BaselineMeasurements, xv: torch.Tensor, yv: torch.Tensor) -> None:
    """The trained model, looked at for why a check may fail: every output alike (collapse),
    and train mode against eval mode on training examples and on val."""
    # Train mode draws dropout masks: from the seed, not from whatever the runs before left in
    # this process's RNG (with --workers the baselines trained elsewhere and drew nothing here)
    seed_everything(s.spec.seed, deterministic=s.spec.train.deterministic)
    # measured before (_measure_untrained, _measure_training); a model trained here is kept in its result
    assert m.grad is not None and m.model is not None and m.model.model is not None
    data, model = s.data, m.model.model
    m.collapse = trained_collapse(m.model, task=data.task, loss=s.loss, x=xv, y=yv)
    m.grad.dead = dead_units(s.untrained, xv, after=model)  # dead at init and still after the baseline's training
    if s.loss == "custom":
        m.modes_skip = "a per-example loss is needed to compare the modes: a built-in loss (loss.name)"
        return
    xt, yt = first_examples(data.train, MODE_EXAMPLES, device=s.ctx.device)
    constant = constant_loss(data.task, xt, yt, s.loss)
    per_example = functools.partial(data.task.example_loss, s.loss)
    m.modes = mode_gap(model, xt, yt, per_example, constant=constant)
    m.modes_val = mode_gap(model, xv, yv, per_example, constant=constant)


class DynamicsRecorder:
    """Prediction dynamics: at every evaluation, what the model predicts for a fixed val batch
    (or, for a next-token model, writes from its prompt)."""

    def __init__(self, s: Setup, writer, x: torch.Tensor, y: torch.Tensor):
        self.s, self.writer, self.x, self.y = s, writer, x, y
        self.sampler = s.data.task.sampler(s.spec, s.data, s.ctx.device)
        self.dynamics: list = []

    def step(self, step: int, net, result=None) -> None:
        if self.sampler is not None:
            self.dynamics.append((step, self.sampler(net, self.writer, step)))
            return
        with evaluating(net), torch.no_grad():
            pred = self.s.data.task.dynamics(net(self.x).float(), self.s.loss)
        self.dynamics.append((step, pred))
        image = self.s.data.task.dynamics_image(pred, self.y.cpu().numpy())
        if image is not None:
            self.writer.add_image("prediction_dynamics", image, step)


def _measure_overfit_batch(s: Setup, m: BaselineMeasurements) -> None:
    """A few train examples (the task picks them: one per class in turn) memorised by Adam."""
    cfg, data, device = s.spec.stages.baseline, s.data, s.ctx.device
    idx = data.task.overfit_examples(data.targets("train"), cfg.overfit_examples, data.num_outputs)
    pairs = [data.train.example(i) for i in idx]
    xo = inputs.to(inputs.stack([p[0] for p in pairs]), device)
    yo = torch.stack([torch.as_tensor(p[1]) for p in pairs]).to(device)
    # A batch may not allow zero: identical inputs (a next-token model: identical contexts as far
    # back as it reads) followed by different targets. The target is that floor plus the margin.
    p = m.perturb
    floor = data.task.loss_floor(
        xo, yo, s.loss, receptive=p.receptive if p else None, positional=p.positional if p else True
    )
    model = s.fresh_model()
    m.overfit = overfit_batch(
        model,
        xo,
        yo,
        s.loss_fn,
        steps=cfg.overfit_steps,
        lr=cfg.overfit_lr,
        target=floor.value + data.task.overfit_target(yo, cfg.overfit_target),
    )
    m.overfit.floor = floor
    if m.overfit.final_loss > m.overfit.target_loss:  # why not: every output alike?
        m.overfit.collapse = collapse(
            m.overfit.losses,
            constant=constant_loss(data.task, xo, yo, s.loss),
            model=model,
            x=xo,
            earlier=m.overfit.train_curve,
        )
    m.overfit_x, m.overfit_y = xo, yo


def _record(s: Setup, m: BaselineMeasurements) -> dict:
    """val_scores.npz (later stages compare with the baselines pairwise, on the same examples)
    and the summary."""
    data, spec = s.data, s.spec
    # run() measured them all before; the model was trained here, so it carries its evaluations
    assert m.model is not None and m.model.val_eval is not None and m.dumb_scores is not None
    assert m.init is not None and m.overfit is not None
    scores = {e.name: e.val_scores for e in (m.model, m.zero_input, m.linear, m.larger) if e is not None}
    s.ctx.run.write_arrays(STAGE, VAL_SCORES, {**scores, m.dumb_name: m.dumb_scores})
    metric = m.model.val_eval.metric_name
    return {
        "task": data.task.name,
        "data_fingerprint": data_fingerprint(data),
        "val_scores": VAL_SCORES,
        "loss": s.loss,
        "metric": metric,
        "steps": spec.stages.baseline.steps,
        "val_n": m.model.val_eval.n,
        "baselines": {
            m.dumb_name: {
                f"val_{metric}": data.task.dumb_metric(data, m.dumb_scores),
                "val_scores_mean": float(np.mean(m.dumb_scores)),
            },
            "linear": m.linear.summary() if m.linear else None,
            "zero-input": m.zero_input.summary() if m.zero_input else None,
        },
        "model": m.model.summary(),
        "larger": m.larger.summary() if m.larger else None,
        "loss_at_init": {
            "observed": float(np.mean(m.init.val_losses)) if m.init.val_losses is not None else None,
            "reference": m.init.reference,
        },
        "train_priors": m.init.train_priors.tolist() if m.init.train_priors is not None else None,
        "target_mean": m.init.target_mean.tolist() if m.init.target_mean is not None else None,
        "overfit_one_batch": {"final_loss": m.overfit.final_loss, "steps": m.overfit.steps_run},
        "human_accuracy": spec.stages.baseline.human_accuracy,
    }
