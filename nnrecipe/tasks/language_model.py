"""Language models: (N, L) token windows in, (N, L, V) next-token logits out; token accuracy,
per-window cross-entropy in nats (padding targets, -100, left out), samples from a prompt."""

from __future__ import annotations

import math
from typing import ClassVar, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from nnrecipe.losses import IGNORE_INDEX  # padding targets
from nnrecipe.stats import conditional_entropy
from nnrecipe.tasks.base import HUMAN_ACCURACY, LABEL_ERRORS, SEQUENCE_CHECKS, LossFloor, Task, TrainGoal, binomial_se
from nnrecipe.tasks.classification import distribution_statistics, prior_bias

TRAIN_EVAL_WINDOWS = 2048  # a language model's train loss is read on this many evenly spaced windows


def token_cross_entropy(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The loss: (N, L, V) logits against (N, L) next tokens, the mean over every real token."""
    return F.cross_entropy(out.float().flatten(0, 1), y.long().flatten(), ignore_index=IGNORE_INDEX)


def window_cross_entropy(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Each window's mean next-token cross-entropy in nats over its real tokens (N,)."""
    tok = F.cross_entropy(out.float().transpose(1, 2), y.long(), ignore_index=IGNORE_INDEX, reduction="none")
    return tok.sum(dim=1) / (y != IGNORE_INDEX).sum(dim=1).clamp_min(1)


class _TokenAccuracy:
    """Next-token accuracy per window over its real (non-padding) targets, summed over windows."""

    def __init__(self, device: torch.device) -> None:
        self.hits = torch.zeros((), device=device, dtype=torch.float64)

    def update(self, out: torch.Tensor, y: torch.Tensor) -> None:
        real = y != IGNORE_INDEX
        self.hits += (((out.argmax(dim=-1) == y) & real).sum(dim=1) / real.sum(dim=1).clamp_min(1)).double().sum()

    def value(self, n: int) -> float:
        return (self.hits / n).item()

    def sums(self) -> list[torch.Tensor]:
        return [self.hits]


class LanguageModel(Task):
    name = "language-model"
    metric, metric_title, metric_symbol, metric_short = (
        "token_accuracy",
        "token accuracy",
        "token accuracy",
        "token acc",
    )
    score, score_title = "cross_entropy", "cross-entropy"  # nats per token, averaged over each window
    higher_is_better = False
    default_loss = "cross_entropy"
    dumb_name, linear_name, linear_text = "unigram", "bigram", "a bigram model"
    keeps_val_outputs = False  # (N, L, V) logits: its stages draw samples, not mispredictions
    # Separately trained language models differ by seed far beyond the per-window noise (the
    # CPython-docs GPT: z = 12 between two seeds): the spread is measured before judging.
    seed_spread_first = True
    confirm_seeds = 3
    score_is_loss = True
    # Val windows are cut one after another from one text: neighbours share topic and style.
    # On the shipped corpus (726 val windows of 64 characters) per-window loss differences keep
    # an autocorrelation of 0.2-0.6 up to lag 20-30, ~0 by lag 50, and the standard error over
    # blocks grows with the block until ~50 windows (model vs bigram: 2.6x the naive one at 10,
    # 3.9x at 25, 4.9x at 50, 5.1x at 100). So blocks of 50 consecutive windows, at least 8 of them.
    VAL_BLOCK: ClassVar[int] = 50
    MIN_BLOCKS: ClassVar[int] = 8
    supports = frozenset(SEQUENCE_CHECKS)
    skips: ClassVar[Mapping[str, str]] = {
        "init-well": "a language model starts uniform over its vocabulary (loss-at-init checks ln V); "
        "the token frequencies are learnt in its first steps",
        "human-baseline": HUMAN_ACCURACY,
        "first-layer-filters": "a language model's first layer is a token embedding: no filters to look at",
        "suspected-label-errors": LABEL_ERRORS,
        "distillation": "not for language models yet: the soft targets are the ensemble's distribution at every "
        "train position (windows x context x vocabulary), and soft against hard labels at one "
        "seed each would be judged within a language model's seed spread, which takes "
        "students at several seeds",
        "augment-preserves-labels": "a language model's per-window score is its cross-entropy: the retention of "
        "token accuracy under augmentation is not measured",
        "model-on-data": "inspect-data --model: not for language models yet (their samples are in overfit and "
        "regularize)",
    }

    # ---- measures

    def example_scores(self, out, y):
        """The window's mean next-token cross-entropy in nats, its padding targets left out."""
        return window_cross_entropy(out, y.to(out.device)).double()

    def loss_fn(self, name):
        return token_cross_entropy if name == "cross_entropy" else super().loss_fn(name)

    def example_loss(self, name, out, y):
        return window_cross_entropy(out, y) if name == "cross_entropy" else super().example_loss(name, out, y)

    def meter(self, device):
        return _TokenAccuracy(device)

    def val_halves(self, n, seed):
        return None  # its metric (token accuracy) is not in the per-window scores (cross-entropy)

    def blocks(self, n):
        return np.arange(n) // max(
            1, min(self.VAL_BLOCK, n // self.MIN_BLOCKS)
        )  # (no declared groups: windows are cut here)

    def metric_se(self, metric, n, *, scores=None, target_var=1.0):
        return binomial_se(metric, n)  # token accuracy, each window counted as one trial (conservative)

    def objective(self, metric):
        return float(metric) if math.isfinite(metric) else 0.0

    def val_scalars(self, loss):
        return {"val_bits_per_token": loss / math.log(2)}  # bits per character for char-level text

    def train_goal(self, cfg):
        return TrainGoal(
            "train bits per token",
            cfg.target_train_bits,
            lambda e: e.loss / math.log(2),
            higher_is_better=False,
            digits=4,
            passed="{value:.3f} bits per token on train after {steps} steps",
            failed="train loss only reached {value:.3f} bits per token after {steps} steps",
            hint="a larger model (stages.overfit.model), more steps, a better LR (--lr-range); or set "
            "stages.overfit.target_train_bits for your tokenization",
            extra=lambda e: {"train_token_accuracy": round(e.metric, 5)},
        )

    # ---- targets and data

    def num_outputs(self, data):
        return int(data.num_classes or 0)  # the vocabulary

    def input_kind(self, input_shape):
        return "sequence"  # (L,) token windows

    def plugin_bundle(self, out, spec, ref):
        from nnrecipe.data.plugin import tokens_bundle

        return tokens_bundle(out, ref)

    def train_eval_split(self, data):
        """An evenly spaced sample of TRAIN_EVAL_WINDOWS windows: a corpus's train split is mostly
        text the model has no need to re-read for a loss within ~1% (2,048 windows of 64 tokens
        are 131k tokens; the CPython-docs corpus has 6,540 windows)."""
        if len(data.train) <= TRAIN_EVAL_WINDOWS:
            return data.train
        index = torch.linspace(0, len(data.train) - 1, TRAIN_EVAL_WINDOWS).round().long()
        return data.train.subset(index)

    def output_shape(self, x, num_outputs):
        return (len(x), x.shape[1], num_outputs)

    def output_rows(self, out):
        return out.reshape(-1, out.shape[-1])  # every position's distribution

    # ---- baselines and init

    def dumb_scores(self, data):
        from nnrecipe.probes.sequence_probes import unigram_scores

        return unigram_scores(data)[0]

    def dumb_metric(self, data, scores):
        """The unigram's next-token accuracy: always the most frequent token."""
        return self.chance(data)

    def chance(self, data):
        from nnrecipe.probes.sequence_probes import unigram_scores

        return unigram_scores(data)[1]

    def linear_model(self, spec, data, fresh_model):
        """A bigram table: the next token from the current one alone."""
        from nnrecipe.models.sequence import Bigram
        from nnrecipe.runtime import seed_everything

        seed_everything(spec.seed, deterministic=spec.train.deterministic)
        return Bigram(data.num_outputs)

    def ideal_bias(self, loss, *, priors=None, target_mean=None):
        return prior_bias(loss, priors)  # the token frequencies

    def init_statistics(self, data, rows, out, loss):
        return distribution_statistics(data, rows, loss)

    def loss_floor(self, x, y, loss, *, receptive=None, positional=True):
        """Identical contexts of `receptive` tokens (the model's reach back, the whole prefix when
        not measured) followed by different tokens within the batch: their conditional entropy.
        A model that reads absolute positions tells equal contexts at different positions apart."""
        x, y = x.detach().cpu().long(), y.detach().cpu().long()
        # A model that reads no token at all is broken (input-independent says so): its floor is
        # not lowered to the unigram entropy it can reach, the whole prefix counts.
        r = receptive or x.shape[1]
        keys, labels = [], []
        for w in range(len(x)):
            row = x[w].tolist()
            for t, target in enumerate(y[w].tolist()):
                if target != IGNORE_INDEX:
                    context = tuple(row[max(0, t - r + 1) : t + 1])  # what output t reads, at most r tokens
                    keys.append((t, context) if positional else context)
                    labels.append(target)
        h, groups = conditional_entropy(keys, labels)
        reads = f"the {r} token{'s' * (r != 1)} the model reads" if receptive else "the window's prefix"
        where = " at the same position" if positional and r < x.shape[1] else ""
        return LossFloor(h, f"{groups} context{'s' * (groups != 1)} ({reads}){where} followed by different tokens")

    def init_descriptions(self, loss):
        return {"uniform": "ln V (uniform over the vocabulary)", "prior": "entropy of the token frequencies"}

    # ---- words and pictures

    def label_text(self, data, y):
        return data.sequence.decode(torch.as_tensor(y).long().reshape(-1))

    def prediction_text(self, data, out, loss):
        return data.sequence.decode(out.argmax(dim=-1).reshape(-1))

    def probe_wiring(self, m, model, data, xv, yv, loss_fn, cfg):
        """Targets that copy inputs, causal dependency, batch independence through the embeddings,
        padding invariance (probes/sequence_probes.py)."""
        from nnrecipe.probes.sequence_probes import measure_wiring

        measure_wiring(m, model, data, xv, yv, loss_fn, cfg)

    def baseline_pictures(self, ctx, stage, data, m, loss):
        """The windows as text, samples over training, the causal map (pictures/text.py)."""
        from nnrecipe.pictures import text

        return text.baseline(ctx, stage, data, m)

    def sampler(self, spec, data, device):
        """A sample from the fixed prompt (the same sampling seed each time), to TensorBoard's text tab."""
        from nnrecipe.probes.sequence_probes import sample

        return lambda net, writer, step: sample(net, data, spec, device, writer, step)

    # ---- squeeze: the ensemble averages next-token distributions; its prediction is their log

    def ensemble_part(self, output, loss):
        return torch.softmax(output.float(), dim=-1)

    def ensemble_prediction(self, mean):
        """The log of the mean distribution: valid logits that the per-window cross-entropy and
        argmax read as they read one member's."""
        return torch.log(mean.clamp_min(1e-12))


LANGUAGE_MODEL = LanguageModel()
