"""Tabular files: CSV with a header row and a named target column, and NumPy .npz archives."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from nnrecipe.data.bundle import DataBundle
from nnrecipe.data.common import carve_splits, resolve_path, standardize, standardize_targets, tensor_bundle
from nnrecipe.errors import DataError
from nnrecipe.tasks import get_task


def _read_csv(path: Path, *, target: str, features: Optional[list[str]], delimiter: str, field: str):
    """({feature column: its values as text}, the target column's values as text)."""
    try:
        with path.open(newline="") as f:
            reader = csv.reader(f, delimiter=delimiter)
            header = next(reader, None)
            rows = [r for r in reader if r]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{field}: cannot read {path}: {exc}") from None
    if not header:
        raise DataError(f"{field}: {path} is empty; expected a header row")
    header = [h.strip() for h in header]
    if target not in header:
        raise DataError(f"data.args.target: column {target!r} not in {path} (columns: {', '.join(header)})")
    columns = features if features is not None else [h for h in header if h != target]
    missing = [c for c in columns if c not in header]
    if missing:
        raise DataError(f"data.args.features: {', '.join(map(repr, missing))} not in {path}")
    if not columns:
        raise DataError(f"data.args.features: {path} has no feature columns besides {target!r}")
    for i, r in enumerate(rows):
        if len(r) != len(header):
            raise DataError(f"{field}: {path} line {i + 2} has {len(r)} fields, the header has {len(header)}")
    index = {h: i for i, h in enumerate(header)}
    text = {c: [r[index[c]].strip() for r in rows] for c in columns}
    return text, np.array([r[index[target]].strip() for r in rows])


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _categorical(text: dict[str, list[str]], declared: Optional[list[str]], path: Path) -> list[str]:
    """The columns read as categories: those declared (data.args.categorical), else every
    column whose values are mostly not numbers. A numeric column with a few stray words is a
    data error (reported with its line), not a column of categories."""
    if declared is not None:
        unknown = [c for c in declared if c not in text]
        if unknown:
            raise DataError(f"data.args.categorical: {', '.join(map(repr, unknown))} not among the features of {path}")
        return list(declared)

    def words(values: list[str]) -> bool:
        filled = [v for v in values if v]
        return sum(not _is_number(v) for v in filled) > len(filled) / 2

    return [c for c, values in text.items() if words(values)]


def _encode(
    text: dict[str, list[str]], categorical: list[str], vocab: dict[str, dict[str, int]], *, field: str, path: Path
):
    """Model inputs: numeric columns as float32 (N, k_num), categorical ones as int64 codes
    (N, k_cat), 1..K per column in the order of `vocab` (0: a value `vocab` has not seen);
    both: the tuple (codes, numbers), as a tabular model with embeddings takes them."""
    n = len(next(iter(text.values())))
    numeric = [c for c in text if c not in categorical]
    x_num = np.empty((n, len(numeric)), dtype=np.float32)
    for j, c in enumerate(numeric):
        try:
            x_num[:, j] = np.array(text[c], dtype=np.float64)
        except ValueError:
            bad = next(i for i, v in enumerate(text[c]) if not _is_number(v))
            raise DataError(
                f"{field}: {path} column {c!r} is not numeric (line {bad + 2}: {text[c][bad]!r}); "
                "list it in data.args.categorical to read it as categories"
            ) from None
    if not categorical:
        return torch.as_tensor(x_num)
    codes = torch.as_tensor(
        np.array(
            [[vocab[c].get(v, 0) for c, v in zip(categorical, row)] for row in zip(*(text[c] for c in categorical))]
        ).reshape(n, len(categorical)),
        dtype=torch.int64,
    )
    return (codes, torch.as_tensor(x_num)) if numeric else codes


def load_csv(spec, base: Path) -> DataBundle:
    a = spec.data.args
    read = {}
    for key in ("path", "val_path", "test_path"):
        value = getattr(a, key)
        if value is not None:
            p = resolve_path(value, base, field=f"data.args.{key}")
            read[key] = (
                p,
                *_read_csv(p, target=a.target, features=a.features, delimiter=a.delimiter, field=f"data.args.{key}"),
            )
    task = get_task(spec.task)
    p, text, y_raw = read["path"]
    categorical = _categorical(text, a.categorical, p)
    # The codes come from the training file: a value only val_path or test_path holds reads as 0.
    vocab = {c: {v: i + 1 for i, v in enumerate(sorted(set(text[c])))} for c in categorical}
    x = _encode(text, categorical, vocab, field="data.args.path", path=p)
    y, names = task.column_targets(y_raw, names=None, field="data.args.path", path=p)
    extra = {}
    for key, split in (("val_path", "val"), ("test_path", "test")):
        if key in read:
            p2, text2, y2_raw = read[key]
            y2, _ = task.column_targets(y2_raw, names=names, field=f"data.args.{key}", path=p2)
            extra[split] = (_encode(text2, categorical, vocab, field=f"data.args.{key}", path=p2), y2)
    splits = carve_splits(
        x,
        y,
        task=task,
        val_fraction=spec.data.val_fraction,
        test_fraction=spec.data.test_fraction,
        seed=spec.data.split_seed,
        **extra,
    )
    splits = _rescale(splits, a)
    levels = ", ".join(f"{c} {len(v)}" for c, v in vocab.items())
    return tensor_bundle(
        splits,
        task=task,
        source="csv",
        declared_classes=spec.data.num_classes,
        class_names=names,
        description=f"CSV {p.name}: {len(text)} features"
        + (f", {len(categorical)} categorical as codes 1..K, 0 unseen ({levels} levels)" if categorical else ""),
    )


def load_npz(spec, base: Path) -> DataBundle:
    a = spec.data.args
    task = get_task(spec.task)
    path = resolve_path(a.path, base, field="data.args.path")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"data.args.path: {path} is not a readable .npz archive ({exc})") from None
    for key_field in ("x_key", "y_key"):
        key = getattr(a, key_field)
        if key not in arrays:
            raise DataError(
                f"data.args.{key_field}: array {key!r} not in {path} (arrays: {', '.join(arrays) or 'none'})"
            )

    def pair(xk: str, yk: str):
        if xk in arrays and yk in arrays:
            return torch.as_tensor(arrays[xk]), _npz_targets(arrays[yk], task)
        if xk in arrays or yk in arrays:
            raise DataError(f"data.args: {path} has only one of {xk!r} and {yk!r}")
        return None

    splits = carve_splits(
        torch.as_tensor(arrays[a.x_key]),
        _npz_targets(arrays[a.y_key], task),
        task=task,
        val_fraction=spec.data.val_fraction,
        test_fraction=spec.data.test_fraction,
        seed=spec.data.split_seed,
        val=pair(a.x_val_key, a.y_val_key),
        test=pair(a.x_test_key, a.y_test_key),
    )
    splits = _rescale(splits, a)
    return tensor_bundle(
        splits,
        task=task,
        source="npz",
        declared_classes=spec.data.num_classes,
        description=f"npz {path.name}: inputs {tuple(arrays[a.x_key].shape[1:])}",
    )


def _rescale(splits, args):
    """The optional standardization of csv/npz data, fitted on train (the schema allows
    standardize_targets only for regression)."""
    if args.standardize:
        splits = standardize(splits)
    if args.standardize_targets:
        splits = standardize_targets(splits)
    return splits


def _npz_targets(y: np.ndarray, task) -> torch.Tensor:
    if y.dtype.kind in "USO":
        raise DataError("data.args.y_key: npz class labels must be numbers (use a CSV for named classes)")
    return task.array_targets(y)
