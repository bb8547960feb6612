"""Small file helpers shared by the package."""

from __future__ import annotations

import os
import tempfile

import numpy as np


def savez_atomic(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    """np.savez to `path` through a temporary file in the same folder and os.replace, so a crash
    never leaves a partial file; creates the folder."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
