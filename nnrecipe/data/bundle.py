"""What every data source returns: splits of (x, y) examples plus what the task needs to know.

Two kinds of split share one small interface (`len`, `iterate`, `example`):

- `TensorSplit`: the whole split as two tensors; batched by indexing, and moved to the
  training device once, so a training step does no host-to-device copy.
- `LazySplit`: a map-style Dataset decoded on the fly (image folders, user datasets),
  batched by a DataLoader with worker processes.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import TYPE_CHECKING, Any, Iterator, NoReturn, Optional, Union

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from nnrecipe import inputs
from nnrecipe.errors import DataError, NNRecipeError, PluginError
from nnrecipe.inputs import Inputs

if TYPE_CHECKING:
    from nnrecipe.tasks import Task

Batch = tuple[Inputs, torch.Tensor]  # (inputs of any structure, targets)


class TensorSplit:
    """x is a tensor or a structure of them (nnrecipe/inputs.py), a row per example."""

    lazy = False

    def __init__(self, name: str, x: Inputs, y: torch.Tensor):
        why = inputs.problem(x)
        if why:
            raise DataError(f"data: the {name} split's inputs cannot be batched: {why}")
        if inputs.batch_len(x) != len(y):
            raise DataError(f"data: the {name} split has {inputs.batch_len(x)} inputs but {len(y)} targets")
        self.name, self.x, self.y = name, x, y

    def __len__(self) -> int:
        return len(self.y)

    @property
    def device(self) -> torch.device:
        return self.y.device

    def to(self, device: torch.device | str) -> "TensorSplit":
        if torch.device(device) == self.device and inputs.device(self.x) == self.device:
            return self
        nb = torch.device(device).type == "cuda"
        return TensorSplit(self.name, inputs.to(self.x, device, non_blocking=nb), self.y.to(device, non_blocking=nb))

    def subset(self, index: torch.Tensor) -> "TensorSplit":
        index = index.to(self.device)
        return TensorSplit(self.name, inputs.index(self.x, index), self.y[index])

    def part(self, start: int, stop: int) -> "TensorSplit":
        """Rows start..stop-1, as views (nothing copied)."""
        return TensorSplit(self.name, *self.take(slice(start, stop)))

    def iterate(
        self, batch_size: int, *, shuffle: bool = False, generator: Optional[torch.Generator] = None
    ) -> Iterator[Batch]:
        """One pass over the split. Shuffling draws a permutation on the data's own device."""
        for rows in self.rows(batch_size, shuffle=shuffle, generator=generator):
            yield self.take(rows)

    def rows(
        self, batch_size: int, *, shuffle: bool = False, generator: Optional[torch.Generator] = None
    ) -> Iterator[torch.Tensor | slice]:
        """One pass over the split, each batch as its rows: indices, or in order a slice."""
        n = len(self)
        if shuffle:
            order = torch.randperm(n, generator=generator, device=self.device)
            for start in range(0, n, batch_size):
                yield order[start : start + batch_size]
        else:
            for start in range(0, n, batch_size):  # slices are views: no copy
                yield slice(start, min(start + batch_size, n))

    def take(self, rows: torch.Tensor | slice) -> Batch:
        return inputs.index(self.x, rows), self.y[rows]

    def example(self, i: int) -> Batch:
        return inputs.index(self.x, i), self.y[i]


