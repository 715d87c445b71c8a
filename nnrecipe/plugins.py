"""Loading and calling the user's code named in the spec as `file.py:function` or `package.module:function`.

A relative file path resolves against the spec's folder. Every failure becomes a
PluginError that names the spec field and the function, in one line.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import importlib.util
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, NoReturn, Optional

# The (field, code) of each call into the user's code now running, innermost last: a warning
# raised while it is not empty came from the user's code (or what it called).
_RUNNING: list[tuple[str, str]] = []


def _is_file_ref(module_part: str) -> bool:
    return module_part.endswith(".py") or "/" in module_part or "\\" in module_part


def load_factory(ref: str, *, base: Path, field: str) -> Callable[..., Any]:
    from nnrecipe.errors import PluginError

    module_part, _, func_name = ref.rpartition(":")
    if not module_part or not func_name:
        raise PluginError(f"{field}: {ref!r} is not file.py:function or package.module:function")
    if _is_file_ref(module_part):
        path = Path(module_part).expanduser()
        path = path if path.is_absolute() else base / path
        if not path.is_file():
            raise PluginError(f"{field}: {path} not found")
        # A unique module name per file, so two plugins named data.py do not collide.
        mod_name = f"nnrecipe_plugin_{abs(hash(str(path.resolve())))}"
        spec = importlib.util.spec_from_file_location(mod_name, path)
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        sys.path.insert(0, str(path.parent))  # let the plugin import its sibling files
        _RUNNING.append((field, f"importing {path.name}"))
        try:
            spec.loader.exec_module(module)  # type: ignore[union-attr]
        except BaseException as exc:
            if user_error(exc, field, "") is exc:
                raise
            raise PluginError(f"{field}: importing {path} failed: {_one_line(exc)}") from exc
        finally:
            _RUNNING.pop()
            sys.path.remove(str(path.parent))
        where = str(path)
    else:
        try:
            module = importlib.import_module(module_part)
        except ModuleNotFoundError as exc:
            raise PluginError(f"{field}: module {module_part!r} not found ({exc.name})") from exc
        except BaseException as exc:
            if user_error(exc, field, "") is exc:
                raise
            raise PluginError(f"{field}: importing {module_part!r} failed: {_one_line(exc)}") from exc
        where = module_part
    fn = getattr(module, func_name, None)
    if fn is None and module_part == "nnrecipe.objects":
        from nnrecipe.objects import gone_message

        raise PluginError(gone_message(field, ref))
    if fn is None:
        raise PluginError(f"{field}: {where} has no function {func_name!r}")
    if not callable(fn):
        raise PluginError(f"{field}: {where}:{func_name} is not callable")
    return fn


def call_factory(fn: Callable[..., Any], *args: Any, field: str, ref: str, **kwargs: Any) -> Any:
    """Call user code; anything it raises becomes one line naming the field and the function."""
    with user_code(field, ref):
        return fn(*args, **kwargs)


@contextlib.contextmanager
def user_code(field: str, what: str) -> Iterator[None]:
    """The one guard around a call into the user's code (factories, forward, the loss, the
    augmentation, the schedule, a Dataset): anything it raises, SystemExit included, becomes
    one line naming the spec field and the code (exit 2). nnrecipe's own errors, Ctrl-C and a
    device out of memory (which the stage runner turns into advice) pass through."""
    _RUNNING.append((field, what))
    try:
        yield
    except BaseException as exc:
        reraise(exc, field, what)
    finally:
        _RUNNING.pop()


def user_error(exc: BaseException, field: str, what: str) -> BaseException:
    """What the guard raises for `exc` from user code: a PluginError, or `exc` itself (raised
    again as it is) when it is not the user code's to answer for."""
    import torch

    from nnrecipe.errors import NNRecipeError, PluginError

    if isinstance(exc, (NNRecipeError, KeyboardInterrupt, GeneratorExit, torch.OutOfMemoryError)):
        return exc
    return PluginError(f"{field}: {what} raised {_one_line(exc)}")


def reraise(exc: BaseException, field: str, what: str) -> NoReturn:
    """Raise what the guard makes of `exc` (user_error): the field's one line, from `exc`."""
    err = user_error(exc, field, what)
    if err is exc:
        raise exc
    raise err from exc


