"""Per-stage settings of the spec (`stages.<name>`): thresholds and options, with their defaults.

A stage that this version does not implement yet accepts only an empty mapping, so a
setting for it is never silently ignored.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from nnrecipe.spec_sections import Section

Positive = Annotated[float, Field(gt=0.0)]
Fraction01 = Annotated[float, Field(ge=0.0, le=1.0)]


class InspectDataSpec(Section):
    # split-sizes: with n val examples the 95% CI of an accuracy near 0.5 is about ±1/sqrt(n);
    # below 100 examples that is ±10 points, too coarse to tell most changes apart.
    min_val_size: Annotated[int, Field(ge=1)] = 100
    # duplicates: warn when more than this fraction of train examples are extra copies.
    max_duplicate_fraction: Fraction01 = 0.0
    # split-leakage: fail when more than this fraction of val/test examples also occur in train.
    max_leak_fraction: Fraction01 = 0.0
    # conflicting-labels: warn on any; fail when this fraction of examples sit in conflicting groups.
    conflict_fail_fraction: Fraction01 = 0.01
    # class-balance: warn when the largest/smallest class count ratio in train passes this.
    imbalance_warn_ratio: Annotated[float, Field(ge=1.0)] = 10.0
    # class-balance: warn when val priors differ from train priors beyond sampling noise
    # (chi-square test); a p-value under this is not chance.
    prior_shift_p: Annotated[float, Field(gt=0.0, lt=1.0)] = 1e-4
    # input-scale: per channel/feature at the model's entry; standardized data has mean 0, std 1.
    scale_max_abs_mean: Positive = 3.0
    scale_min_std: Positive = 0.05
    scale_max_std: Positive = 10.0
    # outliers: robust z-score (median/MAD) of per-example statistics; warn when more than
    # `outlier_max_fraction` of train examples lie beyond `outlier_z`.
    outlier_z: Positive = 8.0
    outlier_max_fraction: Fraction01 = 0.001
    # pictures
    examples_per_class: Annotated[int, Field(ge=1, le=32)] = 8
    outliers_per_axis: Annotated[int, Field(ge=1, le=16)] = 6
    max_classes_in_grid: Annotated[int, Field(ge=1, le=100)] = 20

    @model_validator(mode="after")
    def _std_range(self):
        if self.scale_min_std >= self.scale_max_std:
            raise ValueError("scale_min_std must be below scale_max_std")
        return self


class NotYetImplemented(Section):
    """Settings of a stage this version does not implement: none are accepted yet."""


class StagesSpec(Section):
    inspect_data: InspectDataSpec = InspectDataSpec()
    baseline: NotYetImplemented = NotYetImplemented()
    overfit: NotYetImplemented = NotYetImplemented()
    regularize: NotYetImplemented = NotYetImplemented()
    tune: NotYetImplemented = NotYetImplemented()
    squeeze: NotYetImplemented = NotYetImplemented()
