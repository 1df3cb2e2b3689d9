"""Framed files: one JSON header line, then a binary body, checked as a whole.

Model files (`deeppot.modelfile`) and training checkpoints (`deeppot.train`) are framed
files. The header's `"sha256"` is the SHA-256 of the header without it (as canonical JSON:
sorted keys, no spaces) and a newline, then the body; so one altered byte anywhere, in the
header or the arrays, is detected. The write is atomic (a temporary file, flushed to disk,
then renamed over the target).

Older formats whose checksum covered the body only are read when their reader names their
versions in `body_only`; their header is then not protected.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Collection
from pathlib import Path

from ._errors import CheckpointError

__all__ = ["read_framed", "write_framed"]


def _digest(header: dict, body: bytes) -> str:
    head = {k: v for k, v in header.items() if k != "sha256"}
    canonical = json.dumps(head, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode() + b"\n" + body).hexdigest()


def write_framed(path: str | os.PathLike, header: dict, body: bytes) -> Path:
    """Write `header` (JSON-serialisable) and `body` to `path` atomically, with a checksum
    of both in the header's `"sha256"`.

    **Returns:** the path written.
    """
    path = Path(path)
    header = json.loads(json.dumps(header))  # hashed as a reader will parse it
    header["sha256"] = _digest(header, body)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(json.dumps(header).encode() + b"\n")
        f.write(body)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def read_framed(path: str | os.PathLike, *, kind: str, versions: Collection[int],
                magic: str | None = None, body_only: Collection[int] = (),
                fix: str = "") -> tuple[dict, bytes]:
    """The header and body of a framed file, checked against its checksum.

    **Arguments:**

    - `path`: the file.
    - `kind`: what it should be, as errors name it (`"model file"`, `"checkpoint"`).
    - `versions`: the header `"version"`s this deeppot reads.
    - `magic`: the header's `"format"`, if the kind has one.
    - `body_only`: older versions, also read, whose checksum covers the body only.
    - `fix`: appended to every error (e.g. `"; delete it"`).

    **Returns:** `(header, body)`.

    **Raises:** `CheckpointError` naming the file when it is not a framed file of this
    kind, has another version, or does not match its checksum (altered or truncated);
    `OSError` if it cannot be read.
    """
    what = f"{kind} '{os.fspath(path)}'"
    with open(path, "rb") as f:
        first = f.readline()
        body = f.read()
    try:
        header = json.loads(first.decode())
        if not isinstance(header, dict) or (magic is not None and header.get("format") != magic):
            raise ValueError
    except (UnicodeDecodeError, ValueError):
        raise CheckpointError(f"{what} is not a deeppot {kind}{fix}") from None
    version, stored = header.get("version"), header.get("sha256")
    whole, body_sum = _digest(header, body), hashlib.sha256(body).hexdigest()
    if version in body_only and stored == body_sum or version in versions and stored == whole:
        return header, body
    if version not in (*versions, *body_only) and stored in (whole, body_sum):
        accepted = ", ".join(str(v) for v in sorted((*versions, *body_only)))
        raise CheckpointError(f"{what} has version {version}; this deeppot reads version "
                              f"{accepted}{fix}")
    raise CheckpointError(f"{what} is corrupt or truncated (its checksum does not match){fix}")
