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
from nnrecipe.errors import NNRecipeError
from nnrecipe.probes.data_groups import DataMeasurements, measure
from nnrecipe.probes.data_scan import STAT_NAMES, class_counts, scan_bundle
from nnrecipe.stages.base import StageContext, StageResult, with_artifacts

STAGE = "inspect-data"
CHECKS = (split_sizes, shapes_dtypes, label_range, non_finite, duplicates, split_leakage,
          conflicting_labels, class_balance, input_scale, outliers)
CSV_NAME = "examples.csv"


def run(spec, ctx: StageContext) -> StageResult:
    cfg = spec.stages.inspect_data
    data = ctx.data()
    if data.task == "language-model":  # tokens, not pixel statistics
        from nnrecipe.stages import inspect_text

        if ctx.options.get("model"):
            raise NNRecipeError("inspect-data --model: not for language models yet (their samples are in overfit and "
                                "regularize)")
        return inspect_text.run(spec, ctx, data)
    scan = scan_bundle(data, progress=ctx.progress)
    m = measure(scan)
    verdicts = {v.check: v for v in (check(m, cfg) for check in CHECKS)}

    writer = ctx.writer(STAGE)
    out = ctx.run.stage_dir(STAGE)
    rng = np.random.default_rng(spec.seed)
    scale = (scan.train.channel_mean, scan.train.channel_std) if data.kind == "tabular" else None
    grid = pictures.save_figure(
        pictures.example_grid(_grid_rows(data, m, cfg, rng), data.kind, title=f"random train examples — {data.description}", scale=scale),
        out / "examples_grid.png", writer=writer, tag="data/examples_grid")
    hist = pictures.save_figure(
        pictures.histograms({s: {name: m.scan.splits[name].stats[s] for name in m.scan.splits} for s in STAT_NAMES},
                            title="per-example statistics by split"),
        out / "stat_histograms.png", writer=writer, tag="data/stat_histograms")
    outl = pictures.save_figure(
        pictures.example_grid(_outlier_rows(data, m, cfg), data.kind, title="most extreme train examples per statistic (robust z)", scale=scale),
        out / "outliers.png", writer=writer, tag="data/outliers")
    balance = None
    if data.task == "classification" and data.num_classes:
        counts = {name: class_counts(s.targets, data.num_classes) for name, s in scan.splits.items()}
        balance = pictures.save_figure(
            pictures.bar_counts(counts, [data.class_name(c) for c in range(data.num_classes)], title="class frequencies by split"),
            out / "class_balance.png", writer=writer, tag="data/class_balance")
    table = out / CSV_NAME
    write_examples_csv(table, m, data)

    rel = ctx.rel
    attach = {
        "shapes-dtypes": [rel(grid)],
        "label-range": [rel(grid)] + ([rel(balance)] if balance else []),
        "duplicates": [rel(table)],
        "split-leakage": [rel(table)],
        "conflicting-labels": [rel(table)],
        "class-balance": [rel(balance)] if balance else [],
        "input-scale": [rel(hist)],
        "outliers": [rel(outl), rel(hist), rel(table)],
        "non-finite": [rel(table)],
    }
    final = [with_artifacts(v, *attach.get(v.check, [])) for v in verdicts.values()]
    model_summary = None
    if ctx.options.get("model"):  # inspect-data --model RUN_DIR: the data seen through a trained model
        verdict, model_summary = _through_model(spec, ctx, cfg, Path(ctx.options["model"]))
        final.append(verdict)
    summary = {
        "description": data.description,
        "task": data.task,
        "kind": data.kind,
        "input_shape": list(data.input_shape),
        "num_classes": data.num_classes,
        "class_names": data.class_names,
        "splits": {name: s.n for name, s in scan.splits.items()},
        "channel_mean": scan.train.channel_mean.tolist(),
        "channel_std": scan.train.channel_std.tolist(),
        "train_priors": (class_counts(scan.train.targets, data.num_classes) / scan.train.n).tolist()
        if data.task == "classification" and data.num_classes else None,
        "target_mean": np.nanmean(scan.train.targets.reshape(scan.train.n, -1), axis=0).tolist() if data.task == "regression" else None,
        "target_var": np.nanvar(scan.train.targets.reshape(scan.train.n, -1), axis=0).tolist() if data.task == "regression" else None,
        "model": model_summary,
    }
    return StageResult(STAGE, final, summary)


