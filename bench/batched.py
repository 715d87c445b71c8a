"""K digits MLPs trained batched (nnrecipe/batched.py) vs. one after another (run by hand).

    OMP_NUM_THREADS=1 python bench/batched.py [--steps 300] [--repeats 5] [--ks 1 2 5 10]

A digits MLP (64 -> W -> W -> 10: --width W; the shipped configs/digits.yaml has W = 128), batch
64, Adam 1e-3, each model its own batches. Sequential: K ordinary loops with the engine's
optimizer (torch.optim.Adam, fused), one after another; batched: one ManyModels loop for all K
(torch's fused Adam on the stacked parameters, all K at one learning rate). Both alternate within one process;
round 0 warms up and is not counted. Prints the median model-steps/s (K x steps / seconds) of
each and the median (min-max) of the per-round ratio batched / sequential. Never run as a test.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

from nnrecipe.batched import ManyModels

WIDTH = 128  # the shipped MLP's; --width sets it


def mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    w = WIDTH
    return nn.Sequential(nn.Flatten(), nn.Linear(64, w), nn.ReLU(), nn.Linear(w, w), nn.ReLU(), nn.Linear(w, 10))


def batches(x: torch.Tensor, y: torch.Tensor, k: int, steps: int, b: int = 64):
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(0, len(x), (steps, k, b), generator=g)
    return [(x[i], y[i]) for i in idx]  # (K, B, ...) per step


def sequential(k: int, data) -> float:
    start = time.perf_counter()
    for i in range(k):
        model = mlp(i)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
        for xb, yb in data:
            loss = F.cross_entropy(model(xb[i]), yb[i])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return time.perf_counter() - start


def batched(k: int, data) -> float:
    start = time.perf_counter()
    many = ManyModels([mlp(i) for i in range(k)], lr=[1e-3] * k, weight_decay=[0.0] * k)
    for xb, yb in data:
        many.step(xb, yb, F.cross_entropy)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--ks", type=int, nargs="+", default=[1, 2, 5, 10])
    ap.add_argument("--width", type=int, default=128)
    args = ap.parse_args()
    global WIDTH
    WIDTH = args.width
    d = load_digits()
    x = torch.tensor(d.images / 16.0, dtype=torch.float32)
    y = torch.tensor(d.target, dtype=torch.long)
    rows = []
    for k in args.ks:
        data = batches(x, y, k, args.steps)
        seq, bat = [], []
        for r in range(args.repeats + 1):
            s, b = sequential(k, data), batched(k, data)
            if r:  # round 0 warms up
                seq.append(s)
                bat.append(b)
        ratios = [s / b for s, b in zip(seq, bat)]
        row = {
            "k": k,
            "sequential_model_steps_per_s": round(k * args.steps / statistics.median(seq), 1),
            "batched_model_steps_per_s": round(k * args.steps / statistics.median(bat), 1),
            "speedup_median": round(statistics.median(ratios), 2),
            "speedup_min": round(min(ratios), 2),
            "speedup_max": round(max(ratios), 2),
        }
        rows.append(row)
        print(json.dumps(row))
    print(
        json.dumps(
            {
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
                "machine": platform.machine(),
                "width": WIDTH,
                "steps": args.steps,
                "rows": rows,
            }
        )
    )


if __name__ == "__main__":
    main()
