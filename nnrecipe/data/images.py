"""Image datasets decoded lazily: a folder of class sub-folders, and torchvision's named datasets.

Both stay lazy (a DataLoader with workers) unless they fit in memory: with
`data.in_memory: auto` a split under 2 GiB is decoded once and kept as a tensor, so
training never decodes a JPEG twice.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Optional

import torch
from torch.utils.data import Dataset, Subset

from nnrecipe.data.bundle import DataBundle, LazySplit, Split
from nnrecipe.data.common import held_out_indices, infer_num_classes, resolve_path
from nnrecipe.errors import DataError
from nnrecipe.tasks import get_task

IN_MEMORY_LIMIT_BYTES = 2 * 1024**3  # decode once and keep on the device below this


def _transform(image_size: Optional[tuple[int, int]], mean, std):
    from torchvision.transforms import v2

    steps = []
    if image_size is not None:
        steps.append(v2.Resize(list(image_size), antialias=True))
    steps += [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]  # uint8 [0, 255] -> float [0, 1]
    if mean is not None or std is not None:
        if mean is None or std is None or len(mean) != len(std):
            raise DataError("data.args.mean/std: give both, one value per channel")
        steps.append(v2.Normalize(mean, std))
    return v2.Compose(steps)


class _ImageLoader:
    """PIL loader that names the file when it is not an image or is truncated."""

    def __init__(self, grayscale: bool):
        self.mode = "L" if grayscale else "RGB"

    def __call__(self, path: str):
        from PIL import Image

        try:
            with open(path, "rb") as f:
                img = Image.open(f)
                img.load()  # decode now: a truncated file fails here, not in a worker later
                return img.convert(self.mode)
        except Exception as exc:  # PIL raises many types for bad files
            raise DataError(f"{path}: not a readable image ({exc.__class__.__name__}: {exc})") from None


def _image_folder(root: Path, *, field: str, transform, grayscale: bool):
    from torchvision.datasets import ImageFolder

    if not root.is_dir():
        raise DataError(f"{field}: {root} is not a folder of class sub-folders")
    try:
        return ImageFolder(str(root), transform=transform, loader=_ImageLoader(grayscale))
    except (FileNotFoundError, RuntimeError) as exc:
        raise DataError(f"{field}: {root}: {exc}") from None


def _targets_of(ds: Dataset) -> torch.Tensor:
    targets = getattr(ds, "targets", None)
    if targets is None:  # e.g. FakeData: read the labels once
        targets = [int(ds[i][1]) for i in range(len(ds))]  # type: ignore[arg-type]
    return torch.as_tensor(targets, dtype=torch.int64)


def _finish(
    spec, parts: dict[str, Dataset], *, source: str, class_names: Optional[list[str]], description: str
) -> DataBundle:
    """Carve missing val/test splits, wrap as lazy splits, decode into memory when small."""
    d = spec.data
    train = parts["train"]
    targets = _targets_of(train)
    if "test" not in parts and d.test_fraction > 0:
        keep, held = held_out_indices(targets, fraction=d.test_fraction, seed=d.split_seed + 1, stratify=True)
        parts["test"], train, targets = Subset(train, held.tolist()), Subset(train, keep.tolist()), targets[keep]
    if "val" not in parts:
        keep, held = held_out_indices(targets, fraction=d.val_fraction, seed=d.split_seed, stratify=True)
        parts["val"], train = Subset(train, held.tolist()), Subset(train, keep.tolist())
    parts["train"] = train
    splits: dict[str, Split] = {}
    for name, ds in parts.items():
        if len(ds) == 0:  # type: ignore[arg-type]
            raise DataError(f"data: the {name} split is empty")
        split = LazySplit(name, ds, num_workers=d.num_workers)
        in_memory = d.in_memory == "always" or (d.in_memory == "auto" and _nbytes(split) < IN_MEMORY_LIMIT_BYTES)
        splits[name] = split.materialize() if in_memory else split
    return DataBundle(
        task=get_task(spec.task),
        source=source,
        train=splits["train"],
        val=splits["val"],
        test=splits.get("test"),
        num_classes=infer_num_classes(d.num_classes, class_names, [targets]),
        class_names=class_names,
        description=description,
    )


def _nbytes(split: LazySplit) -> int:
    x, _ = split.example(0)
    return len(split) * x.numel() * x.element_size()


def load_image_folder(spec, base: Path) -> DataBundle:
    a = spec.data.args
    transform = _transform(a.image_size, a.mean, a.std)
    parts: dict[str, Dataset] = {}
    train = _image_folder(
        resolve_path(a.root, base, field="data.args.root"),
        field="data.args.root",
        transform=transform,
        grayscale=a.grayscale,
    )
    parts["train"] = train
    for key, split in (("val_root", "val"), ("test_root", "test")):
        root = getattr(a, key)
        if root is not None:
            ds = _image_folder(
                resolve_path(root, base, field=f"data.args.{key}"),
                field=f"data.args.{key}",
                transform=transform,
                grayscale=a.grayscale,
            )
            if ds.classes != train.classes:
                raise DataError(f"data.args.{key}: class folders {ds.classes} differ from train's {train.classes}")
            parts[split] = ds
    return _finish(
        spec,
        parts,
        source="image-folder",
        class_names=list(train.classes),
        description=f"image folder {a.root}: {len(train)} train images, {len(train.classes)} classes",
    )


def load_torchvision(spec, base: Path) -> DataBundle:
    import torchvision.datasets as tvd

    a = spec.data.args
    cls = getattr(tvd, a.name, None)
    if not (inspect.isclass(cls) and issubclass(cls, Dataset)):
        raise DataError(f"data.args.name: torchvision.datasets has no dataset {a.name!r}")
    params = inspect.signature(cls.__init__).parameters
    transform = _transform(None, a.mean, a.std)
    root = resolve_path(a.root, base, field="data.args.root", must_exist=False)

    def make(which: str) -> Dataset:
        kwargs = dict(a.kwargs, transform=transform)
        if "root" in params:
            kwargs.update(root=str(root))
        if "download" in params:
            kwargs.update(download=a.download)
        if "train" in params:
            kwargs.update(train=which == "train")
        elif "split" in params:
            kwargs.update(split=which)
        try:
            return cls(**kwargs)
        except TypeError as exc:
            raise DataError(f"data.args.kwargs: {a.name}: {exc}") from None
        except (RuntimeError, FileNotFoundError, OSError) as exc:
            hint = "" if a.download else "; set data.args.download=true to fetch it (needs internet)"
            raise DataError(f"data.args.root: {a.name} not found under {root}{hint} ({exc})") from None

    parts = {"train": make("train")}
    if "train" in params or "split" in params:
        parts["test"] = make("test")
    classes = getattr(parts["train"], "classes", None)
    class_names = [str(c) for c in classes] if classes else None
    return _finish(
        spec, parts, source="torchvision", class_names=class_names, description=f"torchvision {a.name} from {root}"
    )
