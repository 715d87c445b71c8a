"""Model factories for the plugin contract, one good and some broken."""

from __future__ import annotations

import math

import torch
from torch import nn


def good(input_shape, num_outputs, width: int = 32):
    return nn.Sequential(
        nn.Flatten(), nn.Linear(math.prod(input_shape), width), nn.ReLU(), nn.Linear(width, num_outputs)
    )


def wrong_outputs(input_shape, num_outputs):
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), num_outputs + 1))


def not_a_module(input_shape, num_outputs):
    return "model"


def raises(input_shape, num_outputs):
    raise ValueError("unsupported input shape")


# ----------------------------------------------------------------------------- planted bugs for the baseline stage


class _MLP(nn.Module):
    """A plain MLP the planted bugs below vary by one line each."""

    def __init__(self, input_shape, num_outputs, width=64):
        super().__init__()
        self.fc1 = nn.Linear(math.prod(input_shape), width)
        self.fc2 = nn.Linear(width, width)
        self.head = nn.Linear(width, num_outputs)

    def features(self, x):
        h = torch.relu(self.fc1(x.flatten(1)))
        return torch.relu(self.fc2(h))

    def forward(self, x):
        return self.head(self.features(x))


def mlp(input_shape, num_outputs, width: int = 64):
    return _MLP(input_shape, num_outputs, width)


class _Softmax(_MLP):
    def forward(self, x):
        return torch.softmax(self.head(self.features(x)), dim=1)  # planted: CE will apply log_softmax again


class _LogSoftmax(_MLP):
    def forward(self, x):
        return torch.log_softmax(self.head(self.features(x)), dim=1)


class _BatchMixing(_MLP):
    def forward(self, x):
        h = torch.relu(self.fc1(x.flatten(1)))  # (N, W)
        h = h.view(h.shape[1], h.shape[0]).t()  # planted: view where a transpose was meant; mixes examples
        return self.head(torch.relu(self.fc2(h.contiguous())))


class _Unused(_MLP):
    def __init__(self, input_shape, num_outputs, width=64):
        super().__init__(input_shape, num_outputs, width)
        self.extra = nn.Linear(width, width)  # planted: defined, never used in forward


class _Detached(_MLP):
    def forward(self, x):
        h = torch.relu(self.fc1(x.flatten(1))).detach()  # planted: fc1 never learns
        return self.head(torch.relu(self.fc2(h)))


class _IgnoresInput(_MLP):
    def forward(self, x):
        return self.head(self.features(torch.zeros_like(x)))  # planted: the input is overwritten


class _DropoutInEval(_MLP):
    def forward(self, x):
        h = torch.nn.functional.dropout(self.features(x), p=0.5, training=True)  # planted: always on
        return self.head(h)


def softmax_output(input_shape, num_outputs):
    return _Softmax(input_shape, num_outputs)


def log_softmax_output(input_shape, num_outputs):
    return _LogSoftmax(input_shape, num_outputs)


def batch_mixing(input_shape, num_outputs):
    return _BatchMixing(input_shape, num_outputs)


def unused_layer(input_shape, num_outputs):
    return _Unused(input_shape, num_outputs)


def detached_layer(input_shape, num_outputs):
    return _Detached(input_shape, num_outputs)


def ignores_input(input_shape, num_outputs):
    return _IgnoresInput(input_shape, num_outputs)


def dropout_in_eval(input_shape, num_outputs):
    return _DropoutInEval(input_shape, num_outputs)


def huge_final_init(input_shape, num_outputs):
    model = _MLP(input_shape, num_outputs)
    with torch.no_grad():
        model.head.weight.mul_(100.0)  # planted: confidently wrong at init
    return model


def dead_relus(input_shape, num_outputs):
    model = _MLP(input_shape, num_outputs)
    with torch.no_grad():
        model.fc2.bias.fill_(-100.0)  # planted: every fc2 unit is negative, its ReLU never passes a gradient
    return model


class _ReluModules(_MLP):
    """The MLP with nn.ReLU modules, so dead units can be counted by hooks."""

    def __init__(self, input_shape, num_outputs, width=64):
        super().__init__(input_shape, num_outputs, width)
        self.act1, self.act2 = nn.ReLU(), nn.ReLU()

    def features(self, x):
        return self.act2(self.fc2(self.act1(self.fc1(x.flatten(1)))))


