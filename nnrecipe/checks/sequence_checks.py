"""baseline rules for next-token models: (measurements, settings) -> Verdict.

The recipe: "the same strategy can be used to ensure that your autoregressive model at time t
only depends on 1..t-1". Measured by probes/sequence_probes.py.
"""

from __future__ import annotations

from typing import Optional

from nnrecipe.checks import not_for_task
from nnrecipe.probes.measurements import BaselineMeasurements
from nnrecipe.probes.sequence_probes import CausalMeasure, PerturbMeasure, TargetLeak
from nnrecipe.spec_stages import BaselineSpec
from nnrecipe.stats import wilson_interval
from nnrecipe.verdict import Status, Verdict

STAGE = "baseline"


LOOKS_AHEAD = (
    "the attention needs a causal mask (lower-triangular, diagonal included, nothing above it); "
    "a bidirectional layer or a pooling over the window also looks ahead"
)


def causal_dependency(m: BaselineMeasurements, cfg: BaselineSpec) -> Verdict:
    """Output t depends on no input after t (gradients where an embedding reads the ids, changed
    tokens for any model), and no target is already an input."""
    if skip := not_for_task(STAGE, "causal-dependency", m.task):
        return skip
    observed: dict = {}
    expected = {"future_gradient_rtol": cfg.causal_rtol, "target_copy_excess_max": cfg.leak_excess}

    def fail(message: str, hint: str = LOOKS_AHEAD) -> Verdict:
        return Verdict(
            STAGE, "causal-dependency", Status.FAIL, observed=observed, expected=expected, message=message, hint=hint
        )

    if why := _copied_targets(m.leak, cfg, observed):
        return fail(why, hint="targets must be the inputs shifted one step left: x = t[i:i+L], y = t[i+1:i+L+1]")
    c, p = m.causal, m.perturb
    if c is None and p is None:
        return Verdict(
            STAGE,
            "causal-dependency",
            Status.SKIP,
            observed=observed,
            message="the model was not probed; the targets are not copies of the inputs",
        )
    if c is not None and (why := _gradient_from_later(c, cfg, observed)):
        return fail(why)
    reads = ""
    if p is not None:
        expected["perturbation_rtol"] = cfg.perturb_rtol
        if why := _moved_by_later(p, observed):
            return fail(why)
        reads = (
            f"; each reads at most {p.receptive} token{'s' * (p.receptive != 1)}"
            if p.receptive
            else "; no output reads any token (see input-independent)"
        )
    how = (
        "get no gradient from later inputs"
        if c is not None
        else f"do not move when later tokens change ({m.causal_skip}: tested by changing tokens)"
    )
    if c is not None:
        n = len(c.positions)
    else:
        assert p is not None  # with neither measured it returned a skip above
        n = len(p.positions)
    return Verdict(
        STAGE,
        "causal-dependency",
        Status.PASS,
        observed=observed,
        expected=expected,
        message=f"outputs at {n} positions {how}{reads}; "
        "targets repeat the inputs no more than the inputs repeat themselves",
    )


def _copied_targets(leak: Optional[TargetLeak], cfg: BaselineSpec, observed: dict) -> str:
    """Targets equal to the input at lag k beyond the inputs' own repeat rate: why, or ""."""
    if leak is None:
        return ""
    observed["target_equals_input_at_lag"] = {k: round(r, 4) for k, r in zip(leak.lags, leak.rates)}
    observed["inputs_own_repeat_rate"] = {k: round(r, 4) for k, r in zip(leak.lags, leak.natural)}
    for k, rate, natural, n in zip(leak.lags, leak.rates, leak.natural, leak.n):
        low, _ = wilson_interval(round(rate * n), n)
        _, high = wilson_interval(round(natural * n), n)
        if n and low > high + cfg.leak_excess:
            where = (
                "at the same position (the windows were not shifted: y = x)"
                if k == 0
                else f"{k} position{'s' if k > 1 else ''} earlier (shifted the wrong way)"
            )
            return (
                f"{rate:.0%} of the targets are the input {where}: the model sees what it must "
                f"predict (the inputs themselves repeat at that distance {natural:.0%})"
            )
    return ""


