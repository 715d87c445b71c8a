"""baseline rules about the model and its wiring: (measurements, settings) -> Verdict."""

from __future__ import annotations

import math

import numpy as np

from nnrecipe.checks import not_for_task
from nnrecipe.probes.measurements import BaselineMeasurements
from nnrecipe.spec_stages import BaselineSpec
from nnrecipe.verdict import Status, Verdict

STAGE = "baseline"


def _round(values, n: int = 10):
    return [round(float(v), 4) for v in np.asarray(values).reshape(-1)[:n]] if values is not None else None


def reproducible(m: BaselineMeasurements, cfg: BaselineSpec) -> Verdict:
    """Two runs from scratch with one seed give the same losses (bitwise on CPU)."""
    if m.reproducible is None:
        return Verdict(STAGE, "reproducible", Status.SKIP, message="not measured")
    a, b = m.reproducible
    n = min(len(a), len(b))
    diff = np.abs(a[:n] - b[:n])
    first = int(np.argmax(diff > 0)) + 1 if (diff > 0).any() else None
    cuda = m.device_type == "cuda"
    tol = cfg.cuda_rtol * np.maximum(np.abs(a[:n]), 1e-8) if cuda else 0.0
    bad = bool(np.any(diff > tol)) or len(a) != len(b)
    observed = {
        "max_abs_diff": float(diff.max()) if n else 0.0,
        "first_different_step": first,
        "steps": n,
        "loss_step1": [float(a[0]), float(b[0])] if n else None,
    }
    expected = f"relative difference <= {cfg.cuda_rtol:g}" if cuda else "bitwise identical losses"
    if bad:
        return Verdict(
            STAGE,
            "reproducible",
            Status.FAIL,
            observed=observed,
            expected=expected,
            message=f"two runs with seed-for-seed the same spec differ from step {first} "
            f"(max loss difference {diff.max():.3g})",
            hint="look for unseeded randomness in your data or model code: np.random/random without a seed, "
            "a time-based seed, os.urandom; draw from torch's generator (nnrecipe seeds it)",
        )
    return Verdict(
        STAGE,
        "reproducible",
        Status.PASS,
        observed=observed,
        expected=expected,
        message=f"{n} steps of two fresh runs agree" + (" within tolerance" if cuda else " bit for bit"),
    )


def loss_at_init(m: BaselineMeasurements, cfg: BaselineSpec) -> Verdict:
    """The loss before any step vs. the value the loss implies for an untrained model."""
    init = m.init
    if init is None:
        return Verdict(STAGE, "loss-at-init", Status.SKIP, message="not measured")
    if init.val_losses is None:
        return Verdict(STAGE, "loss-at-init", Status.SKIP, message="a custom loss has no known value at init")
    losses = init.val_losses[np.isfinite(init.val_losses)]
    observed = float(losses.mean()) if len(losses) else math.inf
    se = float(losses.std(ddof=1) / math.sqrt(len(losses))) if len(losses) > 1 else 0.0
    # nnrecipe set the bias for built-ins, so only the prior value applies; a user model may
    # start either way (zero-ish logits, or a bias already at the priors).
    names = ["prior"] if init.builtin_bias_init and "prior" in init.reference else list(init.reference)
    candidates = {k: init.reference[k] for k in names}
    tol = {k: cfg.significance_z * se + cfg.init_allowance * abs(v) for k, v in candidates.items()}
    desc = init.task.init_descriptions(init.loss_name)
    expected = {desc[k]: round(v, 4) for k, v in candidates.items()}
    obs = {
        "loss": round(observed, 5),
        "se": round(se, 5),
        "tolerance": {desc[k]: round(t, 4) for k, t in tol.items()},
        "loss_fn": init.loss_name,
    }
    if any(abs(observed - v) <= tol[k] for k, v in candidates.items()):
        k = min(candidates, key=lambda k: abs(observed - candidates[k]))
        return Verdict(
            STAGE,
            "loss-at-init",
            Status.PASS,
            observed=obs,
            expected=expected,
            message=f"loss at init {observed:.4g} matches {desc[k]} = {candidates[k]:.4g} (±{tol[k]:.2g})",
        )
    if observed > max(v + tol[k] for k, v in candidates.items()):
        return Verdict(
            STAGE,
            "loss-at-init",
            Status.FAIL,
            observed=obs,
            expected=expected,
            message=f"loss at init {observed:.4g} is above what the loss implies "
            f"({', '.join(f'{desc[k]} = {v:.4g}' for k, v in candidates.items())})",
            hint="the untrained model is confidently wrong: a huge final-layer init, unscaled inputs, "
            "or outputs that are not what the loss expects (see output-form)",
        )
    return Verdict(
        STAGE,
        "loss-at-init",
        Status.WARN,
        observed=obs,
        expected=expected,
        message=f"loss at init {observed:.4g} is below what an untrained model should give",
        hint="does the model see its labels (leaked into the input), or was it loaded pre-trained?",
    )


