"""Running stages: prepare the run directory, run each stage from its seed, record its verdicts.

Called by nnrecipe.api.run (which the CLI calls); errors are typed (nnrecipe.errors) and
become exit codes in the CLI only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from nnrecipe.spec import Spec
from nnrecipe.stages import STAGE_NAMES, get_stage, load_runner
from nnrecipe.stages.base import StageContext, StageResult
from nnrecipe.verdict import print_verdicts


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


def run_stages(
    *,
    spec: Spec,
    base: Path,
    spec_path: Optional[Path],
    stages: Sequence[str],
    console: Console,
    options: Optional[dict[str, Any]] = None,
    stop_on_fail: bool = True,
    show_tables: bool = True,
    progress_console: Optional[Console] = None,
) -> list[StageResult]:
    """Run the named stages in order; stop after a stage with a fail unless told to keep going.
    Messages and tables go to `console`, the progress bars to `progress_console` (default the
    same; a terminal's or a notebook's: elsewhere, e.g. a log file, there are none)."""
    from nnrecipe import distributed
    from nnrecipe.rundir import RunDir

    with contextlib.ExitStack() as stack:
        ranks = stack.enter_context(distributed.session(spec, resume=bool((options or {}).get("resume"))))
        if ranks is not None and not ranks.writes:  # torchrun: rank 0 alone writes and prints
            scratch = stack.enter_context(tempfile.TemporaryDirectory(prefix=f"nnrecipe-rank{ranks.rank}-"))
            spec = spec.model_copy(update={"output_dir": scratch})
            console = progress_console = Console(quiet=True)
            show_tables = False
        if ranks is not None:  # rank 0's run directory (best.yaml, summaries, a study) to every rank
            distributed.share_run_dir(ranks, RunDir.of(spec.output_dir, spec.name).root)
        return _run_in(
            spec,
            base=base,
            spec_path=spec_path,
            stages=stages,
            console=console,
            options=options,
            stop_on_fail=stop_on_fail,
            show_tables=show_tables,
            progress_console=progress_console or console,
        )


def _run_in(spec, *, base, spec_path, stages, console, options, stop_on_fail, show_tables, progress_console):
    """run_stages in spec's run directory, locked for the run."""
    from nnrecipe import distributed
    from nnrecipe.rundir import RunDir
    from nnrecipe.runtime import plan_workers, resolve_device

    runners = [(name, load_runner(get_stage(name))) for name in stages]
    device = resolve_device(spec.device)
    if (ranks := distributed.current()) is not None:
        device = distributed.device_for(ranks, device)
    workers = plan_workers(spec.workers, device, local=spec.executor == "local")
    run = RunDir.create(spec.output_dir, spec.name, stage_order=STAGE_NAMES)
    run.lock()
    threads = torch.get_num_threads()
    if spec.executor == "local" and workers.count > 1:
        # this process trains too (the stages' single models, squeeze's student beside a worker):
        # the workers' share of the cores, and a CPU run's numbers as in a worker (same threads)
        torch.set_num_threads(workers.threads)
    from nnrecipe import threads as thread_choice

    if device.type == "cpu" and ranks is None:
        thread_choice.enable(most=torch.get_num_threads())  # measured at the first training
    from nnrecipe import painter

    # the stages' figures rendered beside the next stage's training, where this process trains alone
    painter.enable(ranks is None and not (spec.executor == "local" and workers.count > 1))
    try:
        return _run_locked(
            run,
            spec=spec,
            base=base,
            spec_path=spec_path,
            runners=runners,
            device=device,
            workers=workers,
            console=console,
            options=options,
            stop_on_fail=stop_on_fail,
            show_tables=show_tables,
            progress_console=progress_console,
        )
    finally:
        torch.set_num_threads(threads)
        thread_choice.enable(most=0)  # the next run in this process measures afresh
        painter.enable(False)
        run.unlock()


