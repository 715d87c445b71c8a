"""How inspect-data's measurements scale with the number of examples (run by hand).

    OMP_NUM_THREADS=1 python bench/data_scan.py

Times the streaming scan (statistics + blake2b hash per example) and the grouping
(duplicates, leakage, conflicts, robust z) on 3x32x32 float examples.
"""

from __future__ import annotations

import time

import torch

from nnrecipe.data.bundle import TensorSplit
from nnrecipe.probes.data_groups import measure
from nnrecipe.probes.data_scan import DataScan, scan_split
from nnrecipe.tasks import CLASSIFICATION


def main() -> None:
    for n in (10_000, 40_000, 100_000):
        g = torch.Generator().manual_seed(0)
        x = torch.rand(n, 3, 32, 32, generator=g)
        y = torch.randint(0, 10, (n,), generator=g)
        t0 = time.perf_counter()
        train = scan_split(TensorSplit("train", x, y), batch_size=2048)
        val = scan_split(TensorSplit("val", x[: n // 10].clone(), y[: n // 10]), batch_size=2048)
        t1 = time.perf_counter()
        measure(
            DataScan(
                task=CLASSIFICATION, kind="image", num_classes=10, class_names=None, splits={"train": train, "val": val}
            )
        )
        t2 = time.perf_counter()
        print(f"n={n:>7}  scan {t1 - t0:6.2f} s  group+z {t2 - t1:6.2f} s  ({n / (t2 - t0):,.0f} examples/s)")


if __name__ == "__main__":
    main()
