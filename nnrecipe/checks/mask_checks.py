"""padding-invariance of masked inputs: (BaselineMeasurements, settings) -> Verdict.

The prediction of an example must not move when padding (mask 0) is appended to it. The
tolerance is relative to how much predictions differ between examples: float32 attention with
a mask gives changes of ~1e-7 of that spread (masked positions get exactly zero weight), a model
that averages over the padding moves by a sizeable fraction of it.
"""

from __future__ import annotations

from nnrecipe.probes.mask_probes import MaskPadding
from nnrecipe.verdict import Status, Verdict

STAGE, CHECK = "baseline", "padding-invariance"


def mask_padding(p: MaskPadding, rtol: float) -> Verdict:
    rel = p.change / max(p.scale, 1e-12)
    observed = {
        "mask": p.mask,
        "padded": p.padded,
        "how": p.how,
        "positions": p.pad,
        "examples": p.examples,
        "max_change": float(f"{p.change:.3g}"),
        "prediction_spread": float(f"{p.scale:.3g}"),
        "relative_change": float(f"{rel:.3g}"),
    }
    expected = f"relative change <= {rtol:g} (of the predictions' spread across examples)"
    what = f"{p.pad} padding positions ({p.mask} 0) {p.how}"
    if rel > rtol:
        return Verdict(
            STAGE,
            CHECK,
            Status.FAIL,
            observed=observed,
            expected=expected,
            message=f"{what} move the predictions by up to {p.change:.3g} ({rel:.2g} of their spread across "
            f"examples; val example #{p.worst} most): the model does not respect {p.mask}",
            hint=f"pass {p.mask} to the model and use it: attention layers mask the padded keys, pooling "
            f"averages over positions where {p.mask} is 1 (a model called model(**batch) receives it by name)",
        )
    return Verdict(
        STAGE,
        CHECK,
        Status.PASS,
        observed=observed,
        expected=expected,
        message=f"{what} leave the predictions in place (largest change {rel:.2g} of their spread)",
    )
