"""The command line: Typer only. Parse, call the library, map typed errors to exit codes.

Exit codes: 0 no fail · 1 at least one fail (--strict: a warn too) · 2 the spec, the data
or the command line is wrong (one line, no traceback unless NNRECIPE_DEBUG=1) ·
3 an internal error of nnrecipe itself · 130 interrupted.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Iterator, Optional

import typer
from rich.console import Console
from rich.table import Table

from nnrecipe.errors import NNRecipeError, SpecError

app = typer.Typer(
    name="nnrecipe",
    help="Karpathy's recipe for training neural networks, as experiments that say pass / warn / fail.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

ConfigOpt = Annotated[
    Optional[Path],
    typer.Option(
        "--config", "-c", help="Experiment spec (YAML). Default: the embedded digits spec.", show_default=False
    ),
]
OverridesArg = Annotated[
    Optional[list[str]], typer.Argument(help="key=value overrides of the spec, e.g. optim.lr=1e-3", show_default=False)
]
DeviceOpt = Annotated[
    Optional[str], typer.Option("--device", help="auto | cpu | cuda | cuda:N (overrides the spec)", show_default=False)
]
WorkersOpt = Annotated[
    Optional[str],
    typer.Option(
        "--workers",
        help="Processes that train a stage's independent experiments side by side: N, or auto (one per GPU, else per core)",
        show_default=False,
    ),
]
ExecutorOpt = Annotated[
    Optional[str],
    typer.Option(
        "--executor",
        help="Where --workers' experiments run: local, ray (a Ray started here) or ray://HOST:PORT (a Ray cluster)",
        show_default=False,
    ),
]
NprocOpt = Annotated[
    Optional[int],
    typer.Option(
        "--nproc",
        help="Train each model on N processes together (launches torchrun: one GPU each, or gloo on a CPU)",
        show_default=False,
    ),
]
OutputOpt = Annotated[
    Optional[Path],
    typer.Option("--output-dir", help="Parent of the run directory (overrides the spec)", show_default=False),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the verdicts as JSON on stdout (tables go to stderr)")]
StrictOpt = Annotated[bool, typer.Option("--strict", help="Exit 1 on a warn too, not only on a fail")]
JunitOpt = Annotated[
    Optional[Path],
    typer.Option(
        "--junit",
        help="Also write the verdicts as JUnit XML to this file (a testcase per check, failures for fails; warns too with --strict)",
        show_default=False,
    ),
]
ResumeOpt = Annotated[
    bool,
    typer.Option(
        "--resume", help="Continue an interrupted run from its checkpoints (overfit's model, squeeze's members)"
    ),
]


def _debug() -> bool:
    return os.environ.get("NNRECIPE_DEBUG", "") not in ("", "0")


@contextlib.contextmanager
def _exit_codes() -> Iterator[None]:
    """The one place where errors become exit codes and one-line messages."""
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    try:
        yield
    except typer.Exit:
        raise
    except NNRecipeError as exc:
        if _debug():
            raise
        err.out(f"error: {exc}")
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        err.out("interrupted")
        raise typer.Exit(130) from None
    except Exception as exc:  # a bug in nnrecipe: say so in one line, keep the traceback for NNRECIPE_DEBUG=1
        if _debug():
            raise
        err.out(
            f"internal error: {exc.__class__.__name__}: {' '.join(str(exc).split())} (set NNRECIPE_DEBUG=1 for the traceback)"
        )
        raise typer.Exit(3) from None


def _workers(text: Optional[str]):
    """--workers as the spec takes it: a whole number, or auto (the spec judges the value)."""
    if text is None or text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise SpecError(f"--workers: {text!r} is not a whole number or auto") from None


def _console(json_out: bool) -> Console:
    # With --json, stdout carries only the JSON; everything for humans goes to stderr.
    return Console(stderr=json_out, highlight=False)


def _run(
    stages: list[str],
    *,
    config,
    overrides,
    device,
    output_dir,
    json_out,
    workers: Optional[str] = None,
    executor: Optional[str] = None,
    nproc: Optional[int] = None,
    strict,
    options=None,
    stop_on_fail=True,
    junit: Optional[Path] = None,
):
    """The library's nnrecipe.run, then the verdicts as the command line gives them."""
    from nnrecipe import distributed
    from nnrecipe.api import run
    from nnrecipe.verdict import verdicts_json

    if nproc is not None:
        return _launch(nproc), None
    opts = options or {}
    result = run(
        config,
        stages=stages,
        overrides=list(overrides or []),
        device=device,
        workers=_workers(workers),
        executor=executor,
        output_dir=output_dir,
        keep_going=not stop_on_fail,
        resume=bool(opts.get("resume")),
        lr_range=bool(opts.get("lr_range")),
        trained=opts.get("model"),
        quiet=False,
        console=_console(json_out),
    )
    ranks = distributed.from_env()
    if ranks is not None and not ranks.writes:  # torchrun: rank 0 alone writes and prints
        return result.exit_code(strict=strict), result
    if junit is not None:
        from nnrecipe.junit import write_junit

        write_junit(junit, result.verdicts, name=result.name, strict=strict)
    if json_out:
        sys.stdout.write(verdicts_json(result.verdicts) + "\n")
        sys.stdout.flush()
    return result.exit_code(strict=strict), result


