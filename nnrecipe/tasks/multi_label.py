"""Multi-label: K independent yes/no labels per example, multi-hot (N, K) targets, (N, K) logits
out, one sigmoid per label (binary cross-entropy with logits).

The metric is F1 per example, averaged over examples (scikit-learn's average="samples": an
example with no true and no predicted label scores 1): it is a mean of per-example scores, so
the paired statistics of every stage (z on the same val examples, seeds, halves) apply to it
as they are. Micro-F1 and mean average precision are reported beside it (val_scalars /
summary), not judged. The dumb baseline predicts each label's train prevalence; at init the
loss is the mean binary entropy of the prevalences, with final bias logit(prevalence).
"""

from __future__ import annotations

import numpy as np
import torch

from nnrecipe.tasks.base import HUMAN_ACCURACY, MeanOfScores, Task, TrainGoal


def example_f1(predicted: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """F1 of each example's predicted label set against its true one (1 when both are empty)."""
    p, t = predicted.bool(), truth.bool()
    tp = (p & t).sum(dim=1).double()
    size = (p.sum(dim=1) + t.sum(dim=1)).double()
    return torch.where(size > 0, 2 * tp / size.clamp_min(1), torch.ones_like(size))


class _MeanF1:
    """The sum of per-example F1 over a split, on the device."""

    def __init__(self, device: torch.device) -> None:
        self.total = torch.zeros((), device=device, dtype=torch.float64)

    def update(self, out: torch.Tensor, y: torch.Tensor) -> None:
        self.total += example_f1(out.float() > 0, y.to(out.device) > 0.5).sum()

    def value(self, n: int) -> float:
        return (self.total / n).item()

    def sums(self) -> list[torch.Tensor]:
        return [self.total]


def prevalence(y: torch.Tensor) -> np.ndarray:
    """Each label's share of positive examples."""
    return (y.double().reshape(len(y), -1) > 0.5).double().mean(dim=0).numpy()


class MultiLabel(MeanOfScores, Task):
    name = "multi-label"
    metric, metric_title, metric_symbol, metric_short = "f1", "F1 (per example)", "F1", "F1"
    score, score_title = "f1", "F1"
    higher_is_better = True
    default_loss = "bce"
    dumb_name = "prevalence"
    supports = frozenset({"class-balance", "augment-preserves-labels", "distillation"})
    skips = {
        "conflicting-labels": "multi-label: identical inputs may share some labels and not others; no rule",
        "human-baseline": HUMAN_ACCURACY,
        "suspected-label-errors": "multi-label: confident learning ranks one class per example; no rule here",
    }

    def spec_problem(self, *, source, loss):
        if source not in ("python", "npz"):
            return f"task: multi-label needs multi-hot targets (N, K): data.source python or npz; {source} gives one label per example"
        if loss not in ("auto", "bce"):
            why = (
                "a softmax makes the labels compete; multi-label wants one sigmoid per label, loss bce"
                if loss in ("cross_entropy", "nll")
                else "it wants one sigmoid per label, loss bce"
            )
            return f"loss: {loss} does not fit task multi-label: {why}"
        return ""

    # ---- measures

    def example_scores(self, out, y):
        return example_f1(out.float() > 0, y.to(out.device) > 0.5)

    def meter(self, device):
        return _MeanF1(device)

    def train_goal(self, cfg):
        return TrainGoal("train F1", cfg.target_train_accuracy, lambda e: e.metric)

    # ---- targets and data

    def num_outputs(self, data):
        return data.target_dim

    def bundle_targets(self, y):
        return y.float().reshape(len(y), -1)

    def declared_outputs(self, declared, class_names, ys):
        k = ys[0].shape[1] if ys[0].ndim == 2 else 1
        return k, k  # the labels are the "classes" (their names, pictures per label)

    def lazy_outputs(self, declared, class_names, splits):
        _, y = next(iter(splits.values())).example(0)
        k = int(torch.as_tensor(y).numel())
        return k, k

    def check_usable(self, data, where):
        from nnrecipe.errors import DataError

        y = data.targets("train")
        if y.ndim == 2 and not bool((y > 0.5).any()):
            raise DataError(f"{where}: no train example has any label: multi-label needs positive labels to learn")

    def check_targets(self, data):
        """Multi-hot rows: K values, each 0 or 1, in every split."""
        from nnrecipe.errors import DataError

        more = "(inspect-data's label-range says more)"
        for name in data.splits():
            y = data.targets(name)
            if y.ndim != 2 or y.shape[1] != data.num_outputs:
                raise DataError(
                    f"data: the {name} targets have shape {tuple(y.shape[1:])} per example; multi-label trains "
                    f"on {data.num_outputs} values of 0 or 1 per example (multi-hot) {more}"
                )
            bad = (y != 0) & (y != 1)
            if bad.any() and y.shape[1] == 1:
                raise DataError(
                    f"data: the {name} targets have one value per example, up to {float(y.max()):g}: class "
                    "indices? multi-label trains on K values of 0 or 1 per example (multi-hot); one class "
                    f"per example is task: classification {more}"
                )
            if bad.any():
                i, k = (int(v) for v in torch.nonzero(bad)[0])
                raise DataError(
                    f"data: {int(bad.any(dim=1).sum())} {name} targets are not 0 or 1 (e.g. {name}[{i}][{k}] = "
                    f"{float(y[i, k]):g}); multi-hot labels are 0 or 1 {more}"
                )

    def label_range(self, m, cfg):
        from nnrecipe.checks.data_integrity import multi_hot_label_range

        return multi_hot_label_range(m, cfg)

    def class_balance(self, m, cfg):
        from nnrecipe.checks.data_distribution import label_prevalence

        return label_prevalence(m, cfg)

    def share_counts(self, targets, num_classes):
        """Positive examples per label (the class-balance picture)."""
        t = np.asarray(targets).reshape(len(targets), -1)
        return np.nansum(t > 0.5, axis=0).astype(np.int64)[:num_classes]

    # ---- baselines and init

    def dumb_scores(self, data):
        """Every val example gets the labels more than half of train has."""
        y = data.targets("val")
        guess = torch.as_tensor(prevalence(data.targets("train")) > 0.5).expand_as(y)
        return example_f1(guess, y > 0.5).numpy()

    def dumb_metric(self, data, scores):
        return float(np.mean(scores))

    def chance(self, data):
        return self.dumb_metric(data, self.dumb_scores(data))

    def ideal_bias(self, loss, *, priors=None, target_mean=None):
        """bce: logit(prevalence), so that a zero-weight model predicts each label's share."""
        if loss != "bce" or priors is None:
            return None
        p = np.clip(np.asarray(priors, dtype=np.float64), 1e-6, 1 - 1e-6)
        return np.log(p / (1 - p))

    def data_bias(self, loss, data):
        return self.ideal_bias(loss, priors=prevalence(data.targets("train")))

    def init_statistics(self, data, rows, out, loss):
        return {
            "train_priors": prevalence(data.targets("train")),
            "val_priors": prevalence(data.targets("val")),
            "mean_predicted": torch.sigmoid(rows.double()).mean(dim=0).numpy(),
        }

    # ---- words and pictures

    def label_text(self, data, y):
        on = torch.nonzero(torch.as_tensor(y).reshape(-1) > 0.5).flatten().tolist()
        return "+".join(data.class_name(k) for k in on) or "(none)"

    def short_label(self, data, y):
        return self.label_text(data, y)

    def prediction_text(self, data, out, loss):
        p = torch.sigmoid(out.float().reshape(-1))
        on = torch.nonzero(p > 0.5).flatten().tolist()
        return "+".join(f"{data.class_name(k)} ({float(p[k]):.2f})" for k in on) or "(none)"

    def dynamics(self, out, loss):
        return torch.sigmoid(out.float()).cpu().numpy()

    def dynamics_picture(self, steps, predictions, truth):
        """Predicted label probabilities on the fixed val batch, the true labels outlined."""
        from nnrecipe import pictures

        return pictures.prediction_strip(steps, predictions, truth, distributions=True)

    def dynamics_image(self, prediction, truth):
        from nnrecipe import pictures

        return pictures.matrix_image(np.concatenate([prediction, np.full((len(prediction), 1), 0.5), truth], axis=1))

    def augmented_predictions(self, out):
        return (out > 0).long()

    def example_groups(self, targets, k, max_groups, rng, data):
        """A row of random train examples per label (examples that have it)."""
        t = np.asarray(targets).reshape(len(targets), -1)
        rows = []
        for c in range(min(t.shape[1], max_groups)):
            idx = np.nonzero(t[:, c] > 0.5)[0]
            pick = rng.choice(idx, size=min(k, len(idx)), replace=False) if len(idx) else []
            rows.append((data.class_name(c), [(int(i), f"#{int(i)}") for i in pick]))
        return rows

    def mispredictions(self, outputs, targets, *, num_classes, loss, class_name=str, k=24):
        from nnrecipe.probes.mispredictions import label_errors

        return label_errors(outputs, targets, class_name=class_name, k=k)

    # ---- squeeze

    def ensemble_part(self, output, loss):
        return torch.sigmoid(output.float())

    def ensemble_prediction(self, mean):
        """Averaged probabilities back to logits: scores and bce read them as a member's."""
        p = mean.clamp(1e-6, 1 - 1e-6)
        return torch.log(p / (1 - p))

    def distill_targets(self, teacher, y, cfg):
        """Rows [the ensemble's probabilities softened by the temperature (K), the hard labels
        (K)]; the student's loss mixes bce on both as classification's KL does (alpha, T^2).
        `teacher` is the ensemble's prediction: logits of its averaged probabilities."""
        import torch.nn.functional as F

        soft = torch.sigmoid(teacher.float() / cfg.temperature)
        rows = torch.cat([soft, y.float().reshape(soft.shape).to(soft.device)], dim=1)
        t, alpha = cfg.temperature, cfg.alpha

        def student(out, target):
            out = out.float()
            if target.shape[1] == 2 * out.shape[1]:
                soft_t, hard = target[:, : out.shape[1]], target[:, out.shape[1] :]
                return alpha * t * t * F.binary_cross_entropy_with_logits(out / t, soft_t) + (
                    1 - alpha
                ) * F.binary_cross_entropy_with_logits(out, hard)
            return F.binary_cross_entropy_with_logits(out, target.float())

        return rows, student, student


MULTI_LABEL = MultiLabel()