def _bernoulli_kl(p: np.ndarray, q: np.ndarray) -> float:
    p, q = np.clip(p, 1e-9, 1 - 1e-9), np.clip(q, 1e-9, 1 - 1e-9)
    return float(np.mean(p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q))))


def init_well(m: BaselineMeasurements, cfg: BaselineSpec) -> Verdict:
    """At init the model should predict the training distribution (no "hockey stick" to learn it)."""
    init = m.init
    if init is None:
        return Verdict(STAGE, "init-well", Status.SKIP, message="not measured")
    if init.loss_name == "custom":
        return Verdict(STAGE, "init-well", Status.SKIP, message="a custom loss: the meaning of the outputs is unknown")
    if skip := not_for_task(STAGE, "init-well", init.task):
        return skip
    ideal = init.task.ideal_bias(init.loss_name, priors=init.train_priors, target_mean=init.target_mean)
    who = "nnrecipe set the final bias" if init.builtin_bias_init else "your model's final bias"
    p, q = init.train_priors, init.mean_predicted
    mean, target, spread = init.mean_output, init.target_mean, init.target_std
    if p is not None and q is not None:  # the task measured a predicted distribution against its priors
        if init.loss_name == "bce":
            kl = _bernoulli_kl(p, q)
        else:
            pp, qq = np.clip(p, 1e-12, 1), np.clip(q, 1e-12, 1)
            kl = float(np.sum(np.where(p > 0, p * np.log(pp / qq), 0.0)))
        observed = {
            "kl_priors_vs_predicted": round(kl, 5),
            "mean_predicted": _round(q),
            "final_bias": _round(init.final_bias),
        }
        expected = {"kl_max": cfg.init_kl_warn, "train_priors": _round(p), "ideal_bias": _round(ideal)}
        text = f"mean predicted distribution at init vs train priors: KL = {kl:.3g} nats ({who})"
        status = Status.FAIL if kl > cfg.init_kl_fail else Status.WARN if kl > cfg.init_kl_warn else Status.PASS
    elif mean is not None and target is not None and spread is not None:
        # real outputs: their mean against the target mean
        dev = np.abs(mean - target) / np.maximum(spread, 1e-12)
        observed = {
            "mean_prediction": _round(mean),
            "offset_in_stds": _round(dev),
            "final_bias": _round(init.final_bias),
        }
        expected = {
            "max_offset_in_stds": cfg.init_mean_warn,
            "target_mean": _round(target),
            "ideal_bias": _round(ideal),
        }
        text = f"mean prediction at init is {float(dev.max()):.3g} target stds from the target mean ({who})"
        status = Status.WARN if float(dev.max()) > cfg.init_mean_warn else Status.PASS
    else:  # every task measures one or the other (Task.init_statistics)
        return Verdict(STAGE, "init-well", Status.SKIP, message="not measured")
    if status is Status.PASS:
        return Verdict(STAGE, "init-well", status, observed=observed, expected=expected, message=text)
    bias_text = (
        f"set the final layer's bias to {_round(ideal, 6)}"
        if ideal is not None
        else "initialise the final layer's bias"
    )
    return Verdict(
        STAGE,
        "init-well",
        status,
        observed=observed,
        expected=expected,
        message=text + "; the first steps will be spent learning the bias (the hockey stick)",
        hint=f"{bias_text}, and keep the final weights small",
    )


