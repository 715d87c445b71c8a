"""LR schedule factories for the plugin contract: function(optimizer, total_steps, **args)."""

from torch.optim.lr_scheduler import LambdaLR, StepLR


def epoch_step_lr(optimizer, total_steps, step_size: int = 30, gamma: float = 0.1):
    """Planted: StepLR(30) written for epochs, stepped per batch: the LR is 1e-3 of its start
    after 90 steps, long before training ends."""
    return StepLR(optimizer, step_size=step_size, gamma=gamma)


def constant(optimizer, total_steps):
    return LambdaLR(optimizer, lambda step: 1.0)


def late_spike(optimizer, total_steps, factor: float = 300.0):
    """The LR jumps `factor`-fold for the last third: the last step's model is wrecked, the best
    checkpoint (an earlier step) is not: numbers from the two must not be mixed."""
    import torch

    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: factor if step >= 2 * total_steps // 3 else 1.0)
