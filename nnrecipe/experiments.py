"""What the stages share about training: the plan the engine trains, the experiment a stage
describes (a spec, a budget, a seed), and the one result of training it.

- `TrainPlan`: everything the engine's loop needs for one run (model, data, optimizer, how long,
  evaluation, checkpoints, logging, early stopping) in one object.
- `Experiment`: a model trained the spec's way (its optimizer, schedule, batch size and, unless
  a stage turns them off, its augmentation and early stopping) for a budget at a seed.
- `run_experiment`: Experiment -> `Result`, the trained model scored on whole splits; `Trainer`
  does the same for a stage (its TensorBoard folders, its data per spec variant).
- `SeedRuns`: one configuration's results at one seed or more, as the seed-aware rules read them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np
import torch
from torch import nn

from nnrecipe.data.bundle import Split
from nnrecipe.engine import Engine
from nnrecipe.ledger import Ran, here, record
from nnrecipe.loop import EarlyStopping, EvalResult, History, load_checkpoint

# ----------------------------------------------------------------------------- the engine's plan


@dataclasses.dataclass(frozen=True)
class Checkpoints:
    """Where a run writes its checkpoints, and the one it continues from."""

    last: Optional[Path] = None  # written at every evaluation, with all an exact resume needs
    best: Optional[Path] = None  # the lowest val loss seen: val is judged there (run_experiment)
    key: str = ""  # identifies the experiment: a checkpoint with another key is never resumed
    resume: Optional[dict] = None  # a checkpoint of this experiment to continue (loop.resumable)


@dataclasses.dataclass(frozen=True)
class Logging:
    writer: Any = None  # a TensorBoard SummaryWriter
    progress: Any = None  # a rich Progress
    label: str = ""  # the progress bar's name (default: the tag)
    tag: str = "train"  # TensorBoard scalar prefix: equal across sibling experiments, so curves overlay
    every: int = 50  # steps between reads of the loss (one device sync each)
    histograms: bool = False  # weights and gradients at each evaluation


@dataclasses.dataclass(frozen=True)
class TrainPlan:
    """One training run for `Engine.train`: what to train, on which data, for how long, with
    which evaluation, checkpoints, logging and early stopping."""

    model: nn.Module
    train: Split
    loss_fn: Callable
    optimizer: torch.optim.Optimizer
    steps: int  # optimizer steps
    batch_size: int
    seed: int  # the batch order
    val: Optional[Split] = None
    scheduler: Any = None  # an LRScheduler, stepped once per optimizer step
    eval_every: int = 0  # steps between val evaluations (and the last step); 0: none
    grad_clip: Optional[float] = None
    augment: Optional[Callable] = None  # (x, y) -> (x, y) on each training batch, on the device
    early_stopping: Optional[EarlyStopping] = None  # watches each evaluation
    stop_early: bool = True  # end training when its patience runs out (else it only watches)
    # (step, model, EvalResult) after each evaluation; True ends training there (a pruned trial)
    on_eval: Optional[Callable] = None
    checkpoints: Checkpoints = Checkpoints()
    log: Logging = Logging()

    @classmethod
    def for_spec(
        cls,
        spec,
        *,
        model: nn.Module,
        train: Split,
        val: Optional[Split],
        loss_fn: Callable,
        steps: int,
        base: Path,
        seed: Optional[int] = None,
        **more,
    ) -> "TrainPlan":
        """The spec's optimizer, schedule, batch size, seed (unless given) and gradient clipping."""
        from nnrecipe.optim import make_optimizer, make_scheduler

        optimizer = make_optimizer(spec.optim, model.parameters())
        return cls(
            model=model,
            train=train,
            val=val,
            loss_fn=loss_fn,
            optimizer=optimizer,
            scheduler=make_scheduler(optimizer, spec.optim.schedule, total_steps=steps, base=base),
            steps=steps,
            batch_size=spec.data.batch_size,
            seed=spec.seed if seed is None else seed,
            grad_clip=spec.optim.grad_clip,
            **more,
        )


