"""Rules about the user's code as it ran: (measurements) -> Verdict.

Warnings raised inside it are findings (PyTorch warns about broadcasting, deprecated behaviour,
copies it cannot make), and a loss that gives another value on the targets exactly as the data
holds them broadcasts in the user's own training script, whatever nnrecipe makes of it.
"""

from __future__ import annotations

from typing import Optional

from nnrecipe.plugins import CaughtWarning
from nnrecipe.probes.measurements import BaselineMeasurements
from nnrecipe.spec_stages import BaselineSpec
from nnrecipe.verdict import Status, Verdict

BASELINE = "baseline"  # loss-broadcasting's stage; user-warnings is in every stage that ran user code


def user_warnings(stage: str, caught: list[CaughtWarning]) -> Optional[Verdict]:
    """Warnings raised while the user's code ran in this stage: warn with their count, the first
    message and where it came from; None (no verdict) when there were none."""
    distinct = list(dict.fromkeys(caught))  # each is already shown once per place; this drops exact repeats
    if not distinct:
        return None
    first = distinct[0]
    observed = {
        "count": len(distinct),
        "first": f"{first.category}: {first.message}",
        "origin": first.origin,
        "raised_in": f"{first.field}: {first.code}",
        "others": [f"{w.category}: {w.message[:120]} ({w.origin})" for w in distinct[1:6]],
    }
    many = f"{len(distinct)} warnings" if len(distinct) > 1 else "a warning"
    return Verdict(
        stage,
        "user-warnings",
        Status.WARN,
        observed=observed,
        expected="no warnings from the user's code",
        message=f"{many} from your code, the first in {first.field} ({first.code}) at {first.origin}: "
        f"{first.category}: {first.message[:240]}",
        hint="PyTorch's warnings inside a model or loss often name a silent bug (broadcasting, a copy that "
        "drops the graph, a deprecated default): fix what it says, or filter it where it is raised",
    )


def loss_broadcasting(m: BaselineMeasurements, cfg: BaselineSpec) -> Verdict:
    """The user's loss gives the same value on the targets as the data holds them as on the
    shape nnrecipe gives it: otherwise it broadcasts (outputs (N, 1) against targets (N,) make an
    (N, N) difference), silently, in any script that feeds it the data as it is."""
    b = m.broadcast
    if b is None:
        return Verdict(BASELINE, "loss-broadcasting", Status.SKIP, message=m.broadcast_skip or "not measured")
    shapes = f"outputs {b.outputs_shape}, targets {b.their_shape} as the data holds them, {b.our_shape} as nnrecipe gives them"
    observed = {
        "loss_on_data_shape": None if b.theirs is None else round(b.theirs, 6),
        "loss_on_nnrecipe_shape": round(b.ours, 6),
        "outputs": list(b.outputs_shape),
        "targets_data": list(b.their_shape),
        "targets_nnrecipe": list(b.our_shape),
    }
    expected = f"the same value both ways (relative difference <= {cfg.loss_shape_rtol:g})"
    if b.theirs is None:
        return Verdict(
            BASELINE,
            "loss-broadcasting",
            Status.PASS,
            observed=observed,
            expected=expected,
            message=f"your loss refuses targets shaped as the data holds them ({shapes}): it cannot "
            f"broadcast them silently ({b.refused[:160]})",
        )
    rel = abs(b.theirs - b.ours) / max(abs(b.ours), 1e-12)
    observed["relative_difference"] = float(f"{rel:.3g}")
    if not rel <= cfg.loss_shape_rtol:
        return Verdict(
            BASELINE,
            "loss-broadcasting",
            Status.FAIL,
            observed=observed,
            expected=expected,
            message=f"your loss gives {b.theirs:.5g} on the targets as the data holds them and {b.ours:.5g} "
            f"on nnrecipe's shape ({shapes}): it broadcasts, and trains on the wrong differences "
            "wherever it gets the data as it is",
            hint="make the targets the outputs' shape inside the loss (y.view_as(out)) or in the data "
            "(y[:, None]); nn.MSELoss and nn.L1Loss broadcast (N, 1) against (N,) with only a warning",
        )
    return Verdict(
        BASELINE,
        "loss-broadcasting",
        Status.PASS,
        observed=observed,
        expected=expected,
        message=f"your loss gives {b.ours:.5g} both ways ({shapes})",
    )