def guard_module(model, *, field: str, ref: str, output=None, call=None):
    """The user's module, its forward run under the guard wherever nnrecipe calls it (the
    engine, every probe, copies of it): its class becomes a subclass whose forward catches,
    takes the prediction out of a structured output (`output`: model.output, see
    nnrecipe/outputs.py) and checks it: a floating-point tensor with a row per example, of the
    rank and width of its first output (the shape check at build time sees only the first
    call). Structured inputs arrive as one argument, model(x), from every caller in nnrecipe;
    the guard passes them on as the structure says: forward(*x) for a tuple, forward(**x) for a
    dict, or as `call` (model.call) says (nnrecipe/inputs.py). Weights, state_dict keys and the
    class's name are unchanged."""
    from nnrecipe import inputs
    from nnrecipe.outputs import prediction

    model.__dict__["_nnrecipe_output_key"] = output  # per instance; deep copies keep it
    model.__dict__["_nnrecipe_call"] = call
    cls = type(model)
    if getattr(cls, "_nnrecipe_guarded", False):
        return model

    def forward(self, *args, **kwargs):
        _RUNNING.append((field, f"{ref}: forward"))
        try:
            if len(args) == 1 and not kwargs and inputs.structured(args[0]):
                out = inputs.call(functools.partial(cls.forward, self), args[0], self.__dict__.get("_nnrecipe_call"))
            else:
                out = cls.forward(self, *args, **kwargs)
        except BaseException as exc:
            reraise(exc, field, f"{ref}: forward")
        finally:
            _RUNNING.pop()
        out = prediction(out, self.__dict__.get("_nnrecipe_output_key"), field=field, ref=ref)
        _check_output(self, out, args, field, ref)
        return out

    guarded = type(
        cls.__name__,
        (cls,),
        {"forward": forward, "_nnrecipe_guarded": True, "__module__": cls.__module__, "__qualname__": cls.__qualname__},
    )
    try:
        model.__class__ = guarded
    except TypeError:  # a class that cannot be subclassed this way (e.g. TorchScript): unguarded
        pass
    return model


def own_class(model) -> Optional[type]:
    """The class the user wrote for `model` where the guard passes its inputs and outputs through
    as they are (one tensor in, its whole output out), so that its forward is that class's;
    None where the guard picks an output or spreads structured inputs."""
    cls = type(model)
    if not getattr(cls, "_nnrecipe_guarded", False):
        return cls
    if model.__dict__.get("_nnrecipe_output_key") is not None or model.__dict__.get("_nnrecipe_call") is not None:
        return None
    return cls.__mro__[1]


def _check_output(module, out, args, field: str, ref: str) -> None:
    import torch

    from nnrecipe.errors import PluginError

    if not isinstance(out, torch.Tensor) or not out.is_floating_point() or out.ndim < 2:
        got = (
            f"{str(out.dtype).removeprefix('torch.')} of shape {tuple(out.shape)}"
            if isinstance(out, torch.Tensor)
            else type(out).__name__
        )
        raise PluginError(f"{field}: {ref}: forward returned {got}; expected floating-point outputs, a row per example")
    from nnrecipe import inputs

    if not args:
        rows = None
    elif isinstance(args[0], torch.Tensor):  # the common case: no walk over a structure per forward
        rows = len(args[0])
    else:
        rows = inputs.batch_len(args[0]) if not inputs.problem(args[0]) else None
    if rows is not None and len(out) != rows:
        raise PluginError(f"{field}: {ref}: forward returned {len(out)} rows for a batch of {rows}")
    form = (out.ndim, out.shape[-1])
    first = module.__dict__.setdefault("_nnrecipe_output_form", form)
    if form != first:
        raise PluginError(
            f"{field}: {ref}: forward returned shape {tuple(out.shape)}; its first output had "
            f"{first[0]} dimensions and {first[1]} values per row"
        )


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{exc.__class__.__name__}: {text}" if text else exc.__class__.__name__


# ----------------------------------------------------------------------------- warnings


@dataclasses.dataclass(frozen=True)
class CaughtWarning:
    """A warning raised while the user's code ran."""

    field: str  # the spec field whose code was running (model.factory, loss.factory, ...)
    code: str  # the function, e.g. "model.py:net: forward"
    category: str  # e.g. "UserWarning"
    message: str
    origin: str  # file:line that raised it (for PyTorch's warnings: the line in the user's code that called it)


@contextlib.contextmanager
def user_warnings() -> Iterator[list[CaughtWarning]]:
    """Record the warnings raised inside user code (the guards above) while the block runs,
    instead of printing them: a verdict reports them. Each distinct warning is shown once per
    place, as Python's default filter does, and the filter state is fresh for the block (so a
    second run in one process sees its warnings again); the user's own filters still apply.
    Warnings outside user code are shown as usual. Not seen: DataLoader worker processes."""
    caught: list[CaughtWarning] = []
    with warnings.catch_warnings():
        warnings.simplefilter("default", append=True)  # also resets the once-per-place registries
        show = warnings.showwarning

        def record(message, category, filename, lineno, file=None, line=None):
            if not _RUNNING:
                return show(message, category, filename, lineno, file, line)
            field, code = _RUNNING[-1]
            caught.append(
                CaughtWarning(
                    field=field,
                    code=code,
                    category=category.__name__,
                    message=" ".join(str(message).split()),
                    origin=f"{filename}:{lineno}",
                )
            )

        warnings.showwarning = record
        _RECORDING.append(caught)
        try:
            yield caught
        finally:
            _RECORDING.remove(caught)


_RECORDING: list[list[CaughtWarning]] = []  # the lists user_warnings() is filling, innermost last


def add_caught(more: list[CaughtWarning]) -> None:
    """Warnings the user's code raised elsewhere (a worker process), into the recording here."""
    if _RECORDING:
        _RECORDING[-1].extend(more)
