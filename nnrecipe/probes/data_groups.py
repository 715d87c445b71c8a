"""Measurements derived from a DataScan: identical-input groups and robust z-scores.

Grouping sorts the hashes once (n log n): duplicates within train, the same input in
train and val/test (leakage), and identical inputs with different labels (conflicts).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from nnrecipe.probes.data_scan import STAT_NAMES, DataScan

MAX_LISTED = 20  # example indices kept per finding (the CSV has them all)


@dataclasses.dataclass
class Conflict:
    members: list[tuple[str, int, float]]  # (split, index, label) of identical inputs
    labels: list[float]  # the distinct labels among them


@dataclasses.dataclass
class DataMeasurements:
    scan: DataScan
    dup_count: dict[str, np.ndarray]  # per split: copies of this input in train (itself included)
    train_extra_copies: int  # train examples that repeat an earlier train example
    train_dup_groups: int  # distinct inputs that occur more than once in train
    largest_dup_group: int
    leaked: dict[str, np.ndarray]  # val/test split -> indices whose input also occurs in train
    conflicts: list[Conflict]  # identical inputs with different labels, any splits
    conflict_flags: dict[str, np.ndarray]  # per split: bool, example is in a conflicting group
    z: dict[str, dict[str, np.ndarray]]  # split -> stat -> robust z against train's distribution
    z_scales: dict[str, tuple[float, float, float]]  # stat -> (median, lower scale, upper scale) on train


Z99 = 2.3263  # the standard normal's 99th percentile


def tail_scales(values: np.ndarray) -> tuple[float, float, float]:
    """Median and one scale per side, calibrated on the 1st/99th percentiles.

    z = (v - median) / scale_side equals the usual z-score for normal data, but a
    naturally heavy tail (tumour sizes, pixel energy) widens its own side's scale, so only
    examples far beyond the data's own tail stand out: the wrong scale, an empty input, a
    corrupted file. Ties (a statistic constant for most examples) fall back to the MAD,
    then the std.
    """
    v = values[np.isfinite(values)]
    if len(v) == 0:
        return 0.0, 1.0, 1.0
    med = float(np.median(v))
    q01, q99 = (float(q) for q in np.percentile(v, [1, 99]))
    fallback = 1.4826 * float(np.median(np.abs(v - med))) or float(np.std(v))
    tiny = 1e-12 * max(1.0, abs(med))
    lower = (med - q01) / Z99 if med - q01 > tiny else fallback
    upper = (q99 - med) / Z99 if q99 - med > tiny else fallback
    return med, max(lower, tiny), max(upper, tiny)


def robust_z(values: np.ndarray, med: float, lower: float, upper: float) -> np.ndarray:
    return np.where(values >= med, (values - med) / upper, (values - med) / lower)


def measure(scan: DataScan) -> DataMeasurements:
    train = scan.train
    # ---- identical inputs, across all splits at once
    names = list(scan.splits)
    all_hashes = np.concatenate([scan.splits[s].hashes for s in names])
    split_of = np.concatenate([np.full(scan.splits[s].n, i) for i, s in enumerate(names)])
    index_of = np.concatenate([np.arange(scan.splits[s].n) for s in names])
    uniq, inverse = np.unique(all_hashes, return_inverse=True)
    is_train = split_of == names.index("train")
    train_counts = np.bincount(inverse[is_train], minlength=len(uniq))
    dup_count, leaked, conflict_flags = {}, {}, {}
    offset = 0
    for s in names:
        n = scan.splits[s].n
        dup_count[s] = train_counts[inverse[offset : offset + n]]
        if s != "train":
            leaked[s] = np.nonzero(dup_count[s] > 0)[0]
        conflict_flags[s] = np.zeros(n, dtype=bool)
        offset += n
    in_train_groups = train_counts[train_counts > 0]

    conflicts: list[Conflict] = []
    if not scan.task.skip_reason("conflicting-labels"):  # identical inputs, different labels
        labels = np.concatenate([_label_column(scan.splits[s].targets) for s in names])
        total_counts = np.bincount(inverse, minlength=len(uniq))
        order = np.argsort(inverse, kind="stable")  # members of group g: order[start[g] : start[g] + count[g]]
        start = np.concatenate([[0], np.cumsum(total_counts)[:-1]])
        for g in np.nonzero(total_counts > 1)[0]:
            members = order[start[g] : start[g] + total_counts[g]]
            distinct = np.unique(labels[members])
            if len(distinct) > 1:
                conflicts.append(
                    Conflict(
                        members=[
                            (names[split_of[m]], int(index_of[m]), float(labels[m])) for m in members[:MAX_LISTED]
                        ],
                        labels=distinct.tolist(),
                    )
                )
                for m in members:
                    conflict_flags[names[split_of[m]]][index_of[m]] = True

    # ---- robust z-scores of per-example statistics, against train's distribution
    scales = {stat: tail_scales(train.stats[stat]) for stat in STAT_NAMES}
    z = {s: {stat: robust_z(scan.splits[s].stats[stat], *scales[stat]) for stat in STAT_NAMES} for s in names}

    return DataMeasurements(
        scan=scan,
        dup_count=dup_count,
        train_extra_copies=int(train.n - int((train_counts > 0).sum())),
        train_dup_groups=int((in_train_groups > 1).sum()),
        largest_dup_group=int(in_train_groups.max()) if len(in_train_groups) else 0,
        leaked=leaked,
        conflicts=conflicts,
        conflict_flags=conflict_flags,
        z=z,
        z_scales=scales,
    )


def _label_column(targets: np.ndarray) -> np.ndarray:
    return targets.reshape(len(targets), -1)[:, 0] if targets.ndim > 1 else targets
