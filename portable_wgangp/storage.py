"""Object storage: a folder named by a URL (``gs://bucket/prefix``, ``s3://bucket/prefix``, any fsspec URL),
read and written whole object by whole object.

An object store has no rename, no append and no file lock, but a PUT is atomic: an object appears whole
or not at all, and a conditional PUT (GCS ``ifGenerationMatch=0``, S3 ``If-None-Match: *``) creates an
object only where none exists. `RemoteFolder` offers exactly those operations, through fsspec (gcsfs for
``gs://``, s3fs for ``s3://``: the extras ``portable-wgangp[gcs]`` and ``[s3]``).

Servers and credentials come from the environment only, as the client libraries read them:
``STORAGE_EMULATOR_HOST`` and Application Default Credentials (gcsfs); ``AWS_ENDPOINT_URL`` /
``FSSPEC_S3_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``… (s3fs). A URL is never shown with its credentials or
query (`shown`): messages, logs and ``config.json`` hold the bucket and path only.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import re
import tempfile
import urllib.parse
from collections.abc import Iterator

from portable_wgangp.errors import UserError

EXTRAS = {"gs": "gcs", "gcs": "gcs", "s3": "s3", "s3a": "s3"}
_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")


def is_url(target) -> bool:
    """Whether ``target`` names object storage (``scheme://…``) rather than a local path (``file://`` is
    local)."""
    match = _SCHEME.match(str(target))
    return bool(match) and match.group(1).lower() != "file"


def shown(url: str) -> str:
    """``url`` without credentials (``user:secret@``) or query (signed URLs carry their signature there):
    the only form of a URL that messages and files hold. A local path is returned as it is."""
    if not is_url(url):
        return str(url)
    parts = urllib.parse.urlsplit(str(url))
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


def join(url: str, name: str) -> str:
    return f"{url.rstrip('/')}/{name}"


def parent(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[0]


def locate(url: str) -> tuple[RemoteFolder, str]:
    """The folder holding the object at ``url``, and the object's name in it."""
    return RemoteFolder(parent(url)), url.rstrip("/").rsplit("/", 1)[1]


class RemoteFolder:
    """The objects below one URL prefix. Every failure is a `UserError` naming the URL (credentials left
    out) and the reason in one sentence; a missing object reads as None."""

    def __init__(self, url: str):
        self.url = shown(url).rstrip("/")
        parts = urllib.parse.urlsplit(url)
        if parts.username or parts.password or parts.query:
            raise UserError(
                f"{self.url} carries credentials or a signed query in the URL; give credentials through the "
                "environment (e.g. GOOGLE_APPLICATION_CREDENTIALS, AWS_ACCESS_KEY_ID) and pass the bare URL."
            )
        self.fs, self.root = _filesystem(url)

    def shown(self, name: str = "") -> str:
        return join(self.url, name) if name else self.url

    def _path(self, name: str) -> str:
        return f"{self.root.rstrip('/')}/{name}" if name else self.root

    def exists(self, name: str) -> bool:
        return self._call("read", name, lambda path: self.fs.exists(path))

    def read(self, name: str) -> bytes | None:
        """The object's bytes, or None when there is none."""

        def cat(path):
            try:
                return self.fs.cat_file(path)
            except FileNotFoundError:
                if not self._bucket_exists():
                    raise self._no_bucket("read") from None
                return None

        return self._call("read", name, cat)

    def write(self, name: str, data: bytes) -> None:
        """Replace the object ``name`` with ``data`` in one PUT: readers see the old object or the new one,
        never a part."""
        self._call("write", name, lambda path: self.fs.pipe_file(path, data))

    def create(self, name: str, data: bytes) -> bool:
        """Create ``name`` only where no object exists (a conditional PUT); False when one exists."""

        def put(path):
            try:
                self.fs.pipe_file(path, data, mode="create")
            except FileExistsError:
                return False
            return True

        return self._call("write", name, put)

    def remove(self, name: str) -> None:
        """Remove the object ``name``, or every object below ``name/``; nothing there is no error."""

        def rm(path):
            if self.fs.exists(path):
                self.fs.rm(path, recursive=True)

        self._call("write", name, rm)

    def open(self, name: str):
        """A seekable binary file over the object: reads fetch byte ranges, not the whole object."""
        return self._call("read", name, lambda path: self.fs.open(path, "rb"))

    def read_ranges(self, name: str, starts: list[int], ends: list[int]) -> list[bytes]:
        """The bytes ``[start, end)`` of the object, for each pair, fetched concurrently."""
        return self._call(
            "read", name, lambda path: self.fs.cat_ranges([path] * len(starts), list(starts), list(ends))
        )

    def list(self, name: str = "") -> list[str]:
        """The names of all objects below ``name`` (relative to this folder), sorted."""
        root = self.root.rstrip("/") + "/"
        found = self._call("read", name, lambda path: self.fs.find(path))
        return sorted(p[len(root) :] if p.startswith(root) else p for p in found)

    def _bucket_exists(self) -> bool:
        bucket = self.root.split("/", 1)[0]
        return self.fs.exists(bucket)

    def _call(self, verb: str, name: str, action):
        try:
            return action(self._path(name))
        except UserError:
            raise
        except FileNotFoundError as error:
            if verb == "read" and self._safe_bucket_exists():
                raise UserError(f"No object {self.shown(name)}; check the URL.") from error
            raise self._no_bucket(verb) from error
        except PermissionError as error:
            raise UserError(
                f"Cannot {verb} {self.shown(name)}: access refused ({_reason(error)}); check the "
                "credentials in the environment."
            ) from error
        except Exception as error:
            raise UserError(f"Cannot {verb} {self.shown(name)}: {_reason(error)}.") from error

    def _no_bucket(self, verb: str) -> UserError:
        return UserError(f"Cannot {verb} {self.url}: the bucket does not exist; create it or fix the URL.")

    def _safe_bucket_exists(self) -> bool:
        try:
            return self._bucket_exists()
        except Exception:
            return True


