"""Regression: k real targets per example, (N, k) outputs; R^2, paired z on squared errors."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from nnrecipe import inputs
from nnrecipe.stats import paired_z
from nnrecipe.tasks.base import HUMAN_ACCURACY, LABEL_ERRORS, LossFloor, Task, TrainGoal


class _RSquared:
    """R^2 = 1 - SSE/SST over a split: 0 for the mean predictor, 1 for a perfect one."""

    def __init__(self, device: torch.device) -> None:
        self.sse = torch.zeros((), device=device, dtype=torch.float64)
        self.y_sum: Optional[torch.Tensor] = None  # per-output sums, for SST
        self.y_sq: Optional[torch.Tensor] = None

    def update(self, out: torch.Tensor, y: torch.Tensor) -> None:
        yd, od = y.double().reshape(len(y), -1), out.double().reshape(len(y), -1)
        if self.y_sum is None or self.y_sq is None:  # both None until the first batch
            self.y_sum, self.y_sq = yd.sum(dim=0), (yd**2).sum(dim=0)
        else:
            self.y_sum, self.y_sq = self.y_sum + yd.sum(dim=0), self.y_sq + (yd**2).sum(dim=0)
        self.sse += ((od - yd) ** 2).sum()

    def value(self, n: int) -> float:
        if self.y_sum is None or self.y_sq is None:  # no batch: nan, as the other meters' 0 / 0
            return math.nan
        sst = (self.y_sq - self.y_sum**2 / n).sum().clamp_min(1e-12)
        return 1.0 - (self.sse / sst).item()

    def sums(self) -> list[torch.Tensor]:
        assert self.y_sum is not None and self.y_sq is not None, "sums of an empty split"
        return [self.sse, self.y_sum, self.y_sq]


class Regression(Task):
    name = "regression"
    metric, metric_title, metric_symbol, metric_short = "r2", "R^2", "R²", "R²"
    score, score_title = "mse", "MSE"
    higher_is_better = False
    default_loss = "mse"
    dumb_name = "mean"
    real_targets = True
    supports = frozenset({"augment-preserves-labels", "distillation"})
    skips = {
        "label-range": "regression: targets are real numbers; their range is reported by shapes-dtypes",
        "conflicting-labels": "regression: identical inputs may have different targets by noise",
        "class-balance": "regression task",
        "human-baseline": HUMAN_ACCURACY,
        "suspected-label-errors": LABEL_ERRORS,
    }

    # ---- measures

    def example_scores(self, out, y):
        """Squared error, averaged over the outputs."""
        out, y = out.float(), y.to(out.device)
        return ((out - y.float().reshape(out.shape)) ** 2).reshape(len(out), -1).mean(dim=1).double()

    def meter(self, device):
        return _RSquared(device)

    def metric_se(self, metric, n, *, scores=None, target_var=1.0):
        """From the per-example squared errors when given: SD / sqrt(n) / Var(y); else from
        Var(MSE) ~ 2 sigma^4 / n with Gaussian residuals, (1 - R^2) sqrt(2 / n)."""
        if scores is not None:
            return float(np.std(scores, ddof=1) / math.sqrt(max(n, 1)) / max(target_var, 1e-12))
        return max(1.0 - metric, 1e-6) * math.sqrt(2.0 / max(n, 1))

    def metric_of(self, scores, target_var=1.0):
        """R^2 from squared errors: 1 - MSE / Var(y)."""
        return 1 - float(scores.mean()) / target_var

    def objective(self, metric):
        """R^2 floored at -1: a diverged trial still ranks last with a finite number."""
        return max(float(metric), -1.0) if math.isfinite(metric) else -1.0

    def train_goal(self, cfg):
        return TrainGoal("train R^2", cfg.target_train_r2, lambda e: e.metric)

    # ---- targets and data

    def num_outputs(self, data):
        return data.target_dim

    def bundle_targets(self, y):
        return y.float().reshape(len(y), -1)

    def declared_outputs(self, declared, class_names, ys):
        return None, ys[0].shape[1]

    def column_targets(self, values: np.ndarray, *, names: Optional[list[str]], field: str, path: Path):
        from nnrecipe.errors import DataError

        try:
            return torch.as_tensor(values.astype(np.float32)), None
        except ValueError:
            raise DataError(
                f"data.args.target: {path} target column is not numeric; regression needs numbers"
            ) from None

    def array_targets(self, values):
        return torch.as_tensor(values.astype(np.float32))

    def synthetic_splits(self, args, generator, counts):
        from nnrecipe.data.synthetic import linear

        return linear(args, generator, counts)

    def label_range(self, m, cfg):
        from nnrecipe.checks.data_integrity import label_range_skip

        return label_range_skip(m, self.skips["label-range"], observed=True)

    def per_output(self, outputs, targets, train_mean, blocks=None):
        """Each output's val R^2, and the paired z of its squared errors against predicting its
        train mean (the mean predictor, one output at a time)."""
        out = outputs.double().reshape(len(outputs), -1).cpu()
        y = targets.double().reshape(len(targets), -1).cpu()
        if out.shape[1] < 2 or out.shape != y.shape:
            return None
        mean = torch.as_tensor(np.asarray(train_mean, dtype=np.float64)).reshape(1, -1)
        model_se, dumb_se = ((out - y) ** 2).numpy(), ((mean - y) ** 2).numpy()
        var = y.var(dim=0).clamp_min(1e-12).numpy()
        k_out = out.shape[1]
        return {
            "r2": [round(float(1 - model_se[:, k].mean() / var[k]), 4) for k in range(k_out)],
            "z": [round(float(paired_z(model_se[:, k], dumb_se[:, k], blocks=blocks)), 2) for k in range(k_out)],
        }

    # ---- baselines and init

    def dumb_scores(self, data):
        """The mean predictor (train's target mean): squared error per val example."""
        y_val = data.targets("val")
        mean = torch.as_tensor(data.target_mean("train"))
        return ((y_val.double().reshape(len(y_val), -1) - mean) ** 2).mean(dim=1).numpy()

    def dumb_metric(self, data, scores):
        """R^2 of the mean predictor on val."""
        y = data.targets("val").double()
        return 1.0 - float(np.mean(scores)) * y.numel() / max(float(((y - y.mean(dim=0)) ** 2).sum()), 1e-12)

    def target_variance(self, data):
        return float(data.targets("val").double().reshape(len(data.val), -1).var(dim=0).mean())

    def ideal_bias(self, loss, *, priors=None, target_mean=None):
        """mse / huber: the target mean."""
        if loss in ("mse", "huber") and target_mean is not None:
            return np.asarray(target_mean, dtype=np.float64)
        return None

    def data_bias(self, loss, data):
        return self.ideal_bias(loss, target_mean=data.target_mean())

    def init_output_layer(self, model, data, loss):
        """The bias at the target mean, then shifted so the mean prediction on train examples is
        the target mean (random final weights times positive ReLU outputs offset every prediction)."""
        from nnrecipe.models.init import center_regression_output, set_final_bias

        bias = self.data_bias(loss, data)
        if bias is None:
            return
        set_final_bias(model, bias, data.num_outputs)
        xs = torch.stack([data.train.example(i)[0] for i in range(min(1024, len(data.train)))]).cpu()
        center_regression_output(model, xs.float() if not xs.is_floating_point() else xs, bias, data.num_outputs)

    def init_statistics(self, data, rows, out, loss):
        ytr = data.targets("train").double().reshape(len(data.targets("train")), -1)
        return {
            "target_mean": ytr.mean(dim=0).numpy(),
            "target_std": ytr.std(dim=0).numpy(),
            "mean_output": out.double().mean(dim=0).numpy(),
        }

    def overfit_target(self, y, target):
        """In units of the batch's target variance (an MSE of Var(y) is the mean predictor's)."""
        return target * float(y.float().var(dim=0, unbiased=False).mean())

    def loss_floor(self, x, y, loss, *, receptive=None, positional=True):
        """Identical inputs with different targets: their variance around the group mean (mse)."""
        if loss != "mse":
            return LossFloor(0.0, "")
        t = y.detach().cpu().double().reshape(len(y), -1)
        groups: dict = {}
        for i, r in enumerate(inputs.row_bytes(x)):
            groups.setdefault(r, []).append(i)
        spread = [float(((t[idx] - t[idx].mean(dim=0)) ** 2).sum()) for idx in groups.values()]
        ambiguous = sum(v > 0 for v in spread)
        return LossFloor(
            sum(spread) / t.numel(),
            f"{ambiguous} group{'s' * (ambiguous != 1)} of identical inputs with different targets",
        )

    # ---- pictures

    def mispredictions(self, outputs, targets, *, num_classes, loss, class_name=str, k=24):
        from nnrecipe.probes.mispredictions import residuals

        return residuals(outputs, targets, k=k)

    # ---- squeeze

    def distill_targets(self, teacher, y, cfg):
        """MSE to the ensemble's mean output (weight alpha) and to the target."""
        from nnrecipe.probes.squeeze import regression_distill_loss

        targets = torch.cat([teacher.reshape(len(y), -1), y.float().reshape(len(y), -1)], dim=1)
        return targets, regression_distill_loss(cfg.alpha), regression_distill_loss(0.0)


REGRESSION = Regression()
