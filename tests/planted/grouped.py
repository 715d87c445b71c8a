"""Data whose val rows come in dependent groups: 40 "photos", 10 crops each (the crops of a
photo share its label and nearly its pixels), declared with the contract's `groups`."""

import torch


def crops(*, photos: int = 40, crops_per_photo: int = 10, train: int = 600, seed: int = 0, groups: str = "val"):
    g = torch.Generator().manual_seed(seed)

    def split(n_photos, k):
        y = torch.randint(0, 2, (n_photos,), generator=g).repeat_interleave(k)
        base = torch.randn(n_photos, 16, generator=g).repeat_interleave(k, dim=0)
        x = base + 0.05 * torch.randn(n_photos * k, 16, generator=g)
        x[:, 0] += 1.5 * (2 * y - 1)  # one informative feature
        return x, y, torch.arange(n_photos).repeat_interleave(k)

    xt, yt, _ = split(train, 1)
    xv, yv, ids = split(photos, crops_per_photo)
    out = {"train": (xt, yt), "val": (xv, yv)}
    if groups == "val":
        out["groups"] = {"val": ids}
    elif groups == "short":
        out["groups"] = {"val": ids[:-1]}
    elif groups == "list":
        out["groups"] = [0, 1]
    return out
