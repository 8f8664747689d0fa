"""The one atomic file write every kept output goes through (checkpoints, LUTs, reports).

It lives in ``zoo``, the bottom of the package graph (``profiler`` imports ``zoo``,
never the reverse), so that ``zoo.models`` and ``profiler.table`` share it without
an import cycle. Standard library only.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import IO, Callable


def _umask() -> int:
    # The umask can only be read by setting it; put it straight back.
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, write: Callable[[IO[bytes]], object]) -> Path:
    """Call ``write(file_object)`` on a temp file next to ``path``, then rename it into place.

    A reader never sees a half-written file, and a failed or interrupted write leaves
    the old file (if any) untouched and no temp file behind. The kept file gets the
    mode any new file would get under the process's umask.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a kept file gets the usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


__all__ = ["atomic_write_bytes"]