def dead_relu_modules(input_shape, num_outputs):
    model = _ReluModules(input_shape, num_outputs)
    with torch.no_grad():
        model.fc2.bias.fill_(-100.0)
    return model


def unseeded_init(input_shape, num_outputs):
    import numpy as np

    model = _MLP(input_shape, num_outputs)
    rng = np.random.default_rng()  # planted: fresh OS entropy, not the experiment's seed
    with torch.no_grad():
        model.head.weight.copy_(torch.as_tensor(rng.normal(0, 0.05, model.head.weight.shape)))
    return model


# ----------------------------------------------------------------------------- planted bugs for the squeeze stage


def fixed_seed(input_shape, num_outputs):
    """Reseeds torch inside the factory: every "independent" member starts from the same weights."""
    torch.manual_seed(0)
    return _MLP(input_shape, num_outputs)


class _UnregisteredState(_MLP):
    """Keeps a running input mean in a plain tensor attribute (not a registered buffer):
    state_dict() does not carry it, so a reloaded checkpoint is not the model that was saved."""

    def __init__(self, input_shape, num_outputs, width=64):
        super().__init__(input_shape, num_outputs, width)
        self.running_mean = torch.zeros(math.prod(input_shape))

    def forward(self, x):
        flat = x.flatten(1)
        if self.training:
            self.running_mean = 0.9 * self.running_mean.to(flat.device) + 0.1 * flat.mean(dim=0).detach()
        return self.head(self.features(flat - self.running_mean.to(flat.device) + 1.0))


def unregistered_state(input_shape, num_outputs):
    return _UnregisteredState(input_shape, num_outputs)


class _OutOfMemory(_MLP):
    def forward(self, x):
        if self.training and len(x) >= 32:  # "the GPU" cannot hold a training batch of 32
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().forward(x)


def out_of_memory(input_shape, num_outputs):
    return _OutOfMemory(input_shape, num_outputs)


def ignores_width(input_shape, num_outputs, width: int = 64):
    """A tuning bug: the factory takes `width` and never uses it, so tuning it changes nothing."""
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), 32), nn.ReLU(), nn.Linear(32, num_outputs))


def exits_in_forward(input_shape, num_outputs):
    """A forward that calls sys.exit on inputs it does not like (after the shape check)."""

    class Exits(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = _MLP(input_shape, num_outputs)
            self.calls = 0

        def forward(self, x):
            self.calls += 1
            if self.calls > 3:
                import sys

                sys.exit(3)
            return self.net(x)

    return Exits()


def frozen(input_shape, num_outputs):
    """Every parameter frozen: nothing can be trained."""
    model = _MLP(input_shape, num_outputs)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


# ----------------------------------------------------------------------------- diagnoses (issue 27)


class _ReluLogits(_MLP):
    """A classifier whose logits pass through a ReLU (torchvision's SqueezeNet ends so): a large
    step drives every logit below zero, the ReLU outputs 0 for every example, and the loss sits
    at ln C with no gradient to leave it."""

    def __init__(self, input_shape, num_outputs, width=64):
        super().__init__(input_shape, num_outputs, width)
        self.out_act = nn.ReLU()

    def forward(self, x):
        return self.out_act(self.head(self.features(x)))


def relu_logits(input_shape, num_outputs, width: int = 64):
    return _ReluLogits(input_shape, num_outputs, width)


class _BatchNormMLP(nn.Module):
    """An MLP with BatchNorm after its first layer, whose features carry a large offset (+20:
    un-centred inputs do this). With momentum 0.001 the running statistics barely leave their
    init (mean 0, variance 1) in a 200-step run: eval mode normalises with them, and the model
    that fits in train mode (loss 0.002) is at chance in eval mode (accuracy 0.25, loss 14.5)."""

    def __init__(self, input_shape, num_outputs, momentum: float, width=64):
        super().__init__()
        self.fc1 = nn.Linear(math.prod(input_shape), width)
        self.bn1 = nn.BatchNorm1d(width, momentum=momentum)
        self.fc2 = nn.Linear(width, width)
        self.head = nn.Linear(width, num_outputs)

    def forward(self, x):
        h = torch.relu(self.bn1(self.fc1(x.flatten(1)) + 20.0))
        return self.head(torch.relu(self.fc2(h)))


def batchnorm_stale(input_shape, num_outputs):
    return _BatchNormMLP(input_shape, num_outputs, momentum=0.001)


def batchnorm_good(input_shape, num_outputs):
    return _BatchNormMLP(input_shape, num_outputs, momentum=0.1)


class _DeadWithDropout(_MLP):
    """Dropout, as the regularize knob asks for it, wired in with a ReLU on the logits whose
    bias starts far below zero: with the knob on, every output is 0 from the first step."""

    def __init__(self, input_shape, num_outputs, dropout):
        super().__init__(input_shape, num_outputs)
        self.drop = nn.Dropout(dropout)
        self.act = nn.ReLU()
        with torch.no_grad():
            self.head.bias.fill_(-100.0)

    def forward(self, x):
        return self.act(self.head(self.drop(self.features(x))))  # planted: ReLU on the logits


def collapses_with_dropout(input_shape, num_outputs, dropout: float = 0.0):
    return _MLP(input_shape, num_outputs) if dropout == 0 else _DeadWithDropout(input_shape, num_outputs, dropout)


class _ZeroInitResidual(_MLP):
    """A residual block whose last BatchNorm starts with weight 0 (torchvision's and timm's
    zero_init_residual): at the first step the branch passes nothing, so its layers get no
    gradient; from the second step on they do."""

    def __init__(self, input_shape, num_outputs, width=64, frozen_gate=False):
        super().__init__(input_shape, num_outputs, width)
        self.branch = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width), nn.BatchNorm1d(width))
        nn.init.zeros_(self.branch[3].weight)
        self.branch[3].weight.requires_grad_(not frozen_gate)  # planted when frozen: the gate never opens

    def forward(self, x):
        h = self.features(x)
        return self.head(torch.relu(h + self.branch(h)))


