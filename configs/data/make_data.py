"""Regenerate the small example data files shipped beside the configs (run by hand).

    python configs/data/make_data.py

Everything comes from datasets bundled with scikit-learn: nothing is downloaded.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits

HERE = Path(__file__).parent


def breast_cancer_csv() -> None:
    d = load_breast_cancer()
    with (HERE / "breast_cancer.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow([n.replace(" ", "_") for n in d.feature_names] + ["diagnosis"])
        for x, y in zip(d.data, d.target):
            w.writerow([f"{v:.6g}" for v in x] + [d.target_names[y]])


def diabetes_npz() -> None:
    d = load_diabetes(scaled=False)
    np.savez_compressed(HERE / "diabetes.npz", x=d.data.astype(np.float32), y=d.target.astype(np.float32))


def digit_images(per_class: int = 50) -> None:
    """The first `per_class` digits of each class as 8x8 grayscale PNGs, one folder per class."""
    d = load_digits()
    root = HERE / "digit-images"
    for c in range(10):
        folder = root / str(c)
        folder.mkdir(parents=True, exist_ok=True)
        for k, i in enumerate(np.nonzero(d.target == c)[0][:per_class]):
            pixels = (d.images[i] * (255 / 16)).round().astype(np.uint8)
            Image.fromarray(pixels, mode="L").save(folder / f"{i:04d}.png", optimize=True)


if __name__ == "__main__":
    breast_cancer_csv()
    diabetes_npz()
    digit_images()