def _gradient_from_later(c: CausalMeasure, cfg: BaselineSpec, observed: dict) -> str:
    """The gradient picture (CausalMeasure): exact zeros after t for a causal model."""
    ratio = [f / q if q > 0 else (float("inf") if f > 0 else 0.0) for f, q in zip(c.future, c.past)]
    bad = [
        (t, r, first, reach)
        for t, r, first, reach in zip(c.positions, ratio, c.first_future, c.reach)
        if r > cfg.causal_rtol
    ]
    observed.update(
        {
            "positions": c.positions,
            "future_over_past_gradient": [float(f"{r:.3g}") for r in ratio],
            "furthest_ahead": c.reach,
            "length": c.length,
            "windows": c.windows,
        }
    )
    if not bad:
        return ""
    t, r, first, _ = bad[0]
    off_by_one = all(reach == 1 for *_, reach in bad)
    return (
        f"output {t} depends on input {first} (future/past gradient {r:.3g}) at {len(bad)} of {len(c.positions)} "
        "positions tested" + ("; only the next position leaks: a causal mask shifted by one" if off_by_one else "")
    )


def _moved_by_later(p: PerturbMeasure, observed: dict) -> str:
    """Any model (PerturbMeasure): every token after t changed, the outputs at <= t watched."""
    observed.update(
        {
            "perturbed_after": p.positions,
            "earlier_outputs_moved": [float(f"{v:.3g}") for v in p.moved],
            "receptive_field": p.receptive,
        }
    )
    moved = [(t, v, first) for t, v, first in zip(p.positions, p.moved, p.first_moved) if first is not None]
    if not moved:
        return ""
    t, v, first = moved[0]
    return (
        f"output {first} changes (by {v:.3g} of the outputs' largest value) when the tokens after position {t} "
        f"change, at {len(moved)} of {len(p.positions)} positions tested"
    )


def padding_invariance(m: BaselineMeasurements, cfg: BaselineSpec) -> Verdict:
    """Appending padding whose targets are ignore_index leaves the loss unchanged; of masked
    inputs (an attention_mask), appending padding leaves the predictions where they were."""
    if m.mask_key:  # masked inputs (probes/mask_probes.py)
        from nnrecipe.checks.mask_checks import mask_padding

        if m.mask_padding is None:
            return Verdict(STAGE, "padding-invariance", Status.SKIP, message=m.padding_skip)
        return mask_padding(m.mask_padding, cfg.padding_rtol)
    if skip := not_for_task(STAGE, "padding-invariance", m.task):
        return skip
    p = m.padding
    if p is None:
        return Verdict(STAGE, "padding-invariance", Status.SKIP, message=m.padding_skip or "not measured")
    change = abs(p.loss_padded - p.loss_plain)
    rel = change / max(abs(p.loss_plain), 1e-12)
    observed = {
        "loss": round(p.loss_plain, 6),
        "loss_padded": round(p.loss_padded, 6),
        "relative_change": float(f"{rel:.3g}"),
        "tokens": p.length,
        "padding": p.pad,
    }
    expected = f"relative change <= {cfg.padding_rtol:g}"
    if not rel <= cfg.padding_rtol:
        return Verdict(
            STAGE,
            "padding-invariance",
            Status.FAIL,
            observed=observed,
            expected=expected,
            message=f"{p.pad} padding positions (targets -100) change the loss from {p.loss_plain:.5g} "
            f"to {p.loss_padded:.5g}",
            hint="the loss must skip ignore_index targets and average over real tokens only "
            "(F.cross_entropy(..., ignore_index=-100)); a model that looks ahead also fails here",
        )
    return Verdict(
        STAGE,
        "padding-invariance",
        Status.PASS,
        observed=observed,
        expected=expected,
        message=f"{p.pad} padding positions leave the loss at {p.loss_plain:.5g} (relative change {rel:.2g})",
    )
