"""File locks that let several transferlab processes share one state directory.

Two kinds, both ``flock`` on a lock file, which the kernel releases when its holder dies
(even by SIGKILL), so a crashed process never leaves a lock behind:

- :func:`exclusive`: block until we hold the lock (creating the MLflow sqlite store).
- :func:`build_lock`: one builder per cache entry. The others wait for it (with a log line
  and a timeout) and then reuse its output; if the builder died or failed, the next
  waiter takes over the build.

Lock files hold the holder's pid and host (for the log line) and may be removed by their
holder on release: whoever acquires a lock checks that the file it locked is still the
one at the path, and starts over if not, so removing one never lets two holders in.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pipelines.errors import UserError

log = logging.getLogger("transferlab")

POLL_S = 0.5


class BuildTimeout(UserError):
    """Gave up waiting for another process's build (exit 2, one line, like other refusals)."""


def _still_there(fd: int, path: Path) -> bool:
    """Whether the locked file is still the one at ``path`` (not removed or replaced meanwhile)."""
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def _try_lock(path: Path) -> int | None:
    """An fd holding the exclusive lock on ``path``, or None if a live process holds it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        if _still_there(fd, path):
            return fd
        os.close(fd)  # locked a file its holder removed on release: lock the current one


def _write_holder(fd: int) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)


def _release(fd: int, path: Path) -> None:
    if _still_there(fd, path):
        path.unlink(missing_ok=True)  # while still holding it: see the module docstring
    os.close(fd)


def publish_locked(path: Path, data: bytes) -> int:
    """Write ``data`` to ``path`` already locked: under a temporary name, ``flock``-ed, then
    renamed into place, so no reader ever sees the file unlocked while its writer lives. Returns
    the descriptor that holds the lock (close it, after removing the file, to let go)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, data)
        os.fsync(fd)
        os.replace(tmp, path)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    return fd


def is_held(path: str | Path) -> bool:
    """Whether a live process holds a ``flock`` on ``path`` (never created; a symlink is not
    followed). The kernel drops a dead holder's lock, so this is also a liveness test: it is
    how cache builds, ``transferlab cache``/``doctor`` and the run leases of
    :mod:`pipelines.tracking.liveness` tell a live holder from a killed one."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released by the close below
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
    return False


def holder(path: str | Path) -> str | None:
    """Who holds the lock at ``path`` ("pid N" or "pid N on host H"), or None if nobody does."""
    return _describe(Path(path)) if is_held(path) else None


def _describe(path: Path) -> str:
    try:
        pid, _, host = path.read_text().strip().partition(" ")
    except OSError:
        pid, host = "", ""
    if not pid:
        return "another process"
    return f"pid {pid}" if host in ("", socket.gethostname()) else f"pid {pid} on host {host}"


@contextmanager
def exclusive(path: str | Path) -> Iterator[None]:
    """Hold the exclusive lock on ``path`` (created if missing), waiting as long as it takes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        if _still_there(fd, path):
            break
        os.close(fd)
    try:
        _write_holder(fd)
        yield
    finally:
        os.close(fd)


@dataclass
class Claim:
    """What :func:`build_lock` found: ``done`` (reuse the output; no lock held) or the build
    lock held by us (``done`` False). ``waited_s``: how long we waited for another builder."""

    done: bool
    waited_s: float = 0.0
    waited_for: str | None = None


@contextmanager
def build_lock(path: str | Path, what: str, timeout_s: float, done: Callable[[], bool]) -> Iterator[Claim]:
    """Build ``what`` at most once at a time across processes, or wait for whoever is.

    ``done()`` says whether the output exists. If it does, yield at once without locking.
    Otherwise take the lock at ``path``; if another live process holds it, log that we wait
    and poll until it is released or ``timeout_s`` passes (then :class:`BuildTimeout`;
    0 means do not wait). Once we hold it, the output may have been finished meanwhile
    (yield ``done``, lock released) or not, because the builder failed or died: then we
    build it, holding the lock until the block ends.
    """
    if done():
        yield Claim(True)
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    fd = _try_lock(path)
    who = None
    if fd is None:
        who = _describe(path)
        if timeout_s <= 0:
            raise BuildTimeout(f"{what} is being built by {who} and cache.wait_timeout_s is 0; wait for it or stop it")
        log.info("waiting for %s being built by %s (timeout %.0f s, cache.wait_timeout_s)", what, who, timeout_s)
        while fd is None:
            if time.monotonic() - started > timeout_s:
                raise BuildTimeout(f"gave up after {timeout_s:.0f} s waiting for {what} being built by {who}; "
                                   "raise cache.wait_timeout_s or stop that process")
            time.sleep(POLL_S)
            fd = _try_lock(path)
    waited = time.monotonic() - started if who else 0.0
    try:
        _write_holder(fd)
        if done():
            if who:
                log.info("%s: built by %s while we waited %.1f s; reusing it", what, who, waited)
            _release(fd, path)
            fd = None
            yield Claim(True, waited, who)
            return
        if who:
            log.warning("%s: %s stopped without finishing it (after %.1f s); building it here", what, who, waited)
        yield Claim(False, waited, who)
    finally:
        if fd is not None:
            _release(fd, path)
