"""inspect-data rules about sizes, shapes and distributions: (measurements, settings) -> Verdict."""

from __future__ import annotations

import math

import numpy as np

from nnrecipe.checks import not_for_task
from nnrecipe.probes.data_groups import DataMeasurements
from nnrecipe.probes.data_scan import STAT_NAMES, IdStats, class_counts, is_ids
from nnrecipe.spec_stages import InspectDataSpec
from nnrecipe.stats import homogeneity_p
from nnrecipe.verdict import Status, Verdict

STAGE = "inspect-data"
GROSS_Z = 50.0  # an example this far out is a bug (wrong scale, corrupted file), whatever the fraction


def split_sizes(m: DataMeasurements, cfg: InspectDataSpec) -> Verdict:
    """How many examples each split has, and how precisely val can measure anything."""
    sizes = {name: s.n for name, s in m.scan.splits.items()}
    n_val = sizes["val"]
    # 95% CI half-width of an accuracy near 0.5 measured on n_val examples: 1.96 * sqrt(0.25 / n).
    ci = 1.96 * math.sqrt(0.25 / max(n_val, 1))
    observed = dict(sizes, val_accuracy_ci95=round(ci, 4))
    expected = f"val >= {cfg.min_val_size}"
    if n_val < cfg.min_val_size:
        return Verdict(
            STAGE,
            "split-sizes",
            Status.WARN,
            observed=observed,
            expected=expected,
            message=f"val has {n_val} examples: accuracies on it carry ±{ci:.1%} (95% CI); "
            "real improvements will hide in that noise",
            hint="raise data.val_fraction or add held-out data",
        )
    return Verdict(
        STAGE,
        "split-sizes",
        Status.PASS,
        observed=observed,
        expected=expected,
        message=", ".join(f"{k} {v}" for k, v in sizes.items()) + f"; val accuracy ±{ci:.1%} (95% CI)",
    )


def shapes_dtypes(m: DataMeasurements, cfg: InspectDataSpec) -> Verdict:
    """One input shape for every example of every split; float inputs; targets that fit the task."""
    splits = m.scan.splits
    shapes = {name: sorted(s.shapes) for name, s in splits.items()}
    all_shapes = {shape for s in splits.values() for shape in s.shapes}
    t = m.scan.train.targets
    observed = {
        "input_shape": [list(sh) for sh in sorted(all_shapes)] if len(all_shapes) > 1 else list(next(iter(all_shapes))),
        "input_dtype": m.scan.train.x_dtype,
        "target_dtype": m.scan.train.y_dtype,
        "target_range": [float(np.nanmin(t)), float(np.nanmax(t))] if len(t) else None,
    }
    if len(all_shapes) > 1:
        per_split = "; ".join(f"{k}: {', '.join(str(tuple(x)) for x in v)}" for k, v in shapes.items())
        return Verdict(
            STAGE,
            "shapes-dtypes",
            Status.FAIL,
            observed=observed,
            expected="one input shape",
            message=f"inputs come in {len(all_shapes)} shapes ({per_split})",
            hint="resize or crop to one shape (data.args.image_size for image folders)",
        )
    dtypes = {s.x_dtype for s in splits.values()}
    if all(is_ids(d) for d in dtypes):  # token ids, category codes: first-class (input-scale reads their range)
        return Verdict(
            STAGE,
            "shapes-dtypes",
            Status.PASS,
            observed=observed,
            expected="one shape, float inputs or ids",
            message=f"every input is {tuple(next(iter(all_shapes)))} {m.scan.train.x_dtype} ids (tokens or "
            "category codes: an embedding reads them)",
        )
    if not all(d.startswith(("float", "bfloat")) for d in dtypes):
        return Verdict(
            STAGE,
            "shapes-dtypes",
            Status.FAIL,
            observed=observed,
            expected="floating-point inputs",
            message=f"inputs are {', '.join(sorted(dtypes))}; models take floats",
            hint="convert to float32 and scale (e.g. pixels / 255) in the data source; ids (tokens, "
            "category codes) as int64",
        )
    if m.scan.task.real_targets and not m.scan.train.y_dtype.startswith(("float", "bfloat")):
        return Verdict(
            STAGE,
            "shapes-dtypes",
            Status.WARN,
            observed=observed,
            expected="float targets",
            message=f"{m.scan.task.name} targets are {m.scan.train.y_dtype}",
            hint="is this a classification task?",
        )
    return Verdict(
        STAGE,
        "shapes-dtypes",
        Status.PASS,
        observed=observed,
        expected="one shape, float inputs",
        message=f"every input is {tuple(next(iter(all_shapes)))} {m.scan.train.x_dtype}",
    )


