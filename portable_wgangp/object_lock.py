"""One writer per run folder on object storage, where there is no file lock: a lock object.

Taking the lock is a conditional create of ``.portable-wgangp.lock`` (it succeeds only where no such
object exists) holding ``{"pid", "host", "heartbeat"}``; the holder rewrites the heartbeat every
`HEARTBEAT_SECONDS` and removes the object when it ends. A holder can die without removing it — a
preempted VM never comes back — so a lock is taken over:

- at once when its holder is a process of this host that no longer runs;
- from another host once its heartbeat is older than `TIMEOUT_SECONDS`;

each with one line saying so. A takeover removes the stale object and creates it again conditionally, so
of two processes taking over at once one wins and the other is refused.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time

from portable_wgangp.errors import UserError
from portable_wgangp.storage import RemoteFolder

NAME = ".portable-wgangp.lock"
HEARTBEAT_SECONDS = 30.0
TIMEOUT_SECONDS = 300.0  # 10 missed heartbeats: the holder is gone


class ObjectLock:
    """The lock object of ``folder``: `acquire`, `holder`, `release`."""

    def __init__(self, folder: RemoteFolder, heartbeat: float = HEARTBEAT_SECONDS):
        self.folder = folder
        self.heartbeat = heartbeat
        self._stop: threading.Event | None = None

    def holder(self) -> str | None:
        """Who holds the lock (``pid N on HOST, heartbeat S s ago``) unless it may be taken over; None
        when nobody does. Writes nothing."""
        record = self._record()
        if record is None or self._stale(record):
            return None
        return _describe(record)

    def acquire(self) -> None:
        """Take the lock (taking over a stale one, with one line) or raise a `UserError` naming the holder;
        then keep its heartbeat until `release`."""
        record = self._record()
        stale = record is not None and self._stale(record)
        if record is not None and not stale:
            raise busy(self.folder.shown(), _describe(record))
        if stale:
            self.folder.remove(NAME)
        if not self.folder.create(NAME, self._content()):  # another process was quicker
            raise busy(self.folder.shown(), _describe(self._record() or {}))
        if stale:
            print(
                f"portable-wgangp: took over the lock of {self.folder.shown()} from {_describe(record)}: "
                f"{stale}",
                flush=True,
            )
        self._stop = threading.Event()
        threading.Thread(target=self._beat, args=(self._stop,), daemon=True, name="lock-heartbeat").start()

    def release(self) -> None:
        """Stop the heartbeat and remove the lock object (a store that cannot be reached keeps it: the
        next run of this host takes it over at once, another host after `TIMEOUT_SECONDS`)."""
        if self._stop is None:
            return
        self._stop.set()
        self._stop = None
        try:
            self.folder.remove(NAME)
        except UserError:
            pass

    def _beat(self, stop: threading.Event) -> None:
        while not stop.wait(self.heartbeat):
            try:
                self.folder.write(NAME, self._content())
            except UserError:
                pass  # the store is away for now: the next beat tries again

    def _content(self) -> bytes:
        return json.dumps(
            {"pid": os.getpid(), "host": socket.gethostname(), "heartbeat": time.time()}
        ).encode()

    def _record(self) -> dict | None:
        data = self.folder.read(NAME)
        if data is None:
            return None
        try:
            record = json.loads(data)
        except ValueError:
            record = None
        return record if isinstance(record, dict) else {}

    @staticmethod
    def _stale(record: dict) -> str:
        """Why the lock in ``record`` may be taken over, or "" when it may not."""
        if record.get("host") == socket.gethostname() and not _running(record.get("pid")):
            return "that process no longer runs"
        age = time.time() - float(record.get("heartbeat", 0) or 0)
        if age > TIMEOUT_SECONDS:
            return f"its heartbeat is {age:.0f} s old (over {TIMEOUT_SECONDS:.0f} s)"
        return ""


def busy(location: str, holder: str) -> UserError:
    return UserError(
        f"{location} is in use by another portable-wgangp process ({holder}); wait for it to end, "
        "or choose another --out."
    )


def _describe(record: dict) -> str:
    age = time.time() - float(record.get("heartbeat", 0) or 0)
    return f"pid {record.get('pid', '?')} on {record.get('host', '?')}, heartbeat {age:.0f} s ago"


def _running(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except (TypeError, ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True  # another user's process
    return True
