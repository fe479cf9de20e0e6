"""Writing files atomically: a reader sees the old file or the new one, never half of one.

Every file the course writes (checkpoints, metrics, logs, data sets, resumable states) goes
through :func:`atomic_path`: the content is written to a temporary file in the same folder and
moved over the target with ``os.replace``, which is atomic on the same file system. A crash or
an error while writing leaves the previous file untouched and no temporary file behind.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block ends without error, move it onto ``path``.

    Usage: ``with atomic_path(target) as temporary: torch.save(state, temporary)``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(descriptor)
    temporary = Path(name)
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return Path(path)


def check_writable_folder(folder: str | Path, what: str, flag: str) -> Path:
    """Fail now, not after hours of training, when ``folder`` cannot be created or written.

    Raises ``ValueError`` naming ``flag`` (e.g. ``--out``) when ``folder`` is a file, lies under
    a file, or its nearest existing folder does not accept a new file. Creates nothing.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{flag} {folder} is a file, not a folder; pass a folder for the {what}")
    existing = folder.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"{flag} {folder} cannot be written ({existing} is a file); pass a folder you can write to")
    try:
        descriptor, name = tempfile.mkstemp(prefix=".write-test.", dir=existing)
        os.close(descriptor)
        os.unlink(name)
    except OSError as error:
        raise ValueError(
            f"{flag} {folder} cannot be written ({error.strerror or error}); pass a folder you can write to"
        ) from None
    return folder