def class_balance(m: DataMeasurements, cfg: InspectDataSpec) -> Verdict:
    """The task's rule for the shares of its labels (classes: class_shares; multi-label:
    label_prevalence), or its reason to skip."""
    if skip := not_for_task(STAGE, "class-balance", m.scan.task):
        return skip
    return m.scan.task.class_balance(m, cfg)


def class_shares(m: DataMeasurements, cfg: InspectDataSpec) -> Verdict:
    """Imbalance of train classes, the log-priors, and whether val/test priors differ beyond chance."""
    scan = m.scan
    if not scan.num_classes:
        return Verdict(STAGE, "class-balance", Status.SKIP, message="unknown number of classes")
    C = scan.num_classes

    def counts(s):
        return class_counts(s.targets, C)

    train = counts(scan.train)
    priors = train / max(train.sum(), 1)
    ratio = float(train.max() / train.min()) if train.min() > 0 else math.inf
    observed = {
        "train_counts": train.tolist(),
        "imbalance_ratio": round(ratio, 3) if math.isfinite(ratio) else "inf",
        "log_priors": [round(float(np.log(p)), 4) if p > 0 else "-inf" for p in priors],
    }
    problems = []
    if ratio > cfg.imbalance_warn_ratio:
        problems.append(f"the largest train class has {ratio:.1f}x the examples of the smallest")
    # Each held-out split against train: a 2 x C test of homogeneity (both shares are estimates).
    for name, s in scan.splits.items():
        if name == "train":
            continue
        c = counts(s)
        if c.sum() == 0:
            continue
        observed[f"{name}_counts"] = c.tolist()
        unseen = int(c[train == 0].sum())
        if unseen:
            problems.append(f"{name} has {unseen} examples of classes train has none of")
        p, compared = homogeneity_p(train, c)
        if math.isfinite(p):
            observed[f"{name}_prior_shift_p"] = float(f"{p:.3g}")
            if p < cfg.prior_shift_p:
                problems.append(
                    f"{name} class frequencies differ from train's beyond chance "
                    f"(chi-square test of homogeneity over {compared} classes, p={p:.2g})"
                )
    expected = f"ratio <= {cfg.imbalance_warn_ratio}; held-out priors as train (p >= {cfg.prior_shift_p:g})"
    if problems:
        return Verdict(
            STAGE,
            "class-balance",
            Status.WARN,
            observed=observed,
            expected=expected,
            message="; ".join(problems),
            hint="initialise the final bias to the log-priors (baseline does) and report per-class metrics; "
            "stratify the split when priors differ",
        )
    return Verdict(
        STAGE,
        "class-balance",
        Status.PASS,
        observed=observed,
        expected=expected,
        message=f"train imbalance ratio {ratio:.2f}; held-out priors match train's",
    )


