"""What the trained model gets wrong on val: a confusion matrix, per-class precision / recall /
F1, and the examples with the highest loss (the most confidently wrong); for real targets the
largest residuals. Each task picks its own (Task.mispredictions). Computed from the val
outputs the stage already has (no extra pass)."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F


@dataclasses.dataclass
class Mispredictions:
    confusion: np.ndarray | None = None  # (C, C): rows true class, columns predicted
    per_class: list[dict] = dataclasses.field(default_factory=list)  # class, support, precision, recall, f1
    top: list[dict] = dataclasses.field(default_factory=list)  # the highest-loss val examples, worst first
    overall: dict = dataclasses.field(default_factory=dict)  # split-wide metrics beside the task's (multi-label)
    real: bool = False  # real targets: residual plots apply


def residuals(outputs: torch.Tensor, targets: torch.Tensor, *, k: int = 24) -> Mispredictions:
    """Real targets: the k largest squared errors (averaged over the outputs)."""
    out, y = outputs.float().cpu(), targets.cpu()
    res = (out.reshape(len(out), -1) - y.float().reshape(len(y), -1)).pow(2).mean(dim=1)
    order = torch.argsort(res, descending=True)[:k]
    top = [
        {
            "index": int(i),
            "target": float(y[i].reshape(-1)[0]),
            "prediction": float(out[i].reshape(-1)[0]),
            "squared_error": float(res[i]),
        }
        for i in order
    ]
    return Mispredictions(top=top, real=True)


def label_errors(outputs: torch.Tensor, targets: torch.Tensor, *, class_name=str, k: int = 24) -> Mispredictions:
    """Multi-hot targets: per label precision / recall / F1 / average precision (threshold 0.5 on
    the sigmoid), micro-F1 and mean average precision over the labels that occur, and the k
    examples with the highest binary cross-entropy (true labels -> predicted labels)."""
    from sklearn.metrics import average_precision_score

    out = outputs.float().cpu()
    y = targets.cpu().float().reshape(out.shape) > 0.5
    prob = torch.sigmoid(out)
    pred = prob > 0.5
    tp, fp, fn = ((pred & y).sum(0), (pred & ~y).sum(0), (~pred & y).sum(0))
    per_class, aps = [], []
    for c in range(out.shape[1]):
        support, predicted = int(y[:, c].sum()), int(pred[:, c].sum())
        precision = int(tp[c]) / predicted if predicted else float("nan")
        recall = int(tp[c]) / support if support else float("nan")
        f1 = 2 * int(tp[c]) / (2 * int(tp[c]) + int(fp[c]) + int(fn[c])) if support or predicted else float("nan")
        ap = float(average_precision_score(y[:, c].numpy(), prob[:, c].numpy())) if support else float("nan")
        aps += [ap] if support else []
        per_class.append(
            {
                "class": class_name(c),
                "support": support,
                "precision": round(precision, 4),
                "recall": round(recall, 4),
                "f1": round(f1, 4),
                "average_precision": round(ap, 4),
            }
        )
    denom = int(2 * tp.sum() + fp.sum() + fn.sum())
    overall = {
        "micro_f1": round(2 * int(tp.sum()) / denom, 4) if denom else 1.0,
        "mean_average_precision": round(float(np.mean(aps)), 4) if aps else None,
    }
    loss = F.binary_cross_entropy_with_logits(out, y.float(), reduction="none").mean(dim=1)
    names = lambda row: "+".join(class_name(c) for c in torch.nonzero(row).flatten().tolist()) or "(none)"  # noqa: E731
    top = [
        {
            "index": int(i),
            "true": names(y[i]),
            "predicted": names(pred[i]),
            "loss": round(float(loss[i]), 4),
            "caption": f"{names(y[i])}→{names(pred[i])}",
        }
        for i in torch.argsort(loss, descending=True)[:k]
        if bool((pred[i] != y[i]).any())
    ]
    return Mispredictions(per_class=per_class, top=top, overall=overall)


def confusion(
    outputs: torch.Tensor, targets: torch.Tensor, *, num_classes: int, loss: str, k: int = 24, class_name=str
) -> Mispredictions:
    """Class targets: the confusion matrix, per-class metrics and the k most confidently wrong."""
    out = outputs.float().cpu()
    y = targets.cpu().long()
    logp = out if loss == "nll" else F.log_softmax(out, dim=1)  # nll models return log-probabilities
    per_example = -logp.gather(1, y.reshape(-1, 1)).squeeze(1)
    pred = out.argmax(dim=1)
    conf = (
        torch.bincount(y * num_classes + pred, minlength=num_classes * num_classes)
        .reshape(num_classes, num_classes)
        .numpy()
    )
    per_class = []
    for c in range(num_classes):
        tp, support, predicted = conf[c, c], conf[c].sum(), conf[:, c].sum()
        precision = tp / predicted if predicted else float("nan")
        recall = tp / support if support else float("nan")
        f1 = (
            2 * precision * recall / (precision + recall)
            if predicted and support and (precision + recall) > 0
            else float("nan")
        )
        per_class.append(
            {
                "class": class_name(c),
                "support": int(support),
                "precision": round(float(precision), 4),
                "recall": round(float(recall), 4),
                "f1": round(float(f1), 4),
            }
        )
    wrong = torch.nonzero(pred != y).flatten()
    order = wrong[torch.argsort(per_example[wrong], descending=True)][:k]
    probs = logp.exp()
    top = [
        {
            "index": int(i),
            "true": class_name(int(y[i])),
            "predicted": class_name(int(pred[i])),
            "p_predicted": round(float(probs[i, pred[i]]), 4),
            "p_true": round(float(probs[i, y[i]]), 4),
            "loss": round(float(per_example[i]), 4),
        }
        for i in order
    ]
    return Mispredictions(confusion=conf, per_class=per_class, top=top)


def pixel_confusion(
    outputs: torch.Tensor, targets: torch.Tensor, *, num_classes: int, loss: str, k: int = 24, class_name=str
) -> Mispredictions:
    """Masks: the confusion matrix over every real pixel of val, per class precision / recall /
    IoU, pixel accuracy and mean IoU over the classes that occur (in truth or prediction), and
    the k images with the lowest pixel accuracy."""
    from nnrecipe.tasks.segmentation import pixel_accuracy

    out, y = outputs.float().cpu(), targets.cpu().long()
    pred = out.argmax(dim=1)
    real = (y >= 0) & (y < num_classes)
    flat = y[real] * num_classes + pred[real]
    conf = torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes).numpy()
    per_class, ious = [], []
    for c in range(num_classes):
        tp, support, predicted = int(conf[c, c]), int(conf[c].sum()), int(conf[:, c].sum())
        union = support + predicted - tp
        iou = tp / union if union else float("nan")
        ious += [iou] if union else []
        per_class.append(
            {
                "class": class_name(c),
                "support_pixels": support,
                "precision": round(tp / predicted, 4) if predicted else float("nan"),
                "recall": round(tp / support, 4) if support else float("nan"),
                "iou": round(iou, 4),
            }
        )
    acc = pixel_accuracy(out, y)
    wrong_pixels = (real & (pred != y)).flatten(1).sum(dim=1)
    top = [
        {
            "index": int(i),
            "pixel_accuracy": round(float(acc[i]), 4),
            "wrong_pixels": int(wrong_pixels[i]),
            "caption": f"pix acc {float(acc[i]):.2f}",
        }
        for i in torch.argsort(acc)[:k]
        if acc[i] < 1
    ]
    overall = {
        "pixel_accuracy": round(float(np.trace(conf) / max(conf.sum(), 1)), 4),
        "mean_iou": round(float(np.mean(ious)), 4) if ious else None,
    }
    return Mispredictions(confusion=conf, per_class=per_class, top=top, overall=overall)
