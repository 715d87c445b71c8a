"""Planted label noise (data.source: python): scikit-learn's digits with some training labels
changed on purpose, and the indices of those changed, so a test can score what
suspected-label-errors finds (precision: share of suspects that were planted; recall: share of
the planted found). Val is never touched."""

from __future__ import annotations

import torch


def _digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0
    y = torch.tensor(d.target, dtype=torch.int64)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    return x[order], y[order]


def planted(*, fraction: float = 0.1, source: int = 3, target: int = 8, uniform: float = 0.0, seed: int = 0):
    """(data dict, changed train indices): `fraction` of class `source` relabelled as `target`,
    and `uniform` of all training examples moved to another class at random."""
    x, y = _digits()
    xt, yt = x[:1400], y[:1400].clone()
    g = torch.Generator().manual_seed(seed)
    of_class = torch.nonzero(yt == source).flatten()
    chosen = of_class[torch.randperm(len(of_class), generator=g)[: round(fraction * len(of_class))]]
    yt[chosen] = target
    changed = set(chosen.tolist())
    if uniform > 0:
        pick = torch.nonzero(torch.rand(len(yt), generator=g) < uniform).flatten()
        yt[pick] = (yt[pick] + torch.randint(1, 10, (len(pick),), generator=g)) % 10
        changed |= set(pick.tolist())
    return {"train": (xt, yt), "val": (x[1400:], y[1400:])}, sorted(changed)


def noisy_digits(**kw):
    return planted(**kw)[0]


def clean_digits():
    return planted(fraction=0.0)[0]


def transposed_digits():
    """The same digits with each image transposed (H and W swapped), as when a later pipeline
    loads images in (W, H) order: the trained model sees other inputs than it learned from."""
    data = clean_digits()
    return {k: (x.transpose(-1, -2).contiguous(), y) for k, (x, y) in data.items()}


def blocky(n_train: int = 300, n_val: int = 600, seed: int = 0):
    """4 classes of 16x16 images: the class is a pattern of 4x4 blocks, each pixel buried in
    independent noise. Averaging 2x2 pixels (data.downsample: 2) halves the noise and keeps the
    pattern, so the smaller-input knob helps: best.yaml then sees 8x8 inputs."""
    g = torch.Generator().manual_seed(seed)
    patterns = (torch.rand(4, 1, 4, 4, generator=g) > 0.5).float()
    patterns = patterns.repeat_interleave(4, dim=2).repeat_interleave(4, dim=3)

    def split(n):
        y = torch.randint(0, 4, (n,), generator=g)
        return patterns[y] + 3.0 * torch.randn(n, 1, 16, 16, generator=g), y

    return {"train": split(n_train), "val": split(n_val)}
