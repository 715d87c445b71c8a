"""No credential in any file nnrecipe writes, nor on a worker's command line.

A run directory is what people zip, attach to issues and commit, so every URL nnrecipe records
(the spec files, env.json's argv, summaries, messages) passes through `redact` first: the user
and host stay readable, the password becomes `***`, as SQLAlchemy's
`URL.render_as_string(hide_password=True)` writes it. The password itself lives only where the
user keeps it, and `storage_url` finds it again when a recorded spec is run once more:

1. `NNRECIPE_TUNE_STORAGE`, the whole URL (tune's workers get it this way, never in argv);
2. `PGPASSWORD`, or a password file (`PGPASSFILE`, `~/.pgpass`): libpq reads these itself
   when the URL names no password, so the URL goes on without one.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Mapping, Optional

from nnrecipe.errors import NNRecipeError

MASK = "***"
ENV_STORAGE = "NNRECIPE_TUNE_STORAGE"

# scheme://user:password@ (the password may hold anything but '@', '/' and white space; an
# '@' inside a password must be %-encoded in a URL anyway).
_USERINFO = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@]*):(?P<pw>[^\s@/]*)@")
# ...?password=...&  (libpq's and SQLAlchemy's query form of the same secret)
_QUERY = re.compile(r"(?P<head>[?&](?:password|passwd|pwd)=)(?P<pw>[^&\s#]*)", re.IGNORECASE)


class MissingPassword(NNRecipeError):
    """A recorded storage URL whose password was redacted, and no place holds it."""


def redact(text: str) -> str:
    """`text` with the password of every URL in it replaced by `***` (user and host kept)."""
    text = _USERINFO.sub(lambda m: f"{m['head']}:{MASK}@" if m["pw"] else m[0], text)
    return _QUERY.sub(lambda m: m["head"] + MASK, text)


def redact_tree(value: Any) -> Any:
    """`redact` on every string of nested dicts, lists and tuples (a spec's dump, an argv)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {k: redact_tree(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact_tree(v) for v in value)
    return value


def is_redacted(url: str) -> bool:
    """Whether `url` carries the mask where its password was (written by `redact`)."""
    return any(m["pw"] == MASK for pattern in (_USERINFO, _QUERY) for m in pattern.finditer(url))


def storage_url(url: str, *, environ: Optional[Mapping[str, str]] = None) -> str:
    """The URL to connect with: `url` itself unless its password was redacted (a spec read back
    from a run directory), then from where the user keeps it (see the module docstring)."""
    env = os.environ if environ is None else environ
    if not is_redacted(url):
        return url
    whole = env.get(ENV_STORAGE, "")
    if whole and redact(whole) == url:
        return whole
    if env.get("PGPASSWORD") or _password_file(env) is not None:
        return _without_password(url)
    raise MissingPassword(
        f"stages.tune.storage {url}: the password is never kept in the run directory; give the URL again with "
        f"--storage or {ENV_STORAGE}, or put the password in PGPASSWORD or ~/.pgpass"
    )


def _password_file(env: Mapping[str, str]) -> Optional[Path]:
    path = Path(env["PGPASSFILE"]) if env.get("PGPASSFILE") else Path(env.get("HOME", "~")).expanduser() / ".pgpass"
    return path if path.is_file() else None


def _without_password(url: str) -> str:
    url = _USERINFO.sub(lambda m: m["head"] + "@", url)
    base, sep, query = url.partition("?")
    kept = [p for p in query.split("&") if not re.match(r"(?:password|passwd|pwd)=", p, re.IGNORECASE)]
    return base + (sep + "&".join(kept) if any(kept) else "")
