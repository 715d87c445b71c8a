"""K digits experiments trained as one (nnrecipe/together.py) vs. one after another, through the
engine's whole path (by hand; never a test).

    OMP_NUM_THREADS=1 python bench/together.py [--ks 1 2 4 5 10] [--steps 1000] [--rounds 3]
                                               [--config configs/mnist1d.yaml] [--device cuda] [--own-lr]
                                               [--json bench/results/together_cpu.json]

Each experiment is the spec of --config (default: the shipped digits spec, configs/digits.yaml:
the MLP 64-128-128-10, batch 64, Adam 3e-4) with an evaluation every 200 steps, at its own seed,
with its augmentation, scored on train and val as a stage scores it (with --own-lr, each at its own
learning rate, spread log-uniformly over [1e-4, 1e-2] as tune's trials are): `run_group` (K models stacked, one vmapped step) against `run_experiment` K times.
Both alternate within one process, after one warm-up round. Reported per K: model-steps per
second of each (median over rounds), the per-round ratio (median, min-max), and the largest
difference between the two ways in any experiment's val loss.

And the ceiling: no way of batching K models does less arithmetic than one model on a batch K
times as large (the same multiply-adds, in the fewest and largest operations). A hand-written
step (forward, loss, backward, fused Adam) of one model on B rows and on K * B rows gives
`ceiling = K * t(B) / t(K * B)`: the most any batching can gain over K steps of one model on
this machine. Where it is near 1, the model is not dispatch-bound here and the arithmetic is
the floor.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from nnrecipe.data import build_data
from nnrecipe.experiments import Experiment, prepare_experiment, run_experiment, run_group
from nnrecipe.spec import Spec, load_spec

BASE = Path(".")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _hand_step_s(exp: Experiment, data, device: torch.device, base: Path, rows: int, steps: int) -> float:
    """Seconds per hand-written step of exp's model on `rows` rows (its loss, fused Adam)."""
    p = prepare_experiment(exp, data=data, device=device, base=base)
    model, loss_fn = p.plan.model.to(device).train(), p.plan.loss_fn
    opt = torch.optim.Adam(model.parameters(), lr=p.spec.optim.lr, fused=True)
    idx = torch.randint(0, len(data.train), (rows,), generator=torch.Generator().manual_seed(0))
    x, y = data.train.x[idx.to(device)], data.train.y[idx.to(device)]
    best = float("inf")
    for _ in range(3):
        _sync(device)
        t = time.perf_counter()
        for _ in range(steps):
            loss = loss_fn(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        _sync(device)
        best = min(best, (time.perf_counter() - t) / steps)
    return best


def _at(spec, i: int, k: int, own_lr: bool):
    """Experiment i of k: the spec, or at its own learning rate, 1e-4 to 1e-2 evenly in log."""
    if not own_lr:
        return spec
    lr = 1e-4 * 100 ** (i / max(k - 1, 1))
    return spec.model_copy(update={"optim": spec.optim.model_copy(update={"lr": lr})})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4, 5, 10])
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--config", type=Path, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--own-lr", action="store_true", help="each model its own learning rate (tune's trials)")
    args = ap.parse_args()
    device = torch.device(args.device)
    spec, base = load_spec(args.config) if args.config else (Spec(), BASE)
    data = build_data(spec, base=base)
    data.task.check_targets(data)
    data = data.to(device)
    rows = []
    for k in args.ks:
        exps = [
            Experiment(f"m{i}", _at(spec, i, k, args.own_lr), steps=args.steps, eval_every=200, seed=i)
            for i in range(k)
        ]
        alone_s, together_s, diff = [], [], 0.0
        for r in range(args.rounds + 1):
            t = time.perf_counter()
            alone = [run_experiment(e, data=data, device=device, base=base) for e in exps]
            _sync(device)
            a = time.perf_counter() - t
            t = time.perf_counter()
            together, why = run_group(exps, datas=[data] * k, device=device, base=base, writers=[None] * k)
            _sync(device)
            b = time.perf_counter() - t
            if k > 1 and why:
                raise SystemExit(f"K={k} did not train as one: {why}")
            diff = max([diff] + [abs(x.val_loss - y.val_loss) for x, y in zip(alone, together)])
            if r:  # round 0 warms up (imports, allocator)
                alone_s.append(a)
                together_s.append(b)
        ratios = [x / y for x, y in zip(alone_s, together_s)]
        rows_b = spec.data.batch_size
        one = _hand_step_s(exps[0], data, device, base, rows_b, 300)
        many = _hand_step_s(exps[0], data, device, base, k * rows_b, 300)
        row = {
            "k": k,
            "one_by_one_model_steps_per_s": round(k * args.steps / statistics.median(alone_s)),
            "together_model_steps_per_s": round(k * args.steps / statistics.median(together_s)),
            "speedup_median": round(statistics.median(ratios), 2),
            "speedup_min": round(min(ratios), 2),
            "speedup_max": round(max(ratios), 2),
            "max_val_loss_difference": diff,
            "ceiling_one_model_on_k_batches": round(k * one / many, 2),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    out = {
        "config": str(args.config or "configs/digits.yaml"),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "steps": args.steps,
        "own_lr": args.own_lr,
        "rows": rows,
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
