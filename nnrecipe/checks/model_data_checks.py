"""inspect-data --model: does a trained model score on this data what it scored when trained?"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional

from nnrecipe.verdict import Status, Verdict

STAGE = "inspect-data"


@dataclasses.dataclass
class ModelOnData:
    source: str  # the checkpoint
    metric_name: str  # accuracy | r2
    recorded: Optional[float]  # val metric when trained (None: not recorded)
    n_recorded: int
    now: float  # val metric on this spec's data
    n_now: int
    se_now: float = 0.0  # the task's SE of the metric now (drop_z reads it where the metric is not an accuracy)


def drop_z(m: ModelOnData, recorded: float) -> float:
    """z for "the model does worse now than when trained" (a one-sided two-sample test).

    recorded is m.recorded, once the caller has checked that it was recorded.
    """
    if m.metric_name == "accuracy":
        n1, n2 = max(m.n_recorded, 1), max(m.n_now, 1)
        p = (recorded * n1 + m.now * n2) / (n1 + n2)
        se = math.sqrt(max(p * (1 - p), 1.0 / (n1 + n2)) * (1 / n1 + 1 / n2))
    else:
        se = math.sqrt(2) * max(m.se_now, 1e-12)  # both measured with about the same noise
    return (recorded - m.now) / se


def model_on_data(m: Optional[ModelOnData], cfg) -> Verdict:
    check = "model-on-data"
    z = cfg.model_drop_z
    expected = f"the val {m.metric_name if m else 'metric'} within noise of the trained model's (drop z < {z:g})"
    if m is None:
        return Verdict(STAGE, check, Status.SKIP, expected=expected, message="no --model RUN_DIR given")
    observed = {"model": m.source, f"val_{m.metric_name}_now": round(m.now, 5), "n_val_now": m.n_now}
    if m.recorded is None or not math.isfinite(m.recorded):
        return Verdict(
            STAGE,
            check,
            Status.SKIP,
            observed=observed,
            expected=expected,
            message="the run directory did not record the model's val metric (re-run its stage)",
        )
    dz = drop_z(m, m.recorded)
    observed.update(
        {
            f"val_{m.metric_name}_when_trained": round(m.recorded, 5),
            "n_val_when_trained": m.n_recorded,
            "drop_z": round(dz, 2),
        }
    )
    if not math.isfinite(m.now) or dz >= z:
        return Verdict(
            STAGE,
            check,
            Status.FAIL,
            observed=observed,
            expected=expected,
            message=f"the model scores {m.now:.4f} here but {m.recorded:.4f} when it was trained (z {dz:.1f}): "
            "this data is not what it learned from",
            hint="compare preprocessing and normalisation, the label order (class names) and the split "
            "with the run's spec.yaml; the examples grid shows what the model is fed",
        )
    return Verdict(
        STAGE,
        check,
        Status.PASS,
        observed=observed,
        expected=expected,
        message=f"val {m.metric_name} {m.now:.4f} here, {m.recorded:.4f} when trained (z {dz:.1f})",
    )
