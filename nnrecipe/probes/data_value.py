"""The regularize stage's look at the data through trained models: "the by far best and
preferred way to regularize a model is to add more real training data" (data-scaling, the
reference on nested subsets of train) and "the neural net is effectively a compressed version
of your dataset" (suspected label errors, from models that never saw the example)."""

from __future__ import annotations

import numpy as np
import torch

from nnrecipe.checks.data_value_checks import LabelErrorMeasurements, ScalingMeasurements, ScalingPoint
from nnrecipe.experiments import Job, SeedRuns
from nnrecipe.probes import label_errors


def nested_subsets(n: int, fractions: list[float], seed: int) -> list[torch.Tensor]:
    """Index sets of round(f * n) training examples, each containing the smaller ones (prefixes
    of one seeded permutation), so the curve measures more data and not other data."""
    perm = torch.from_numpy(np.random.default_rng(seed).permutation(n))
    return [perm[: max(1, round(f * n))].sort().values for f in fractions]


def measure_scaling(trainer, *, ref_spec, reference: SeedRuns, data, cfg) -> ScalingMeasurements:
    """The reference recipe on nested subsets, at each seed the reference was trained with; the
    whole set is the reference's own runs (no retraining)."""
    s = cfg.data_scaling
    m = ScalingMeasurements(task=data.task, n_val=len(data.val))
    if not s.enabled:
        m.skip = "stages.regularize.data_scaling.enabled is false"
        return m
    if not reference.runs:
        m.skip = "the reference did not train"
        return m
    n = len(data.train)
    subsets = list(zip(s.fractions, nested_subsets(n, s.fractions, ref_spec.seed)))
    jobs = [
        Job(
            f"data-{round(100 * frac)}pct" + ("" if run.seed == reference.runs[0].seed else f"-seed{run.seed}"),
            ref_spec,
            run.seed,
            rows=idx,
            more={"keep_model": False},
        )
        for frac, idx in subsets
        for run in reference.runs
    ]
    results = iter(trainer.train_many(jobs))  # every subset at every seed, side by side with --workers
    for frac, idx in subsets:
        result = SeedRuns(f"data-{frac:.0%}", f"{len(idx)} training examples ({frac:.0%})")
        result.runs = [next(results) for _ in reference.runs]
        m.points.append(ScalingPoint(frac, len(idx), result))
    m.points.append(ScalingPoint(1.0, n, reference))
    return m


def measure_label_errors(trainer, *, spec, data, cfg, loss: str) -> LabelErrorMeasurements:
    """best.yaml's configuration in cross-validation folds over train (probes/label_errors.py)."""
    c = cfg.label_errors
    if not c.enabled:
        return LabelErrorMeasurements(skip="stages.regularize.label_errors.enabled is false")
    if data.task.skip_reason("suspected-label-errors"):
        return LabelErrorMeasurements(skip=data.task.skip_reason("suspected-label-errors"))
    if len(data.train) < 10 * c.folds:
        return LabelErrorMeasurements(skip=f"{len(data.train)} training examples are too few for {c.folds} folds")
    errors = label_errors.measure(
        trainer,
        spec,
        data=data,
        folds=c.folds,
        seed=spec.seed,
        steps=c.steps or trainer.steps,
        every=trainer.every,
        loss=loss,
    )
    return LabelErrorMeasurements(errors=errors)
