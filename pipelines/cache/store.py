"""Content-addressed stage outputs under ``$TRANSFERLAB_HOME/cache/<stage>/<fingerprint>``.

A stage output is addressed by a fingerprint of everything that determines it (its config
subset, upstream fingerprints, the code version), so identical inputs find the finished
output instead of recomputing it. This lives outside Prefect on purpose: stage functions
must reuse outputs when called without Prefect too, and a cache hit still gets an MLflow
child run (tagged ``transferlab.cache=hit``) so the reuse is visible where people look.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipelines.runtime.locks import Claim

RECORD = "record.json"

# Bump when a stage's output format or semantics change, so old cache entries are not reused.
# evaluate: its cached measurements (record.json {"lm", "majority", "images"} and the images).
STAGE_VERSIONS = {"prep": 3, "pretrain": 1, "finetune": 1, "evaluate": 1}


def code_version() -> str:
    try:
        return version("transferlab")
    except PackageNotFoundError:  # running from a source tree without installing
        return "0+unknown"


def fingerprint(stage: str, payload: dict[str, Any]) -> str:
    """Stable 16-hex-digit digest of a stage's inputs."""
    blob = json.dumps(
        {"stage": stage, "stage_version": STAGE_VERSIONS.get(stage, 0), "code": code_version(), **payload},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a temp dir that becomes ``final`` only if the block completes.

    On any failure the temp dir is removed, so a later run never mistakes half-written
    output for a finished one. If another process finished the same output first, ours is
    dropped and theirs kept (both are equivalent by construction).
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / RECORD).exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


class StageCache:
    def __init__(self, home: str | Path, stage: str) -> None:
        self.root = Path(home) / "cache" / stage
        self.stage = stage

    def path(self, fp: str) -> Path:
        return self.root / fp

    def lock_path(self, fp: str) -> Path:
        """The entry's build lock (``pipelines.runtime.locks.build_lock``); exists only while it is built."""
        return self.root / f".lock-{fp}"

    def builder(self, fp: str) -> str | None:
        """Who is building the entry now ("pid N"), or None: no live process is."""
        from pipelines.runtime.locks import holder

        return holder(self.lock_path(fp))

    @contextmanager
    def claim(self, fp: str, timeout_s: float) -> Iterator[Claim]:
        """Build the entry here, or wait for the process that is building it and reuse it.

        Yields ``Claim(done=True)`` when the entry is finished (right away, or after waiting
        up to ``timeout_s`` for its builder), else ``Claim(done=False)`` holding the entry's
        build lock until the block ends: build and publish it inside the block. Two runs
        that need the same output build it once; a builder that fails or dies (the kernel
        drops its lock) hands the build to the next waiter.
        """
        from pipelines.runtime.locks import build_lock

        with build_lock(self.lock_path(fp), f"{self.stage} {fp}", timeout_s,
                        lambda: self.lookup(fp) is not None) as claim:
            yield claim

    def lookup(self, fp: str) -> dict[str, Any] | None:
        """The record of a complete entry, or None (a dir without a record is not complete)."""
        record = self.path(fp) / RECORD
        if not record.is_file():
            return None
        return json.loads(record.read_text())

    @contextmanager
    def build(self, fp: str) -> Iterator[Path]:
        """A temp dir for the entry; the caller must write ``record.json`` last."""
        final = self.path(fp)
        if final.exists() and not (final / RECORD).exists():
            shutil.rmtree(final)  # a leftover without a record is garbage
        with atomic_dir(final) as tmp:
            yield tmp
            if not (tmp / RECORD).exists():
                raise RuntimeError(f"stage output {final} has no {RECORD}; refusing to publish it")


class ResumableBuild:
    """A deterministic work dir for an entry that may take hours: ``.partial-<fp>``.

    Unlike :meth:`StageCache.build`, the dir survives failures and kills, so running the
    same command again continues from what it holds (checkpoints, the MLflow run id, the
    carbon of earlier attempts). Enter it under :meth:`StageCache.claim`, which makes a
    second process wait for this build instead of failing; the exclusive ``flock`` on
    ``lock`` inside the dir also marks it as live for anyone looking (the kernel drops it
    when its holder dies, even by SIGKILL). :meth:`publish` renames the dir to the final
    entry; ``record.json`` must have been written into it last.
    """

    STATE = "state.json"

    def __init__(self, cache: StageCache, fp: str) -> None:
        self.cache, self.fp = cache, fp
        self.path = cache.root / f".partial-{fp}"
        self._lock_fd: int | None = None

    def __enter__(self) -> ResumableBuild:
        import fcntl

        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            from pipelines.errors import UserError

            raise UserError(f"{self.path} is being built by another live process; wait for it or stop it") from None
        self._lock_fd = fd
        (self.path / RECORD).unlink(missing_ok=True)  # from a kill between record and rename
        return self

    def __exit__(self, *exc: object) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    @property
    def resuming(self) -> bool:
        return (self.path / self.STATE).exists()

    def state(self) -> dict[str, Any]:
        try:
            return json.loads((self.path / self.STATE).read_text())
        except (OSError, ValueError):
            return {}

    def save_state(self, state: dict[str, Any]) -> None:
        tmp = self.path / f".{self.STATE}.tmp"
        tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
        os.replace(tmp, self.path / self.STATE)

    def publish(self) -> Path:
        """Rename the finished work dir onto the final entry (record.json must exist)."""
        final = self.cache.path(self.fp)
        if not (self.path / RECORD).exists():
            raise RuntimeError(f"stage output {self.path} has no {RECORD}; refusing to publish it")
        if final.exists() and not (final / RECORD).exists():
            shutil.rmtree(final)  # a leftover without a record is garbage
        try:
            os.rename(self.path, final)
        except OSError:
            if not (final / RECORD).exists():
                raise
            shutil.rmtree(self.path, ignore_errors=True)  # someone else published an equivalent one
        return final


def write_record(directory: Path, record: dict[str, Any]) -> None:
    (directory / RECORD).write_text(json.dumps(record, indent=2, sort_keys=True))