def label_prevalence(m: DataMeasurements, cfg: InspectDataSpec) -> Verdict:
    """Multi-label: each label's share of positive train examples; a label never (or always) on
    cannot be learned, one rarer than 1 in imbalance_warn_ratio is warned as a class would be;
    val/test prevalence against train's per label (a 2 x 2 test of homogeneity each,
    Bonferroni over the labels)."""
    scan = m.scan
    labels = scan.num_classes
    if labels is None:  # a multi-label bundle always says how many labels it has
        return Verdict(STAGE, "class-balance", Status.SKIP, message="the data does not say how many labels it has")
    names = scan.class_names or [str(k) for k in range(labels)]

    def positives(s):  # positive examples per label, as the class-balance picture counts them
        return scan.task.share_counts(s.targets, labels), s.n

    pos, n = positives(scan.train)
    prev = pos / max(n, 1)
    ratio = np.maximum(prev, 1 - prev) / np.maximum(np.minimum(prev, 1 - prev), 1e-12)
    observed = {
        "train_positives": pos.tolist(),
        "train_prevalence": [round(float(p), 4) for p in prev],
        "max_imbalance_ratio": round(float(ratio.max()), 3)
        if np.isfinite(ratio.max()) and ratio.max() < 1e9
        else "inf",
    }
    problems = []
    never, always = np.nonzero(pos == 0)[0], np.nonzero(pos == n)[0]
    if len(never) or len(always):
        problems.append(
            ", ".join(
                [f"label {names[k]} is never on in train" for k in never[:5]]
                + [f"label {names[k]} is on in every train example" for k in always[:5]]
            )
        )
    rare = [k for k in np.nonzero(ratio > cfg.imbalance_warn_ratio)[0] if 0 < pos[k] < n]
    if rare:
        problems.append(
            f"{len(rare)} label(s) with over {cfg.imbalance_warn_ratio:g} negatives per positive or the "
            f"reverse (e.g. {names[rare[0]]}: prevalence {prev[rare[0]]:.3g})"
        )
    for name, s in scan.splits.items():
        if name == "train" or s.n == 0:
            continue
        held, hn = positives(s)
        observed[f"{name}_prevalence"] = [round(float(v), 4) for v in held / max(hn, 1)]
        ps = [
            homogeneity_p(np.array([pos[k], n - pos[k]]), np.array([held[k], hn - held[k]]))[0] for k in range(len(pos))
        ]
        shifted = [k for k, p in enumerate(ps) if math.isfinite(p) and p < cfg.prior_shift_p / len(ps)]
        if shifted:
            k = shifted[0]
            problems.append(
                f"{name} prevalence of {len(shifted)} label(s) differs from train's beyond chance (e.g. "
                f"{names[k]}: {held[k] / max(hn, 1):.3g} vs {prev[k]:.3g}, p={ps[k]:.2g}, Bonferroni over "
                f"{len(ps)} labels)"
            )
    expected = (
        f"every label on in some and off in other train examples; ratio <= {cfg.imbalance_warn_ratio:g}; "
        f"held-out prevalence as train (p >= {cfg.prior_shift_p:g} / labels)"
    )
    if problems:
        return Verdict(
            STAGE,
            "class-balance",
            Status.WARN,
            observed=observed,
            expected=expected,
            message="; ".join(problems),
            hint="baseline sets the final bias to logit(prevalence); report per-label metrics; drop or merge "
            "labels with no positives",
        )
    return Verdict(
        STAGE,
        "class-balance",
        Status.PASS,
        observed=observed,
        expected=expected,
        message=f"{len(pos)} labels, prevalence {prev.min():.3g} to {prev.max():.3g}; held-out prevalence matches train's",
    )


