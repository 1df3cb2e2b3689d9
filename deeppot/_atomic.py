"""Atomic file writes: a file appears under its name complete, or not at all."""

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def replacing(path: Path, suffix: str = ".tmp") -> Iterator[Path]:
    """A new empty file next to `path`, moved onto `path` when the block succeeds and
    removed when it raises.

    The file is created as `open(path, "w")` would create it, with mode 0o666 less the
    umask (`tempfile.mkstemp` would give 0o600 whatever the umask).

    **Arguments:**

    - `path`: the destination; an existing file there is replaced.
    - `suffix`: the temporary file's ending (writers that pick a format by extension need
      the destination's).

    **Yields:** the temporary file's path.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}{suffix}")
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
