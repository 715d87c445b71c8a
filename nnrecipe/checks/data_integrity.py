"""inspect-data rules about the integrity of examples and labels.

Each rule has the same signature: (measurements, settings) -> Verdict. Rules never read
data or train; they judge measurements, so they are unit-tested on synthetic ones.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from nnrecipe.checks import not_for_task
from nnrecipe.probes.data_groups import MAX_LISTED, DataMeasurements
from nnrecipe.spec_stages import InspectDataSpec
from nnrecipe.verdict import Status, Verdict

STAGE = "inspect-data"


def _where(split: str, idx: np.ndarray) -> list[str]:
    return [f"{split}[{int(i)}]" for i in idx[:MAX_LISTED]]


def label_range(m: DataMeasurements, cfg: InspectDataSpec) -> Verdict:
    """Targets valid for the task: its own rule (Task.label_range), one of those below."""
    return m.scan.task.label_range(m, cfg)


def label_range_skip(m: DataMeasurements, reason: str, *, observed: bool = False) -> Verdict:
    """label-range for a task without a label rule; `observed`: the target range, reported."""
    t = m.scan.train.targets
    seen = {"min": float(np.nanmin(t)), "max": float(np.nanmax(t))} if observed else None
    return Verdict(STAGE, "label-range", Status.SKIP, observed=seen, message=reason)


def class_label_range(m: DataMeasurements, cfg: InspectDataSpec) -> Verdict:
    """Class indices: integers in [0, C), one per example, and every class has train examples."""
    check, scan, C = "label-range", m.scan, m.scan.num_classes
    for name, s in scan.splits.items():
        if s.y_shape != ():
            return Verdict(
                STAGE,
                check,
                Status.FAIL,
                observed={"target_shape": list(s.y_shape)},
                expected="class indices, shape (N,)",
                message=f"{name} targets have shape {tuple(s.y_shape)} per example, not one class index",
                hint="give integer class indices (N,), not one-hot or probability vectors",
            )
    problems, bad_examples = _bad_indices(m, C)
    ys = np.concatenate([s.targets for s in scan.splits.values()])
    ys = ys[np.isfinite(ys)]
    observed = {
        "min": float(ys.min()) if len(ys) else None,
        "max": float(ys.max()) if len(ys) else None,
        "num_classes": C,
        "dtype": scan.train.y_dtype,
    }
    expected = f"integers in [0, {C})" if C else "integers in [0, C)"
    if C is None:
        return Verdict(
            STAGE,
            check,
            Status.FAIL,
            observed=observed,
            expected=expected,
            message="the number of classes is unknown: labels are not integers"
            + (f"; {'; '.join(problems)}" if problems else ""),
            hint="give integer class indices, or declare data.num_classes",
        )
    if problems:
        return Verdict(
            STAGE,
            check,
            Status.FAIL,
            observed=dict(observed, examples=bad_examples[:MAX_LISTED]),
            expected=expected,
            message="; ".join(problems),
            hint="labels must index the model's outputs: remap them to 0..C-1 (1-based labels are a classic)",
        )
    return _every_class_present(m, C, observed, expected)


def _bad_indices(m: DataMeasurements, C: Optional[int]) -> tuple[list[str], list[str]]:
    """(what is wrong with each split's class indices, the examples): labels that are not
    whole numbers, or outside [0, C) (negative, where C is unknown)."""
    problems: list[str] = []
    bad_examples: list[str] = []
    for name, s in m.scan.splits.items():
        y = s.targets
        finite = np.isfinite(y)
        if s.y_dtype.startswith("float") or s.y_dtype == "bool":
            nonint = finite & (y != np.round(y))
            if nonint.any():
                bad_examples += _where(name, np.nonzero(nonint)[0])
                problems.append(f"{name} has {int(nonint.sum())} non-integer labels")
        out = finite & ((y < 0) | (y >= C)) if C is not None else finite & (y < 0)
        if out.any():
            bad_examples += _where(name, np.nonzero(out)[0])
            problems.append(
                f"{name} has {int(out.sum())} labels outside [0, {C})" if C else f"{name} has negative labels"
            )
    return problems, bad_examples


def _every_class_present(m: DataMeasurements, C: int, observed: dict, expected: str) -> Verdict:
    """Valid class indices: a warn for classes without train examples, or labels stored as floats."""
    check, scan = "label-range", m.scan
    train_y = scan.train.targets[np.isfinite(scan.train.targets)].astype(np.int64)
    empty = np.nonzero(np.bincount(train_y, minlength=C)[:C] == 0)[0]
    if len(empty):
        hint = (
            "labels look 1-based: subtract 1"
            if list(empty) == [0]
            else "check the label mapping, or declare data.num_classes"
        )
        return Verdict(
            STAGE,
            check,
            Status.WARN,
            observed=dict(observed, empty_classes=empty.tolist()),
            expected=expected,
            message=f"{len(empty)} of {C} classes have no train examples: {empty.tolist()[:MAX_LISTED]}",
            hint=hint,
        )
    if scan.train.y_dtype.startswith("float"):
        return Verdict(
            STAGE,
            check,
            Status.WARN,
            observed=observed,
            expected="integer dtype",
            message=f"labels are whole numbers stored as {scan.train.y_dtype}",
            hint="store labels as int64: cross_entropy reads float targets as class probabilities",
        )
    return Verdict(
        STAGE,
        check,
        Status.PASS,
        observed=observed,
        expected=expected,
        message=f"all labels are integers in [0, {C}) and every class has train examples",
    )


def multi_hot_label_range(m: DataMeasurements, cfg: InspectDataSpec) -> Verdict:
    """Multi-label: K values per example, each 0 or 1 (multi-hot); class indices or
    probabilities in their place are a fail, naming the examples."""
    check, scan = "label-range", m.scan
    K = scan.num_classes
    problems, bad_examples = [], []
    for name, s in scan.splits.items():
        if len(s.y_shape) != 1:
            return Verdict(
                STAGE,
                check,
                Status.FAIL,
                observed={"target_shape": list(s.y_shape)},
                expected="multi-hot rows, shape (N, K)",
                message=f"{name} targets have shape {tuple(s.y_shape)} per example, not a row of K labels",
                hint="give one 0/1 value per label, (N, K); class indices (N,) are task: classification",
            )
        y = np.asarray(s.targets).reshape(s.n, -1)
        off = np.isfinite(y) & (y != 0) & (y != 1)
        if off.any():
            rows = np.nonzero(off.any(axis=1))[0]
            bad_examples += _where(name, rows)
            problems.append(f"{name} has {len(rows)} targets with values other than 0 and 1 (e.g. {y[off][0]:g})")
    observed = {"labels": K, "dtype": scan.train.y_dtype}
    expected = f"multi-hot: {K} values of 0 or 1 per example"
    if problems:
        return Verdict(
            STAGE,
            check,
            Status.FAIL,
            observed=dict(observed, examples=bad_examples[:MAX_LISTED]),
            expected=expected,
            message="; ".join(problems),
            hint="one value per example looks like class indices: task classification, or multi-hot rows (N, K)"
            if K == 1
            else "threshold soft labels, or keep them with your own loss; multi-hot is 0/1",
        )
    return Verdict(
        STAGE,
        check,
        Status.PASS,
        observed=observed,
        expected=expected,
        message=f"every target is a row of {K} values of 0 or 1",
    )


def non_finite(m: DataMeasurements, cfg: InspectDataSpec) -> Verdict:
    """NaN or Inf anywhere in inputs or targets poisons the loss at the first batch that holds it."""
    counts, examples = {}, []
    for name, s in m.scan.splits.items():
        bad = np.nonzero((s.x_nonfinite > 0) | s.y_nonfinite)[0]
        counts[name] = int(len(bad))
        examples += _where(name, bad)
    total = sum(counts.values())
    if total:
        return Verdict(
            STAGE,
            "non-finite",
            Status.FAIL,
            observed=dict(counts, examples=examples[:MAX_LISTED]),
            expected=0,
            message=f"{total} examples hold NaN or Inf (inputs or targets), e.g. {', '.join(examples[:5])}",
            hint="fix the source (a division by zero in preprocessing, a missing value) or drop the examples",
        )
    return Verdict(
        STAGE, "non-finite", Status.PASS, observed=counts, expected=0, message="no NaN or Inf in inputs or targets"
    )


def duplicates(m: DataMeasurements, cfg: InspectDataSpec) -> Verdict:
    """Exact copies inside train weigh some examples double and inflate the apparent data size."""
    n = m.scan.train.n
    extra = m.train_extra_copies
    frac = extra / max(n, 1)
    observed = {
        "extra_copies": extra,
        "groups": m.train_dup_groups,
        "largest_group": m.largest_dup_group,
        "fraction": round(frac, 6),
    }
    expected = f"fraction <= {cfg.max_duplicate_fraction}"
    if frac > cfg.max_duplicate_fraction:
        return Verdict(
            STAGE,
            "duplicates",
            Status.WARN,
            observed=observed,
            expected=expected,
            message=f"{extra} of {n} train examples ({frac:.2%}) repeat another train example "
            f"({m.train_dup_groups} groups, largest {m.largest_dup_group})",
            hint="deduplicate, or check the loader does not return the same item for different indices; "
            "the dup_count column of examples.csv lists them",
        )
    return Verdict(
        STAGE,
        "duplicates",
        Status.PASS,
        observed=observed,
        expected=expected,
        message="no exact duplicates in train" if extra == 0 else f"{extra} duplicates, within the allowed fraction",
    )


def split_leakage(m: DataMeasurements, cfg: InspectDataSpec) -> Verdict:
    """The same input in train and in val/test makes the held-out score a memory test."""
    if not m.leaked:
        return Verdict(STAGE, "split-leakage", Status.SKIP, message="only a train split: nothing to leak into")
    counts = {s: int(len(idx)) for s, idx in m.leaked.items()}
    fracs = {s: len(idx) / max(m.scan.splits[s].n, 1) for s, idx in m.leaked.items()}
    worst = max(fracs, key=fracs.__getitem__)
    examples = [e for s, idx in m.leaked.items() for e in _where(s, idx)]
    expected = f"fraction <= {cfg.max_leak_fraction}"
    if fracs[worst] > cfg.max_leak_fraction:
        return Verdict(
            STAGE,
            "split-leakage",
            Status.FAIL,
            observed=dict(counts, examples=examples[:MAX_LISTED]),
            expected=expected,
            message=f"{counts[worst]} of {m.scan.splits[worst].n} {worst} examples ({fracs[worst]:.2%}) also occur in train",
            hint="split before augmenting or deduplicate across splits; the in_train column of examples.csv lists them",
        )
    return Verdict(
        STAGE,
        "split-leakage",
        Status.PASS,
        observed=counts,
        expected=expected,
        message="no held-out example occurs in train"
        if not any(counts.values())
        else "leakage within the allowed fraction",
    )


def conflicting_labels(m: DataMeasurements, cfg: InspectDataSpec) -> Verdict:
    """Identical inputs with different labels: label noise the model can never fit."""
    if skip := not_for_task(STAGE, "conflicting-labels", m.scan.task):
        return skip
    n_total = sum(s.n for s in m.scan.splits.values())
    involved = int(sum(flags.sum() for flags in m.conflict_flags.values()))
    frac = involved / max(n_total, 1)
    observed: dict[str, object] = {"groups": len(m.conflicts), "examples": involved, "fraction": round(frac, 6)}
    if m.conflicts:
        observed["first"] = [f"{s}[{i}]={lab:g}" for s, i, lab in m.conflicts[0].members[:6]]
    expected = f"0 groups (fail above a fraction of {cfg.conflict_fail_fraction})"
    if not m.conflicts:
        return Verdict(
            STAGE,
            "conflicting-labels",
            Status.PASS,
            observed=observed,
            expected=expected,
            message="no identical inputs carry different labels",
        )
    status = Status.FAIL if frac > cfg.conflict_fail_fraction else Status.WARN
    return Verdict(
        STAGE,
        "conflicting-labels",
        status,
        observed=observed,
        expected=expected,
        message=f"{len(m.conflicts)} groups of identical inputs carry different labels ({involved} examples, {frac:.2%})",
        hint="relabel or drop them; the conflict column of examples.csv lists them",
    )