def input_scale(m: DataMeasurements, cfg: InspectDataSpec) -> Verdict:
    """Per channel (images, signals) or feature (tables): standardized inputs train best.

    For regression the targets are held to the same standard: an MSE on targets in the
    hundreds makes the loss, the LR and the init all hard to read. Ids have no scale: their
    vocabulary instead (id_range).
    """
    s = m.scan.train
    if s.ids is not None:
        return id_range(m, cfg, s.ids)
    mean, std = s.channel_mean, s.channel_std
    unit = "feature" if m.scan.kind == "tabular" else "channel"
    observed = {
        f"{unit}s": len(mean),
        "mean": [round(float(v), 4) for v in mean[:16]],
        "std": [round(float(v), 4) for v in std[:16]],
    }
    expected = f"|mean| <= {cfg.scale_max_abs_mean:g}, {cfg.scale_min_std:g} <= std <= {cfg.scale_max_std:g}"
    off_mean = np.nonzero(np.abs(mean) > cfg.scale_max_abs_mean)[0]
    big = np.nonzero(std > cfg.scale_max_std)[0]
    flat = np.nonzero(std < cfg.scale_min_std)[0]
    problems = []
    if len(off_mean) or len(big):
        worst = int(np.argmax(np.maximum(np.abs(mean), std)))
        problems.append(
            f"{len(set(off_mean) | set(big))} {unit}(s) far from standardized, worst {unit} {worst}: "
            f"mean {mean[worst]:.3g}, std {std[worst]:.3g}"
        )
    if len(flat):
        problems.append(f"{len(flat)} {unit}(s) nearly constant (std < {cfg.scale_min_std:g}): {flat[:10].tolist()}")
    if m.scan.task.real_targets and s.n > 1:
        t = s.targets.reshape(s.n, -1)
        t_mean, t_std = np.nanmean(t, axis=0), np.nanstd(t, axis=0)
        observed["target_mean"], observed["target_std"] = (
            [round(float(v), 4) for v in t_mean[:8]],
            [round(float(v), 4) for v in t_std[:8]],
        )
        if np.any(np.abs(t_mean) > cfg.scale_max_abs_mean) or np.any(t_std > cfg.scale_max_std):
            problems.append(
                f"{m.scan.task.name} targets far from standardized: mean {t_mean[0]:.3g}, std {t_std[0]:.3g}"
            )
    if problems:
        observed["worst"] = {"index": int(np.argmax(np.maximum(np.abs(mean), std))), "flat": flat[:16].tolist()}
        return Verdict(
            STAGE,
            "input-scale",
            Status.WARN,
            observed=observed,
            expected=expected,
            message="; ".join(problems),
            hint="standardize with train statistics (data.args.standardize / standardize_targets for csv/npz, "
            "scale: standardize for digits)",
        )
    return Verdict(
        STAGE,
        "input-scale",
        Status.PASS,
        observed=observed,
        expected=expected,
        message=f"{len(mean)} {unit}(s): mean in [{mean.min():.3g}, {mean.max():.3g}], std in [{std.min():.3g}, {std.max():.3g}]",
    )


def id_range(m: DataMeasurements, cfg: InspectDataSpec, train: IdStats) -> Verdict:
    """input-scale for ids: the vocabulary (distinct values, range) and each position's
    cardinality. A negative id fails (no embedding row has it). Where there are few positions
    (category codes, short windows), each position's distribution of ids in a held-out split
    against train's (a test of homogeneity per position, Bonferroni over positions, as
    class-balance's): codes encoded differently per split (each split's own encoder) shift it.
    `train` is m.scan.train.ids (input_scale calls this where it is not None)."""
    scan = m.scan
    observed: dict[str, object] = {"ids": True, "min": train.low, "max": train.high, "distinct": len(train.values)}
    cardinality: list[int] = []  # distinct ids per position (the first 16)
    if train.per_feature is not None:
        cardinality = [len(c) for c in train.per_feature[:16]]
        observed["cardinality"] = cardinality
    problems = [
        f"{name} has {s.ids.negative} negative ids (e.g. {s.ids.low}): an embedding cannot look them up"
        for name, s in scan.splits.items()
        if s.ids is not None and s.ids.negative
    ]
    status = Status.FAIL if problems else Status.PASS
    for name, s in scan.splits.items():
        if name == "train" or s.ids is None:
            continue
        observed[f"{name}_unseen"] = len(s.ids.values - train.values)
        if train.per_feature is None or s.ids.per_feature is None:
            continue
        shifted = _shifted_positions(train.per_feature, s.ids.per_feature, cfg.prior_shift_p)
        if shifted:
            k, p, unseen = shifted[0]
            status = Status.WARN if status is Status.PASS else status  # a negative id's fail stays
            problems.append(
                f"{name}'s ids at {len(shifted)} position(s) are distributed unlike train's (e.g. position {k}: "
                f"p={p:.2g}, {unseen} {name} values never at it in train): encoded differently per split?"
            )
    expected = f"ids >= 0; held-out ids distributed as train's per position (p >= {cfg.prior_shift_p:g} / positions)"
    if problems:
        return Verdict(
            STAGE,
            "input-scale",
            status,
            observed=observed,
            expected=expected,
            message="; ".join(problems),
            hint="encode categories once, on train, and use that encoding in every split (unseen values "
            "to one 'unknown' id)",
        )
    per = (
        f"; {len(train.per_feature)} positions of {min(cardinality)}-{max(cardinality)} values"
        if train.per_feature
        else ""
    )
    return Verdict(
        STAGE,
        "input-scale",
        Status.PASS,
        observed=observed,
        expected=expected,
        message=f"ids: {len(train.values)} distinct values in [{train.low}, {train.high}]{per}",
    )


