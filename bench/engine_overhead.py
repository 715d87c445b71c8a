"""The nnrecipe engine vs. a minimal hand-written PyTorch loop on the same work (run by hand).

    OMP_NUM_THREADS=1 python bench/engine_overhead.py [--steps 400] [--repeats 7]
    python bench/engine_overhead.py --device cuda [--compile]      # adds ResNet-18 on the GPU

Same model, data, batch size, steps and seed; the engine, the engine with its logging on
(TensorBoard scalars and the progress bar's loss, every `log_every` steps) and the hand loop run
alternately in one process; round 0 warms up and is not counted. Prints the median steps/s of
each, and the median (min-max) of the per-round ratio engine / hand: on a shared machine the
paired ratio is far steadier than either rate; on a CPU also the ratio by the process's CPU time,
which ignores time spent waiting for a core. Never run as a test.

Workloads: digits MLP and MNIST-1D 1-D CNN on any device; on CUDA also ResNet-18 on synthetic
3x32x32 data (batch 512, bf16 autocast, channels_last, data on the GPU), against a hand-tuned
loop doing the same (and both under torch.compile with --compile).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F

from nnrecipe.data import build_data
from nnrecipe.data.bundle import TensorSplit
from nnrecipe.engine import Engine
from nnrecipe.experiments import Logging, TrainPlan
from nnrecipe.losses import make_loss
from nnrecipe.models import build_model
from nnrecipe.optim import make_optimizer
from nnrecipe.runtime import autocast_dtype, resolve_device, seed_everything
from nnrecipe.spec import load_spec
from nnrecipe.tasks import get_task

CPU_WORKLOADS = {
    "digits-mlp (batch 64)": ["data.batch_size=64"],
    "mnist1d-cnn1d (batch 100)": ["data.source=mnist1d", "model.arch=cnn1d", "data.batch_size=100"],
}
# ResNet-18 with the CIFAR stem on synthetic images: the shape of a real GPU workload.
CUDA_WORKLOADS = {
    "resnet18 3x32x32 (batch 512, bf16, channels_last)": [
        "data.source=synthetic",
        "model.arch=resnet18",
        "data.batch_size=512",
        "train.precision=bf16",
        "train.channels_last=true",
        "data.args.num_train=2048",
        "data.args.num_val=512",
    ],
}


def hand_loop(model, x, y, *, steps, batch_size, lr, seed, device, amp_dtype=None, channels_last=False, compile=False):
    """What a careful user writes by hand: data on the device, a permutation per epoch, the
    optimizer's fused kernel (the engine's: nnrecipe/optim.py), bf16 autocast and channels_last where
    asked, no logging and no host sync until the end."""
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    forward = torch.compile(model) if compile else model
    opt = torch.optim.Adam(model.parameters(), lr=lr, fused=True)
    g = torch.Generator(device=device).manual_seed(seed)
    n, step = len(x), 0
    while step < steps:
        perm = torch.randperm(n, generator=g, device=device)
        for i in range(0, n - batch_size + 1, batch_size):
            idx = perm[i : i + batch_size]
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                out = forward(x[idx])
            loss = F.cross_entropy(out.float(), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if step == steps:
                break
    return loss.item()


def synthetic_images(n: int, device: torch.device) -> TensorSplit:
    g = torch.Generator().manual_seed(0)
    return TensorSplit(
        "train", torch.randn(n, 3, 32, 32, generator=g).to(device), torch.randint(0, 10, (n,), generator=g).to(device)
    )


def run_workload(name, overrides, *, device, steps, repeats, compile) -> dict:
    spec, base = load_spec(None, overrides + [f"device={device}", f"train.compile={str(compile).lower()}"])
    if spec.model.arch == "resnet18":
        train, input_shape, num_outputs = synthetic_images(spec.data.args.num_train, device), (3, 32, 32), 10
    else:
        data = build_data(spec, base=base).to(device)
        train, input_shape, num_outputs = data.train, data.input_shape, data.num_outputs
    loss_fn = make_loss(spec, base=base)
    amp = autocast_dtype(spec.train.precision, device)
    kinds = ("engine", "engine+logging", "hand")
    rates: dict[str, list[float]] = {k: [] for k in kinds}
    cpu_rates: dict[str, list[float]] = {k: [] for k in kinds}  # steps per CPU-second of this process
    with tempfile.TemporaryDirectory() as tmp:
        from torch.utils.tensorboard import SummaryWriter

        for r in range(repeats + 1):
            order = kinds if r % 2 == 0 else kinds[::-1]
            for kind in order:
                seed_everything(0)
                model = build_model(spec, input_shape=input_shape, num_outputs=num_outputs, base=base).to(device)
                writer = SummaryWriter(f"{tmp}/{kind}-{r}") if kind == "engine+logging" else None
                _sync(device)
                t, c = time.perf_counter(), time.process_time()
                if kind == "hand":
                    hand_loop(
                        model,
                        train.x,
                        train.y,
                        steps=steps,
                        batch_size=spec.data.batch_size,
                        lr=spec.optim.lr,
                        seed=0,
                        device=device,
                        amp_dtype=amp,
                        channels_last=spec.train.channels_last,
                        compile=spec.train.compile,
                    )
                else:
                    engine = Engine.for_spec(spec.train, device=device, task=get_task(spec.task))
                    engine.train(
                        TrainPlan(
                            model=model,
                            train=train,
                            loss_fn=loss_fn,
                            optimizer=make_optimizer(spec.optim, model.parameters()),
                            steps=steps,
                            batch_size=spec.data.batch_size,
                            seed=0,
                            log=Logging(writer=writer, every=spec.train.log_every),
                        )
                    )
                _sync(device)
                elapsed, cpu = time.perf_counter() - t, time.process_time() - c
                if writer is not None:
                    writer.close()
                if r > 0:  # round 0 warms up (allocator, cuDNN autotuning, compilation)
                    rates[kind].append(steps / elapsed)
                    cpu_rates[kind].append(steps / cpu)
    ratios = [e / h for e, h in zip(rates["engine"], rates["hand"])]
    ratios_log = [e / h for e, h in zip(rates["engine+logging"], rates["hand"])]
    # On a CPU shared with other jobs, CPU time ignores the time the process waited for a core.
    ratios_cpu = [e / h for e, h in zip(cpu_rates["engine"], cpu_rates["hand"])]
    ratios_cpu_log = [e / h for e, h in zip(cpu_rates["engine+logging"], cpu_rates["hand"])]
    return {
        "workload": name,
        "steps": steps,
        "repeats": repeats,
        **{f"{k}_steps_per_s": statistics.median(v) for k, v in rates.items()},
        "ratio": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "ratio_logging": statistics.median(ratios_log),
        "ratio_logging_min": min(ratios_log),
        "ratio_logging_max": max(ratios_log),
        "cpu_time_ratio": statistics.median(ratios_cpu),
        "cpu_time_ratio_logging": statistics.median(ratios_cpu_log),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--compile", action="store_true", help="torch.compile both loops (CUDA workloads only)")
    ap.add_argument("--only", default="", help="run the workloads whose name contains this")
    ap.add_argument("--json", default="", help="also write the results here")
    args = ap.parse_args()
    device = resolve_device(args.device)
    machine = (
        torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    )
    print(
        f"device {device} ({machine}), torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"steps {args.steps}, repeats {args.repeats}"
    )
    workloads = dict(CPU_WORKLOADS, **(CUDA_WORKLOADS if device.type == "cuda" else {}))
    results = []
    for name, overrides in workloads.items():
        if args.only and args.only not in name:
            continue
        compile = args.compile and name in CUDA_WORKLOADS
        res = run_workload(name, overrides, device=device, steps=args.steps, repeats=args.repeats, compile=compile)
        res["compile"] = compile
        results.append(res)
        print(
            f"{name + (' compiled' if compile else ''):52s} engine {res['engine_steps_per_s']:7.1f}  "
            f"+logging {res['engine+logging_steps_per_s']:7.1f}  hand {res['hand_steps_per_s']:7.1f} steps/s   "
            f"ratio {res['ratio']:.3f} ({res['ratio_min']:.3f}-{res['ratio_max']:.3f})   "
            f"with logging {res['ratio_logging']:.3f} ({res['ratio_logging_min']:.3f}-{res['ratio_logging_max']:.3f})"
            + (
                f"   by CPU time {res['cpu_time_ratio']:.3f}, with logging {res['cpu_time_ratio_logging']:.3f}"
                if device.type == "cpu"
                else ""
            )
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"device": str(device), "machine": machine, "torch": torch.__version__, "results": results}, f, indent=1
            )


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


if __name__ == "__main__":
    main()
