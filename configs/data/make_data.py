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


CENSUS = {  # categorical columns: their levels (strings, as a census extract has them)
    "workclass": ["private", "self-employed", "government", "nonprofit", "unemployed"],
    "occupation": ["clerical", "craft", "sales", "service", "tech", "management", "transport", "farming"],
    "marital": ["never-married", "married", "divorced", "widowed"],
    "region": ["north", "south", "east", "west", "central", "islands"],
}


def census_csv(n: int = 3000, seed: int = 0) -> None:
    """A census-like table: 4 categorical string columns, 3 numeric ones, the target income
    ">50K" or "<=50K" from a logistic model in which every category level has its own effect
    (so a model that reads the codes as numbers, or ignores them, does worse)."""
    rng = np.random.default_rng(seed)
    effects = {c: rng.normal(0, 1.0, size=len(levels)) for c, levels in CENSUS.items()}
    with (HERE / "census.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["age", "workclass", "education_years", "occupation", "marital", "hours_per_week", "region", "income"])
        for _ in range(n):
            age = rng.integers(18, 75)
            edu = int(np.clip(rng.normal(12, 3), 6, 20))
            hours = int(np.clip(rng.normal(40, 10), 5, 80))
            level = {c: rng.integers(len(levels)) for c, levels in CENSUS.items()}
            score = 0.04 * (age - 40) - 0.0008 * (age - 45) ** 2 + 0.3 * (edu - 12) + 0.04 * (hours - 40)
            score += sum(effects[c][k] for c, k in level.items())
            income = ">50K" if rng.random() < 1 / (1 + np.exp(-8 * score)) else "<=50K"
            w.writerow([age, CENSUS["workclass"][level["workclass"]], edu, CENSUS["occupation"][level["occupation"]],
                        CENSUS["marital"][level["marital"]], hours, CENSUS["region"][level["region"]], income])


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
    census_csv()
    diabetes_npz()
    digit_images()