def _shifted_positions(train: list, held: list, alpha: float) -> list[tuple[int, float, int]]:
    """(position, p, held-out values unseen there in train) where the two samples of ids differ
    beyond chance: Pearson's test of homogeneity at alpha / positions."""
    out = []
    for k, (a, b) in enumerate(zip(train, held)):
        keys = sorted(set(a) | set(b))
        p, _ = homogeneity_p(np.array([a.get(v, 0) for v in keys]), np.array([b.get(v, 0) for v in keys]))
        if math.isfinite(p) and p < alpha / len(train):
            out.append((k, p, len(set(b) - set(a))))
    return sorted(out, key=lambda t: t[1])


def outliers(m: DataMeasurements, cfg: InspectDataSpec) -> Verdict:
    """Examples far from the bulk on a per-example statistic (robust z against train)."""
    if m.scan.train.ids is not None:
        return Verdict(
            STAGE,
            "outliers",
            Status.SKIP,
            message="the inputs are ids (tokens, category codes): an id's "
            "value is a name, not a size; per-example statistics of ids mean nothing",
        )
    n = m.scan.train.n
    per_axis = {}
    flagged = np.zeros(n, dtype=bool)
    worst = (0.0, "", -1)
    for stat in STAT_NAMES:
        z = np.abs(m.z["train"][stat])
        z = np.where(np.isfinite(z), z, 0.0)  # non-finite examples are non-finite's business
        per_axis[stat] = {"beyond": int((z > cfg.outlier_z).sum()), "max_z": round(float(z.max()), 2) if n else 0.0}
        flagged |= z > cfg.outlier_z
        if n and z.max() > worst[0]:
            worst = (float(z.max()), stat, int(z.argmax()))
    frac = flagged.sum() / max(n, 1)
    observed = {"flagged": int(flagged.sum()), "fraction": round(float(frac), 6), "per_axis": per_axis}
    if worst[2] >= 0:
        observed["most_extreme"] = f"train[{worst[2]}] ({worst[1]}, z={worst[0]:.1f})"
    expected = f"fraction beyond z={cfg.outlier_z:g} <= {cfg.outlier_max_fraction:g}, none beyond z={GROSS_Z:g}"
    if frac > cfg.outlier_max_fraction or worst[0] > GROSS_Z:
        return Verdict(
            STAGE,
            "outliers",
            Status.WARN,
            observed=observed,
            expected=expected,
            message=f"{int(flagged.sum())} train examples lie beyond {cfg.outlier_z:g} robust std of the bulk; "
            f"most extreme train[{worst[2]}] on {worst[1]} (z={worst[0]:.1f})",
            hint="look at outliers.png: wrong scale, a corrupted file, or an empty example?",
        )
    return Verdict(
        STAGE,
        "outliers",
        Status.PASS,
        observed=observed,
        expected=expected,
        message=f"{int(flagged.sum())} examples beyond z={cfg.outlier_z:g}; the most extreme are in outliers.png",
    )
