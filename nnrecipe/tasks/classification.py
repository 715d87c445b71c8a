"""Classification: one class index per example, (N, C) logits out; accuracy, McNemar's test."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from nnrecipe import inputs
from nnrecipe.stats import conditional_entropy, mcnemar_z
from nnrecipe.tasks.base import OPT_IN, SEQUENCE_CHECKS, LossFloor, Task, TrainGoal, binomial_se


class _Hits:
    """Correct predictions over a split, on the device."""

    def __init__(self, device: torch.device) -> None:
        self.hits = torch.zeros((), device=device, dtype=torch.float64)

    def update(self, out: torch.Tensor, y: torch.Tensor) -> None:
        self.hits += (out.argmax(dim=1) == y).sum()

    def value(self, n: int) -> float:
        return (self.hits / n).item()

    def sums(self) -> list[torch.Tensor]:
        return [self.hits]


def as_probabilities(outputs: torch.Tensor, loss: str) -> torch.Tensor:
    """What a classifier's outputs mean as class probabilities, by its loss."""
    if loss == "nll":  # the model returns log-probabilities
        return outputs.exp() / outputs.exp().sum(dim=1, keepdim=True)
    if loss == "bce":  # one sigmoid per class
        p = torch.sigmoid(outputs)
        return p / p.sum(dim=1, keepdim=True).clamp_min(1e-12)
    return torch.softmax(outputs.float(), dim=1)  # logits (cross_entropy and user losses)


def prior_bias(loss: str, priors: Optional[np.ndarray]) -> Optional[np.ndarray]:
    """cross_entropy / nll: log p_c (softmax is shift-invariant, so any constant may be added);
    bce (one sigmoid per class): log(p_c / (1 - p_c))."""
    if priors is None:
        return None
    p = np.clip(np.asarray(priors, dtype=np.float64), 1e-6, 1.0)
    if loss == "bce":
        p = np.clip(p, 1e-6, 1 - 1e-6)
        return np.log(p / (1 - p))
    if loss in ("cross_entropy", "nll"):
        return np.log(p)
    return None


def read_labels(declared, class_names, splits) -> list[torch.Tensor]:
    """Every label of Dataset splits, flat, read once only when neither data.num_classes nor
    class names say C (else none)."""
    if declared or class_names:
        return []
    return [torch.cat([y.reshape(-1) for _, y in s.iterate(256)]) for s in splits.values()]


def distribution_statistics(data, rows: torch.Tensor, loss: str) -> dict:
    """The train and val priors and the mean predicted distribution over the output rows."""
    probs = torch.sigmoid(rows) if loss == "bce" else F.softmax(rows, dim=1)
    return {
        "train_priors": data.priors("train"),
        "val_priors": data.priors("val"),
        "mean_predicted": probs.double().mean(dim=0).numpy(),
    }


