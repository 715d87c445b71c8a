"""A small on-disk cache for data that is expensive to generate (never for downloads).

Location: $NNRECIPE_CACHE, else ~/.cache/nnrecipe. Entries are written atomically, so a
killed run leaves either the old entry or none.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np


def cache_dir() -> Path:
    return Path(os.environ.get("NNRECIPE_CACHE") or Path.home() / ".cache" / "nnrecipe")


def cached_arrays(kind: str, key: dict[str, Any], make: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir() / f"{kind}-{digest}.npz"
    if path.exists():
        try:
            with np.load(path) as f:
                return {k: f[k] for k in f.files}
        except (OSError, ValueError, EOFError):
            pass  # a damaged entry is regenerated below
    arrays = make()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
        # allow_pickle=True is the default, named so that no array can take its place
        np.savez(tmp, allow_pickle=True, **arrays)
        os.replace(tmp, path)
    except OSError:
        pass  # an unwritable cache only costs time
    return arrays