def zero_init_residual(input_shape, num_outputs):
    return _ZeroInitResidual(input_shape, num_outputs)


def zero_gate_frozen(input_shape, num_outputs):
    return _ZeroInitResidual(input_shape, num_outputs, frozen_gate=True)


# ----------------------------------------------------------------------------- scale-out (issue 23)


def warns_in_forward(input_shape, num_outputs):
    """A forward that warns while training (as a deprecated call in user code would)."""

    class Warns(_MLP):
        def forward(self, x):
            if self.training:
                import warnings

                warnings.warn("planted: this forward warns", UserWarning, stacklevel=1)
            return super().forward(x)

    return Warns(input_shape, num_outputs)


class _Branches(_MLP):
    """Takes a branch on the value of its input (data-dependent control flow: vmap refuses it)."""

    def forward(self, x):
        h = super().forward(x)
        return h if float(x.mean()) > -1.0 else -h


def branches_on_data(input_shape, num_outputs):
    return _Branches(input_shape, num_outputs)


def softmax_over_batch(input_shape, num_outputs):
    # A layer without parameters that mixes a batch's examples (a softmax over dim 0): trained as
    # one with other models, it must see each model's batch alone (together.py checks it).
    return nn.Sequential(
        nn.Flatten(), nn.Linear(math.prod(input_shape), 32), nn.Softmax(dim=0), nn.Linear(32, num_outputs)
    )


def waits_for_a_ray_task(input_shape, num_outputs, flag: str):
    """An MLP whose training forward marks the file `flag` when it runs in a Ray task, and in any
    other process (the stage's own) waits for that mark at its first training step (120 s at
    most): a test's study cannot be finished by the stage's process before a Ray task trains."""
    import os
    import time

    def in_a_ray_task() -> bool:
        import sys

        if "ray" not in sys.modules:
            return False
        import ray

        return ray.is_initialized() and ray.get_runtime_context().get_task_id() is not None

    class Waits(_MLP):
        def forward(self, x):
            if self.training and in_a_ray_task():
                open(flag, "a").close()
            elif self.training:
                deadline = time.time() + 120
                while not os.path.exists(flag) and time.time() < deadline:
                    time.sleep(0.05)
            return super().forward(x)

    return Waits(input_shape, num_outputs)


def says_where_it_trains(input_shape, num_outputs, folder: str, width: int = 64, dropout: float = 0.0):
    """An MLP (with dropout before its head) whose training forward leaves a file named by its
    process id in `folder`: which processes trained a stage's experiments."""
    import os

    class Says(_MLP):
        def __init__(self):
            super().__init__(input_shape, num_outputs, width)
            self.drop = nn.Dropout(dropout)

        def forward(self, x):
            if self.training:
                open(os.path.join(folder, str(os.getpid())), "a").close()
            return self.head(self.drop(self.features(x)))

    return Says()
