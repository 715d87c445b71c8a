"""What one stage hands the next through the run directory, and the rules for taking it.

- A late stage starts from the best spec an earlier one wrote (tune from regularize/best.yaml;
  squeeze from tune's, else regularize's). A best.yaml made from other data settings (another
  source, split or val set) cannot be compared with this run: refused with a note.
- overfit compares with the baselines' per-example val scores, only when they were measured on
  the same split (`data_fingerprint`); tune and squeeze borrow the seed spread regularize
  measured, on the same terms (`recorded_seed_noise`).
- `inspect-data --model RUN_DIR` takes the model a run trained (`find_model`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from nnrecipe.errors import RunDirError
from nnrecipe.rundir import RunDir

DATA_KEYS_THAT_MAY_DIFFER = ("augment", "downsample", "batch_size")  # what regularize/tune may change in data


def start_spec(spec, run: RunDir, *, stages: Sequence[str]):
    """(the starting spec, where it came from, a note when a best.yaml was refused)."""
    from nnrecipe.spec import load_spec

    for stage in stages:
        path = run.best_spec(stage)
        if not path.exists():
            continue
        loaded, _ = load_spec(path)
        if _data_key(loaded) == _data_key(spec) and loaded.task == spec.task:
            keep = {k: getattr(spec, k) for k in ("name", "output_dir", "device", "seed", "stages")}
            return loaded.model_copy(update=keep), run.rel(path), ""
        note = f"{run.rel(path)} was made from other data settings than this spec; starting from the spec"
        return from_spec(spec), "the spec", note
    return from_spec(spec), "the spec", ""


def from_spec(spec):
    """The spec with the overfit stage's model, when it names one (regularize's reference)."""
    model = spec.stages.overfit.model or spec.model
    return spec.model_copy(update={"model": model})


def _data_key(spec) -> str:
    d = spec.data.model_dump(mode="json", exclude=set(DATA_KEYS_THAT_MAY_DIFFER))
    return json.dumps(d, sort_keys=True)


def data_fingerprint(data) -> str:
    """Identifies the train/val split a stage ran on, so a later stage compares per-example
    val scores only with scores from the same val examples (same spec, same split_seed)."""
    h = hashlib.sha256()
    h.update(f"{data.task.name}|{data.num_outputs}|{len(data.train)}|{len(data.val)}|{data.input_shape}".encode())
    for name in ("train", "val"):
        h.update(data.targets(name).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def baseline_scores(run: RunDir, data, fingerprint: str) -> tuple[Optional[dict[str, np.ndarray]], str]:
    """The dumb and linear baselines' per-example val scores from the baseline stage, when it ran
    on this same split (`fingerprint`, data_fingerprint's); else (None, why not)."""
    summary = run.read_summary("baseline")
    if summary is None:
        return None, "the baseline stage has not run in this run directory (nnrecipe baseline)"
    if summary.get("data_fingerprint") != fingerprint:
        return None, "the baseline stage ran on other data or another split; re-run nnrecipe baseline"
    arrays = run.read_arrays("baseline", summary.get("val_scores", "val_scores.npz"))
    if not arrays:
        return None, "baseline/val_scores.npz is missing; re-run nnrecipe baseline"
    return {k: arrays[k] for k in (data.task.dumb_name, data.task.linear_name) if k in arrays}, ""


def recorded_seed_noise(run: RunDir, fingerprint: str):
    """The seed spread (stats.SeedNoise) the regularize stage measured, when it ran on this same
    split (`fingerprint`); None otherwise. A later stage that trains one seed per side borrows
    it: a gain must stand out against another seed, not only against which examples are in val."""
    from nnrecipe.stats import SeedNoise

    summary = run.read_summary("regularize")
    if not summary or summary.get("data_fingerprint") != fingerprint or not summary.get("seed_noise"):
        return None
    return SeedNoise(**summary["seed_noise"])


@dataclasses.dataclass
class TrainedModel:
    spec: object  # the full spec the model was trained with (its model and data.downsample matter)
    state: dict
    source: str  # which checkpoint, for messages
    val_metric: Optional[float]  # what it scored on val when it was trained
    metric_name: str
    n_val: int


def find_model(run_dir: Path) -> TrainedModel:
    """regularize/checkpoints/best.pt (+ best.yaml), else overfit/checkpoints/best.pt (+ spec.yaml)."""
    from nnrecipe.loop import load_checkpoint
    from nnrecipe.spec import load_spec

    run = RunDir(Path(run_dir))
    if not run.root.is_dir():
        raise RunDirError(f"--model: {run_dir} is not a run directory")
    reg = run.checkpoint("regularize", "best.pt")
    if reg.exists() and run.best_spec("regularize").exists():
        ckpt = load_checkpoint(reg)
        spec, _ = load_spec(run.best_spec("regularize"))
        return TrainedModel(
            spec,
            ckpt["model"],
            str(reg),
            ckpt.get("val_metric"),
            ckpt.get("metric_name", ""),
            int(ckpt.get("n_val") or 0),
        )
    ovf = run.checkpoint("overfit", "best.pt")
    if ovf.exists() and run.spec_path.exists():
        spec, _ = load_spec(run.spec_path)
        final = (run.read_summary("overfit") or {}).get("final", {})
        name = next((k[4:] for k in final if k.startswith("val_") and k != "val_loss"), "")
        # the overfit stage scored the same val split size (n_val 0: take this run's)
        return TrainedModel(from_spec(spec), load_checkpoint(ovf)["model"], str(ovf), final.get(f"val_{name}"), name, 0)
    raise RunDirError(
        f"--model: {run_dir} holds no trained model (regularize/checkpoints/best.pt or "
        f"overfit/checkpoints/best.pt); run nnrecipe overfit or regularize on it first"
    )
