"""One experiment on many devices: `torchrun --nproc-per-node N -m nnrecipe <stage> ...` (or
`nnrecipe <stage> --nproc N`, which launches that) runs N copies of the command, one per device,
that train every model of the stage together with DistributedDataParallel.

- Each rank takes its contiguous share of every batch (the batch order is the seed's, the same
  on every rank), so a step's averaged gradient is the whole batch's, as in one process. The
  batch is augmented whole from an RNG stream the ranks share; each rank's forward pass draws
  from its own (`Draws`: dropout masks independent between the shares).
- Each rank evaluates its contiguous share of the val split (the weights are the same on every
  rank); the sums of loss and metric are added over the ranks, and kept outputs and
  per-example scores gathered in the split's order, so every verdict sees every example and
  every rank takes the same decisions from the same numbers: the stages run in lockstep, each
  training step an all-reduce. The logged training loss is the mean over the ranks' shares.
- Rank 0 alone writes the run directory and prints; the other ranks write into a temporary
  folder of their own, removed at the end.
- nccl between GPUs (cuda:LOCAL_RANK each), gloo between CPU processes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import os
from typing import Iterator, Optional

import torch

from nnrecipe.errors import NNRecipeError


@dataclasses.dataclass(frozen=True)
class Ranks:
    rank: int  # this process among all of them
    world: int  # how many processes train each model
    local_rank: int  # this process among those of its machine: its GPU

    @property
    def writes(self) -> bool:
        return self.rank == 0


_CURRENT: Optional[Ranks] = None


def current() -> Optional[Ranks]:
    """The ranks of the torchrun session this process is in; None in a plain process."""
    return _CURRENT


def from_env() -> Optional[Ranks]:
    """What torchrun put in the environment; None for one process (or a world of one)."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world < 2:
        return None
    return Ranks(
        rank=int(os.environ.get("RANK", "0")),
        world=world,
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
    )


@contextlib.contextmanager
def session(spec, *, resume: bool) -> Iterator[Optional[Ranks]]:
    """Join the torchrun process group for the run (None outside torchrun): check that every rank
    runs the same spec and that the spec fits, and leave the group at the end."""
    global _CURRENT
    ranks = from_env()
    if ranks is None:
        yield None
        return
    _refuse(spec, ranks, resume=resume)
    import torch.distributed as dist

    gpu = spec.device != "cpu" and torch.cuda.is_available()
    if gpu:
        if ranks.local_rank >= torch.cuda.device_count():
            raise NNRecipeError(
                f"torchrun: local rank {ranks.local_rank} has no GPU (this machine has "
                f"{torch.cuda.device_count()}); start at most that many processes per machine"
            )
        torch.cuda.set_device(ranks.local_rank)
    dist.init_process_group("nccl" if gpu else "gloo", timeout=datetime.timedelta(minutes=30))
    _CURRENT = ranks
    try:
        _agree(spec, ranks)
        yield ranks
    finally:
        _CURRENT = None
        dist.destroy_process_group()


def device_for(ranks: Ranks, device: torch.device) -> torch.device:
    """This rank's device: its own GPU (LOCAL_RANK) where the run is on CUDA."""
    return torch.device("cuda", ranks.local_rank) if device.type == "cuda" else device


def _refuse(spec, ranks: Ranks, *, resume: bool) -> None:
    if spec.workers != 1 or spec.executor != "local":
        field = "workers" if spec.workers != 1 else "executor"
        raise NNRecipeError(
            f"{field}: torchrun already trains each model on several processes; leave --workers and "
            "--executor at their defaults with it"
        )
    tune = spec.stages.tune
    if (tune.workers or 1) > 1 or tune.storage is not None:
        raise NNRecipeError(
            "stages.tune: under torchrun every rank runs the same study in lockstep; leave its workers "
            "and storage unset"
        )
    if resume:
        raise NNRecipeError("--resume: not under torchrun (its other ranks keep no checkpoints); run it again whole")
    if spec.data.batch_size < ranks.world:
        raise NNRecipeError(
            f"data.batch_size: {spec.data.batch_size} examples cannot be shared by {ranks.world} processes"
        )


def _agree(spec, ranks: Ranks) -> None:
    """Every rank must train the same thing: a spec that differs between machines (another file,
    another override) would deadlock or silently mix two experiments."""
    import torch.distributed as dist

    mine = hashlib.sha256(spec.to_yaml().encode()).hexdigest()[:16]
    everyone: list = [None] * ranks.world
    dist.all_gather_object(everyone, mine)
    if len(set(everyone)) > 1:
        differ = [i for i, h in enumerate(everyone) if h != everyone[0]]
        raise NNRecipeError(
            f"torchrun: the {ranks.world} processes disagree on the spec (ranks {differ} differ from rank 0); "
            "give every machine the same spec file and overrides"
        )


# ----------------------------------------------------------------------------- the engine's part


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """The model as DDP trains it (the same parameters: state_dict and evaluation use `model`)."""
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


UNUSED = "Expected to have finished reduction in the prior iteration"  # DDP's words for unused parameters


def unused_parameters(exc: RuntimeError) -> Optional[NNRecipeError]:
    """DDP's error for parameters that get no gradient, as one line (None for any other error)."""
    if UNUSED not in str(exc):
        return None
    return NNRecipeError(
        "model: some parameters get no gradient in forward (a layer it never calls?); under torchrun "
        "DistributedDataParallel needs every trainable parameter used: remove or freeze those"
    )


