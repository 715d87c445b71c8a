"""Atomic file writes: write a temporary file in the same folder, fsync, then rename.

A reader (or a run killed half-way) sees the old file or the new one, never half of one. A
Ctrl-C while a file is written waits until it is in place (a few milliseconds): the file is
finished, then the interrupt is raised.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import tempfile
import threading
from pathlib import Path
from typing import IO, Any, Callable, Iterator


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (os.umask sets it, and a
    TensorBoard writer thread may be creating files at that moment)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def _interrupt_after() -> Iterator[None]:
    """SIGINT held until the block ends, then raised. Raised inside a writer instead, it can
    leave the writer's own state broken: torch.save's zip writer then fails in its cleanup
    with a RuntimeError that hides the KeyboardInterrupt (seen: exit 3 for a Ctrl-C)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signals reach the main thread only
        return
    handler = signal.getsignal(signal.SIGINT)
    if not callable(handler):  # ignored, or the default (the process dies): nothing to hold
        yield
        return
    held: list[int] = []
    signal.signal(signal.SIGINT, lambda signum, frame: held.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, handler)
        if held:
            handler(signal.SIGINT, None)  # Python's default handler raises KeyboardInterrupt


def _atomic(path: Path, write: Callable[[IO[Any]], object], mode: str) -> None:
    with _interrupt_after():
        _write_atomic(path, write, mode)


def _write_atomic(path: Path, write: Callable[[IO[Any]], object], mode: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp creates 0600; give the file the mode open() would (0666 minus the umask), so a
        # TensorBoard server or a colleague can read the run directory like any other file.
        os.chmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_text(path: Path, text: str) -> None:
    _atomic(path, lambda f: f.write(text), "w")


def write_bytes(path: Path, data: bytes) -> None:
    _atomic(path, lambda f: f.write(data), "wb")


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, allow_nan=False) + "\n")


def torch_save(path: Path, obj: Any) -> None:
    import torch

    _atomic(path, lambda f: torch.save(obj, f), "wb")
