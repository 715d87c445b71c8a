"""Which process trained each of a stage's experiments, and when: the stage's timeline.csv and
its picture (timeline.png), so a run directory says where its time went, on one machine or a
cluster (a slow node, workers left idle while a round waits on the one before).

Times are each process's wall clock (time.time(), seconds): on one machine one clock; across
machines as close as their clocks are kept (NTP). Experiments trained as one group share its
start and end. tune's trials come from its study, as the worker that ran each stamped them
(tune_worker.make_runner), whichever process or Ray task that was.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import socket
import time
from typing import Optional

from nnrecipe import atomic


@dataclasses.dataclass(frozen=True)
class Ran:
    """Where and when one group of experiments trained (a group of one: an experiment alone)."""

    host: str
    pid: int
    device: str
    start: float  # time.time() of that process, s
    end: float
    together: int = 1  # experiments trained as one in that group
    node: str = ""  # the Ray node's id (its first 8 hex digits) for a Ray task

    def where(self) -> str:
        """The process, as the timeline names it: here, a local worker, or a Ray node's worker (on a
        GPU, the node's GPU: Ray may start a process per GPU task)."""
        if self.node:
            return (
                f"ray {self.node} {self.device}"
                if self.device.startswith("cuda")
                else f"ray {self.node} pid {self.pid}"
            )
        if self.host == socket.gethostname() and self.pid == os.getpid():
            return "here"
        same_host = self.host == socket.gethostname()
        return f"worker pid {self.pid}" if same_host else f"{self.host} pid {self.pid}"


def record(ctx, name: str, ran: Ran, *, seed: Optional[int], steps: Optional[int]) -> None:
    """One training in the running stage's timeline, where its context keeps one (a stage's)."""
    if getattr(ctx, "ledger", None) is not None:
        ctx.ledger.add(name, ran, seed=seed, steps=steps)


def here(start: float, end: float, device, *, together: int = 1) -> Ran:
    """This process's record of a group it trained from `start` to `end` (time.time())."""
    return Ran(host=socket.gethostname(), pid=os.getpid(), device=str(device), start=start, end=end, together=together)


def since(start: float, device, *, together: int = 1) -> Ran:
    """This process's record of a group that started at `start` (time.time()) and ends now."""
    return here(start, time.time(), device, together=together)


@dataclasses.dataclass
class Ledger:
    """A stage's trained experiments in the order they arrived; `started`: the stage's start."""

    started: float = dataclasses.field(default_factory=time.time)
    rows: list[tuple[str, Optional[int], Optional[int], Ran]] = dataclasses.field(default_factory=list)

    def add(self, name: str, ran: Ran, *, seed: Optional[int], steps: Optional[int]) -> None:
        self.rows.append((name, seed, steps, ran))

    def spans(self) -> list[tuple[str, float, float, list[str]]]:
        """(process, start, end, experiments) of each stretch a process trained without a
        break: a group's experiments share one; so do the trials of one tune round, whose
        times Optuna keeps per trial (asked and told one by one, milliseconds apart)."""
        out: list[tuple[str, float, float, list[str]]] = []
        for name, _seed, _steps, r in sorted(self.rows, key=lambda row: (row[3].where(), row[3].start)):
            last = out[-1] if out else None
            # overlaps the stretch (or is a zero-length one at its very start)
            if last is not None and last[0] == r.where() and (r.start < last[2] or r.start == last[1]):
                out[-1] = (last[0], last[1], max(last[2], r.end), [*last[3], name])
            else:
                out.append((r.where(), r.start, r.end, [name]))
        return sorted(out, key=lambda s: s[1])

    def summary(self) -> Optional[dict]:
        """For the stage's summary.json: how many experiments, in how many processes, how many
        seconds the processes trained (added over them: a group, a round, counted once) in how
        many seconds of wall clock."""
        spans = self.spans()
        if not spans:
            return None
        return {
            "experiments": len(self.rows),
            "processes": len({w for w, *_ in spans}),
            "training_seconds": round(sum(e - s for _, s, e, _ in spans), 1),
            "span_seconds": round(max(e for _, _, e, _ in spans) - min(s for _, s, _, _ in spans), 1),
        }

    def write(self, ctx, stage: str) -> Optional[dict]:
        """timeline.csv and, for more than one experiment, timeline.png in the stage folder (the
        picture also in TensorBoard); the summary's numbers. Nothing when the stage trained nothing."""
        summary = self.summary()
        if summary is None:
            return None
        from nnrecipe.pictures.timeline import draw

        out = ctx.run.stage_dir(stage)
        atomic.write_text(out / "timeline.csv", self.csv())
        if summary["experiments"] > 1:  # one bar would say no more than the csv (~0.2 s a figure)
            draw(ctx, self, summary, stage=stage)
        return summary

    def csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(
            ["experiment", "seed", "steps", "process", "host", "pid", "device", "together", "start_s", "seconds"]
        )
        for name, seed, steps, r in self.rows:
            start = round(r.start - self.started, 2)
            w.writerow(
                [name, seed, steps, r.where(), r.host, r.pid, r.device, r.together, start, round(r.end - r.start, 2)]
            )
        return buf.getvalue()
