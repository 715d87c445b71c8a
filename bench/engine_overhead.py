"""The nnrecipe engine vs. a minimal hand-written PyTorch loop on the same work (run by hand).

    OMP_NUM_THREADS=1 python bench/engine_overhead.py [--steps 600] [--repeats 5]

Same model, data, batch size, steps and seed; engine and hand loop run alternately in one
process; prints the median steps/s of each and their ratio. Never run as a test.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from nnrecipe.data import build_data
from nnrecipe.engine import Engine
from nnrecipe.losses import make_loss
from nnrecipe.models import build_model
from nnrecipe.optim import make_optimizer
from nnrecipe.runtime import resolve_device, seed_everything
from nnrecipe.spec import load_spec

WORKLOADS = {
    "digits-mlp (batch 64)": ["data.batch_size=64"],
    "mnist1d-cnn1d (batch 100)": ["data.source=mnist1d", "model.arch=cnn1d", "data.batch_size=100"],
}


def hand_loop(model, x, y, *, steps, batch_size, lr, seed, device):
    """What a user writes by hand: data on the device, a permutation per epoch, no logging."""
    opt = torch.optim.Adam(model.parameters(), lr=lr, foreach=True)  # the engine's optimizer kernel: the ratio is loop overhead only
    g = torch.Generator(device=device).manual_seed(seed)
    n, step = len(x), 0
    while step < steps:
        perm = torch.randperm(n, generator=g, device=device)
        for i in range(0, n - batch_size + 1, batch_size):
            idx = perm[i : i + batch_size]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if step == steps:
                break
    return loss.item()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    device = resolve_device(args.device)
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, steps {args.steps}")
    for name, overrides in WORKLOADS.items():
        spec, base = load_spec(None, overrides + [f"device={args.device}"])
        data = build_data(spec, base=base).to(device)
        loss_fn = make_loss(spec, base=base)
        rates = {"engine": [], "hand": []}
        for r in range(args.repeats):
            for kind in ("engine", "hand") if r % 2 == 0 else ("hand", "engine"):
                seed_everything(0)
                model = build_model(spec, input_shape=data.input_shape, num_outputs=data.num_outputs, base=base).to(device)
                _sync(device)
                t = time.perf_counter()
                if kind == "engine":
                    engine = Engine(device=device, task=spec.task, log_every=spec.train.log_every)
                    engine.train(model=model, train=data.train, val=None, loss_fn=loss_fn,
                                 optimizer=make_optimizer(spec.optim, model.parameters()), steps=args.steps,
                                 batch_size=spec.data.batch_size, seed=0)
                else:
                    hand_loop(model, data.train.x, data.train.y, steps=args.steps, batch_size=spec.data.batch_size,
                              lr=spec.optim.lr, seed=0, device=device)
                _sync(device)
                rates[kind].append(args.steps / (time.perf_counter() - t))
        e, h = statistics.median(rates["engine"]), statistics.median(rates["hand"])
        print(f"{name:28s} engine {e:8.0f} steps/s   hand {h:8.0f} steps/s   ratio {e / h:.3f}")


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


if __name__ == "__main__":
    main()