@app.command("inspect-data")
def inspect_data(
    overrides: OverridesArg = None,
    config: ConfigOpt = None,
    device: DeviceOpt = None,
    workers: WorkersOpt = None,
    executor: ExecutorOpt = None,
    nproc: NprocOpt = None,
    output_dir: OutputOpt = None,
    json_out: JsonOpt = False,
    strict: StrictOpt = False,
    junit: JunitOpt = None,
    sort_by: Annotated[
        Optional[str],
        typer.Option(
            "--sort-by",
            help="Show examples sorted by this column of examples.csv (z_* by distance from the bulk), largest first",
        ),
    ] = None,
    class_filter: Annotated[
        Optional[str], typer.Option("--class", help="Show only examples of this class (index or name)")
    ] = None,
    split: Annotated[Optional[str], typer.Option("--split", help="Show only examples of this split")] = None,
    limit: Annotated[
        Optional[int], typer.Option("--limit", min=1, help="Rows to show (default 20 when a filter or sort is given)")
    ] = None,
    ascending: Annotated[bool, typer.Option("--ascending", help="Sort smallest first")] = False,
    model: Annotated[
        Optional[Path],
        typer.Option(
            "--model",
            help="A run directory with a trained model (regularize or overfit): add what it gets wrong on this data and whether it still scores what it did",
        ),
    ] = None,
) -> None:
    """Stage 1 — become one with the data: splits, labels, duplicates, leakage, balance, scale, outliers."""
    with _exit_codes():
        if sort_by is not None:  # check the column before any work
            from nnrecipe.stages.inspect_data import COLUMNS

            if sort_by not in COLUMNS:
                raise NNRecipeError(f"--sort-by: unknown column {sort_by!r}; one of {', '.join(COLUMNS)}")
        code, result = _run(
            ["inspect-data"],
            config=config,
            overrides=overrides,
            device=device,
            workers=workers,
            executor=executor,
            nproc=nproc,
            output_dir=output_dir,
            json_out=json_out,
            strict=strict,
            junit=junit,
            options={"model": str(model) if model else None},
        )
        if any(x is not None for x in (sort_by, class_filter, limit, split)):
            from nnrecipe.stages.inspect_data import CSV_NAME, examples_table

            path = result.run_dir / "inspect-data" / CSV_NAME
            cols, rows = examples_table(
                path, sort_by=sort_by, class_filter=class_filter, limit=limit or 20, ascending=ascending, split=split
            )
            table = Table(title=f"examples ({path})")
            for c in cols:
                table.add_column(c, no_wrap=True)
            for r in rows:
                table.add_row(*r)
            _console(json_out).print(table)
        raise typer.Exit(code)


