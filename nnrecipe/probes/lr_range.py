"""The learning-rate range test: raise the LR exponentially each step and watch the loss.

The loss falls while the LR is useful and explodes once it is too large; the steepest
fall of the smoothed loss suggests an LR. The sweep syncs every step (it is short and it
must stop at divergence); it is a probe, not the training loop.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from nnrecipe.probes.measurements import LRRangeResult


def lr_range_test(
    model,
    split,
    loss_fn,
    optimizer,
    *,
    device,
    batch_size: int,
    seed: int,
    steps: int,
    min_lr: float,
    max_lr: float,
    smoothing: float,
    diverge_factor: float,
) -> LRRangeResult:
    model.to(device).train()
    g = torch.Generator(device=split.device).manual_seed(seed)
    lrs = min_lr * (max_lr / min_lr) ** (np.arange(steps) / max(1, steps - 1))
    losses = np.full(steps, np.nan)
    smoothed = np.full(steps, np.nan)
    avg, best, diverge_at = 0.0, math.inf, None
    batches = _endless(split, batch_size, g)
    for i, lr in enumerate(lrs):
        for group in optimizer.param_groups:
            group["lr"] = float(lr)
        x, y = (t.to(device) for t in next(batches))
        loss = loss_fn(model(x), y)
        value = float(loss.detach())
        if not math.isfinite(value):
            diverge_at = i
            break
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses[i] = value
        avg = smoothing * avg + (1 - smoothing) * value
        smoothed[i] = avg / (1 - smoothing ** (i + 1))  # bias correction for the zero start
        best = min(best, smoothed[i])
        if i > 10 and smoothed[i] > diverge_factor * best:
            diverge_at = i
            break
    valid = np.isfinite(smoothed)
    suggested = min_loss_lr = None
    if valid.sum() >= 10:
        s, lr_kept = smoothed[valid], lrs[valid]
        k = int(np.argmin(s))
        min_loss_lr = float(lr_kept[k])
        if k >= 5:
            slope = np.gradient(s[: k + 1], np.log(lr_kept[: k + 1]))  # d loss / d log(lr)
            suggested = float(lr_kept[int(np.argmin(slope[2:])) + 2])  # skip the noisy start
        else:
            suggested = float(lr_kept[k]) / 10
    return LRRangeResult(
        lrs=lrs,
        losses=losses,
        smoothed=smoothed,
        suggested_lr=suggested,
        min_loss_lr=min_loss_lr,
        diverge_lr=float(lrs[diverge_at]) if diverge_at is not None else None,
    )


def _endless(split, batch_size: int, generator: torch.Generator):
    while True:
        for x, y in split.iterate(batch_size, shuffle=True, generator=generator):
            if len(x) == batch_size or len(split) < batch_size:
                yield x, y
