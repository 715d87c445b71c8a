"""The run directory: <output_dir>/<name>/ with the spec, environment, verdicts and report.

    spec.yaml        resolved spec, as run
    env.json         versions, device, seed, git commit when in a repo
    verdicts.json    every verdict so far, all stages (merged: re-running a stage replaces its own)
    report.md        human summary with links to the pictures
    <stage>/         verdicts.json, summary.json, *.png, per-example CSVs, checkpoints/
    tb/<stage>/      TensorBoard event files

Every file is written atomically.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

from nnrecipe import __version__, atomic
from nnrecipe.credentials import redact_tree
from nnrecipe.errors import RunDirError
from nnrecipe.verdict import Verdict, jsonable


class RunDir:
    def __init__(self, root: Path, *, stage_order: Sequence[str] = ()):
        self.root = Path(root)
        self.stage_order = list(stage_order)
        self._lock_fd: Optional[int] = None

    def lock(self) -> None:
        """One nnrecipe process per run directory: two would interleave checkpoints and verdicts.
        An advisory flock on <run>/.lock, released when the process ends (even by SIGKILL)."""
        import fcntl

        path = self.root / ".lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise RunDirError(
                f"output_dir: the run directory {self.root} is in use by nnrecipe ({holder}); wait for it "
                "to finish, or give another name= or --output-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}".encode())
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            import fcntl

            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    @classmethod
    def create(cls, output_dir: str, name: str, *, stage_order: Sequence[str] = ()) -> "RunDir":
        out = Path(output_dir).expanduser()
        root = out / name
        # The schema restricts `name` to one safe path component; check the result anyway.
        if root.resolve().parent != out.resolve():
            raise RunDirError(f"name: {name!r} would place the run outside output_dir {out}")
        try:
            root.mkdir(parents=True, exist_ok=True)
            probe = root / f".write-test-{os.getpid()}"
            probe.write_text("")
            probe.unlink()
        except OSError as exc:
            raise RunDirError(f"output_dir: cannot write the run directory {root} ({exc.strerror or exc})") from None
        return cls(root, stage_order=stage_order)

    # ------------------------------------------------------------------ layout

    @classmethod
    def of(cls, output_dir: str, name: str, *, stage_order: Sequence[str] = ()) -> "RunDir":
        """The run directory of a spec (<output_dir>/<name>), as it is: nothing is created."""
        return cls(Path(output_dir).expanduser() / name, stage_order=stage_order)

    @property
    def spec_path(self) -> Path:
        return self.root / "spec.yaml"

    def stage_dir(self, stage: str) -> Path:
        return self.root / stage

    def best_spec(self, stage: str) -> Path:
        """The stage's best configuration as a full spec (regularize, tune): what the next starts from."""
        return self.stage_dir(stage) / "best.yaml"

    def checkpoint(self, stage: str, name: str) -> Path:
        return self.stage_dir(stage) / "checkpoints" / name

    def tb_dir(self, stage: str) -> Path:
        return self.root / "tb" / stage

    def reset_stage(self, stage: str, *, keep: Sequence[str] = ()) -> Path:
        """A re-run replaces the stage's files (and its TensorBoard curves) instead of mixing them;
        `keep` names entries of the stage folder a resumed run reuses (e.g. "members")."""
        folder = self.stage_dir(stage)
        if keep and folder.exists():
            for entry in folder.iterdir():
                if entry.name not in keep:
                    shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
            return folder
        for d in (folder, self.tb_dir(stage)):
            if d.exists():
                shutil.rmtree(d)
        folder.mkdir(parents=True)
        return folder

    def rel(self, path: Path) -> str:
        return str(Path(path).resolve().relative_to(self.root.resolve()))

    # ------------------------------------------------------------------ writing

    def write_spec(self, spec_yaml: str) -> None:
        atomic.write_text(self.spec_path, spec_yaml)

    def write_env(self, *, device: str, seed: int, spec_path: Optional[Path]) -> None:
        import torch

        env = {
            "nnrecipe": __version__,
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "torchvision": _version("torchvision"),
            "numpy": _version("numpy"),
            "platform": platform.platform(),
            "hostname": platform.node(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "cuda": torch.version.cuda if torch.cuda.is_available() else None,
            "device": device,
            "seed": seed,
            "spec_path": str(spec_path) if spec_path else None,
            "git_commit": _git_commit(Path(spec_path).parent if spec_path else Path.cwd()),
            "argv": redact_tree(sys.argv),
            "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }
        atomic.write_json(self.root / "env.json", env)

    def record(self, stage: str, verdicts: Sequence[Verdict], summary: dict[str, Any]) -> None:
        """The stage's verdicts and summary, then the merged verdicts and the report."""
        atomic.write_json(self.stage_dir(stage) / "verdicts.json", [v.to_dict() for v in verdicts])
        atomic.write_json(self.stage_dir(stage) / "summary.json", jsonable(summary))
        merged = [v for v in self.read_verdicts() if v.stage != stage] + list(verdicts)
        order = {s: i for i, s in enumerate(self.stage_order)}
        merged.sort(key=lambda v: order.get(v.stage, len(order)))  # stable: checks keep their order
        atomic.write_json(self.root / "verdicts.json", [v.to_dict() for v in merged])
        atomic.write_text(self.root / "report.md", self.render_report(merged))

    def write_arrays(self, stage: str, name: str, arrays: dict[str, Any]) -> Path:
        """NumPy arrays for later stages (e.g. per-example val scores), atomically."""
        import io

        import numpy as np

        buf = io.BytesIO()
        # allow_pickle=True is the default, named so that no array can take its place
        np.savez(buf, allow_pickle=True, **{k: np.asarray(v) for k, v in arrays.items()})
        path = self.stage_dir(stage) / name
        atomic.write_bytes(path, buf.getvalue())
        return path

    # ------------------------------------------------------------------ reading

    def read_arrays(self, stage: str, name: str) -> Optional[dict[str, Any]]:
        import numpy as np

        path = self.stage_dir(stage) / name
        if not path.exists():
            return None
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}

    def read_verdicts(self) -> list[Verdict]:
        path = self.root / "verdicts.json"
        if not path.exists():
            return []
        try:
            return [Verdict.from_dict(d) for d in json.loads(path.read_text())]
        except (json.JSONDecodeError, KeyError, ValueError, TypeError):
            raise RunDirError(
                f"{path}: not a verdicts file written by nnrecipe; move it away or use another output_dir"
            ) from None

    def read_summary(self, stage: str) -> Optional[dict[str, Any]]:
        path = self.stage_dir(stage) / "summary.json"
        return json.loads(path.read_text()) if path.exists() else None

    # ------------------------------------------------------------------ report

    def render_report(self, verdicts: Sequence[Verdict]) -> str:
        from nnrecipe import report

        return report.markdown(self.root, verdicts, self.stage_order)

    def write_reports(self, verdicts: Sequence[Verdict]) -> None:
        """report.md and the self-contained report.html, from the merged verdicts."""
        from nnrecipe import report

        report.write(self.root, verdicts, self.stage_order)


def _version(package: str) -> Optional[str]:
    # From the installed metadata: importing torchvision just for its version costs seconds.
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _git_commit(folder: Path) -> Optional[str]:
    try:
        out = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None
