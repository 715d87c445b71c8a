"""Loading and calling the user's code named in the spec as `file.py:function` or `package.module:function`.

A relative file path resolves against the spec's folder. Every failure becomes a
PluginError that names the spec field and the function, in one line.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any, Callable


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
        try:
            spec.loader.exec_module(module)  # type: ignore[union-attr]
        except Exception as exc:
            raise PluginError(f"{field}: importing {path} failed: {_one_line(exc)}") from exc
        finally:
            sys.path.remove(str(path.parent))
        where = str(path)
    else:
        try:
            module = importlib.import_module(module_part)
        except ModuleNotFoundError as exc:
            raise PluginError(f"{field}: module {module_part!r} not found ({exc.name})") from exc
        except Exception as exc:
            raise PluginError(f"{field}: importing {module_part!r} failed: {_one_line(exc)}") from exc
        where = module_part
    fn = getattr(module, func_name, None)
    if fn is None:
        raise PluginError(f"{field}: {where} has no function {func_name!r}")
    if not callable(fn):
        raise PluginError(f"{field}: {where}:{func_name} is not callable")
    return fn


def call_factory(fn: Callable[..., Any], *args: Any, field: str, ref: str, **kwargs: Any) -> Any:
    """Call user code; anything it raises becomes one line naming the field and the function."""
    from nnrecipe.errors import NNRecipeError, PluginError

    try:
        return fn(*args, **kwargs)
    except NNRecipeError:
        raise
    except Exception as exc:
        raise PluginError(f"{field}: {ref} raised {_one_line(exc)}") from exc


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{exc.__class__.__name__}: {text}" if text else exc.__class__.__name__
