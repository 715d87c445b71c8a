"""label-range for segmentation masks: every pixel a class index in [0, C) or -100 (ignored).

The classic bugs it exists for: masks resized with bilinear interpolation (fractional ids at
every boundary, or ids between two classes' once rounded), a void label kept as 255 (VOC's
border) instead of the loss's ignore index, and masks given as one label per image.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from nnrecipe.checks.data_integrity import STAGE, _where
from nnrecipe.probes.data_groups import MAX_LISTED, DataMeasurements
from nnrecipe.spec_stages import InspectDataSpec
from nnrecipe.tasks.segmentation import IGNORE_INDEX
from nnrecipe.verdict import Status, Verdict

CHECK = "label-range"


def _problems(scan, C: int) -> tuple[list[str], list[str], list[str]]:
    """(problems in words, examples named, hints) over every split's masks."""
    problems, examples, hints = [], [], []
    for name, s in scan.splits.items():
        y = s.targets.reshape(len(s.targets), -1)
        finite = np.isfinite(y)
        fractional = finite & (y != np.round(y))
        if fractional.any():
            rows = np.nonzero(fractional.any(axis=1))[0]
            problems.append(
                f"{name}: {int(fractional.sum())} mask pixels in {len(rows)} examples are not whole numbers "
                f"(e.g. {float(y[fractional][0]):g})"
            )
            examples += _where(name, rows)
            hints.append(
                "masks resized with bilinear interpolation? resize masks with nearest (InterpolationMode.NEAREST)"
            )
        whole = finite & ~fractional
        outside = whole & ((y < 0) | (y >= C)) & (y != IGNORE_INDEX)
        outside |= ~finite
        if outside.any():
            rows = np.nonzero(outside.any(axis=1))[0]
            values = np.unique(y[outside & finite])[:5]
            problems.append(
                f"{name}: {int(outside.sum())} mask pixels in {len(rows)} examples lie outside [0, {C}) and are not "
                f"{IGNORE_INDEX} (values {', '.join(f'{v:g}' for v in values) or 'non-finite'})"
            )
            examples += _where(name, rows)
            hints.append(
                f"map void/border labels (e.g. 255) to {IGNORE_INDEX}, or declare data.num_classes"
                if 255 in values
                else "remap mask ids to 0..C-1 or declare data.num_classes"
            )
    return problems, examples, hints


def mask_label_range(m: DataMeasurements, cfg: InspectDataSpec) -> Verdict:
    """Masks: class indices in [0, C) or -100 at every pixel, every class in some train mask."""
    scan = m.scan
    C = scan.num_classes or 0
    for name, s in scan.splits.items():
        if s.y_shape == ():
            return Verdict(
                STAGE,
                CHECK,
                Status.FAIL,
                observed={"target_shape": []},
                expected="a mask per example, shape (N, *S)",
                message=f"{name} targets are one label per example, not a mask",
                hint="give a class index per pixel, (N, H, W); one label per image is task: classification",
            )
    train = scan.train.targets
    real = train[np.isfinite(train) & (train != IGNORE_INDEX)]
    observed = {
        "num_classes": C,
        "min": float(real.min()) if len(real) else None,
        "max": float(real.max()) if len(real) else None,
        "ignored_share": round(float(np.mean(train == IGNORE_INDEX)), 4) if train.size else 0.0,
        "dtype": scan.train.y_dtype,
        "mask_shape": list(scan.train.y_shape),
    }
    expected = f"integers in [0, {C}) or {IGNORE_INDEX} at every pixel"
    problems, examples, hints = _problems(scan, C)
    if problems:
        return Verdict(
            STAGE,
            CHECK,
            Status.FAIL,
            observed=dict(observed, examples=examples[:MAX_LISTED]),
            expected=expected,
            message="; ".join(problems),
            hint="; ".join(dict.fromkeys(hints)),
        )
    whole = real[real == np.round(real)].astype(np.int64)
    counts = np.bincount(whole[(whole >= 0) & (whole < C)], minlength=C)[:C]
    empty = np.nonzero(counts == 0)[0]
    if C == 256 and counts[255] and len(empty):  # ids 0..k and 255: the number of classes came from a void label
        k = int(np.nonzero(counts[:255])[0].max()) + 1 if counts[:255].any() else 0
        return Verdict(
            STAGE,
            CHECK,
            Status.FAIL,
            observed=dict(observed, void_pixels=int(counts[255]), empty_classes=len(empty)),
            expected=expected,
            message=f"{int(counts[255])} train mask pixels are 255 while ids {k}..254 never occur: 255 is a void "
            f"label (as VOC's borders), not class 255; it makes {C} outputs of {k} classes",
            hint=f"map 255 to {IGNORE_INDEX} (ignored by the loss), or declare data.num_classes: {k}",
        )
    if len(empty):
        return Verdict(
            STAGE,
            CHECK,
            Status.WARN,
            observed=dict(observed, empty_classes=empty.tolist()),
            expected=expected,
            message=f"{len(empty)} of {C} classes occur in no train mask: {empty.tolist()[:MAX_LISTED]}",
            hint="check the id mapping of the masks, or declare data.num_classes",
        )
    return Verdict(
        STAGE,
        CHECK,
        Status.PASS,
        observed=observed,
        expected=expected,
        message=f"every mask pixel is a class in [0, {C}) or {IGNORE_INDEX}, and every class occurs in train",
    )


