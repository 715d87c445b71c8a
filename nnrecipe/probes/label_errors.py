"""Suspected label errors: training examples whose given label a model that never saw them
finds very unlikely.

K-fold cross-validation over the training split (stratified by label, seeded) gives every
training example an out-of-fold predicted distribution; confident learning (Northcutt, Jiang
and Chuang, "Confident Learning: Estimating Uncertainty in Dataset Labels", JAIR 2021) then
estimates the joint of given and true labels from per-class confidence thresholds and flags,
per (given, likely-true) pair, as many examples as that joint says are mislabelled, ranked by
the probability of the given label. The method is cleanlab's `find_label_issues` (the
maintained reference implementation, with the calibration and edge cases the paper's
authors worked out); nnrecipe supplies the out-of-fold probabilities.

Those probabilities are temperature-scaled first (Guo et al. 2017: one temperature, fitted by
the negative log-likelihood of the given labels): confident learning assumes calibrated
probabilities, and a fold model trained to 100 % train accuracy is far from it. The suspects
listed are those of the noise-rate rule (`prune_by_noise_rate`); the share the verdict judges
counts those that cleanlab's per-class rule flags too (`filter_by="both"`), the conservative
count. On MNIST-1D's clean labels (4 folds of the unregularized 1-D CNN, out-of-fold accuracy
87 %) the raw probabilities and the noise-rate rule flagged 8.2 % and 8.8 % of train at two
seeds, a false alarm; scaled (T = 2.6) and by both rules, 3.8 % and 4.5 %. On digits with 10 %
of labels flipped, both rules flagged 9.4 % (precision 0.97, recall 0.84); on clean digits 0.3 %.
The noise-rate rule alone finds more of a noise concentrated in one class (13 of 14 threes
relabelled as eights, against 10 of 14 by both rules): the list is the wider one.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np
import torch

from nnrecipe.experiments import Job


@dataclasses.dataclass
class LabelErrors:
    folds: int
    labels: np.ndarray  # the given training labels (n,)
    probs: np.ndarray  # out-of-fold predicted class probabilities (n, C), calibrated (`calibrate`)
    ranked: np.ndarray  # indices into train of the suspects, most suspicious first (the noise-rate rule)
    predicted: np.ndarray  # (n,) bool: the example's fold model trained (a diverged one predicts nothing)
    diverged_folds: int = 0
    temperature: float = 1.0  # the fitted calibration; well above 1: overconfident fold models
    both: Optional[np.ndarray] = None  # the suspects both of cleanlab's rules flag (None: `ranked`)

    @property
    def confirmed(self) -> int:
        """Suspects flagged by both rules: the count the verdict judges."""
        return len(self.ranked if self.both is None else self.both)

    @property
    def n(self) -> int:
        """Training examples judged: those whose fold model did not diverge."""
        return int(self.predicted.sum())

    @property
    def oof_accuracy(self) -> float:
        p = self.predicted
        return float((self.probs[p].argmax(axis=1) == self.labels[p]).mean()) if p.any() else float("nan")

    def rows(self, class_name=str) -> list[dict]:
        """The ranked CSV: one row per suspect."""
        out = []
        for rank, i in enumerate(self.ranked, start=1):
            p = self.probs[i]
            suggested = int(p.argmax())
            out.append(
                {
                    "rank": rank,
                    "train_index": int(i),
                    "given": class_name(int(self.labels[i])),
                    "suggested": class_name(suggested),
                    "p_given": round(float(p[self.labels[i]]), 4),
                    "p_suggested": round(float(p[suggested]), 4),
                }
            )
        return out


def stratified_folds(labels: np.ndarray, folds: int, seed: int) -> list[np.ndarray]:
    """`folds` disjoint index sets covering every example; each class spread evenly over them."""
    rng = np.random.default_rng(seed)
    assignment = np.empty(len(labels), dtype=np.int64)
    offset = 0
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        # rotate the start so that small classes do not all land in fold 0
        assignment[idx] = (np.arange(len(idx)) + offset) % folds
        offset += len(idx)
    return [np.flatnonzero(assignment == k) for k in range(folds)]


def out_of_fold(
    trainer, spec, *, data, folds: int, seed: int, steps: int, every: int, loss: str
) -> tuple[np.ndarray, np.ndarray, int]:
    """(n, C) probabilities for each training example from the fold model that did not train on it,
    which examples got them, and how many fold models diverged (their examples get none). The
    fold models train through `trainer` (experiments.Trainer): side by side with --workers."""
    from nnrecipe.engine import Engine

    labels = data.targets("train").long().numpy()
    c = data.num_outputs
    probs = np.full((len(labels), c), 1.0 / c)
    predicted = np.zeros(len(labels), dtype=bool)
    held_out = stratified_folds(labels, folds, seed)
    # Only the held-out predictions are used: evaluate val once at the end, unless the
    # configuration stops early (then its evaluations choose the weights).
    jobs = [
        Job(
            f"label-errors-fold{k}",
            spec,
            seed + k,
            steps=steps,
            every=every if spec.train.early_stopping else steps,
            rows=torch.from_numpy(np.setdiff1d(np.arange(len(labels)), held)),
        )
        for k, held in enumerate(held_out)
    ]
    engine = Engine.for_spec(spec.train, device=trainer.ctx.device, task=data.task)
    diverged = 0
    for job, held, t in zip(jobs, held_out, trainer.train_many(jobs)):
        trainer.kept.pop(job.name, None)  # a fold model is used here only: not kept for the stage
        if t.diverged:
            diverged += 1
            continue
        out = engine.predict(t.model, data.train.subset(torch.from_numpy(held)))
        probs[held] = data.task.class_probabilities(out, loss).double().numpy()
        predicted[held] = True
    return probs, predicted, diverged


def calibrate(labels: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, float]:
    """Temperature scaling: probs ** (1/T), renormalised, with the T in [0.05, 20] that minimises the
    mean negative log-likelihood of the given labels. Returns (the scaled probabilities, T)."""
    from scipy.optimize import minimize_scalar

    logp = np.log(np.clip(probs, 1e-30, None))
    rows = np.arange(len(labels))

    def scaled(log_t: float) -> np.ndarray:
        z = logp / np.exp(log_t)
        z -= z.max(axis=1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))

    fit = minimize_scalar(
        lambda t: -scaled(t)[rows, labels].mean(), bounds=(np.log(0.05), np.log(20.0)), method="bounded"
    )
    return np.exp(scaled(float(fit.x))), float(np.exp(fit.x))


def find(labels: np.ndarray, probs: np.ndarray, rule: str = "prune_by_noise_rate") -> np.ndarray:
    """Confident learning's suspects by cleanlab's `rule` (its filter_by), most suspicious first
    (lowest probability of the given label). `probs`: calibrated (`calibrate`)."""
    from cleanlab.filter import find_label_issues

    probs = probs / probs.sum(axis=1, keepdims=True)  # cleanlab wants rows that sum to 1 exactly
    present = np.unique(labels)
    if len(present) < 2:
        return np.empty(0, dtype=np.int64)
    # cleanlab needs every column's class to occur among the labels: restrict to those present.
    remap = {c: i for i, c in enumerate(present)}
    sub = probs[:, present]
    sub = sub / np.clip(sub.sum(axis=1, keepdims=True), 1e-12, None)
    given = np.array([remap[c] for c in labels])
    return np.asarray(
        find_label_issues(given, sub, filter_by=rule, return_indices_ranked_by="self_confidence", n_jobs=1),
        dtype=np.int64,
    )


def measure(trainer, spec, *, data, folds: int, seed: int, steps: int, every: int, loss: str) -> LabelErrors:
    probs, predicted, diverged = out_of_fold(
        trainer, spec, data=data, folds=folds, seed=seed, steps=steps, every=every, loss=loss
    )
    labels = data.targets("train").long().numpy()
    judged = np.flatnonzero(predicted)
    ranked, both, temperature = np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64), 1.0
    if len(judged):
        probs[judged], temperature = calibrate(labels[judged], probs[judged])
        ranked = judged[find(labels[judged], probs[judged])]
        both = judged[find(labels[judged], probs[judged], rule="both")]
    return LabelErrors(
        folds=folds,
        labels=labels,
        probs=probs,
        ranked=ranked,
        predicted=predicted,
        diverged_folds=diverged,
        temperature=temperature,
        both=both,
    )