def _run_locked(
    run,
    *,
    spec,
    base,
    spec_path,
    runners,
    device,
    workers,
    console,
    options,
    stop_on_fail,
    show_tables,
    progress_console,
):
    from nnrecipe.runtime import device_description
    from nnrecipe.verdict import Status

    stages = [name for name, _ in runners]
    run.write_spec(spec.to_yaml())
    run.write_env(device=device_description(device), seed=spec.seed, spec_path=spec_path)
    console.print(f"[bold]nnrecipe[/] {spec.name}: run directory [cyan]{run.root}[/], {_where(spec, device, workers)}")

    ctx = StageContext(
        spec=spec,
        base=base,
        run=run,
        device=device,
        console=console,
        options=dict(options or {}),
        progress_console=progress_console,
        workers=workers,
    )
    if ctx.pool() is not None and any(get_stage(name).trains_many for name in stages):
        ctx.pool().warm(spec)  # the workers start and load the data while the first stages run here
    from nnrecipe import painter

    results: list[StageResult] = []
    interrupted = True  # until the loop below ends on its own
    try:
        for name, runner in runners:
            result = _run_stage(ctx, name, runner)
            run.record(name, result.verdicts, result.summary)
            results.append(result)
            if show_tables:
                print_verdicts(console, result.verdicts, title=f"{name} — {get_stage(name).recipe}")
            if stop_on_fail and any(v.status is Status.FAIL for v in result.verdicts) and name != stages[-1]:
                console.print(f"[bold red]stopping after {name}[/]: it has a fail (use --keep-going to continue)")
                break
        interrupted = False
    finally:
        try:
            try:
                painter.flush()  # every stage's PNGs, before the reports and their TensorBoard text list them
            except Exception:
                if not interrupted:
                    raise
                # a stage's own error or Ctrl-C is on its way: that is the one to say
            for result in results:
                ctx.writer(result.stage).add_text("verdicts", run.render_report(result.verdicts))
        finally:
            ctx.close(interrupted=interrupted)
    run.write_reports(run.read_verdicts())  # report.html embeds every picture: written once, at the end
    console.print(
        f"report: {run.root / 'report.md'} · {run.root / 'report.html'} · "
        f"TensorBoard: tensorboard --logdir {run.root / 'tb'}"
    )
    return results


def _where(spec, device, workers) -> str:
    """Where the run trains, for its first line: the device, and torchrun, Ray or the workers."""
    from nnrecipe import distributed
    from nnrecipe.runtime import device_description

    where = f"device {device_description(device)}"
    if (ranks := distributed.current()) is not None:
        where += f", torchrun: {ranks.world} processes train each model (DistributedDataParallel)"
    if spec.executor != "local":
        where += f", experiments as Ray tasks ({spec.executor})"
    elif workers.count > 1:
        where += (
            f", {workers.count} workers ({', '.join(sorted(set(workers.devices)))}, {workers.threads} threads each)"
        )
    return where


def _run_stage(ctx: StageContext, name: str, runner) -> StageResult:
    """One stage from its seed, in a fresh stage folder; the warnings the user's code raised in
    it become a verdict; Ctrl-C leaves a valid record that says what happened (exit 130)."""
    import time

    import torch

    from nnrecipe.checks.plugin_checks import user_warnings as warnings_verdict
    from nnrecipe.errors import DeviceError
    from nnrecipe.ledger import Ledger
    from nnrecipe.plugins import user_warnings
    from nnrecipe.runtime import device_description, seed_everything
    from nnrecipe.verdict import Status, Verdict

    spec, run = ctx.spec, ctx.run
    seed_everything(spec.seed, deterministic=spec.train.deterministic)  # each stage starts from the seed
    # --resume keeps what an interrupted run of the stage finished (checkpoints, squeeze's members)
    keep = get_stage(name).keep + (("members", "checkpoints") if ctx.options.get("resume") else ())
    run.reset_stage(name, keep=keep)
    run.stage_dir(name).mkdir(parents=True, exist_ok=True)
    shown = ctx.progress_console or ctx.console
    progress = _progress(shown)
    ctx.progress = progress
    started = time.monotonic()
    ctx.ledger = Ledger()
    try:
        with progress if shown.is_terminal or shown.is_jupyter else contextlib.nullcontext(), user_warnings() as caught:
            result = runner(spec, ctx)
    except KeyboardInterrupt:
        took = time.monotonic() - started
        run.record(
            name,
            [
                Verdict(
                    name,
                    "interrupted",
                    Status.SKIP,
                    observed={"after_seconds": round(took, 1)},
                    message=f"interrupted (Ctrl-C) after {took:.0f} s: no verdicts for this stage",
                    hint="run the stage again" + (" with --resume" if name == "squeeze" else ""),
                )
            ],
            {"interrupted": True, "after_seconds": round(took, 1)},
        )
        raise
    except torch.OutOfMemoryError:
        raise DeviceError(
            f"out of memory on {device_description(ctx.device)} in the {name} stage: lower "
            f"data.batch_size (now {spec.data.batch_size}) or the model's size"
        ) from None
    ctx.progress = None
    from nnrecipe import threads

    if line := threads.note():  # the thread count the stage's first training measured and chose
        ctx.console.print(f"[dim]{name}: {line}[/dim]")
    if (said := warnings_verdict(name, caught)) is not None:  # what the user's code warned about
        result = dataclasses.replace(result, verdicts=[*result.verdicts, said])
    # wall-clock seconds of the stage, and which process trained what when, so a run directory
    # says where its time went
    result.summary["seconds"] = round(time.monotonic() - started, 1)
    ledger, ctx.ledger = ctx.ledger, None
    try:
        if (trained := ledger.write(ctx, name)) is not None:
            result.summary["timeline"] = trained
    except Exception as exc:  # the stage's verdicts stand without their timeline: said, not lost
        ctx.console.print(f"[yellow]{name}: its timeline was not written ({type(exc).__name__}: {exc})[/yellow]")
    return result