# ----------------------------------------------------------------------------- the result


@dataclasses.dataclass
class Result:
    """One trained model scored on train and val. The first fields are its record (what the
    rules read, and what squeeze keeps on disk); the rest exist in memory where it was trained."""

    seed: int
    val_scores: np.ndarray  # per val example, the task's score (correct, squared error, nats)
    val_loss: float
    val_metric: float
    train_loss: float
    train_metric: float
    steps: int
    diverged: bool
    evals: list[tuple[int, float, float]]  # (step, val loss, val metric) along training
    stopped_at: Optional[int] = None  # early stopping: the step whose weights were kept
    name: str = ""
    history: Optional[History] = dataclasses.field(default=None, repr=False)
    train_eval: Optional[EvalResult] = dataclasses.field(default=None, repr=False)
    val_eval: Optional[EvalResult] = dataclasses.field(
        default=None, repr=False
    )  # with outputs where the task keeps them
    model: Optional[nn.Module] = dataclasses.field(default=None, repr=False)
    early: Optional["Result"] = dataclasses.field(
        default=None, repr=False
    )  # watched: the weights early stopping keeps, scored
    early_state: Optional[dict] = dataclasses.field(default=None, repr=False)  # ... and those weights (host copies)
    # The step of the weights each number was measured on: val at the best checkpoint where there
    # is one, train at the last step (both at the kept step when early stopping restored weights).
    val_step: Optional[int] = None
    train_step: Optional[int] = None
    # when it trained (time.time() where it trained, s: its group's, when trained as one), for the
    # stage's timeline (ledger.py)
    wall: Optional[tuple[float, float]] = dataclasses.field(default=None, repr=False)

    RECORD = (
        "seed",
        "val_loss",
        "val_metric",
        "train_loss",
        "train_metric",
        "steps",
        "diverged",
        "evals",
        "stopped_at",
        "val_step",
        "train_step",
    )

    @classmethod
    def scored(
        cls,
        name: str,
        seed: int,
        history: History,
        train_eval: EvalResult,
        val_eval: EvalResult,
        *,
        stopped_at: Optional[int] = None,
        val_step: Optional[int] = None,
        **more,
    ) -> "Result":
        train_step = stopped_at if stopped_at is not None else history.steps_run
        return cls(
            seed=seed,
            val_scores=kept_scores(val_eval),
            val_loss=val_eval.loss,
            val_metric=val_eval.metric,
            train_loss=train_eval.loss,
            train_metric=train_eval.metric,
            steps=history.steps_run,
            diverged=history.diverged,
            evals=[(s, r.loss, r.metric) for s, r in history.evals],
            stopped_at=stopped_at,
            name=name,
            history=history,
            train_eval=train_eval,
            val_eval=val_eval,
            val_step=train_step if val_step is None else val_step,
            train_step=train_step,
            **more,
        )

    def record(self) -> dict:
        """The record without the per-example scores (kept beside it, as an array)."""
        return {k: getattr(self, k) for k in self.RECORD}

    @classmethod
    def from_record(cls, record: dict, val_scores: np.ndarray) -> "Result":
        d = {k: record[k] for k in cls.RECORD if k in record}
        d["evals"] = [tuple(e) for e in d.get("evals", [])]
        return cls(val_scores=val_scores, **d)

    def summary(self) -> dict:
        """The numbers, each beside the step of the weights it was measured on."""
        metric = self.val_eval.metric_name if self.val_eval is not None else "metric"
        return {
            "val_loss": self.val_loss,
            f"val_{metric}": self.val_metric,
            "val_step": self.val_step,
            "train_loss": self.train_loss,
            f"train_{metric}": self.train_metric,
            "train_step": self.train_step,
            "steps": self.steps,
            "diverged": self.diverged,
        }


def kept_scores(result: EvalResult) -> np.ndarray:
    """The per-example scores of an evaluation asked to keep them (keep_scores=True)."""
    if result.scores is None:
        raise ValueError("an evaluation scored without keep_scores=True")  # nnrecipe's own bug: exit 3
    return result.scores