def _through_model(spec, ctx: StageContext, cfg, run_dir: Path):
    from nnrecipe.checks.model_data_checks import ModelOnData, model_on_data
    from nnrecipe.losses import loss_name
    from nnrecipe.probes import mispredictions
    from nnrecipe.stages.inspect_model import evaluate, find_model
    from nnrecipe.stages.misprediction_pictures import misprediction_artifacts

    trained = find_model(run_dir)
    data, result, eval_spec = evaluate(spec, ctx, trained)
    se = 0.0
    if data.task != "classification":  # SE of R^2 from the per-example squared errors
        y = data.targets("val").double().reshape(result.n, -1)
        sq = ((result.outputs.double().reshape(result.n, -1) - y) ** 2).mean(dim=1)
        se = float(sq.std() / max(result.n, 2) ** 0.5 / y.var(dim=0).mean().clamp_min(1e-12))
    m = ModelOnData(source=ctx.rel(Path(trained.source)) if str(trained.source).startswith(str(ctx.run.root)) else trained.source,
                    metric_name=result.metric_name, recorded=trained.val_metric, n_recorded=trained.n_val or result.n,
                    now=result.metric, n_now=result.n, se_now=se)
    wrong = mispredictions.measure(result.outputs, data.targets("val"), task=data.task, num_classes=data.num_outputs,
                                   loss=loss_name(eval_spec), class_name=data.class_name)
    arts = misprediction_artifacts(ctx, STAGE, data, wrong, "model-on-data", outputs=result.outputs)
    verdict = with_artifacts(model_on_data(m, cfg), *arts.get("model-on-data", []))
    return verdict, {"source": m.source, f"val_{m.metric_name}": m.now, "per_class": wrong.per_class,
                     "confusion": wrong.confusion.tolist() if wrong.confusion is not None else None}


def _grid_rows(data, m: DataMeasurements, cfg, rng: np.random.Generator):
    """A row of random train examples per class (classification) or per target quartile (regression)."""
    k = cfg.examples_per_class
    targets = m.scan.train.targets
    rows = []
    if data.task == "classification" and data.num_classes:
        for c in range(min(data.num_classes, cfg.max_classes_in_grid)):
            idx = np.nonzero(targets == c)[0]
            pick = rng.choice(idx, size=min(k, len(idx)), replace=False) if len(idx) else []
            rows.append((data.class_name(c), [(data.train.example(int(i))[0], f"#{int(i)}") for i in pick]))
    else:
        t = targets.reshape(len(targets), -1)[:, 0]
        edges = np.nanquantile(t, [0, 0.25, 0.5, 0.75, 1.0])
        for lo, hi in zip(edges[:-1], edges[1:]):
            idx = np.nonzero((t >= lo) & (t <= hi))[0]
            pick = rng.choice(idx, size=min(k, len(idx)), replace=False) if len(idx) else []
            rows.append((f"y∈[{lo:.3g},{hi:.3g}]", [(data.train.example(int(i))[0], f"#{int(i)} y={t[i]:.3g}") for i in pick]))
    return rows


def _outlier_rows(data, m: DataMeasurements, cfg):
    rows = []
    targets = m.scan.train.targets.reshape(m.scan.train.n, -1)[:, 0]
    for stat in STAT_NAMES:
        z = m.z["train"][stat]
        order = np.argsort(-np.where(np.isfinite(z), np.abs(z), -1.0))[: cfg.outliers_per_axis]
        rows.append((stat, [(data.train.example(int(i))[0],
                             f"#{int(i)} z={z[i]:+.1f} y={data.class_name(int(targets[i])) if data.task == 'classification' and np.isfinite(targets[i]) else f'{targets[i]:.3g}'}")
                            for i in order]))
    return rows


# ----------------------------------------------------------------------------- the per-example table

COLUMNS = ["split", "index", "label", "label_name", "mean", "std", "l2", "z_mean", "z_std", "z_l2", "z_max",
           "nonfinite", "dup_count", "in_train", "conflict"]
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
            name_col = data.class_name(int(lab)) if data.task == "classification" and np.isfinite(lab) and lab == int(lab) else ""
            w.writerow([
                name, i, f"{lab:g}", name_col,
                f"{s.stats['mean'][i]:.6g}", f"{s.stats['std'][i]:.6g}", f"{s.stats['l2'][i]:.6g}",
                f"{z['mean'][i]:.3f}", f"{z['std'][i]:.3f}", f"{z['l2'][i]:.3f}", f"{zmax[i]:.3f}",
                int(s.x_nonfinite[i]) + int(s.y_nonfinite[i]),
                int(m.dup_count[name][i]), int(name != "train" and m.dup_count[name][i] > 0), int(m.conflict_flags[name][i]),
            ])
    atomic.write_text(path, buf.getvalue())


SHOWN = ["split", "index", "label", "z_max", "mean", "std", "l2"]  # fits 80 columns; the CSV has all


def examples_table(path: Path, *, sort_by: Optional[str], class_filter: Optional[str], limit: int,
                   ascending: bool = False, split: Optional[str] = None) -> tuple[list[str], list[list[str]]]:
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
        flags = [f"dup×{r['dup_count']}" if int(r["dup_count"]) > 1 and r["split"] == "train" else "",
                 "in-train" if r["in_train"] == "1" else "", "conflict" if r["conflict"] == "1" else "",
                 "non-finite" if r["nonfinite"] != "0" else ""]
        out.append(cells + [" ".join(f for f in flags if f)])
    return shown + ["flags"], out


def _fmt(value: str) -> str:
    try:
        return f"{float(value):.4g}"
    except ValueError:
        return value