def share(batch_len: int, ranks: Ranks, device: torch.device) -> torch.Tensor:
    """The rows of a batch this rank trains on: its contiguous share (sizes differ by one at most)."""
    return torch.tensor_split(torch.arange(batch_len, device=device), ranks.world)[ranks.rank]


def mean_over_ranks(losses: torch.Tensor, start: int, stop: int) -> int:
    """losses[start:stop], each rank's share's, replaced in place by their mean over the ranks
    (the whole batch's loss); returns `stop`, where the next call starts."""
    import torch.distributed as dist

    if stop > start:
        window = losses[start:stop]
        dist.all_reduce(window)
        window /= dist.get_world_size()
    return stop


class Draws:
    """The global RNG as two streams while a model trains under torchrun. Augmentation draws
    from the shared one, the same on every rank: the whole batch is augmented as in one process,
    then each rank takes its share. The forward pass (dropout, stochastic depth, noise layers)
    draws from the rank's own, so the ranks' shares get independent masks, as the rows of one
    batch do in one process; from one stream every rank would draw the same masks for its rows.
    At the end the shared stream is back: what follows draws the same on every rank."""

    def __init__(self, ranks: Ranks, device: torch.device):
        from nnrecipe.experiments import rng_state  # (experiments imports the engine, which imports this)

        self.device = device
        seed = int(torch.randint(0, 2**62, ()))  # from the shared stream: the same on every rank
        self.shared = rng_state(device)
        torch.manual_seed(seed + ranks.rank)  # this rank's own stream from here

    @contextlib.contextmanager
    def shared_stream(self) -> Iterator[None]:
        from nnrecipe.experiments import rng_state, set_rng_state

        own = rng_state(self.device)
        set_rng_state(self.shared, self.device)
        try:
            yield
        finally:
            self.shared = rng_state(self.device)
            set_rng_state(own, self.device)

    def close(self) -> None:
        from nnrecipe.experiments import set_rng_state

        set_rng_state(self.shared, self.device)


@contextlib.contextmanager
def draws(ranks: Optional[Ranks], device: torch.device) -> Iterator[Optional[Draws]]:
    """A rank's own stream for the forward pass while a model trains (None outside torchrun)."""
    if ranks is None:
        yield None
        return
    two = Draws(ranks, device)
    try:
        yield two
    finally:
        two.close()


def check_split(rows: int, batch: int, ranks: Ranks) -> None:
    """A batch every rank gets a share of (a small split is taken whole, smaller than batch_size)."""
    if batch < ranks.world:
        raise NNRecipeError(
            f"data: batches of {batch} examples (train split of {rows}) cannot be shared by {ranks.world} processes"
        )


def eval_share(split, ranks: Optional[Ranks]):
    """The contiguous part of `split` this rank evaluates: its share under torchrun, the whole
    split outside it (or when the split has fewer examples than there are ranks)."""
    if ranks is None or len(split) < ranks.world:
        return split
    bounds = [len(split) * r // ranks.world for r in range(ranks.world + 1)]
    return split.part(bounds[ranks.rank], bounds[ranks.rank + 1])


def add_over_ranks(tensors: list[torch.Tensor]) -> None:
    """Each tensor replaced, in place, by its sum over the ranks: one all-reduce for them all,
    in float64 (counts and sums of a split's examples)."""
    import torch.distributed as dist

    flat = torch.cat([t.reshape(-1).to(torch.float64) for t in tensors])
    dist.all_reduce(flat)
    for t, total in zip(tensors, flat.split([t.numel() for t in tensors])):
        t.copy_(total.view_as(t))


def gather_in_order(part) -> list:
    """Every rank's `part` (a host tensor or array), in rank order: the split's order."""
    import torch.distributed as dist

    parts: list = [None] * dist.get_world_size()
    dist.all_gather_object(parts, part)
    return parts


def from_rank0(obj):
    """Rank 0's `obj` on every rank (itself outside torchrun): evaluations agree to the bit, so
    every rank takes the same decisions even where two GPUs would round differently."""
    if _CURRENT is None:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


# ----------------------------------------------------------------------------- the run directory

SHARED_MAX_BYTES = 64 * 2**20  # a file larger than this is not copied to the other ranks


def share_run_dir(ranks: Ranks, root) -> None:
    """What earlier commands left in rank 0's run directory (best.yaml, summaries, a tune study,
    checkpoints), copied into the other ranks' scratch one (`root` on each rank): every rank
    starts its stages from the same state. TensorBoard events and pictures are not read back."""
    from pathlib import Path

    root = Path(root)
    files: dict[str, bytes] = {}
    if ranks.writes and root.is_dir():
        for path in sorted(root.rglob("*")):
            rel = path.relative_to(root)
            if (
                path.is_file()
                and rel.parts[0] != "tb"
                and path.suffix not in (".png", ".html")
                and path.name != ".lock"
                and path.stat().st_size <= SHARED_MAX_BYTES
            ):
                files[rel.as_posix()] = path.read_bytes()
    files = from_rank0(files)
    if not ranks.writes:
        for rel, contents in files.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(contents)