class LazySplit:
    lazy = True

    def __init__(self, name: str, dataset: Dataset, *, num_workers: int = 0, owner: str = "data"):
        if owner == "data.factory" and not isinstance(dataset, _Contained):
            dataset = _Contained(dataset)
        self.name, self.dataset, self.num_workers = name, dataset, num_workers
        self.owner = owner  # "data" for built-in sources, "data.factory" for user datasets

    def __len__(self) -> int:
        try:
            return len(self.dataset)  # type: ignore[arg-type]
        except BaseException as exc:
            self._reraise(exc)

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def _reraise(self, exc: BaseException) -> NoReturn:
        err = self._error(exc)
        if err is exc:
            raise exc
        raise err from exc

    def _error(self, exc: BaseException) -> BaseException:
        """One line naming the split for anything reading it raised (a user Dataset's
        __getitem__/__len__, a DataLoader worker, the collate); Ctrl-C passes through."""
        if isinstance(exc, (KeyboardInterrupt, GeneratorExit)):
            return exc
        if isinstance(exc, NNRecipeError):
            text = str(exc)
            if "Original Traceback" not in text:
                return exc
            # Re-raised by a DataLoader worker with the worker's traceback in the message: keep the
            # message proper, from the traceback's last line ("nnrecipe.errors.DataError: ...").
            at = text.rfind("nnrecipe.errors.")
            return type(exc)(
                text[at:].split(": ", 1)[1].strip() if at >= 0 else text.split("Original Traceback")[0].strip()
            )
        # DataLoader workers re-raise with the worker's traceback in the message; keep its last line.
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        text = lines[-1] if lines else exc.__class__.__name__
        if "stack expects each tensor to be equal size" in str(exc):
            text = "examples differ in shape; give data.args.image_size or make the dataset return one shape"
        cls = PluginError if self.owner == "data.factory" else DataError
        return cls(f"{self.owner}: reading the {self.name} split failed: {text}")

    def iterate(
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        generator: Optional[torch.Generator] = None,
        pin_memory: bool = False,
    ) -> Iterator[Batch]:
        loader = DataLoader(
            self.dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            generator=generator,
            num_workers=self.num_workers,
            pin_memory=pin_memory,
            persistent_workers=False,
        )
        it = None
        while True:
            try:
                it = iter(loader) if it is None else it
                batch = next(it)
            except StopIteration:
                return
            except BaseException as exc:  # the dataset, a worker or the collate failed: name the split, one line
                self._reraise(exc)
            x, y = _as_pair(batch, self)
            why = inputs.problem(x) or (
                "" if isinstance(y, torch.Tensor) else f"its targets are a {type(y).__name__}, not a tensor"
            )
            if why:
                raise self._error(TypeError(f"examples must be (x, y) of numbers; in a batch of them {why}"))
            yield x, y

    def example(self, i: int) -> Batch:
        try:
            x, y = _as_pair(self.dataset[i], self)
            return inputs.map_leaves(torch.as_tensor, x), torch.as_tensor(y)
        except BaseException as exc:
            self._reraise(exc)

    def subset(self, index: torch.Tensor) -> "LazySplit":
        from torch.utils.data import Subset

        return LazySplit(
            self.name, Subset(self.dataset, index.tolist()), num_workers=self.num_workers, owner=self.owner
        )

    def part(self, start: int, stop: int) -> "LazySplit":
        """Rows start..stop-1 of the dataset."""
        return self.subset(torch.arange(start, stop))

    def materialize(self, batch_size: int = 256) -> TensorSplit:
        xs, ys = zip(*self.iterate(batch_size)) if len(self) else ((), ())
        return TensorSplit(self.name, inputs.cat(xs), torch.cat(ys))


class _Contained(Dataset):
    """A user Dataset whose __getitem__ and __len__ never end the process: SystemExit and the
    like become ordinary errors, which a DataLoader worker hands back to the stage (a worker
    that exits would print on its own and leave only "worker exited unexpectedly")."""

    def __init__(self, dataset: Dataset):
        self.inner = dataset

    def __len__(self) -> int:
        return _contained(len, self.inner)

    def __getitem__(self, i):
        return _contained(self.inner.__getitem__, i)


def _contained(fn, *args):
    try:
        return fn(*args)
    except (Exception, KeyboardInterrupt, GeneratorExit):
        raise
    except BaseException as exc:
        text = " ".join(str(exc).split())
        raise RuntimeError(f"{exc.__class__.__name__}: {text}" if text else exc.__class__.__name__) from None


Split = Union[TensorSplit, LazySplit]


def _as_pair(item, split: LazySplit) -> Batch:
    if not isinstance(item, (tuple, list)) or len(item) != 2:
        raise split._error(TypeError(f"each example must be a pair (x, y), got {type(item).__name__}"))
    return item[0], item[1]