@dataclasses.dataclass
class SeedRuns:
    """One configuration's results at one seed or more: a regularize knob (or the reference),
    tune's starting point and best trial, a data-scaling point."""

    name: str  # a check id where it has one, e.g. "dropout"
    description: str
    runs: list[Result] = dataclasses.field(default_factory=list)
    skip: str = ""  # why it was not trained
    collapse: Any = None  # probes.diagnosis.Collapse of its first run: every val example given one output

    def scores(self, seeds: int) -> np.ndarray:
        """Per-example val scores averaged over the first `seeds` runs."""
        return np.mean([r.val_scores for r in self.runs[:seeds]], axis=0)


# ----------------------------------------------------------------------------- experiments


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A model trained the spec's way for `steps` at `seed`, scored on whole splits."""

    name: str  # the progress bar's label and the TensorBoard run folder
    spec: Any  # nnrecipe.spec.Spec: optimizer, schedule, batch size, model, loss, regularizers
    steps: int
    eval_every: int
    seed: Optional[int] = None  # default: spec.seed
    model: Optional[nn.Module] = None  # default: the spec's model, built at the seed
    loss_fn: Optional[Callable] = None  # default: the spec's loss
    regularized: bool = True  # the spec's augmentation and early stopping apply (off for baseline and overfit)
    watch_patience: Optional[int] = None  # watch the val loss without stopping; score the weights kept (Result.early)
    checkpoints: Checkpoints = Checkpoints()  # with `best`, val is judged at the best checkpoint
    histograms: bool = False
    on_eval: Optional[Callable] = None
    keep_model: bool = True  # Result.model: the trained model (tune's many trials keep none)
    # A model described, not given, so that any worker builds it at the seed (baseline's):
    # "zero-input", the spec's model fed zeros; "linear", the task's linear baseline.
    variant: str = ""

    def seeded_spec(self) -> Any:
        """The spec at this experiment's seed."""
        return self.spec if self.seed is None else self.spec.model_copy(update={"seed": self.seed})


@dataclasses.dataclass
class Prepared:
    """An experiment ready to train: its plan (model built at its seed, optimizer, schedule,
    logging) and what scoring it afterwards needs. `rng`: the RNG state right after its model
    was built, where its training draws (augmentation, dropout) start."""

    exp: Experiment
    spec: Any
    plan: TrainPlan
    engine: Engine
    data: Any
    watch: Optional[EarlyStopping]
    stop: bool
    writer: Any
    rng: dict


def prepare_experiment(
    exp: Experiment, *, data, device: torch.device, base: Path, writer=None, progress=None
) -> Prepared:
    """`exp`'s model built at its seed (which seeds the RNG its training draws from) and its plan."""
    from nnrecipe.augment import build_augment
    from nnrecipe.models import seeded_model
    from nnrecipe.runtime import seed_everything

    spec = exp.seeded_spec()
    if exp.model is not None:
        model = exp.model.to(device)
    else:  # built from the seed, so that the RNG its training draws from starts alike anywhere
        # (seeded here too: a linear baseline of ids or columns draws its init without `build`)
        seed_everything(spec.seed, deterministic=spec.train.deterministic)
        model = experiment_model(
            exp, spec, data, lambda ms=None: seeded_model(spec, data, base=base, device=device, model_spec=ms)
        )
        model = model.to(device)
    loss_fn = exp.loss_fn if exp.loss_fn is not None else experiment_loss(exp, spec, data, base=base)
    augment = build_augment(spec.data.augment, kind=data.kind, base=base) if exp.regularized else None
    watch, stop = _early_stopping(exp, spec)
    plan = TrainPlan.for_spec(
        spec,
        model=model,
        train=data.train,
        val=data.val,
        loss_fn=loss_fn,
        steps=exp.steps,
        base=base,
        eval_every=exp.eval_every,
        augment=augment,
        early_stopping=watch,
        stop_early=stop,
        on_eval=exp.on_eval,
        checkpoints=exp.checkpoints,
        log=Logging(
            writer=writer,
            progress=progress,
            label=exp.name,
            every=min(spec.train.log_every, exp.steps),
            histograms=exp.histograms,
        ),
    )
    engine = Engine.for_spec(spec.train, device=device, task=data.task)
    return Prepared(exp, spec, plan, engine, data, watch, stop, writer, rng_state(device))


