"""Figures rendered in a process beside the training (issue 24). Imports nothing heavy: the
painter process imports this module, and matplotlib to unpickle a figure, not torch.

Rendering a figure to PNG is the costly part of drawing it: a two-panel figure with legends
takes ~13 ms to build, ~5 ms to pickle and ~180 ms to render with its constrained layout, and a
digits recipe saves 26 of them (about 4 s of its 41). A run on one process trains on as many
cores as its model uses (one, for a small model: nnrecipe/threads.py), so a second process can
render a stage's figures while the next stage trains. `enable()` starts that for a run (the
process is spawned at the first figure, so a run without figures never starts it); each
figure is pickled and rendered there, and its PNG written here, atomically, with the same image
in TensorBoard, as `pictures.save_figure` does. `flush()` waits for every one: the run calls
it before anything reads the PNGs (the reports, TensorBoard's verdict text) and when it ends,
Ctrl-C included. A figure that does not pickle is rendered here.

The painter process outlives the run: the next run in this process (a notebook's, a test
suite's, the library API's) renders in it without spawning another (~0.5 s each, importing
matplotlib). It ignores Ctrl-C, so an interrupted run leaves it usable; it stops when this
process exits (concurrent.futures joins it then) or at `close()`.
"""

from __future__ import annotations

import dataclasses
import io
import pickle
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, Optional


@dataclasses.dataclass
class _Pending:
    future: Future
    path: Path
    writer: Any
    tag: Optional[str]
    step: int


class _State:
    on = False
    pool: Optional[ProcessPoolExecutor] = None
    pending: list[_Pending] = []


def enable(on: bool = True) -> None:
    """Render this process's figures in a second process (on), or here (off: what is pending
    is written first; the process is kept for the next run)."""
    if not on:
        try:
            flush()
        finally:
            _State.pending = []
    _State.on = on


def submit(fig, path: Path, *, writer=None, tag: Optional[str] = None, step: int = 0) -> bool:
    """Render `fig` into `path` in the painter process; False where it renders here instead
    (not enabled, or the figure does not pickle)."""
    if not _State.on:
        return False
    try:
        blob = pickle.dumps(fig)
    except Exception:  # an artist that does not pickle: drawn here as before
        return False
    try:
        future = _pool().submit(_render, blob)
    except BrokenProcessPool:  # its process died since the last figure (killed): start another
        _State.pool = None
        future = _pool().submit(_render, blob)
    _State.pending.append(_Pending(future, Path(path), writer, tag, step))
    _collect(wait=False)
    return True


def _pool() -> ProcessPoolExecutor:
    if _State.pool is None:
        import multiprocessing

        # spawn: a fork of a process with torch's thread pools running is not safe
        _State.pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), initializer=_child)
    return _State.pool


def flush() -> None:
    """Wait for every figure submitted and write it (a rendering error is raised here)."""
    _collect(wait=True)


def close() -> None:
    """Flush, then stop the painter process (the next figure submitted spawns another)."""
    try:
        flush()
    finally:
        pool, _State.pool = _State.pool, None
        _State.pending = []
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def _collect(*, wait: bool) -> None:
    """Write the PNGs rendered so far (all of them, waiting, with `wait`), in the order asked; a
    figure that failed to render is raised after the others are written."""
    from nnrecipe.pictures import write_png

    failed: Optional[BaseException] = None
    while _State.pending and (wait or _State.pending[0].future.done()):
        p = _State.pending.pop(0)
        try:
            data = p.future.result()
        except Exception as exc:
            failed = failed or exc
            continue
        write_png(data, p.path, writer=p.writer, tag=p.tag, step=p.step)
    if failed is not None:
        raise failed


def _child() -> None:
    """The painter process leaves Ctrl-C to the run (which flushes, then stops it)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _render(blob: bytes) -> bytes:
    fig = pickle.loads(blob)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
