"""Segmentation: dense classification over any spatial dims (pixels, voxels, positions).

Inputs (N, C_in, *S), targets (N, *S) class indices with -100 ignored (boundaries, void),
logits (N, C, *S) out, channels second as torchvision's segmentation models return them.
The per-example score is the image's pixel accuracy over its real (non-ignored) pixels, so
every paired statistic works per image: pixels of one image are dependent, images are the
units. Mean IoU over the classes is reported beside it (mispredictions' "overall"), with the
confusion matrix over pixels. Priors are pixel frequencies: loss at init, the ideal final
bias and the dumb baseline (the most frequent pixel class everywhere) come from them.
"""

from __future__ import annotations

from typing import Callable, ClassVar, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nnrecipe import inputs
from nnrecipe.losses import IGNORE_INDEX  # targets that no loss and no metric reads
from nnrecipe.tasks.base import HUMAN_ACCURACY, LossFloor, MeanOfScores, Task, TrainGoal
from nnrecipe.tasks.classification import distribution_statistics, prior_bias, read_labels


def real_share(hit: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per example, the share of its real (non-ignored) pixels where `hit` holds (1 when it has
    no real pixel: nothing to get wrong)."""
    real = y != IGNORE_INDEX
    hits = (hit & real).flatten(1).sum(dim=1).double()
    count = real.flatten(1).sum(dim=1).double()
    return torch.where(count > 0, hits / count.clamp_min(1), torch.ones_like(count))


def pixel_accuracy(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Each example's share of correctly classified real pixels."""
    y = y.to(out.device).long()
    return real_share(out.argmax(dim=1) == y, y)


def dense_loss(name: str, out: torch.Tensor, y: torch.Tensor, *, reduction: str = "mean") -> torch.Tensor:
    """cross_entropy / nll over every real pixel (channels second); "none": one mean per example."""
    fn = F.nll_loss if name == "nll" else F.cross_entropy
    y = y.long()
    if reduction == "mean":
        return fn(out.float(), y, ignore_index=IGNORE_INDEX)
    per_pixel = fn(out.float(), y, ignore_index=IGNORE_INDEX, reduction="none").flatten(1)
    real = (y != IGNORE_INDEX).flatten(1).sum(dim=1).clamp_min(1)
    return per_pixel.sum(dim=1) / real


def class_shares(y: torch.Tensor, num_classes: int) -> np.ndarray:
    """Each mask's class shares over its real pixels (N, C), by one bincount (a one-hot of
    every pixel would be N x pixels x C)."""
    y = y.long().reshape(len(y), -1)
    real = (y >= 0) & (y < num_classes)
    rows = torch.arange(len(y)).unsqueeze(1).expand_as(y)
    flat = (rows * num_classes + y.clamp(0, num_classes - 1))[real]
    counts = torch.bincount(flat, minlength=len(y) * num_classes).reshape(len(y), num_classes).double()
    return (counts / counts.sum(dim=1, keepdim=True).clamp_min(1)).numpy()


class _PixelAccuracy:
    def __init__(self, device: torch.device) -> None:
        self.total = torch.zeros((), device=device, dtype=torch.float64)

    def update(self, out: torch.Tensor, y: torch.Tensor) -> None:
        self.total += pixel_accuracy(out.float(), y).sum()

    def value(self, n: int) -> float:
        return (self.total / n).item()

    def sums(self) -> list[torch.Tensor]:
        return [self.total]


def _present(data, y) -> list[tuple[str, float]]:
    """The classes in one mask with their share of its real pixels, largest first."""
    y = torch.as_tensor(y).long().reshape(-1)
    y = y[(y >= 0) & (y < data.num_outputs)]
    counts = torch.bincount(y, minlength=data.num_outputs).double() / max(len(y), 1)
    order = torch.argsort(counts, descending=True)
    return [(data.class_name(int(c)), float(counts[c])) for c in order if counts[c] > 0]


class Segmentation(MeanOfScores, Task):
    name = "segmentation"
    metric, metric_title, metric_symbol, metric_short = "pixel_accuracy", "pixel accuracy", "pixel acc", "pix acc"
    score, score_title = "pixel_accuracy", "pixel accuracy"
    higher_is_better = True
    default_loss = "cross_entropy"
    dumb_name = "majority-pixel-class"
    linear_name, linear_text = "per-pixel-linear", "a per-pixel linear model (a 1x1 convolution)"
    supports = frozenset({"class-balance", "augment-preserves-labels"})
    skips: ClassVar[Mapping[str, str]] = {
        "conflicting-labels": "segmentation: identical images with different masks are not counted yet",
        "human-baseline": HUMAN_ACCURACY,
        "suspected-label-errors": "segmentation: confident learning ranks one label per example; masks have many",
        "distillation": "segmentation: not yet (soft targets per pixel)",
    }

    def spec_problem(self, *, source, loss):
        if source not in ("python", "npz"):
            return f"task: segmentation needs masks (N, *S) as targets: data.source python or npz; {source} gives one label per example"
        if loss not in ("auto", "cross_entropy", "nll"):
            return f"loss: {loss} does not fit task segmentation: it classifies every pixel (cross_entropy or nll)"
        return ""

    # ---- measures

    def example_scores(self, out, y):
        return pixel_accuracy(out.float(), y)

    def meter(self, device):
        return _PixelAccuracy(device)

    def train_goal(self, cfg):
        return TrainGoal("train pixel accuracy", cfg.target_train_accuracy, lambda e: e.metric)

    def loss_fn(self, name: str) -> Callable:
        if name in ("cross_entropy", "nll"):
            return lambda out, y: dense_loss(name, out, y)
        return super().loss_fn(name)

    def example_loss(self, name, out, y):
        if name in ("cross_entropy", "nll"):
            return dense_loss(name, out, y, reduction="none")
        return super().example_loss(name, out, y)

    # ---- targets and data

    def num_outputs(self, data):
        return int(data.num_classes or 0)

    def bundle_targets(self, y):
        return y.long() if not y.is_floating_point() else y

    def declared_outputs(self, declared, class_names, ys):
        from nnrecipe.data.common import infer_num_classes

        real = [y[y != IGNORE_INDEX] for y in ys]
        return infer_num_classes(declared, class_names, real), 1

    def lazy_outputs(self, declared, class_names, splits):
        from nnrecipe.data.common import infer_num_classes

        ys = read_labels(declared, class_names, splits)
        return infer_num_classes(declared, class_names, [y[y != IGNORE_INDEX] for y in ys]), 1

    def check_usable(self, data, where):
        from nnrecipe.errors import DataError

        y = data.targets("train")
        distinct = y[y != IGNORE_INDEX].unique()
        if y.ndim >= 2 and len(distinct) < 2:  # (one label per image: label-range and check_targets say so)
            raise DataError(f"{where}: every real train pixel is one class: segmentation needs at least two")

    def check_targets(self, data):
        """Masks (N, *S): integers in [0, C) or -100, in every split."""
        from nnrecipe.errors import DataError

        C, more = data.num_classes, "(inspect-data's label-range says more)"
        for name in data.splits():
            y = data.targets(name)
            if y.ndim < 2:
                raise DataError(
                    f"data: the {name} targets are one value per example; segmentation trains on a mask "
                    f"(N, *S) of class indices per example; one class per example is task: classification {more}"
                )
            yd = y.double()
            bad = (yd != yd.round()) | ~torch.isfinite(yd) | (((yd < 0) | (yd >= (C or 0))) & (yd != IGNORE_INDEX))
            if bad.any():
                at = tuple(int(v) for v in torch.nonzero(bad)[0])
                raise DataError(
                    f"data: {int(bad.sum())} {name} mask values are not class indices in [0, {C}) or "
                    f"{IGNORE_INDEX} (e.g. {name}{list(at)} = {float(y[at]):g}) {more}"
                )

    def label_range(self, m, cfg):
        from nnrecipe.checks.segmentation_checks import mask_label_range

        return mask_label_range(m, cfg)

    def class_balance(self, m, cfg):
        from nnrecipe.checks.segmentation_checks import mask_class_balance

        return mask_class_balance(m, cfg)

    def output_shape(self, x, num_outputs):
        return (len(x), num_outputs, *x.shape[2:])

    def output_rows(self, out):
        return out.movedim(1, -1).reshape(-1, out.shape[1])  # every pixel's class scores

    def constant_output(self, values, like):
        return torch.as_tensor(values, dtype=like.dtype).reshape(1, -1, *([1] * (like.dim() - 2))).expand_as(like)

    # ---- baselines and init

    def dumb_scores(self, data):
        """Every pixel the most frequent train class: each image's share of it among its real pixels."""
        majority = int(np.argmax(data.priors("train")))
        y = data.targets("val").long()
        return real_share(y == majority, y).numpy()

    def dumb_metric(self, data, scores):
        return float(np.mean(scores))

    def chance(self, data):
        return self.dumb_metric(data, self.dumb_scores(data))

    def linear_model(self, spec, data, fresh_model):
        """A 1x1 convolution over the input channels: each pixel classified by its own values."""
        from nnrecipe.runtime import seed_everything

        seed_everything(spec.seed, deterministic=spec.train.deterministic)
        x, _ = data.train.example(0)
        conv = None if data.structured else {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}.get(x.dim() - 1)
        if conv is None or not x.is_floating_point():
            from nnrecipe.errors import DataError

            got = (
                "a structure of tensors"
                if data.structured
                else f"{str(x.dtype).removeprefix('torch.')} {tuple(x.shape)}"
            )
            raise DataError(f"data: segmentation inputs are one float tensor (C, *S) with 1-3 spatial dims; got {got}")
        model = conv(x.shape[0], data.num_outputs, kernel_size=1)
        bias = self.data_bias(self.default_loss, data)
        assert model.bias is not None  # a convolution has a bias unless made with bias=False
        with torch.no_grad():
            model.weight.zero_()
            model.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))
        return model

    def ideal_bias(self, loss, *, priors=None, target_mean=None):
        return prior_bias(loss, priors)  # log pixel frequencies

    def data_bias(self, loss, data):
        return self.ideal_bias(loss, priors=data.priors())

    def init_statistics(self, data, rows, out, loss):
        return distribution_statistics(data, rows, loss)

    def loss_floor(self, x, y, loss, *, receptive=None, positional=True):
        """Identical images with different masks: at each pixel, the entropy of their labels
        there, averaged over the batch's real pixels (what cross_entropy's mean is over)."""
        if loss not in ("cross_entropy", "nll"):
            return LossFloor(0.0, "")
        y = y.detach().cpu().long().reshape(len(y), -1)
        groups: dict[bytes, list[int]] = {}
        for i, key in enumerate(inputs.row_bytes(x)):
            groups.setdefault(key, []).append(i)
        C = int(y.max()) + 1 if y.numel() else 1
        total, mixed = 0.0, 0
        for members in (g for g in groups.values() if len(g) > 1):
            masks = y[members]
            real = masks != IGNORE_INDEX
            counts = (F.one_hot(masks.clamp_min(0), C).double() * real[..., None]).sum(dim=0)  # (pixels, C)
            p = counts / counts.sum(dim=1, keepdim=True).clamp_min(1)
            entropy = -(p * p.clamp_min(1e-12).log()).sum(dim=1)  # nats, per pixel position
            total += float((entropy * counts.sum(dim=1)).sum())
            mixed += int(bool((entropy > 1e-9).any()))
        pixels = max(int((y != IGNORE_INDEX).sum()), 1)
        return LossFloor(total / pixels, f"{mixed} group{'s' * (mixed != 1)} of identical images with different masks")

    # ---- words and pictures

    def label_text(self, data, y):
        return ", ".join(f"{n} {p:.0%}" for n, p in _present(data, y)[:3])

    def short_label(self, data, y):
        return "+".join(n for n, _ in _present(data, y)[:3])

    def prediction_text(self, data, out, loss):
        return self.label_text(data, out.argmax(dim=0))

    def dynamics(self, out, loss):
        """Each example's mean predicted class distribution over its pixels (N, C)."""
        p = F.softmax(out.float(), dim=1) if loss != "nll" else out.float().exp()
        return p.flatten(2).mean(dim=2).cpu().numpy()

    def dynamics_picture(self, steps, predictions, truth):
        """Each example's mean predicted class distribution over training; outlined, the classes
        that cover at least 5% of its mask."""
        from nnrecipe import pictures

        C = predictions[0].shape[1] if predictions else 1
        present = (class_shares(torch.as_tensor(truth), C) >= 0.05).astype(np.float64)
        return pictures.prediction_strip(steps, predictions, present, distributions=True)

    def predicted_labels(self, out):
        return out.argmax(dim=1)  # (N, *S): ensemble disagreement counts pixels

    def augmented_predictions(self, out):
        return out.argmax(dim=1)

    def example_groups(self, targets, k, max_groups, rng, data):
        """A row of random train examples per class (the masks that hold it)."""
        t = np.asarray(targets).reshape(len(targets), -1)
        rows = []
        for c in range(min(data.num_outputs, max_groups)):
            idx = np.nonzero((t == c).any(axis=1))[0]
            pick = rng.choice(idx, size=min(k, len(idx)), replace=False) if len(idx) else []
            rows.append((data.class_name(c), [(int(i), f"#{int(i)}") for i in pick]))
        return rows

    def share_counts(self, targets, num_classes):
        """Pixels per class (the class-balance picture)."""
        from nnrecipe.probes.data_scan import class_counts

        t = np.asarray(targets, dtype=np.float64).reshape(-1)
        return class_counts(t[t != IGNORE_INDEX], num_classes)

    def mispredictions(self, outputs, targets, *, num_classes, loss, class_name=str, k=24):
        from nnrecipe.probes.mispredictions import pixel_confusion

        return pixel_confusion(outputs, targets, num_classes=num_classes, loss=loss, class_name=class_name, k=k)

    def data_pictures(self, save, data):
        """masks_train.png: the first train images with their masks over them (a mask that does
        not sit on its image shows here first)."""
        from nnrecipe.pictures import masks

        masks.draw_data(save, data)

    def baseline_pictures(self, ctx, stage, data, m, loss):
        """The baseline's pictures and the masks over val images: target | prediction."""
        from nnrecipe.pictures import baseline, masks

        arts = baseline.draw(ctx, stage, data, m, loss)
        for check, paths in masks.draw_baseline(ctx, stage, data, m).items():
            arts.setdefault(check, []).extend(paths)
        return arts

    # ---- squeeze

    def ensemble_part(self, output, loss):
        return output.float().exp() if loss == "nll" else torch.softmax(output.float(), dim=1)

    def ensemble_prediction(self, mean):
        return torch.log(mean.clamp_min(1e-12))


SEGMENTATION = Segmentation()
