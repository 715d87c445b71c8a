"""Library architectures, unmodified, through baseline and overfit (run by hand; never a test).

    OMP_NUM_THREADS=1 python bench/architectures.py [--archs squeezenet1_1 mobilenet_v3_small ...]
        [--stages baseline overfit] [--steps 500] [--json bench/results/architectures.json]
        [--set stages.baseline.overfit_examples=32 ...]

A fix a verdict suggests is tried as a variant: "squeezenet1_1@identity=classifier.2" (drop the
ReLU on the logits), "mobilenet_v3_small@bn_momentum=0.1", or a spec override with --set.

Each model is torchvision's (`weights=None`, `num_classes` set; timm's with `pretrained=False`
when timm is installed and the name starts with `timm:`), on scikit-learn's digits upsampled to
3x32x32 (bundled with scikit-learn: nothing is downloaded), Adam at 1e-3. Every architecture
either passes, or fails with a verdict that names the true cause: the table prints each
failing verdict's message and hint, so a reader can apply the fix it suggests and run again.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve()
TORCHVISION = (
    "resnet18",
    "mobilenet_v3_small",
    "efficientnet_b0",
    "shufflenet_v2_x0_5",
    "squeezenet1_1",
    "regnet_y_400mf",
    "mnasnet0_5",
    "convnext_tiny",
)


def digits_3x32(seed: int = 0):
    """scikit-learn's 8x8 digits, upsampled to 32x32 and repeated over 3 channels, standardised
    with the training split's statistics: 1,437 train and 360 val images."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1)
    x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False).repeat(1, 3, 1, 1)
    y = torch.tensor(d.target, dtype=torch.long)
    order = torch.from_numpy(np.random.default_rng(seed).permutation(len(y)))
    x, y = x[order], y[order]
    n = int(0.8 * len(y))
    mean, std = x[:n].mean(), x[:n].std()
    x = (x - mean) / std
    return {"train": (x[:n], y[:n]), "val": (x[n:], y[n:])}


def library_model(input_shape, num_outputs, name: str, identity: str = "", bn_momentum: float = 0.0):
    """A library's classifier as it ships, untrained; a verdict's suggested fix applied when
    asked: `identity` replaces that submodule (e.g. a ReLU on the logits) by nn.Identity,
    `bn_momentum` sets every BatchNorm's momentum."""
    from torch import nn

    if name.startswith("timm:"):
        import timm  # an optional extra

        model = timm.create_model(name[5:], pretrained=False, num_classes=num_outputs, in_chans=input_shape[0])
    else:
        import torchvision

        model = getattr(torchvision.models, name)(weights=None, num_classes=num_outputs)
    if identity:
        parent, _, child = identity.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, nn.Identity())
    for m in model.modules():
        if bn_momentum and isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = bn_momentum
    return model


def spec_for(arch: str, steps: int) -> dict:
    """`arch`: a model name, with a fix after "@" as key=value pairs ("squeezenet1_1@identity=classifier.2")."""
    name, _, fix = arch.partition("@")
    args: dict = {"name": name}
    for pair in filter(None, fix.split(",")):
        key, _, value = pair.partition("=")
        args[key] = float(value) if key == "bn_momentum" else value
    return {
        "name": arch.replace(":", "-").replace("_", "-").replace("@", "-fix-").replace("=", "-").replace(",", "-"),
        "task": "classification",
        "data": {"source": "python", "factory": f"{HERE}:digits_3x32", "batch_size": 64},
        "model": {"arch": "python", "factory": f"{HERE}:library_model", "args": args},
        "optim": {"name": "adam", "lr": 1e-3},
        "train": {"steps": steps, "eval_every": max(1, steps // 4)},
        "stages": {"baseline": {"steps": steps, "eval_every": max(1, steps // 4)}},
    }


def run_one(name: str, stages: list[str], steps: int, out: Path, overrides: list[str] = ()) -> dict:
    path = out / f"{spec_for(name, steps)['name']}.yaml"
    path.write_text(yaml.safe_dump(spec_for(name, steps)))
    row = {"arch": name, "stages": {}}
    for stage in stages:
        t0 = time.perf_counter()
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "nnrecipe.cli",
                stage,
                "--config",
                str(path),
                "--json",
                "--output-dir",
                str(out / "runs"),
                *overrides,
            ],
            capture_output=True,
            text=True,
        )
        seconds = time.perf_counter() - t0
        try:
            verdicts = json.loads(proc.stdout) if proc.stdout.strip() else []
        except json.JSONDecodeError:
            verdicts = []
        row["stages"][stage] = {
            "exit": proc.returncode,
            "seconds": round(seconds, 1),
            "error": proc.stderr.strip().splitlines()[-1:] if proc.returncode > 1 else [],
            "counts": {s: sum(v["status"] == s for v in verdicts) for s in ("pass", "warn", "fail", "skip")},
            "alarms": [
                {"check": v["check"], "status": v["status"], "message": v["message"], "hint": v["hint"]}
                for v in verdicts
                if v["status"] in ("warn", "fail")
            ],
        }
        print(
            f"{name:22s} {stage:9s} exit {proc.returncode} {seconds:6.1f} s {row['stages'][stage]['counts']}",
            flush=True,
        )
        for a in row["stages"][stage]["alarms"]:
            print(
                f"    {a['status']:4s} {a['check']}: {a['message'][:300]}\n         hint: {a['hint'][:200]}", flush=True
            )
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", nargs="+", default=list(TORCHVISION))
    ap.add_argument("--stages", nargs="+", default=["baseline", "overfit"])
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument(
        "--set", nargs="*", default=[], metavar="KEY=VALUE", help="spec overrides for every run (a fix to try)"
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [run_one(a, args.stages, args.steps, Path(tmp), args.set) for a in args.archs]
    if args.json:
        args.json.write_text(json.dumps({"steps": args.steps, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