def _stage_command(name: str, doc: str):
    def command(
        overrides: OverridesArg = None,
        config: ConfigOpt = None,
        device: DeviceOpt = None,
        workers: WorkersOpt = None,
        executor: ExecutorOpt = None,
        nproc: NprocOpt = None,
        output_dir: OutputOpt = None,
        json_out: JsonOpt = False,
        strict: StrictOpt = False,
        junit: JunitOpt = None,
    ) -> None:
        with _exit_codes():
            code, _ = _run(
                [name],
                config=config,
                overrides=overrides,
                device=device,
                workers=workers,
                executor=executor,
                nproc=nproc,
                output_dir=output_dir,
                json_out=json_out,
                strict=strict,
                junit=junit,
            )
            raise typer.Exit(code)

    command.__doc__ = doc
    return command


@app.command("overfit")
def overfit(
    overrides: OverridesArg = None,
    config: ConfigOpt = None,
    device: DeviceOpt = None,
    workers: WorkersOpt = None,
    executor: ExecutorOpt = None,
    nproc: NprocOpt = None,
    output_dir: OutputOpt = None,
    json_out: JsonOpt = False,
    strict: StrictOpt = False,
    junit: JunitOpt = None,
    lr_range: Annotated[bool, typer.Option("--lr-range", help="Also run an LR range test and suggest an LR")] = False,
    resume: ResumeOpt = False,
) -> None:
    """Stage 3 — a model large enough to fit the training set; the LR actually applied, audited."""
    with _exit_codes():
        code, _ = _run(
            ["overfit"],
            config=config,
            overrides=overrides,
            device=device,
            workers=workers,
            executor=executor,
            nproc=nproc,
            output_dir=output_dir,
            json_out=json_out,
            strict=strict,
            junit=junit,
            options={"lr_range": lr_range, "resume": resume},
        )
        raise typer.Exit(code)


for _name, _doc in (
    ("baseline", "Stage 2 — end-to-end skeleton + dumb baselines."),
    ("regularize", "Stage 4 — give up some training loss for validation loss, one knob at a time."),
):
    app.command(_name)(_stage_command(_name, _doc))