@dataclasses.dataclass
class DataBundle:
    """The data of one experiment, as the model sees it."""

    task: "Task"  # what the targets are and how a model on them is measured (nnrecipe/tasks)
    source: str
    train: Split
    val: Split
    test: Optional[Split] = None
    num_classes: Optional[int] = None  # class targets: C (declared, or inferred); a language model: V
    class_names: Optional[list[str]] = None
    target_dim: int = 1  # real targets: values per example
    description: str = ""
    sequence: Optional[object] = None  # language-model: a data.text.SequenceInfo (vocabulary, streams)
    # an example's target shape as the data gave it, where nnrecipe reshaped it for the loss
    # (regression: (,) becomes (1,)): the loss-broadcasting check calls the user's loss both ways
    raw_target_shape: Optional[tuple[int, ...]] = None
    _targets: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)

    def splits(self) -> dict[str, Split]:
        out = {"train": self.train, "val": self.val}
        if self.test is not None:
            out["test"] = self.test
        return out

    @functools.cached_property
    def input_shape(self) -> Any:
        """An example's shape; for structured inputs the structure of shapes (inputs.shape).
        Read once per bundle (a lazy split decodes its first example to say)."""
        return inputs.shape(self.train.example(0)[0])

    @functools.cached_property
    def structured(self) -> bool:
        """Inputs that are a tuple, list or dict of tensors rather than one tensor."""
        return inputs.structured(self.train.example(0)[0])

    @property
    def num_outputs(self) -> int:
        return self.task.num_outputs(self)

    @property
    def kind(self) -> str:
        """How examples are drawn: (C, H, W) images, (C, L) signals, (D,) feature vectors, or
        (L,) token windows (language models): the task says; `structured` for a dict or tuple
        of tensors (nnrecipe/inputs.py)."""
        return "structured" if self.structured else self.task.input_kind(self.input_shape)

    def class_name(self, label: int) -> str:
        if self.class_names and 0 <= label < len(self.class_names):
            return self.class_names[label]
        return str(label)

    def targets(self, name: str = "train") -> torch.Tensor:
        """All targets of a split, on the host (read once for lazy splits)."""
        if name not in self._targets:
            split = self.splits()[name]
            y = split.y if isinstance(split, TensorSplit) else torch.cat([y for _, y in split.iterate(512)])
            self._targets[name] = y.detach().cpu()
        return self._targets[name]

    def priors(self, name: str = "train") -> np.ndarray:
        """Class frequencies of a split (classification; token frequencies of the targets for a
        language model), over valid labels in [0, C)."""
        y = self.targets(name).long().reshape(-1)
        y = y[(y >= 0) & (y < self.num_outputs)]
        counts = torch.bincount(y, minlength=self.num_outputs)[: self.num_outputs].double()
        return (counts / counts.sum().clamp_min(1)).numpy()

    def target_mean(self, name: str = "train") -> np.ndarray:
        return self.targets(name).double().reshape(len(self.targets(name)), -1).mean(dim=0).numpy()

    def with_train(self, train: Split) -> "DataBundle":
        """The same bundle with another training split (a subset): the cached val/test targets
        stay, the train targets are read again from the new split."""
        return dataclasses.replace(self, train=train, _targets={k: v for k, v in self._targets.items() if k != "train"})

    def to(self, device: torch.device | str) -> "DataBundle":
        """Move in-memory splits to the device once; lazy splits stay on the host."""
        moved = {k: (s.to(device) if isinstance(s, TensorSplit) else s) for k, s in self.splits().items()}
        return dataclasses.replace(
            self, train=moved["train"], val=moved["val"], test=moved.get("test"), _targets=self._targets
        )


class _Pooled(Dataset):
    """A lazy dataset whose inputs are average-pooled on read."""

    def __init__(self, split: "LazySplit", pool):
        self.split, self.pool = split, pool

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int):
        x, y = self.split.example(i)
        return self.pool(x.float().unsqueeze(0)).squeeze(0), y


def downsample(data: DataBundle, factor: int) -> DataBundle:
    """Smaller input: average-pool images over H and W and signals over L by `factor`
    (the `data.downsample` field). Tabular features have no resolution to reduce."""
    import torch.nn.functional as F

    kind, shape = data.kind, data.input_shape
    if kind == "image":
        if min(shape[-2:]) < 2 * factor:
            raise DataError(f"data.downsample: {factor} leaves nothing of {shape[-2]}x{shape[-1]} images")
        pool = lambda x: F.avg_pool2d(x, factor)  # noqa: E731
    elif kind == "signal":
        if shape[-1] < 2 * factor:
            raise DataError(f"data.downsample: {factor} leaves nothing of signals of length {shape[-1]}")
        pool = lambda x: F.avg_pool1d(x, factor)  # noqa: E731
    else:
        raise DataError(f"data.downsample: needs images (C, H, W) or signals; these inputs are {tuple(shape)}")

    def apply(split):
        if isinstance(split, TensorSplit):
            return TensorSplit(split.name, pool(split.x.float()), split.y)
        return LazySplit(split.name, _Pooled(split, pool), num_workers=split.num_workers, owner=split.owner)

    moved = {k: apply(s) for k, s in data.splits().items()}
    return dataclasses.replace(
        data, train=moved["train"], val=moved["val"], test=moved.get("test"), _targets=data._targets
    )