class Classification(Task):
    name = "classification"
    metric, metric_title, metric_symbol, metric_short = "accuracy", "accuracy", "accuracy", "acc"
    score, score_title = "accuracy", "accuracy"
    higher_is_better = True
    default_loss = "cross_entropy"
    dumb_name = "majority-class"
    stratify = True
    supports = frozenset(OPT_IN) - set(SEQUENCE_CHECKS)

    # ---- measures

    def example_scores(self, out, y):
        out, y = out.float(), y.to(out.device)
        return (out.argmax(dim=1) == y.long()).double()

    def meter(self, device):
        return _Hits(device)

    def better_z(self, a, b, *, seeds=1):
        """McNemar's z on one seed's 0/1 correctness; a paired z on averaged correctness, or
        over groups where val rows are dependent (McNemar counts rows as independent)."""
        if seeds == 1 and self.blocks(len(a)) is None:
            return mcnemar_z(a > 0.5, b > 0.5)[0]
        return super().better_z(a, b, seeds=seeds)

    def metric_of(self, scores, target_var=1.0):
        return float(scores.mean())

    def metric_se(self, metric, n, *, scores=None, target_var=1.0):
        return binomial_se(metric, n)

    def objective(self, metric):
        return float(metric) if math.isfinite(metric) else 0.0

    def train_goal(self, cfg):
        return TrainGoal("train accuracy", cfg.target_train_accuracy, lambda e: e.metric)

    # ---- targets and data

    def num_outputs(self, data):
        return int(data.num_classes or 0)

    def declared_outputs(self, declared, class_names, ys):
        from nnrecipe.data.common import infer_num_classes

        return infer_num_classes(declared, class_names, ys), 1

    def lazy_outputs(self, declared, class_names, splits):
        from nnrecipe.data.common import infer_num_classes

        return infer_num_classes(declared, class_names, read_labels(declared, class_names, splits)), 1

    def check_usable(self, data, where):
        from nnrecipe.errors import DataError

        distinct = data.targets("train").unique()
        if len(distinct) < 2:
            shown = distinct.tolist()[0] if len(distinct) else "none"
            raise DataError(f"{where}: every train label is {shown}: classification needs at least two classes")

    def check_targets(self, data):
        """Class indices: one integer in [0, C) per example, in every split."""
        from nnrecipe.errors import DataError

        C, more = data.num_classes, "(inspect-data's label-range says more)"
        for name in data.splits():
            y = data.targets(name)
            if y.ndim != 1:
                raise DataError(
                    f"data: the {name} targets have shape {tuple(y.shape[1:])} per example; classification "
                    f"trains on one class index per example {more}"
                )
            bad = (~torch.isfinite(y.double())) | (y.double() != y.double().round()) if y.is_floating_point() else None
            if bad is not None and bad.any():
                i = int(torch.nonzero(bad)[0])
                raise DataError(
                    f"data: {int(bad.sum())} {name} labels are not whole numbers (e.g. {name}[{i}] = "
                    f"{float(y[i]):g}); class indices are integers in [0, C) {more}"
                )
            if C is None:
                raise DataError(
                    f"data: the number of classes is unknown; give integer labels or data.num_classes {more}"
                )
            out = (y < 0) | (y >= C)
            if out.any():
                i = int(torch.nonzero(out)[0])
                raise DataError(
                    f"data: {int(out.sum())} {name} labels lie outside [0, {C}) (e.g. {name}[{i}] = "
                    f"{float(y[i]):g}); remap them to 0..{C - 1} or declare data.num_classes {more}"
                )

    def column_targets(self, values: np.ndarray, *, names: Optional[list[str]], field: str, path: Path):
        """Integer-looking labels stay integers; anything else is a class name (val/test files
        use the names found in train)."""
        from nnrecipe.data.common import integral_labels
        from nnrecipe.errors import DataError

        try:
            as_float = values.astype(np.float64)
            if names is None:
                return integral_labels(as_float)
        except ValueError:
            pass
        if names is not None:
            unknown = sorted(set(values.tolist()) - set(names))
            if unknown:
                raise DataError(f"{field}: {path} has classes not seen in train: {', '.join(unknown[:5])}")
            lookup = {n: i for i, n in enumerate(names)}
            return torch.as_tensor(np.array([lookup[v] for v in values], dtype=np.int64)), names
        return integral_labels(values.astype(str))

    def array_targets(self, values: np.ndarray) -> torch.Tensor:
        from nnrecipe.data.common import integral_labels

        return integral_labels(values)[0]

    def synthetic_splits(self, args, generator, counts):
        from nnrecipe.data.synthetic import blobs

        return blobs(args, generator, counts)

    def label_range(self, m, cfg):
        from nnrecipe.checks.data_integrity import class_label_range

        return class_label_range(m, cfg)

    # ---- baselines and init

    def dumb_scores(self, data):
        majority = int(np.argmax(data.priors("train")))
        return (data.targets("val").long() == majority).double().numpy()

    def dumb_metric(self, data, scores):
        return float(np.mean(scores))  # the majority class's val accuracy

    def chance(self, data):
        return float(data.priors("val").max())

    def ideal_bias(self, loss, *, priors=None, target_mean=None):
        return prior_bias(loss, priors)

    def data_bias(self, loss, data):
        return self.ideal_bias(loss, priors=data.priors())

    def init_statistics(self, data, rows, out, loss):
        return distribution_statistics(data, rows, loss)

    def overfit_examples(self, y, k, num_outputs):
        """Round-robin over the classes, so the batch is not one label."""
        by_class = [torch.nonzero(y == c).flatten().tolist() for c in range(num_outputs)]
        idx: list[int] = []
        r = 0
        while len(idx) < min(k, len(y)):
            for lst in by_class:
                if r < len(lst) and len(idx) < k:
                    idx.append(lst[r])
            r += 1
        return idx

    def loss_floor(self, x, y, loss, *, receptive=None, positional=True):
        """Identical inputs with different labels: their conditional entropy (cross_entropy, nll)."""
        if loss not in ("cross_entropy", "nll"):
            return LossFloor(0.0, "")
        h, groups = conditional_entropy(inputs.row_bytes(x), y.detach().cpu().long().tolist())
        return LossFloor(h, f"{groups} group{'s' * (groups != 1)} of identical inputs with different labels")

    # ---- words and pictures

    def label_text(self, data, y):
        return data.class_name(int(torch.as_tensor(y)))

    def short_label(self, data, y):
        return data.class_name(int(torch.as_tensor(y)))

    def label_name(self, data, label):
        return data.class_name(int(label)) if np.isfinite(label) and label == int(label) else ""

    def outlier_label(self, data, label):
        return data.class_name(int(label)) if np.isfinite(label) else f"{label:.3g}"

    def prediction_text(self, data, out, loss):
        p = torch.sigmoid(out) if loss == "bce" else F.softmax(out, dim=0)
        c = int(p.argmax())
        return f"{data.class_name(c)} ({float(p[c]):.2f})"

    def dynamics(self, out, loss):
        out = out.float()
        return (torch.sigmoid(out) if loss == "bce" else F.softmax(out, dim=1)).cpu().numpy()

    def class_probabilities(self, out, loss):
        return as_probabilities(out, loss)

    def dynamics_picture(self, steps, predictions, truth):
        """Predicted class probabilities on the fixed val batch, one heatmap per evaluation."""
        from nnrecipe import pictures

        return pictures.prediction_strip(steps, predictions, truth, distributions=True)

    def dynamics_image(self, prediction, truth):
        from nnrecipe import pictures

        return pictures.matrix_image(prediction, truth)

    def predicted_labels(self, out):
        return out.argmax(dim=1)

    def augmented_predictions(self, out):
        return out.argmax(dim=1)

    def example_groups(self, targets, k, max_groups, rng, data):
        """A row of random train examples per class."""
        if not data.num_classes:
            return super().example_groups(targets, k, max_groups, rng, data)
        rows = []
        for c in range(min(data.num_classes, max_groups)):
            idx = np.nonzero(targets == c)[0]
            pick = rng.choice(idx, size=min(k, len(idx)), replace=False) if len(idx) else []
            rows.append((data.class_name(c), [(int(i), f"#{int(i)}") for i in pick]))
        return rows

    def mispredictions(self, outputs, targets, *, num_classes, loss, class_name=str, k=24):
        from nnrecipe.probes.mispredictions import confusion

        return confusion(outputs, targets, num_classes=num_classes, loss=loss, class_name=class_name, k=k)

    # ---- squeeze

    def ensemble_part(self, output, loss):
        return as_probabilities(output, loss)

    def distill_targets(self, teacher, y, cfg):
        from nnrecipe.probes.squeeze import distill_loss, soft_targets

        return (
            soft_targets(teacher, y, cfg.temperature),
            distill_loss(cfg.temperature, cfg.alpha),
            distill_loss(1.0, 0.0),
        )


CLASSIFICATION = Classification()
