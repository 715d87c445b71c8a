"""Figures rendered in a second process (nnrecipe/painter.py): the same PNG bytes and
TensorBoard image as rendered here, written when flushed; a figure that does not pickle is
rendered here; a rendering error is raised at the flush, not lost."""

from __future__ import annotations

import io
import os
import threading

import numpy as np
import pytest

from nnrecipe import painter, pictures


def _figure(title: str = "val loss by step"):
    fig = pictures.new_figure(6, 3)
    ax = fig.subplots()
    ax.plot(np.arange(50), np.cos(np.arange(50) / 5.0), label="run 0")
    ax.set(title=title, xlabel="step")
    ax.legend()
    return fig


@pytest.fixture
def painting():
    painter.enable()
    yield
    painter.enable(False)


def test_a_figure_rendered_in_the_painter_is_the_png_rendered_here(tmp_path, painting):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter

    here = io.BytesIO()
    _figure().savefig(here, format="png")
    writer = SummaryWriter(str(tmp_path / "tb"))
    path = pictures.save_figure(_figure(), tmp_path / "curve.png", writer=writer, tag="curve")
    assert painter._State.pool is not None  # handed to the painter
    pids = {p.pid for p in painter._State.pool._processes.values()}  # type: ignore[union-attr]
    assert pids and os.getpid() not in pids
    painter.flush()
    writer.close()
    assert path.read_bytes() == here.getvalue()
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert events.Tags()["images"] == ["curve"]


def test_a_figure_that_does_not_pickle_is_rendered_here(tmp_path, painting):
    fig = _figure()
    fig.lock = threading.Lock()  # a lock does not pickle
    assert not painter.submit(fig, tmp_path / "x.png")
    path = pictures.save_figure(fig, tmp_path / "locked.png")
    assert path.stat().st_size > 1000  # written at once, without a flush


def test_a_rendering_error_is_raised_at_the_flush(tmp_path, painting):
    pictures.save_figure(_figure(title=r"$\frac{1}$"), tmp_path / "bad.png")  # bad mathtext fails at draw
    with pytest.raises(ValueError):
        painter.flush()
    assert not (tmp_path / "bad.png").exists()


def test_without_the_painter_a_figure_is_written_at_once(tmp_path):
    assert not painter.submit(_figure(), tmp_path / "x.png")  # not enabled: nothing is handed over
    path = pictures.save_figure(_figure(), tmp_path / "now.png")
    assert path.stat().st_size > 1000 and not painter._State.pending


def _painter_pids() -> set[int]:
    assert painter._State.pool is not None
    return {p.pid for p in painter._State.pool._processes.values()}  # type: ignore[union-attr]


def test_the_next_run_in_this_process_renders_in_the_same_painter_and_a_dead_one_is_replaced(tmp_path):
    """A notebook's or a test suite's second run does not spawn another painter; one killed
    between runs is replaced at the next figure, and that figure is still written."""
    import signal

    painter.close()
    pids = []
    try:
        for run in range(2):
            painter.enable()
            pictures.save_figure(_figure(), tmp_path / f"run{run}.png")
            pids.append(_painter_pids())
            painter.enable(False)  # the run's end: written, the process kept
            assert (tmp_path / f"run{run}.png").stat().st_size > 1000
        assert pids[0] == pids[1] and len(pids[0]) == 1
        os.kill(next(iter(pids[1])), signal.SIGKILL)
        painter.enable()
        for _ in range(100):  # the executor's thread notices its process died within a few ms
            if getattr(painter._State.pool, "_broken", False):
                break
            threading.Event().wait(0.05)
        pictures.save_figure(_figure(), tmp_path / "after.png")
        painter.enable(False)
        assert (tmp_path / "after.png").stat().st_size > 1000 and _painter_pids().isdisjoint(pids[1])
    finally:
        painter.close()