def _image_shares(targets: np.ndarray, C: int) -> np.ndarray:
    """Each mask's class shares over its real pixels (images, C)."""
    import torch

    from nnrecipe.tasks.segmentation import class_shares

    return class_shares(torch.as_tensor(targets).long(), C)


def mask_class_balance(m: DataMeasurements, cfg: InspectDataSpec) -> Verdict:
    """Segmentation: the pixel shares (the priors the final bias starts from) are reported, not
    judged: a background that covers most pixels is the rule. Judged per image, the unit of
    every test here (pixels of one image are dependent): a class in far fewer train images than
    another (the ratio of images holding it, against imbalance_warn_ratio), and held-out splits
    whose per-image class shares differ from train's (Welch's t per class, Bonferroni)."""
    from scipy import stats

    scan, check = m.scan, "class-balance"
    C = scan.num_classes
    if not C:
        return Verdict(STAGE, check, Status.SKIP, message="unknown number of classes")
    if scan.train.y_shape == ():
        return Verdict(STAGE, check, Status.SKIP, message="the targets are not masks (label-range says more)")
    train = _image_shares(scan.train.targets, C)
    pixels = train.mean(axis=0)
    holding = (train > 0).sum(axis=0)
    ratio = float(holding.max() / holding.min()) if holding.min() > 0 else math.inf
    observed = {
        "train_pixel_shares": [round(float(p), 4) for p in pixels],
        "train_images_holding": holding.tolist(),
        "image_ratio": round(ratio, 3) if math.isfinite(ratio) else "inf",
    }
    problems = []
    if ratio > cfg.imbalance_warn_ratio:
        rare = int(np.argmin(holding))
        problems.append(
            f"class {rare} is in {int(holding[rare])} train images, {ratio:.1f}x fewer than the most common class"
        )
    for name, s in scan.splits.items():
        if name == "train" or not len(s.targets):
            continue
        held = _image_shares(s.targets, C)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a class at the same share in every image: p is nan
            p = stats.ttest_ind(train, held, axis=0, equal_var=False).pvalue
        p = np.where(np.isfinite(p), p, 1.0)
        worst = int(np.argmin(p))
        p_adj = min(1.0, float(p[worst]) * C)
        observed[f"{name}_pixel_shares"] = [round(float(v), 4) for v in held.mean(axis=0)]
        observed[f"{name}_share_shift_p"] = float(f"{p_adj:.3g}")
        if p_adj < cfg.prior_shift_p:
            problems.append(
                f"{name}'s share of class {worst} per image ({held[:, worst].mean():.3f}) differs from train's "
                f"({train[:, worst].mean():.3f}) beyond chance (Welch t over images, Bonferroni p={p_adj:.2g})"
            )
    expected = (
        f"every class in at least 1/{cfg.imbalance_warn_ratio:g} as many train images as the most common; "
        f"held-out shares per image as train's (p >= {cfg.prior_shift_p:g})"
    )
    if problems:
        return Verdict(
            STAGE,
            check,
            Status.WARN,
            observed=observed,
            expected=expected,
            message="; ".join(problems),
            hint="the final bias starts at the log pixel shares (baseline does for its own models); report "
            "per-class IoU; split so that every class is in train and val alike",
        )
    return Verdict(
        STAGE,
        check,
        Status.PASS,
        observed=observed,
        expected=expected,
        message=f"pixel shares {', '.join(f'{p:.2f}' for p in pixels)}; every class in {int(holding.min())}+ train "
        "images; held-out shares per image match train's",
    )
