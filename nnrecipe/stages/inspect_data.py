"""Stage 1, "become one with the data": no training, only looking.

run(): scan every split once (measure), judge the measurements (checks), draw the
pictures, write the per-example table. `examples_table` searches that table for the
command line (--sort-by, --class, --limit).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Optional

import numpy as np

from nnrecipe import atomic, pictures
from nnrecipe.checks.data_distribution import class_balance, input_scale, outliers, shapes_dtypes, split_sizes
from nnrecipe.checks.data_integrity import conflicting_labels, duplicates, label_range, non_finite, split_leakage
from nnrecipe.checks.per_leaf import per_leaf
from nnrecipe.errors import NNRecipeError
from nnrecipe.pictures.saver import Artifacts, FigureSaver, attach
from nnrecipe.probes.data_groups import DataMeasurements, measure
from nnrecipe.probes.data_scan import STAT_NAMES, leaf_scans, scan_bundle
from nnrecipe.stages.base import StageContext, StageResult

STAGE = "inspect-data"
CHECKS = (
    split_sizes,
    shapes_dtypes,
    label_range,
    non_finite,
    duplicates,
    split_leakage,
    conflicting_labels,
    class_balance,
    input_scale,
    outliers,
)
PER_LEAF = (shapes_dtypes, input_scale, outliers)  # rules about one tensor: once per leaf of structured inputs
CSV_NAME = "examples.csv"


def run(spec, ctx: StageContext) -> StageResult:
    data = ctx.data()
    if ctx.options.get("model") and data.task.skip_reason("model-on-data"):
        raise NNRecipeError(data.task.skip_reason("model-on-data"))
    if data.kind == "sequence":  # token windows: look at the tokens, not at pixel statistics
        from nnrecipe.stages import inspect_text

        return inspect_text.run(spec, ctx, data)
    cfg = spec.stages.inspect_data
    scan = scan_bundle(data, progress=ctx.progress)
    m = measure(scan)
    leaves = {leaf: measure(view) for leaf, view in leaf_scans(scan).items()}  # structured inputs
    verdicts = [per_leaf(check, leaves, cfg) if leaves and check in PER_LEAF else check(m, cfg) for check in CHECKS]
    arts = [_draw(spec, ctx, data, m)]
    model_summary = None
    if ctx.options.get("model"):  # inspect-data --model RUN_DIR: the data seen through a trained model
        verdict, model_arts, model_summary = _through_model(spec, ctx, cfg, Path(ctx.options["model"]))
        verdicts.append(verdict)
        arts.append(model_arts)
    return StageResult(STAGE, attach(verdicts, *arts), _record(data, m, model_summary))


def _draw(spec, ctx: StageContext, data, m: DataMeasurements) -> Artifacts:
    """Random examples per class (or target quartile), the most extreme ones, the statistics'
    histograms, the class shares per split, and the per-example table."""
    cfg, scan = spec.stages.inspect_data, m.scan
    save = FigureSaver(ctx, STAGE)
    rng = np.random.default_rng(spec.seed)
    scale = (scan.train.channel_mean, scan.train.channel_std) if data.kind == "tabular" else None
    save(
        pictures.example_grid(
            _grid_rows(data, m, cfg, rng), data.kind, title=f"random train examples — {data.description}", scale=scale
        ),
        "examples_grid",
        "shapes-dtypes",
        "label-range",
        tag="data/examples_grid",
    )
    save(
        pictures.example_grid(
            _outlier_rows(data, m, cfg),
            data.kind,
            title="most extreme train examples per statistic (robust z)",
            scale=scale,
        ),
        "outliers",
        "outliers",
        tag="data/outliers",
    )
    save(
        pictures.histograms(
            {s: {name: scan.splits[name].stats[s] for name in scan.splits} for s in STAT_NAMES},
            title="per-example statistics by split",
        ),
        "stat_histograms",
        "input-scale",
        "outliers",
        tag="data/stat_histograms",
    )
    if _class_shares(data):
        counts = {name: data.task.share_counts(s.targets, data.num_classes) for name, s in scan.splits.items()}
        save(
            pictures.bar_counts(
                counts, [data.class_name(c) for c in range(data.num_classes)], title="class frequencies by split"
            ),
            "class_balance",
            "label-range",
            "class-balance",
            tag="data/class_balance",
        )
    data.task.data_pictures(save, data)
    table = ctx.run.stage_dir(STAGE) / CSV_NAME
    write_examples_csv(table, m, data)
    save.add(table, "duplicates", "split-leakage", "conflicting-labels", "outliers", "non-finite")
    return save.arts


def _class_shares(data) -> bool:
    """Class targets whose shares per split class-balance judges (and the picture shows)."""
    return not data.task.skip_reason("class-balance") and bool(data.num_classes)


def _record(data, m: DataMeasurements, model_summary) -> dict:
    scan, real = m.scan, data.task.real_targets
    return {
        "description": data.description,
        "task": data.task.name,
        "kind": data.kind,
        "input_shape": list(data.input_shape) if not data.structured else data.input_shape,
        "num_classes": data.num_classes,
        "class_names": data.class_names,
        "splits": {name: s.n for name, s in scan.splits.items()},
        "channel_mean": scan.train.channel_mean.tolist(),
        "channel_std": scan.train.channel_std.tolist(),
        "train_priors": (data.task.share_counts(scan.train.targets, data.num_classes) / scan.train.n).tolist()
        if _class_shares(data)
        else None,
        "target_mean": np.nanmean(scan.train.targets.reshape(scan.train.n, -1), axis=0).tolist() if real else None,
        "target_var": np.nanvar(scan.train.targets.reshape(scan.train.n, -1), axis=0).tolist() if real else None,
        "model": model_summary,
    }


def _through_model(spec, ctx: StageContext, cfg, run_dir: Path):
    """(the model-on-data verdict, its pictures, a summary) for the model trained in `run_dir`."""
    from nnrecipe.checks.model_data_checks import ModelOnData, model_on_data
    from nnrecipe.handoff import find_model
    from nnrecipe.losses import loss_name
    from nnrecipe.pictures import mispredictions
    from nnrecipe.probes.model_on_data import evaluate

    trained = find_model(run_dir)
    data, result, eval_spec = evaluate(spec, ctx, trained)
    # the metric's SE from the per-example scores (the binomial one for accuracy; drop_z reads it for R^2)
    se = data.task.metric_se(result.metric, result.n, scores=result.scores, target_var=data.task.target_variance(data))
    m = ModelOnData(
        source=ctx.rel(Path(trained.source)) if str(trained.source).startswith(str(ctx.run.root)) else trained.source,
        metric_name=result.metric_name,
        recorded=trained.val_metric,
        n_recorded=trained.n_val or result.n,
        now=result.metric,
        n_now=result.n,
        se_now=se,
    )
    wrong = data.task.mispredictions(
        result.outputs,
        data.targets("val"),
        num_classes=data.num_outputs,
        loss=loss_name(eval_spec),
        class_name=data.class_name,
    )
    arts = mispredictions.draw(ctx, STAGE, data, wrong, "model-on-data", outputs=result.outputs) if wrong else {}
    return (
        model_on_data(m, cfg),
        arts,
        {
            "source": m.source,
            f"val_{m.metric_name}": m.now,
            "per_class": wrong.per_class if wrong else None,
            "confusion": wrong.confusion.tolist() if wrong and wrong.confusion is not None else None,
        },
    )


def _grid_rows(data, m: DataMeasurements, cfg, rng: np.random.Generator):
    """A row of random train examples per class, or per target quartile (the task's groups)."""
    groups = data.task.example_groups(m.scan.train.targets, cfg.examples_per_class, cfg.max_classes_in_grid, rng, data)
    return [(title, [(data.train.example(i)[0], caption) for i, caption in items]) for title, items in groups]


def _outlier_rows(data, m: DataMeasurements, cfg):
    rows = []
    targets = m.scan.train.targets.reshape(m.scan.train.n, -1)[:, 0]
    for stat in STAT_NAMES:
        z = m.z["train"][stat]
        order = np.argsort(-np.where(np.isfinite(z), np.abs(z), -1.0))[: cfg.outliers_per_axis]
        rows.append(
            (
                stat,
                [
                    (
                        data.train.example(int(i))[0],
                        f"#{int(i)} z={z[i]:+.1f} y={data.task.outlier_label(data, targets[i])}",
                    )
                    for i in order
                ],
            )
        )
    return rows


# ----------------------------------------------------------------------------- the per-example table

COLUMNS = [
    "split",
    "index",
    "label",
    "label_name",
    "mean",
    "std",
    "l2",
    "z_mean",
    "z_std",
    "z_l2",
    "z_max",
    "nonfinite",
    "dup_count",
    "in_train",
    "conflict",
]
NUMERIC = {"index", "label", "mean", "std", "l2", "z_mean", "z_std", "z_l2", "z_max", "nonfinite", "dup_count"}


def write_examples_csv(path: Path, m: DataMeasurements, data) -> None:
    import io

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(COLUMNS)
    for name, s in m.scan.splits.items():
        labels = s.targets.reshape(s.n, -1)[:, 0] if s.n else np.zeros(0)
        z = m.z[name]
        zs = np.abs(np.stack([z[k] for k in STAT_NAMES])) if s.n else np.zeros((1, 0))
        zmax = np.where(np.isfinite(zs), zs, -np.inf).max(axis=0)  # NaN for an example with non-finite input
        zmax = np.where(np.isfinite(zmax), zmax, np.nan)
        for i in range(s.n):
            lab = labels[i]
            name_col = data.task.label_name(data, lab)
            w.writerow(
                [
                    name,
                    i,
                    f"{lab:g}",
                    name_col,
                    f"{s.stats['mean'][i]:.6g}",
                    f"{s.stats['std'][i]:.6g}",
                    f"{s.stats['l2'][i]:.6g}",
                    f"{z['mean'][i]:.3f}",
                    f"{z['std'][i]:.3f}",
                    f"{z['l2'][i]:.3f}",
                    f"{zmax[i]:.3f}",
                    int(s.x_nonfinite[i]) + int(s.y_nonfinite[i]),
                    int(m.dup_count[name][i]),
                    int(name != "train" and m.dup_count[name][i] > 0),
                    int(m.conflict_flags[name][i]),
                ]
            )
    atomic.write_text(path, buf.getvalue())


SHOWN = ["split", "index", "label", "z_max", "mean", "std", "l2"]  # fits 80 columns; the CSV has all


def examples_table(
    path: Path,
    *,
    sort_by: Optional[str],
    class_filter: Optional[str],
    limit: int,
    ascending: bool = False,
    split: Optional[str] = None,
) -> tuple[list[str], list[list[str]]]:
    """Rows of examples.csv, filtered and sorted, for the command line.

    Shown: the SHOWN columns, the sort column, and one `flags` column (dup/leak/conflict/nonfinite).
    """
    if not path.exists():
        raise NNRecipeError(f"{path}: no per-example table; run `nnrecipe inspect-data` first")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if sort_by is not None and sort_by not in COLUMNS:
        raise NNRecipeError(f"--sort-by: unknown column {sort_by!r}; one of {', '.join(COLUMNS)}")
    if class_filter is not None:
        rows = [r for r in rows if class_filter in (r["label"], r["label_name"])]
    if split is not None:
        rows = [r for r in rows if r["split"] == split]
    if sort_by is not None:

        def key(r):
            v = r[sort_by]
            if sort_by in NUMERIC:
                x = float(v) if v not in ("", "nan") else float("-inf")
                return abs(x) if sort_by.startswith("z_") else x  # z: distance from the bulk either side
            return v

        rows.sort(key=key, reverse=not ascending)
    shown = SHOWN + ([sort_by] if sort_by and sort_by not in SHOWN else [])
    out = []
    for r in rows[:limit]:
        cells = [_fmt(r[c]) if c in NUMERIC and c != "index" else r[c] for c in shown]
        if r["label_name"] and r["label_name"] != r["label"]:
            cells[shown.index("label")] = f"{r['label']} ({r['label_name']})"
        flags = [
            f"dup×{r['dup_count']}" if int(r["dup_count"]) > 1 and r["split"] == "train" else "",
            "in-train" if r["in_train"] == "1" else "",
            "conflict" if r["conflict"] == "1" else "",
            "non-finite" if r["nonfinite"] != "0" else "",
        ]
        out.append(cells + [" ".join(f for f in flags if f)])
    return shown + ["flags"], out


def _fmt(value: str) -> str:
    try:
        return f"{float(value):.4g}"
    except ValueError:
        return value