def output_form(m: BaselineMeasurements, cfg: BaselineSpec) -> Verdict:
    """Logits where the loss wants logits; log-probabilities where it wants them (nll)."""
    init = m.init
    if init is None:
        return Verdict(STAGE, "output-form", Status.SKIP, message="not measured")
    name = init.loss_name
    if name not in ("cross_entropy", "bce", "nll"):
        return Verdict(STAGE, "output-form", Status.SKIP, message=f"loss {name}: no constraint on the output form")
    probs = init.in_unit_interval and init.rows_sum_to_one
    observed = {
        "in_[0,1]": init.in_unit_interval,
        "rows_sum_to_1": init.rows_sum_to_one,
        "rows_logsumexp_0": init.rows_logsumexp_zero,
        "loss": name,
    }

    def v(status, expected, message, hint=""):
        return Verdict(STAGE, "output-form", status, observed=observed, expected=expected, message=message, hint=hint)

    if name == "cross_entropy":
        if probs:
            return v(
                Status.FAIL,
                "logits",
                "the model outputs probabilities (rows in [0, 1] summing to 1) but cross_entropy "
                "applies log_softmax itself: a softmax went in twice",
                "remove the final softmax; return logits",
            )
        if init.rows_logsumexp_zero:
            return v(
                Status.WARN,
                "logits",
                "the model outputs log-probabilities; cross_entropy applies log_softmax again "
                "(harmless, log_softmax is idempotent, but redundant)",
                "return logits, or use loss: nll",
            )
        return v(Status.PASS, "logits", "outputs look like logits, as cross_entropy expects")
    if name == "bce":
        if probs and init.num_outputs > 1:
            return v(
                Status.FAIL,
                "logits",
                "the model outputs a softmax (rows in [0, 1] summing to 1) to a loss of one "
                "sigmoid per output: the labels compete where they should be independent, and the sigmoid goes in "
                "twice",
                "remove the final softmax; return one logit per label",
            )
        if init.in_unit_interval:
            return v(
                Status.FAIL,
                "logits",
                "every output lies in [0, 1]: a sigmoid went in before "
                "binary_cross_entropy_with_logits, which applies its own",
                "remove the final sigmoid; return logits",
            )
        return v(Status.PASS, "logits", "outputs look like logits, as bce (with logits) expects")
    if probs:
        return v(
            Status.FAIL,
            "log-probabilities",
            "the model outputs probabilities but nll wants log-probabilities",
            "end the model with log_softmax, or return logits and use loss: cross_entropy",
        )
    if not init.rows_logsumexp_zero:
        return v(
            Status.FAIL,
            "log-probabilities",
            "raw logits go to nll, which only reads -output[y]: the loss can fall "
            "without bound while nothing is learned",
            "end the model with log_softmax, or use loss: cross_entropy",
        )
    return v(Status.PASS, "log-probabilities", "outputs are log-probabilities, as nll expects")


def batch_independence(m: BaselineMeasurements, cfg: BaselineSpec) -> Verdict:
    """Output i depends on input i only: no view-instead-of-permute mixing across the batch."""
    if m.dependency is None:
        return Verdict(STAGE, "batch-independence", Status.SKIP, message=m.dependency_skip or "not measured")
    dep, rows = m.dependency, m.dependency_rows
    n = dep.shape[1]
    leaks = [(i, j) for k, i in enumerate(rows) for j in range(n) if j != i and dep[k, j] > 0]
    own = [float(dep[k, i]) for k, i in enumerate(rows)]
    # gradient: d out[i] / d x[j]; change: out[i] watched while example j is changed (no embedding to differentiate)
    by_gradient = m.dependency_by == "gradient"
    observed = {
        "batch": n,
        "rows_tested": rows,
        "measured_by": m.dependency_by,
        ("cross_gradients" if by_gradient else "cross_changes"): len(leaks),
        "examples": [f"out[{i}] <- x[{j}]" for i, j in leaks[:8]],
    }
    expected = "no gradient across examples" if by_gradient else "no output moves when another example changes"
    if leaks:
        i, j = leaks[0]
        how = (
            f"get gradient from other examples' inputs, e.g. out[{i}] from x[{j}]"
            if by_gradient
            else f"change when other examples' inputs change, e.g. out[{i}] when x[{j}] does"
        )
        return Verdict(
            STAGE,
            "batch-independence",
            Status.FAIL,
            observed=observed,
            expected=expected,
            message=f"{len(leaks)} outputs {how}",
            hint="a view/reshape where a permute/transpose was meant mixes the batch; or a batch-level "
            "operation (mean over dim 0) in forward",
        )
    if all(o == 0 for o in own):
        return Verdict(
            STAGE,
            "batch-independence",
            Status.WARN,
            observed=observed,
            expected="gradient on the own input" if by_gradient else "outputs that move with their own input",
            message="no output depends on any input at all",
            hint="see input-independent",
        )
    return Verdict(
        STAGE,
        "batch-independence",
        Status.PASS,
        observed=observed,
        expected=expected,
        message=f"each of outputs {rows} depends on its own input only (batch of {n}, eval mode"
        + ("" if by_gradient else "; by changing each example")
        + ")",
    )


def eval_deterministic(m: BaselineMeasurements, cfg: BaselineSpec) -> Verdict:
    """Two eval passes over one batch agree: nothing random is left on in eval mode."""
    cuda = m.device_type == "cuda"
    diff = m.eval_diff
    if diff is None:
        return Verdict(STAGE, "eval-deterministic", Status.SKIP, message="not measured")
    tol = cfg.cuda_rtol * max(m.eval_scale, 1e-8) if cuda else 0.0
    observed = {"max_abs_diff": diff}
    expected = f"<= {tol:.3g}" if cuda else "identical"
    if diff > tol:
        return Verdict(
            STAGE,
            "eval-deterministic",
            Status.FAIL,
            observed=observed,
            expected=expected,
            message=f"two eval passes over the same batch differ by up to {diff:.3g}",
            hint="dropout or noise stays on in eval: use nn.Dropout modules (or F.dropout(training=self.training))",
        )
    return Verdict(
        STAGE,
        "eval-deterministic",
        Status.PASS,
        observed=observed,
        expected=expected,
        message="two eval passes give the same outputs",
    )


