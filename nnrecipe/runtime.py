"""Seeding, device and precision: the process-wide settings, each chosen in one place."""

from __future__ import annotations

import dataclasses
import os
import random

import numpy as np
import torch

from nnrecipe.errors import DeviceError


def seed_everything(seed: int, *, deterministic: bool = False) -> None:
    """The one seeding function: Python, NumPy and torch (all devices).

    CPU runs are bit-reproducible with this alone (for a fixed thread count). On CUDA,
    `deterministic` also asks cuDNN/cuBLAS for deterministic kernels, at some speed cost.
    """
    from nnrecipe import distributed

    # torchrun: every rank must compute what the others do (the same kernels, the same rounding)
    deterministic = deterministic or distributed.current() is not None
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # seeds CUDA generators too
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True  # fastest conv algorithms for fixed shapes


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(f"device: {name!r} requested but CUDA is not available here (use device: cpu or auto)")
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise DeviceError(f"device: {name!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise DeviceError("device: 'mps' requested but MPS is not available here")
    return torch.device(name)


def autocast_dtype(precision: str, device: torch.device):
    """bf16 autocast on CUDA by default; fp32 elsewhere (CPU autocast is slower for small models)."""
    if precision == "fp32":
        return None
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    if precision == "bf16":
        return torch.bfloat16 if device.type == "cpu" else None
    return None


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


@dataclasses.dataclass(frozen=True)
class Workers:
    """Where a stage's independent experiments train: `count` processes, worker i on
    `devices[i % len(devices)]`, each with `threads` torch threads."""

    count: int
    devices: tuple[str, ...]
    threads: int


def usable_cores() -> int:
    """The cores this process may run on (a container's or taskset's share, not the machine's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def plan_workers(setting, device: torch.device, *, field: str = "workers", local: bool = True) -> Workers:
    """`workers` (an int, or "auto") on `device`: one GPU per worker (cuda:i round-robin over
    the GPUs), or on a CPU the cores split between the workers, so that workers x threads never
    exceeds the cores (contending threads on small models were measured 10-50x slower). Not
    `local` (Ray): this machine's devices do not bound the count; each task takes one GPU or core."""
    if not local:
        count = 0 if setting == "auto" else int(setting)  # 0: as many as the cluster runs at once
        return Workers(count=count, devices=(device.type,), threads=1)
    cores = usable_cores()
    env = os.environ.get("OMP_NUM_THREADS", "")
    if device.type == "cuda":
        gpus = torch.cuda.device_count()
        count = gpus if setting == "auto" else int(setting)
        if count > gpus:
            raise DeviceError(f"{field}: {count} asks for one GPU each, but this machine has {gpus}")
        first = device.index or 0
        devices = tuple(f"cuda:{(first + i) % gpus}" for i in range(count)) if count > 1 else (str(device),)
    else:
        count = cores if setting == "auto" else int(setting)
        if count > cores:
            raise DeviceError(f"{field}: {count} processes on a CPU with {cores} usable cores; use at most {cores}")
        devices = (str(device),)
    threads = max(1, cores // count)
    if env.isdigit() and int(env) > 0:  # the user's (or the Makefile's) setting, never exceeded
        threads = min(threads, int(env))
    return Workers(count=count, devices=devices, threads=threads)