@app.command("tune")
def tune(
    overrides: OverridesArg = None,
    config: ConfigOpt = None,
    device: DeviceOpt = None,
    workers: WorkersOpt = None,
    executor: ExecutorOpt = None,
    nproc: NprocOpt = None,
    output_dir: OutputOpt = None,
    json_out: JsonOpt = False,
    strict: StrictOpt = False,
    junit: JunitOpt = None,
    storage: Annotated[
        Optional[str],
        typer.Option(
            "--storage",
            envvar="NNRECIPE_TUNE_STORAGE",
            help="Study storage shared by machines, e.g. postgresql://user@host/db (stages.tune.storage); default: a journal in the run directory",
            show_default=False,
        ),
    ] = None,
    study: Annotated[
        Optional[str],
        typer.Option(
            "--study",
            help="Study name; machines running the same one share it (stages.tune.study; default: the spec's name)",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Stage 5 — random search over hyperparameters (Optuna), on one machine or many."""
    with _exit_codes():
        extra = list(overrides or [])
        for key, value in (("storage", storage), ("study", study)):
            if value is not None:
                extra.append(f"stages.tune.{key}={json.dumps(value)}")  # JSON is YAML: the value stays a string
        code, _ = _run(
            ["tune"],
            config=config,
            overrides=extra,
            device=device,
            workers=workers,
            executor=executor,
            nproc=nproc,
            output_dir=output_dir,
            json_out=json_out,
            strict=strict,
            junit=junit,
        )
        raise typer.Exit(code)


@app.command("squeeze")
def squeeze(
    overrides: OverridesArg = None,
    config: ConfigOpt = None,
    device: DeviceOpt = None,
    workers: WorkersOpt = None,
    executor: ExecutorOpt = None,
    nproc: NprocOpt = None,
    output_dir: OutputOpt = None,
    json_out: JsonOpt = False,
    strict: StrictOpt = False,
    junit: JunitOpt = None,
    resume: ResumeOpt = False,
) -> None:
    """Stage 6 — ensembles, distillation, leave it training."""
    with _exit_codes():
        code, _ = _run(
            ["squeeze"],
            config=config,
            overrides=overrides,
            device=device,
            workers=workers,
            executor=executor,
            nproc=nproc,
            output_dir=output_dir,
            json_out=json_out,
            strict=strict,
            junit=junit,
            options={"resume": resume},
        )
        raise typer.Exit(code)


@app.command("run")
def run_all(
    overrides: OverridesArg = None,
    config: ConfigOpt = None,
    device: DeviceOpt = None,
    workers: WorkersOpt = None,
    executor: ExecutorOpt = None,
    nproc: NprocOpt = None,
    output_dir: OutputOpt = None,
    json_out: JsonOpt = False,
    strict: StrictOpt = False,
    junit: JunitOpt = None,
    keep_going: Annotated[
        bool, typer.Option("--keep-going", help="Run later stages after a stage with a fail")
    ] = False,
    resume: ResumeOpt = False,
    first: Annotated[
        Optional[str],
        typer.Option(
            "--from",
            help="Start at this stage (earlier ones' results are read from the run directory)",
            show_default=False,
        ),
    ] = None,
    last: Annotated[Optional[str], typer.Option("--to", help="Stop after this stage", show_default=False)] = None,
) -> None:
    """The whole recipe: every stage in order, stopping at the first stage with a fail."""
    with _exit_codes():
        from nnrecipe.api import stage_range

        code, _ = _run(
            stage_range(first=first, last=last, flags=("--from", "--to")),
            config=config,
            overrides=overrides,
            device=device,
            workers=workers,
            executor=executor,
            nproc=nproc,
            output_dir=output_dir,
            json_out=json_out,
            strict=strict,
            junit=junit,
            stop_on_fail=not keep_going,
            options={"resume": resume},
        )
        raise typer.Exit(code)


@app.command("report")
def report_cmd(
    run_dir: Annotated[Path, typer.Argument(help="A run directory (runs/<name>)", show_default=False)],
    strict: StrictOpt = False,
    junit: JunitOpt = None,
) -> None:
    """The run's story: every verdict with observed vs. expected and what to do; writes report.md and report.html."""
    with _exit_codes():
        from nnrecipe import report
        from nnrecipe.errors import RunDirError
        from nnrecipe.rundir import RunDir
        from nnrecipe.stages import STAGE_NAMES
        from nnrecipe.verdict import exit_code

        if not (run_dir / "verdicts.json").is_file():
            raise RunDirError(f"{run_dir}: no verdicts.json here; give a run directory such as runs/<name>")
        verdicts = RunDir(run_dir, stage_order=STAGE_NAMES).read_verdicts()
        console = Console(highlight=False)
        report.story(console, run_dir, verdicts, STAGE_NAMES)
        md, page = report.write(run_dir, verdicts, STAGE_NAMES)
        if junit is not None:
            from nnrecipe.junit import write_junit

            write_junit(junit, verdicts, name=run_dir.name, strict=strict)
        console.print(f"report: {md} · {page}")
        raise typer.Exit(exit_code(verdicts, strict=strict))


@app.command("init")
def init(
    folder: Annotated[Path, typer.Argument(help="Where to put nnrecipe.yaml, data.py and model.py")] = Path("."),
    name: Annotated[
        Optional[str],
        typer.Option(
            "--name",
            help="The experiment's name (its run directory: runs/<name>); default: the folder's name",
            show_default=False,
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite existing files")] = False,
) -> None:
    """Start your own project: a spec plus data.py / model.py templates that run as they are (synthetic images)."""
    with _exit_codes():
        import re

        from nnrecipe.scaffold import init_project

        default = re.sub(r"[^A-Za-z0-9_.-]+", "-", folder.resolve().name).strip("-.") or "my-experiment"
        written = init_project(folder, name=name or default, force=force)
        console = Console(highlight=False)
        for path in written:
            console.print(f"wrote {path}")
        console.print(f"next: nnrecipe run --config {folder / 'nnrecipe.yaml'}   (then edit data.py and model.py)")


@app.command("validate")
def validate(
    overrides: OverridesArg = None,
    config: ConfigOpt = None,
    device: DeviceOpt = None,
    output_dir: OutputOpt = None,
    data: Annotated[
        bool,
        typer.Option("--data/--no-data", help="Also load the data and pass one batch through the model and the loss"),
    ] = True,
) -> None:
    """Print the resolved spec, or every error in it (exit 2): the schema, the files and functions it names, and (--data) one batch through the model."""
    with _exit_codes():
        from nnrecipe.api import resolve_spec, spec_overrides

        try:
            spec, base, _ = resolve_spec(config, spec_overrides(overrides, device=device, output_dir=output_dir))
        except SpecError as exc:
            err = Console(stderr=True, highlight=False)
            where = str(config) if config else "spec"
            for line in exc.errors:
                err.out(f"{where}: {line}" if not line.startswith(where) else line)
            raise typer.Exit(2) from None
        from nnrecipe.validation import check_one_batch, check_references

        problems = check_references(spec, base)  # plugin functions and data files exist
        if data and not problems:
            problems = check_one_batch(spec, base)  # what the first stage would meet
        if problems:
            err = Console(stderr=True, highlight=False)
            for line in problems:
                err.out(f"error: {line}")
            raise typer.Exit(2)
        sys.stdout.write(spec.to_yaml())
        raise typer.Exit(0)


def _launch(nproc: int) -> int:
    """This command again under torchrun with `nproc` processes (--nproc dropped); its exit code
    is rank 0's, which every rank that finished the run writes to NNRECIPE_EXIT_DIR."""
    import signal
    import subprocess
    import tempfile

    if nproc < 1:
        raise NNRecipeError(f"--nproc: {nproc} processes; give 1 or more")
    argv, skip = [], False
    for arg in sys.argv[1:]:
        if skip or arg == "--nproc" or arg.startswith("--nproc="):
            skip = arg == "--nproc" and not skip
            continue
        argv.append(arg)
    with tempfile.TemporaryDirectory(prefix="nnrecipe-torchrun-") as exits:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
        proc = subprocess.Popen([*cmd, "-m", "nnrecipe.cli", *argv], env={**os.environ, "NNRECIPE_EXIT_DIR": exits})
        try:
            proc.wait()
        except KeyboardInterrupt:  # torchrun stops its ranks on SIGINT: let it, then say so
            proc.send_signal(signal.SIGINT)
            proc.wait()
            raise
        said = Path(exits) / "rank0"
        return int(said.read_text()) if said.exists() else (proc.returncode or 3)


def main() -> None:
    exits = os.environ.get("NNRECIPE_EXIT_DIR")
    if not exits:  # the usual case
        _app()
        return
    try:  # a rank started by --nproc: its exit code goes to a file for the launcher
        _app()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    with contextlib.suppress(OSError):  # the launcher gone (its folder with it): nothing to tell
        Path(exits, f"rank{os.environ.get('RANK', '0')}").write_text(str(code))
    # 0 and 1 are verdicts (every rank finished the run): exiting 1 would make torchrun report a
    # crash. An error exits with its code, so that torchrun stops the other ranks at once.
    sys.exit(0 if code in (0, 1) else code)


def _app() -> None:
    """The CLI; a KeyboardInterrupt that escapes it is a second Ctrl-C (or a pending one) raised
    while the first one's "interrupted" exit ran: still exit 130, not death by SIGINT (seen once
    in CI under load: exit -2 after "interrupted")."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