def experiment_model(exp: Experiment, spec, data, build: Callable[..., nn.Module]) -> nn.Module:
    """The model `exp` describes, made by `build(model_spec=None)` (the spec's model, or the one
    given): the spec's model, or its variant. It draws from the RNG as it stands: the caller
    seeds it (prepare_experiment) or keeps the weights it loads after (Trainer.received)."""
    if exp.variant == "zero-input":
        from nnrecipe.probes.model_probes import ZeroInput

        return ZeroInput(build())
    if exp.variant == "linear":
        return data.task.linear_model(spec, data, build)
    return build()


def experiment_loss(exp: Experiment, spec, data, *, base: Path) -> Callable:
    """The spec's loss; the linear baseline trains with the task's own loss where the spec's is the
    user's (which may read the user's model's whole output: an auxiliary head, a dict)."""
    from nnrecipe.losses import loss_name, make_loss

    if exp.variant == "linear" and loss_name(spec) == "custom":
        return data.task.loss_fn(data.task.default_loss)
    return make_loss(spec, base=base)


def rng_state(device: torch.device) -> dict:
    """The global RNG streams training draws from (the CPU's, and the GPU's on CUDA)."""
    return {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if state["cuda"] is not None:
        torch.cuda.set_rng_state(state["cuda"], device)


def run_experiment(exp: Experiment, *, data, device: torch.device, base: Path, writer=None, progress=None) -> Result:
    """Train `exp` on `data` (already on the device, edited for the spec) and score it."""
    p = prepare_experiment(exp, data=data, device=device, base=base, writer=writer, progress=progress)
    started = time.time()
    history = p.engine.train(p.plan)
    result = finish_experiment(p, history)
    result.wall = (started, time.time())
    return result


def finish_experiment(p: Prepared, history: History) -> Result:
    """The trained experiment scored: val at its best checkpoint (or the weights early stopping
    kept), train at its last step, and what a watching early stopping would have kept."""
    exp, model, engine, watch, stop, data = p.exp, p.plan.model, p.engine, p.watch, p.stop, p.data
    loss_fn = p.plan.loss_fn
    if watch is not None and stop and watch.state is not None and not history.diverged:
        model.load_state_dict(watch.state)  # early stopping: the weights of the best evaluation
    train_eval, val_eval, val_step = _score(
        engine, model, data, loss_fn, best=exp.checkpoints.best, diverged=history.diverged
    )
    if p.writer is not None:
        for split, r in (("train", train_eval), ("val", val_eval)):
            p.writer.add_scalar(f"final/{split}_loss", r.loss, history.steps_run)
            p.writer.add_scalar(f"final/{split}_{r.metric_name}", r.metric, history.steps_run)
    kept = watch is not None and stop and watch.state is not None
    result = Result.scored(
        exp.name,
        p.spec.seed,
        history,
        train_eval,
        val_eval,
        stopped_at=watch.best_step if kept and watch is not None else None,
        val_step=val_step,
        model=model if exp.keep_model else None,
    )
    if watch is not None and not stop:
        result.early_state = watch.state
        if watch.state is not None and not history.diverged:
            result.early = _score_weights(engine, model, watch, data=data, loss_fn=loss_fn, result=result)
    return result


def _early_stopping(exp: Experiment, spec) -> tuple[Optional[EarlyStopping], bool]:
    """(the watcher, whether it stops training): the spec's early stopping, or a watch only."""
    if exp.regularized and spec.train.early_stopping:
        return EarlyStopping(spec.train.early_stopping), True
    if exp.watch_patience:
        return EarlyStopping(exp.watch_patience), False
    return None, True


def _score(engine: Engine, model: nn.Module, data, loss_fn, *, best: Optional[Path], diverged: bool):
    """(train, val EvalResults, the step val was measured at: None for the model as it is). With
    a best checkpoint, val is judged there (the lowest val loss seen) and the model is left at
    its last step."""
    train_eval = engine.evaluate(model, data.task.train_eval_split(data), loss_fn)
    keep = data.task.keeps_val_outputs
    if best is None or not best.exists() or diverged:
        return train_eval, engine.evaluate(model, data.val, loss_fn, keep_outputs=keep, keep_scores=True), None
    final = {k: v.clone() for k, v in model.state_dict().items()}
    checkpoint = load_checkpoint(best, map_location=engine.device)
    model.load_state_dict(checkpoint["model"])
    val_eval = engine.evaluate(model, data.val, loss_fn, keep_outputs=keep, keep_scores=True)
    model.load_state_dict(final)
    return train_eval, val_eval, int(checkpoint["step"])


def _score_weights(engine: Engine, model: nn.Module, watch: EarlyStopping, *, data, loss_fn, result: Result) -> Result:
    """The weights early stopping would have kept, scored; the model is put back as it was."""
    final = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(watch.state or final)  # the caller checked that it kept weights
    val = engine.evaluate(model, data.val, loss_fn, keep_scores=True)
    train = engine.evaluate(model, data.train, loss_fn)
    model.load_state_dict(final)
    return Result(
        seed=result.seed,
        val_scores=kept_scores(val),
        val_loss=val.loss,
        val_metric=val.metric,
        train_loss=train.loss,
        train_metric=train.metric,
        steps=result.steps,
        diverged=False,
        evals=result.evals,
        stopped_at=watch.best_step,
        name=result.name,
        train_eval=train,
        val_eval=val,
        val_step=watch.best_step,
        train_step=watch.best_step,
    )


def run_group(
    exps: list[Experiment], *, datas: list, device: torch.device, base: Path, writers: list, progress=None
) -> tuple[list[Result], str]:
    """The experiments trained as one where they can be (together.py: one architecture, each its
    own seed, rows, learning rate and weight decay), else one after another: (their results,
    why they were not trained as one: "" when they were)."""
    from nnrecipe import together

    prepared = [
        prepare_experiment(e, data=d, device=device, base=base, writer=w, progress=progress)
        for e, d, w in zip(exps, datas, writers)
    ]
    why = together.why_apart(prepared) if len(prepared) > 1 else ""
    histories = None
    started = time.time()
    if len(prepared) > 1 and not why:
        try:
            histories = together.train_together(prepared)
            walls = [(started, time.time())] * len(prepared)
        except together.Apart as exc:
            why = str(exc)
    if histories is None:
        histories, walls = [], []
        for p in prepared:
            set_rng_state(p.rng, device)  # as if its model had just been built
            started = time.time()
            histories.append(p.engine.train(p.plan))
            walls.append((started, time.time()))
    results = [finish_experiment(p, h) for p, h in zip(prepared, histories)]
    for r, w in zip(results, walls):
        r.wall = w
    return results, why


def run_in_stage(ctx, stage: str, exp: Experiment, *, data, folder: str = "", record: bool = True) -> Result:
    """run_experiment where a stage runs it: in its TensorBoard folder tb/<stage>/<folder or name>/
    (a resumed run hides the interrupted run's events from its step on), on the stage's device;
    in the stage's timeline unless `record` is false."""
    writer = stage_writer(ctx, stage, exp, folder=folder)
    result = run_experiment(exp, data=data, device=ctx.device, base=ctx.base, writer=writer, progress=ctx.progress)
    if record:
        record_ran(ctx, exp, ran_here(result, ctx.device))
    return result


def ran_here(result: Result, device, *, together: int = 1) -> Ran:
    """ledger.Ran of a result this process trained (run_experiment and run_group set its wall times)."""
    assert result.wall is not None, "trained here: run_experiment and run_group time every result"
    return here(*result.wall, device, together=together)


def record_ran(ctx, exp: Experiment, ran) -> None:
    """The experiment in the running stage's timeline (ledger.py), where the context keeps one."""
    record(ctx, exp.name, ran, seed=exp.seed, steps=exp.steps)


def stage_writer(ctx, stage: str, exp: Experiment, *, folder: str = ""):
    """The experiment's TensorBoard writer in tb/<stage>/<folder or name>/; a resumed run hides
    the interrupted run's events from its step on."""
    resume = exp.checkpoints.resume
    return ctx.writer(stage, folder or exp.name, purge_step=int(resume["step"]) + 1 if resume is not None else None)


@dataclasses.dataclass(frozen=True)
class Job:
    """One experiment a stage asks its Trainer for: `name` trained from `spec` at `seed`, for
    `steps` (default: the stage's budget; `every`, its evaluations), on the training rows `rows` (default: all of train;
    a data-scaling subset, a cross-validation fold), with Experiment's other fields in `more`."""

    name: str
    spec: Any
    seed: int
    steps: Optional[int] = None
    every: Optional[int] = None  # steps between evaluations (default: the stage's)
    rows: Optional[torch.Tensor] = None
    more: dict = dataclasses.field(default_factory=dict)
    folder: str = ""  # its TensorBoard folder, when not its name


class Trainer:
    """A stage's experiments at its budget (`steps`, evaluations every `every`): the data rebuilt
    only when a variant changes it (data.downsample), a TensorBoard folder per experiment so
    curves overlay, and each result that keeps its model, by name (its weights, for the
    stage's artefacts). Independent experiments go through `train_many`: with --workers they
    train side by side in the run's worker processes, and come back in the order asked."""

    def __init__(self, ctx, *, stage: str, steps: int, every: int, record: bool = True):
        self.ctx, self.stage, self.steps, self.every = ctx, stage, steps, every
        self.record = record  # each experiment in the stage's timeline (tune's trials: stamped by its workers)
        self._data = {ctx.spec.data.downsample: ctx.device_data()}
        self.kept: dict[str, Result] = {}  # experiment name -> its Result (those with keep_model)
        self._said: set[str] = set()  # reasons given for training a group one at a time

    def data(self, spec):
        key = spec.data.downsample
        if key not in self._data:
            from nnrecipe.data import build_data

            self._data[key] = build_data(spec, base=self.ctx.base).to(self.ctx.device)
        return self._data[key]

    def train(self, name: str, spec, *, seed: int, steps: Optional[int] = None, **more) -> Result:
        """The experiment `name` of `spec` at `seed` (Experiment's fields in `more`)."""
        return self.train_many([Job(name, spec, seed, steps=steps, more=more)])[0]

    def train_many(self, jobs: list[Job], *, done: Optional[Callable[[int, Result], None]] = None) -> list[Result]:
        """Each job's Result, in the order of `jobs`: one after another here, or side by side in
        the run's worker processes (the same numbers: each experiment seeds itself). `done(i,
        result)` is called for each as soon as it is here (squeeze saves its members so)."""
        return self.submit(jobs, parallel=len(jobs) > 1).results(done=done)

    def submit(self, jobs: list[Job], *, parallel: bool = True) -> "Pending":
        """The jobs started in the run's worker processes (when it has them and `parallel`), so
        that this process can do other work meanwhile; `.results()` waits for them. Without
        workers they train here, when `.results()` is called. Jobs of one architecture train as
        one (`groups`), here or dealt over the workers."""
        pool = self.ctx.pool() if parallel else None
        exps = [self._experiment(j) for j in jobs]
        groups = self.groups(exps, parts=self.ctx.workers.count if pool is not None else 1)
        futures = None
        if pool is not None:
            from nnrecipe.executors.pool import Job as Sent

            futures = pool.submit(
                [[Sent(exps[i], self._data_spec(jobs[i].spec), jobs[i].rows) for i in g] for g in groups],
                label=self.stage,
            )
        return Pending(self, exps, jobs, groups, pool, futures)

    def groups(self, exps: list[Experiment], *, parts: int = 1) -> list[list[int]]:
        """The experiments' indices in groups that train as one (unless the spec's batch_models is
        false): those that differ only in seed, rows, learning rate and weight decay, dealt into
        `parts` shares (one per worker: N workers train side by side, where one group in one
        worker would leave the others idle), each share a group of at least together.MIN_GROUP
        on this device type (at most MAX_GROUP) or its experiments alone. As one or alone, an
        experiment's numbers agree to float tolerance; dropout draws its masks per group."""
        from nnrecipe import together

        if not self.ctx.spec.batch_models:
            return [[i] for i in range(len(exps))]
        by_key: dict[str, list[int]] = {}
        alone: list[list[int]] = []
        for i, e in enumerate(exps):
            key = _group_key(e)
            if key is None:
                alone.append([i])
            else:
                by_key.setdefault(key, []).append(i)
        smallest = together.MIN_GROUP.get(self.ctx.device.type, 4)
        groups = []
        for members in by_key.values():
            n = max(parts, -(-len(members) // together.MAX_GROUP))  # shares, none above MAX_GROUP
            for chunk in (members[j * len(members) // n : (j + 1) * len(members) // n] for j in range(n)):
                groups += [chunk] if len(chunk) >= smallest else [[i] for i in chunk]
        return sorted(groups + alone)

    def _experiment(self, job: Job) -> Experiment:
        steps = job.steps or self.steps
        every = min(job.every or self.every, steps)
        return Experiment(job.name, job.spec, steps=steps, eval_every=every, seed=job.seed, **job.more)

    def job_data(self, job: Job):
        data = self.data(job.spec)
        return data if job.rows is None else data.with_train(data.train.subset(job.rows))

    def _data_spec(self, spec):
        """The spec whose data section builds `spec`'s data, as `data` chooses it here."""
        return self.ctx.spec if spec.data.downsample == self.ctx.spec.data.downsample else spec

    def tell(self, exps: list[Experiment], why: str) -> None:
        """The stage log's line on a group: trained as one, or (once per reason) why not."""
        names = ", ".join(e.name for e in exps[:3]) + (", ..." if len(exps) > 3 else "")
        if not why:
            self.ctx.console.print(f"[dim]{self.stage}: {len(exps)} models trained as one: {names}[/dim]")
        elif why not in self._said:
            self._said.add(why)
            self.ctx.console.print(f"[dim]{self.stage}: {names} trained one at a time: {why}[/dim]")

    def received(self, exp: Experiment, job: Job, shipped) -> Result:
        """A worker's result as if trained here: its TensorBoard calls written to the
        experiment's folder, its model rebuilt from the weights on this device."""
        from nnrecipe import atomic
        from nnrecipe.models import prepare_model
        from nnrecipe.plugins import add_caught

        writer = stage_writer(self.ctx, self.stage, exp, folder=job.folder)
        for name, args, kwargs in shipped.events:
            getattr(writer, name)(*args, **kwargs)
        for path, contents in shipped.files.items():
            atomic.write_bytes(Path(path), contents)
        add_caught(shipped.warnings)  # for the stage's user-warnings verdict, as if raised here
        result = shipped.result
        if shipped.weights is not None:
            spec, data = exp.seeded_spec(), self.job_data(job)
            build = lambda ms=None: prepare_model(spec, data, base=self.ctx.base, model_spec=ms)  # noqa: E731
            model = exp.model if exp.model is not None else experiment_model(exp, spec, data, build)
            model = model.to(self.ctx.device)
            model.load_state_dict(shipped.weights)
            result.model = model
        return result


def _group_key(exp: Experiment) -> Optional[str]:
    """What an experiment must share with others to train as one with them (None: it trains
    alone): the spec but for seed, learning rate and weight decay; budget; evaluations."""
    if exp.model is not None or exp.loss_fn is not None or exp.histograms or exp.variant:
        return None
    if exp.checkpoints.resume is not None:
        return None  # continues alone, exactly where it stopped
    spec = exp.spec.model_copy(
        update={"seed": 0, "optim": exp.spec.optim.model_copy(update={"lr": 0.0, "weight_decay": 0.0})}
    )
    return f"{experiment_text(spec)}|{exp.steps}|{exp.eval_every}|{exp.regularized}"


class Pending:
    """Experiments a Trainer has started (or will train here): `results` in the order asked."""

    def __init__(
        self, trainer: Trainer, exps: list[Experiment], jobs: list[Job], groups: list[list[int]], pool, futures
    ):
        self.trainer, self.exps, self.jobs, self.groups = trainer, exps, jobs, groups
        self.pool, self.futures = pool, futures

    def results(self, *, done: Optional[Callable[[int, Result], None]] = None) -> list[Result]:
        """The results in the order asked; `done(i, result)` for each as soon as it is here
        (from workers: in the order they finish)."""
        t = self.trainer
        results: list[Optional[Result]] = [None] * len(self.jobs)
        for i, r in self._arrived():
            e = self.exps[i]
            if e.keep_model:
                t.kept.setdefault(e.name, r)
            if done is not None:
                done(i, r)
            results[i] = r
        return [r for r in results if r is not None]

    def _arrived(self) -> Iterator[tuple[int, Result]]:
        """(index, result) of each experiment, group by group as each is trained."""
        t = self.trainer
        if self.pool is not None:
            arrived = self.pool.arrivals(self.futures, progress=t.ctx.progress, label=t.stage)
            for g, shipped in arrived:
                if len(self.groups[g]) > 1:
                    t.tell([self.exps[i] for i in self.groups[g]], shipped[0].apart)
                for i, one in zip(self.groups[g], shipped):
                    if t.record and one.ran is not None:
                        record_ran(t.ctx, self.exps[i], one.ran)
                    yield i, t.received(self.exps[i], self.jobs[i], one)
            return
        for g in self.groups:
            if len(g) == 1:
                i = g[0]
                yield (
                    i,
                    run_in_stage(
                        t.ctx,
                        t.stage,
                        self.exps[i],
                        data=t.job_data(self.jobs[i]),
                        folder=self.jobs[i].folder,
                        record=t.record,
                    ),
                )
                continue
            exps = [self.exps[i] for i in g]
            results, why = run_group(
                exps,
                datas=[t.job_data(self.jobs[i]) for i in g],
                device=t.ctx.device,
                base=t.ctx.base,
                writers=[stage_writer(t.ctx, t.stage, self.exps[i], folder=self.jobs[i].folder) for i in g],
                progress=t.ctx.progress,
            )
            t.tell(exps, why)
            if t.record:
                for e, r in zip(exps, results):
                    record_ran(t.ctx, e, ran_here(r, t.ctx.device, together=1 if why else len(exps)))
            yield from zip(g, results)


def experiment_key(spec, *, steps: int, every: int, extra: str = "") -> str:
    """Identifies one training experiment (resolved spec minus stage settings and names, budget,
    seed): a checkpoint with another key is never resumed."""
    text = experiment_text(spec)
    return hashlib.sha256(f"{text}|{steps}|{every}|{extra}".encode()).hexdigest()[:16]


def experiment_text(spec) -> str:
    """The spec as JSON less what does not change what is trained: stage settings, names, and
    where it runs (device, workers, executor): a run continued elsewhere resumes its checkpoints."""
    where = {
        "stages": None,
        "name": "",
        "output_dir": "",
        "device": "",
        "workers": 1,
        "executor": "local",
        "batch_models": True,
    }
    return spec.model_copy(update={k: v for k, v in where.items() if k in type(spec).model_fields}).model_dump_json()
