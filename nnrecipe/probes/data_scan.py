"""One streaming pass over every split: the measurements behind the inspect-data checks.

Per example: summary statistics of the input, a hash of its bytes, non-finite counts and
its target. Per channel (or feature): sums for mean and std. Everything is vectorized per
batch except the hash, which is one C call per example (blake2b): 100k examples of
3x32x32 floats hash in about a second.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import Counter
from typing import Optional

import numpy as np
import torch

from nnrecipe import inputs
from nnrecipe.data.bundle import DataBundle, Split
from nnrecipe.tasks import Task

STAT_NAMES = ("mean", "std", "l2")  # the axes along which outliers are sought (l2: the norm)
ID_DTYPES = ("int8", "int16", "int32", "int64")  # integer inputs read as ids (tokens, category codes); uint8 is bytes
MAX_FEATURE_COUNTS = 64  # id positions (features) whose distinct values are counted one by one


def is_ids(dtype: str) -> bool:
    """Inputs of this dtype are ids (token ids, category codes), first-class: no scale, a vocabulary."""
    return dtype in ID_DTYPES


@dataclasses.dataclass
class IdStats:
    """Integer inputs: their range and how many distinct values each position takes."""

    low: int
    high: int
    negative: int  # ids below 0 (an embedding cannot look them up)
    values: set  # distinct values over all positions
    per_feature: Optional[list[Counter]]  # value -> count per position, when there are few positions

    def update(self, x: torch.Tensor) -> None:
        flat = x.reshape(len(x), -1)
        self.low, self.high = min(self.low, int(flat.min())), max(self.high, int(flat.max()))
        self.negative += int((flat < 0).sum())
        self.values |= set(torch.unique(flat).tolist())
        if self.per_feature is not None:
            for k, col in enumerate(flat.T):
                values, counts = torch.unique(col, return_counts=True)
                self.per_feature[k].update(dict(zip(values.tolist(), counts.tolist())))


@dataclasses.dataclass
class SplitScan:
    name: str
    n: int
    shapes: Counter  # input shape -> number of examples (one entry when consistent)
    x_dtype: str
    y_dtype: str
    y_shape: tuple[int, ...]  # per example: () for class indices, (k,) for k regression targets
    targets: np.ndarray  # (n,) or (n, k), as stored (float64 copy)
    stats: dict[str, np.ndarray]  # STAT_NAMES -> (n,) float64; NaN where the input is not finite
    x_nonfinite: np.ndarray  # (n,) count of NaN/Inf values in each input
    y_nonfinite: np.ndarray  # (n,) bool
    hashes: np.ndarray  # (n,) 'S16' blake2b digests of the input bytes
    channel_sum: np.ndarray  # (C,) sums over finite values, per channel/feature
    channel_sq: np.ndarray
    channel_count: np.ndarray
    ids: Optional[IdStats] = None  # integer inputs only
    # structured inputs: each leaf's own scan (its shapes, dtype, statistics, ids)
    leaves: Optional[dict[str, "SplitScan"]] = None

    @property
    def channel_mean(self) -> np.ndarray:
        return self.channel_sum / np.maximum(self.channel_count, 1)

    @property
    def channel_std(self) -> np.ndarray:
        var = self.channel_sq / np.maximum(self.channel_count, 1) - self.channel_mean**2
        return np.sqrt(np.maximum(var, 0.0))


@dataclasses.dataclass
class DataScan:
    """The measurements of all splits plus what the bundle declares about them."""

    task: Task
    kind: str  # image | signal | tabular
    num_classes: Optional[int]
    class_names: Optional[list[str]]
    splits: dict[str, SplitScan]

    @property
    def train(self) -> SplitScan:
        return self.splits["train"]


def class_counts(targets: np.ndarray, num_classes: int) -> np.ndarray:
    """Examples per class among the valid labels (finite integers in [0, C))."""
    y = targets[np.isfinite(targets)]
    y = y[(y >= 0) & (y < num_classes) & (y == np.round(y))].astype(np.int64)
    return np.bincount(y, minlength=num_classes)[:num_classes]


def _hash_rows(x: torch.Tensor) -> list[bytes]:
    rows = x.reshape(len(x), -1).contiguous().numpy()
    view = rows.view(np.uint8).reshape(len(rows), -1)  # the raw bytes of each example
    return [hashlib.blake2b(r.data, digest_size=16).digest() for r in view]


def _batch_stats(x: torch.Tensor):
    """Per-example mean/std/l2 and non-finite counts, per-channel sums: few passes, float32 math.

    A non-finite value makes its example's float32 sum non-finite, so the exact (slower)
    isfinite pass runs only on the rare batch that needs it. Sums are carried in float64
    across batches.
    """
    n = len(x)
    xf = x.reshape(n, -1)
    if not xf.is_floating_point():
        xf = xf.float()
    xc = xf.reshape(n, x.shape[1] if x.ndim > 1 else 1, -1)  # (N, C, rest): channels, or features of a vector
    row_sum = xf.sum(dim=1)
    if bool(torch.isfinite(row_sum).all()):
        nonfinite = np.zeros(n, dtype=np.int64)
        mean = (row_sum / xf.shape[1]).double().numpy()
        std = xf.std(dim=1, correction=0).double().numpy()  # two-pass: no cancellation
        l2 = torch.linalg.vector_norm(xf, dim=1).double().numpy()
        ch_s = xc.sum(dim=2).double().sum(dim=0).numpy()
        ch_q = xc.square().sum(dim=2).double().sum(dim=0).numpy()
        ch_c = np.full(xc.shape[1], float(n * xc.shape[2]))
        return mean, std, l2, nonfinite, (ch_s, ch_q, ch_c)
    # Slow path: some values are NaN/Inf. Their examples get NaN statistics; channel sums skip them.
    finite = torch.isfinite(xf)
    nonfinite = (~finite).sum(dim=1).numpy()
    xd = xf.double()
    mean = xd.mean(dim=1).numpy()
    std = xd.std(dim=1, correction=0).numpy()
    l2 = xd.norm(dim=1).numpy()
    fc = finite.reshape(xc.shape)
    xz = torch.where(fc, xd.reshape(xc.shape), torch.zeros((), dtype=torch.float64))
    return (
        mean,
        std,
        l2,
        nonfinite,
        (xz.sum(dim=(0, 2)).numpy(), (xz**2).sum(dim=(0, 2)).numpy(), fc.sum(dim=(0, 2)).double().numpy()),
    )


class _Inputs:
    """The running measurements of one input tensor stream (a split's inputs, or one leaf of
    structured inputs), batch by batch."""

    def __init__(self):
        self.stats: dict[str, list] = {k: [] for k in STAT_NAMES}
        self.nonfinite: list[np.ndarray] = []
        self.hashes: list[bytes] = []
        self.shapes: Counter = Counter()
        self.dtype = ""
        self.ch: Optional[tuple] = None
        self.ids: Optional[IdStats] = None

    def add(self, x: torch.Tensor) -> None:
        self.dtype = str(x.dtype).removeprefix("torch.")
        self.shapes[tuple(x.shape[1:])] += len(x)
        self.hashes += _hash_rows(x)
        if is_ids(self.dtype) and x.numel():
            if self.ids is None:
                width = x[0].numel()
                per: Optional[list[Counter]] = (
                    [Counter() for _ in range(width)] if width <= MAX_FEATURE_COUNTS else None
                )
                self.ids = IdStats(int(x.min()), int(x.max()), 0, set(), per)
            self.ids.update(x)
        mean, std, l2, nonfinite, sums = _batch_stats(x)
        for k, v in zip(STAT_NAMES, (mean, std, l2)):
            self.stats[k].append(v)
        self.nonfinite.append(nonfinite)
        self.ch = sums if self.ch is None else tuple(a + b for a, b in zip(self.ch, sums))

    def scan(self, name: str, targets: dict) -> "SplitScan":
        ch = self.ch if self.ch is not None else (np.zeros(0),) * 3
        return SplitScan(
            name=name,
            n=len(self.hashes),
            shapes=self.shapes,
            x_dtype=self.dtype,
            stats={k: np.concatenate(v) if v else np.zeros(0) for k, v in self.stats.items()},
            x_nonfinite=np.concatenate(self.nonfinite) if self.nonfinite else np.zeros(0, dtype=np.int64),
            hashes=np.array(self.hashes, dtype="S16"),
            channel_sum=ch[0],
            channel_sq=ch[1],
            channel_count=ch[2],
            ids=self.ids,
            **targets,
        )


def _float_view(x) -> torch.Tensor:
    """Structured inputs as one row of numbers per example, for the split-level statistics:
    the float leaves side by side (all leaves when none is float)."""
    named = inputs.float_leaves(x) or inputs.leaves(x)
    return torch.cat([t.reshape(len(t), -1).float() for _, t in named], dim=1)


def scan_split(split: Split, *, batch_size: int = 1024, progress=None, task_id=None) -> SplitScan:
    """The split's measurements. Structured inputs (a dict or tuple of tensors): each leaf is
    scanned on its own (`leaves`), the split's hashes cover all leaves (a duplicate is a whole
    example twice) and its statistics are taken over the float leaves side by side."""
    whole = _Inputs()
    per_leaf: dict[str, _Inputs] = {}
    structure: Counter[str] = Counter()
    targets, y_nonfinite = [], []
    y_dtype = ""
    y_shape: tuple[int, ...] = ()
    for x, y in split.iterate(batch_size):
        x, y = inputs.cpu(x), torch.as_tensor(y).cpu()
        y_dtype, y_shape = str(y.dtype).removeprefix("torch."), tuple(y.shape[1:])
        if inputs.structured(x):
            for name, leaf in inputs.leaves(x):
                per_leaf.setdefault(name, _Inputs()).add(leaf)
            whole.add(_float_view(x))
            digests = zip(*(_hash_rows(t) for t in inputs.tensors(x)))  # the example's leaves, in order
            whole.hashes[-len(y) :] = [hashlib.blake2b(b"".join(d), digest_size=16).digest() for d in digests]
            structure[inputs.describe(inputs.index(x, 0))] += len(y)  # "input_ids int64 (32,), ..."
        else:
            whole.add(x)
        yd = y.double().reshape(len(y), -1) if y.numel() else torch.zeros(len(y), 1, dtype=torch.float64)
        y_nonfinite.append((~torch.isfinite(yd)).any(dim=1).numpy())
        targets.append(y.double().numpy())
        if progress is not None:
            progress.advance(task_id, len(y))
    common = dict(
        y_dtype=y_dtype,
        y_shape=y_shape,
        targets=np.concatenate(targets) if targets else np.zeros(0),
        y_nonfinite=np.concatenate(y_nonfinite) if y_nonfinite else np.zeros(0, dtype=bool),
    )
    scan = whole.scan(split.name, common)
    if per_leaf:
        scan.x_dtype, scan.shapes = "structured", structure
        scan.leaves = {name: acc.scan(split.name, common) for name, acc in per_leaf.items()}
        scan.x_nonfinite = sum((leaf.x_nonfinite for leaf in scan.leaves.values()), np.zeros_like(scan.x_nonfinite))
    return scan


def scan_bundle(bundle: DataBundle, *, progress=None) -> DataScan:
    scans = {}
    for name, split in bundle.splits().items():
        task_id = progress.add_task(f"scanning {name}", total=len(split)) if progress is not None else None
        scans[name] = scan_split(split, progress=progress, task_id=task_id)
    return DataScan(
        task=bundle.task, kind=bundle.kind, num_classes=bundle.num_classes, class_names=bundle.class_names, splits=scans
    )


def leaf_scans(scan: DataScan) -> dict[str, DataScan]:
    """Structured inputs: one DataScan per leaf (its splits' scans of that leaf, the same
    targets), for the rules that judge one tensor at a time. Empty for a plain tensor."""
    names = list(scan.train.leaves or {})
    return {
        leaf: dataclasses.replace(
            scan,
            kind=_leaf_kind(scan.train.leaves[leaf]),  # type: ignore[index]
            splits={k: s.leaves[leaf] for k, s in scan.splits.items() if s.leaves and leaf in s.leaves},
        )
        for leaf in names
    }


def _leaf_kind(s: SplitScan) -> str:
    shape = next(iter(s.shapes), ())
    return {3: "image", 2: "signal"}.get(len(shape), "tabular")
