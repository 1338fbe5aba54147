"""Files that survive crashes: atomic replacement, whole-line appends, torn-line tolerant reads.

A crash, a SIGKILL or a full disk at any moment leaves every file either as it was or as it should be:
whole files are written to a temporary sibling and renamed over the target (`atomic_path`); JSON-lines
logs are appended one whole line per ``write`` and cut back to their last complete line when a write fails
(`append_line`); a reader drops a torn or corrupt line with a warning instead of failing (`read_records`).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import pathlib
import tempfile
import warnings
from collections.abc import Iterator


def partial_name(path: pathlib.Path) -> pathlib.Path:
    """The temporary sibling that `atomic_path` writes ``path`` through: ``.NAME.partial.SUFFIX``."""
    return path.with_name(f".{path.stem}.partial{path.suffix}")


@contextlib.contextmanager
def atomic_path(path) -> Iterator[pathlib.Path]:
    """Yields a temporary path to write; on success it replaces ``path`` (one rename), on failure it is
    removed and ``path`` keeps its previous content. ``path`` may be an object-store URL: the file is
    then put there whole, in one PUT (`storage.RemoteFolder.write`).

    An `OSError` (a full disk, say) is re-raised naming the file and saying that its old version is intact.
    """
    from portable_wgangp import storage

    if storage.is_url(path):
        folder, name = storage.locate(str(path))
        with tempfile.TemporaryDirectory(prefix="portable-wgangp-") as scratch:
            temporary = pathlib.Path(scratch) / name
            yield temporary
            folder.write(name, temporary.read_bytes())
        return
    path = pathlib.Path(path)
    temporary = partial_name(path)
    try:
        yield temporary
        os.replace(temporary, path)
    except BaseException as error:
        with contextlib.suppress(OSError):
            temporary.unlink()
        if isinstance(error, OSError) and not isinstance(error, WriteError):
            raise WriteError(path, error) from error
        raise


class WriteError(OSError):
    """A file could not be written (full disk, no permission); its previous version is intact."""

    def __init__(self, path, cause: OSError):
        reason = cause.strerror or str(cause) or type(cause).__name__
        super().__init__(
            cause.errno,
            f"Cannot write {path} ({reason}); its previous version is intact: free space or fix the "
            "permissions, then continue the run with --resume",
        )
        self.path = path

    def __str__(self) -> str:
        return self.strerror


def write_text(path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically (see `atomic_path`)."""
    with atomic_path(path) as temporary:
        temporary.write_text(text)


def write_json(path, value) -> None:
    """Replace ``path`` with ``value`` as indented JSON, atomically."""
    write_text(path, json.dumps(value, indent=1) + "\n")


def append_line(fd: int, line: str, path) -> None:
    """Append ``line`` (no newline) and a newline to the file open at ``fd`` (``O_APPEND``) in one write.

    If the write fails or is short (a full disk), the file is cut back to its size before the write, so
    it never ends in a torn line, and a `WriteError` names the file.
    """
    data = (line + "\n").encode()
    size = os.fstat(fd).st_size
    try:
        written = os.write(fd, data)
        if written != len(data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    except OSError as error:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, size)
        raise WriteError(path, error) from error


def read_records(path) -> list[dict]:
    """The JSON objects of a JSON-lines file, one per line; a torn or corrupt line is dropped with a
    warning (a crash or a full disk may have cut the last line), never fatal. A missing file is empty."""
    path = pathlib.Path(path)
    if not path.is_file():
        return []
    records, dropped = [], []
    for number, line in enumerate(path.read_bytes().decode(errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict):
            records.append(record)
        else:
            dropped.append(number)
    if dropped:
        warnings.warn(
            f"{path}: dropped {len(dropped)} torn or corrupt line(s) (line {', '.join(map(str, dropped))}).",
            RuntimeWarning,
            stacklevel=2,
        )
    return records