def gradients_flow(m: BaselineMeasurements, cfg: BaselineSpec) -> Verdict:
    """After one step every trainable parameter has a finite, non-zero gradient and has moved."""
    g = m.grad
    if g is None:
        return Verdict(STAGE, "gradients-flow", Status.SKIP, message="not measured")
    ignored = lambda name: any(name.startswith(p) for p in cfg.ignore_params)  # noqa: E731
    late = set(n for n, was_late in zip(g.names, g.late) if was_late)  # gated by a zero-initialised weight
    none = [n for n, v in zip(g.names, g.grad_norm) if (v is None or v == 0.0) and n not in late and not ignored(n)]
    nonfinite = [n for n, ok in zip(g.names, g.grad_finite) if not ok]
    frozen = [n for n, v, c in zip(g.names, g.grad_norm, g.changed) if v and not c and not ignored(n)]
    weights = list(g.weight_rms)
    ratio = (
        g.weight_rms[weights[0]] / g.weight_rms[weights[-1]]
        if len(weights) >= 2 and g.weight_rms[weights[-1]] > 0
        else None
    )
    worst_dead = max(g.dead.items(), key=lambda kv: kv[1]) if g.dead else None
    observed = {
        "parameters": len(g.names),
        "no_gradient": none[:8],
        "non_finite": nonfinite[:8],
        "unchanged": frozen[:8],
        "gradient_from_step_2": sorted(late)[:8],
        "zero_init_weights": g.zero_init[:8],
        "total_grad_norm": round(g.total_norm, 5),
        "first_last_rms_ratio": round(ratio, 6) if ratio is not None else None,
        "max_dead_fraction": {worst_dead[0]: round(worst_dead[1], 3)} if worst_dead else None,
        "grad_norms": {n: round(v, 6) if v is not None else None for n, v in list(zip(g.names, g.grad_norm))[:12]},
    }
    expected = {
        "no_gradient": 0,
        "first_last_rms_ratio_min": cfg.vanish_ratio,
        "total_norm_max": cfg.explode_norm,
        "dead_fraction_max": cfg.dead_unit_warn,
    }
    fails, warns = [], []
    if nonfinite:
        fails.append(f"non-finite gradients in {', '.join(nonfinite[:3])}")
    if none:
        fails.append(f"{len(none)} parameters get no gradient ({', '.join(none[:3])}{'…' if len(none) > 3 else ''})")
    if frozen:
        fails.append(f"{len(frozen)} parameters have a gradient but did not change ({', '.join(frozen[:3])})")
    if worst_dead and worst_dead[1] >= 1.0:
        fails.append(f"every unit of {worst_dead[0]} is dead (never positive on a val batch)")
    elif worst_dead and worst_dead[1] > cfg.dead_unit_warn:
        warns.append(f"{worst_dead[1]:.0%} of the units of {worst_dead[0]} are dead")
    if ratio is not None and ratio < cfg.vanish_ratio:
        warns.append(f"vanishing gradients: the first weight's RMS gradient is {ratio:.2g} of the last's")
    if g.total_norm > cfg.explode_norm:
        warns.append(f"exploding gradients: global norm {g.total_norm:.3g} after one batch")
    if fails:
        return Verdict(
            STAGE,
            "gradients-flow",
            Status.FAIL,
            observed=observed,
            expected=expected,
            message="; ".join(fails + warns),
            hint="a layer defined but unused, a .detach()/.item()/numpy round-trip in forward, requires_grad "
            "turned off, or dead ReLUs (a large negative bias); list deliberate ones in stages.baseline.ignore_params",
        )
    if warns:
        return Verdict(
            STAGE,
            "gradients-flow",
            Status.WARN,
            observed=observed,
            expected=expected,
            message="; ".join(warns),
            hint="check the initialisation scale and the activations; normalisation layers or residual connections help",
        )
    return Verdict(
        STAGE,
        "gradients-flow",
        Status.PASS,
        observed=observed,
        expected=expected,
        message=f"all {len(g.names)} trainable parameters get finite, non-zero gradients and move after one step"
        if not late
        else f"all {len(g.names)} trainable parameters get finite, non-zero gradients: {len(late)} of them from the "
        f"second step on, behind weights that start at zero ({', '.join(g.zero_init[:3]) or 'a zero-initialised gate'}: "
        "a zero-init residual branch, deliberate)",
    )