def _reason(error: BaseException) -> str:
    """One line on what went wrong, without the URL's credentials or a signed query."""
    text = str(error).splitlines()[0] if str(error).strip() else type(error).__name__
    text = re.sub(r"://[^/@\s]+@", "://", text)  # user:secret@host
    return re.sub(r"\?\S*", "", text)[:300]


def _filesystem(url: str):
    """fsspec's filesystem and path for ``url``; a missing client library is named with its extra."""
    scheme = url.split("://", 1)[0].lower()
    gcs_emulator = scheme in ("gs", "gcs") and bool(os.environ.get("STORAGE_EMULATOR_HOST"))
    if gcs_emulator:
        # gcsfs first tries a gRPC call an emulator cannot answer (60 s a call) unless told not to
        os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
    try:
        import fsspec.core
    except ImportError as error:
        raise UserError(_install_hint(scheme, url)) from error
    options = {"use_listings_cache": False}  # other writers change the folder: list it afresh
    if gcs_emulator:
        options["token"] = "anon"  # an emulator takes no credentials; none are looked for
    try:
        return fsspec.core.url_to_fs(url, **options)
    except ImportError as error:
        raise UserError(_install_hint(scheme, url)) from error
    except ValueError as error:  # an unknown protocol
        raise UserError(f"Cannot open {shown(url)}: {_reason(error)}; use gs://, s3:// or a path.") from error


def _install_hint(scheme: str, url: str) -> str:
    extra = EXTRAS.get(scheme)
    package = f"portable-wgangp[{extra}]" if extra else "the fsspec implementation of that protocol"
    return f"{shown(url)} needs a client library for {scheme}://: pip install {package}."


@contextlib.contextmanager
def local_copy(url: str, missing_ok: bool = False) -> Iterator[pathlib.Path | None]:
    """A local copy of the object at ``url`` (for readers that need a file, such as Keras's loader),
    removed afterwards; a missing object is a `UserError` naming the URL, or None with ``missing_ok``."""
    folder, name = locate(url)
    data = folder.read(name)
    if data is None and missing_ok:
        yield None
        return
    if data is None:
        raise UserError(f"No object {folder.shown(name)}; check the URL.")
    with tempfile.TemporaryDirectory(prefix="portable-wgangp-") as scratch:
        path = pathlib.Path(scratch) / name
        path.write_bytes(data)
        yield path


def split_spec(rest: str) -> tuple[str, str]:
    """``PATH[:EXTRA]`` of a dataset spec, where PATH (and EXTRA) may be URLs: ``("gs://b/x.npz", "key")``
    from ``gs://b/x.npz:key``, ``("gs://b/x.npy", "gs://b/y.npy")`` from ``gs://b/x.npy:gs://b/y.npy``."""
    if not is_url(rest):
        path, _, extra = rest.partition(":")
        return path, extra
    scheme, after = rest.split("://", 1)
    second = re.search(r":(?=[a-zA-Z][a-zA-Z0-9+.-]*://)", after)  # EXTRA is a URL too
    if second:
        return f"{scheme}://{after[: second.start()]}", after[second.end() :]
    head, separator, tail = after.rpartition(":")
    if separator and "/" not in tail:
        return f"{scheme}://{head}", tail
    return rest, ""


def open_object(url: str):
    """A seekable binary file over the object at ``url`` (byte-range reads)."""
    folder, name = locate(url)
    return folder.open(name)


def upload(path: pathlib.Path, url: str) -> None:
    """Put the local file ``path`` at ``url`` in one PUT (whole or not at all)."""
    folder, name = locate(url)
    folder.write(name, pathlib.Path(path).read_bytes())
