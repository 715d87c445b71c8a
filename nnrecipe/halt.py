"""Training in this process stops at its next logged step once another process of the run has
failed: with `--workers N` the stage's process trains its own share of the experiments while the
workers train theirs (executors/pool.py), and a worker that dies or raises must end the stage at
once, not after this process's share (hours, on a real model). `watch()` scopes it to one batch
of experiments (a failure of another batch, reported later, stops nothing); the pool's futures
set its event; `loop.StepLog.losses` calls `check` at every log interval (already a device sync)."""

from __future__ import annotations

import contextlib
import threading
from typing import Iterator, Optional

_WATCHED: Optional[threading.Event] = None


class Halted(Exception):
    """Training here stopped because a worker failed; the worker's own error is raised next."""


@contextlib.contextmanager
def watch() -> Iterator[threading.Event]:
    """The event that stops training here while the block runs (set it when a worker fails)."""
    global _WATCHED
    event = _WATCHED = threading.Event()
    try:
        yield event
    finally:
        _WATCHED = None


def check() -> None:
    if _WATCHED is not None and _WATCHED.is_set():
        raise Halted()
