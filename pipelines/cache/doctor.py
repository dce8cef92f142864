"""``transferlab doctor [--fix]``: find (and repair) what kills and crashes leave in a state dir.

Checks, one output line per problem with its fix:

- the local stores open: ``mlflow.db`` and Prefect's ``prefect/*.db`` are opened read-only
  and queried (a file that is not a database, or a corrupt one, breaks every later run with
  a long traceback); ``--fix`` moves such a file aside so the next run starts a fresh store;
- MLflow runs left RUNNING by a process that is gone (:mod:`pipelines.tracking.liveness`: a pipeline
  holds a flock-ed lease on its parent run for its life); ``--fix`` marks the parent and its
  RUNNING stage runs KILLED (:func:`pipelines.tracking.liveness.reap`);
- cache leftovers (:mod:`pipelines.cache.admin`): ``.partial-*`` builds no live process
  holds the lock of, ``.tmp-*`` dirs of killed builds, entries without ``record.json`` and
  ``.trash-*`` dirs of an interrupted prune; ``--fix`` removes them the safe way.

Exit code 0 when healthy (or everything found was fixed), 1 when problems remain. It
imports neither Prefect nor torch and never creates a store.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pipelines.cache.admin import (
    COMPLETE,
    NO_RECORD,
    ORPHAN_AGE,
    PARTIAL,
    TMP,
    TRASH,
    Entry,
    human_age,
    human_size,
    parse_duration,
    plural,
    remove_entry,
    scan,
)


@dataclass
class Problem:
    what: str  # the thing: a file, a run, a cache entry
    detail: str  # what is wrong with it
    hint: str  # what --fix does (or what to do by hand)
    fix: Callable[[], str] | None = None  # does the repair, returns what it did

    def line(self) -> str:
        return f"  problem  {self.what}: {self.detail} (fix: {self.hint})"


# ---------------------------------------------------------------------------- stores


def sqlite_problem(path: Path) -> str | None:
    """Why the sqlite file at ``path`` does not open as a database, or None.

    Opened read-only (``mode=ro``: nothing is created or migrated) and asked two cheap
    questions: the schema table (fails on a file that is not a database) and
    ``PRAGMA quick_check`` (finds a truncated or damaged one). A database some live process
    holds locked is busy, not broken.
    """
    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error as exc:
        return str(exc)
    try:
        con.execute("SELECT count(*) FROM sqlite_master").fetchone()
        row = con.execute("PRAGMA quick_check").fetchone()
        if row and row[0] != "ok":
            return f"integrity check failed: {row[0]}"
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            return None
        return str(exc)
    except sqlite3.DatabaseError as exc:
        return str(exc)
    finally:
        con.close()
    return None


def _move_aside(db: Path) -> Callable[[], str]:
    def fix() -> str:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        target = db.with_name(f"{db.name}.corrupt-{stamp}")
        for suffix in ("", "-wal", "-shm", "-journal"):
            src = db.with_name(db.name + suffix)
            if src.exists():
                src.rename(target.with_name(target.name + suffix))
        return f"moved to {target.name}; the next run starts an empty store"

    return fix


def store_files(home: Path, tracking_uri: str) -> list[tuple[str, Path]]:
    """The local sqlite stores that exist: (label, file)."""
    out: list[tuple[str, Path]] = []
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri.removeprefix("sqlite:///"))
        if db.is_file():
            out.append(("MLflow store", db))
    prefect = home / "prefect"
    if prefect.is_dir():
        out += [("Prefect store", db) for db in sorted(prefect.glob("*.db")) if db.is_file()]
    return out


def check_stores(home: Path, tracking_uri: str) -> list[Problem]:
    problems = []
    for label, db in store_files(home, tracking_uri):
        why = sqlite_problem(db)
        if why:
            problems.append(Problem(f"{label} {db}", f"does not open ({why})",
                                    f"--fix moves it aside to {db.name}.corrupt-<time>; the next run starts an "
                                    "empty store", _move_aside(db)))
    return problems


# ---------------------------------------------------------------------------- stale runs


class Liveness(Protocol):
    """What doctor uses of :mod:`pipelines.tracking.liveness` (tests pass a stand-in)."""

    def stale(self, home: str | Path) -> list[Any]: ...

    def reap(self, home: str | Path, leases: list[Any] | None = None) -> list[Any]: ...


def check_runs(home: Path, liveness: Liveness) -> list[Problem]:
    """MLflow runs a dead process left RUNNING: their lease (``$home/live/<run_id>.json``)
    is no longer flock-ed by its holder."""
    try:
        leases = liveness.stale(home)
    except Exception as exc:  # a broken store or lease file must not hide the other checks
        return [Problem("stale-run check", f"failed: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
                        "fix the stores reported above, then run doctor again")]
    problems = []
    for lease in leases:
        def fix(lease: Any = lease) -> str:
            if liveness.reap(home, [lease]):
                return "marked KILLED (with its RUNNING stage runs)"
            if Path(lease.path).exists():
                raise RuntimeError(f"its MLflow store {lease.tracking_uri} could not be updated; lease kept")
            return "nothing to do (it was reaped meanwhile)"

        what = (f"run {lease.run_id}" if lease.run_id
                else f"lease {Path(lease.path).name} (killed before its MLflow run existed)")
        problems.append(Problem(what, f"left RUNNING: its process {lease.pid} on {lease.host} is gone",
                                "--fix marks it KILLED", fix))
    return problems


# ---------------------------------------------------------------------------- cache


def _leftover(entry: Entry, orphan_age: float) -> str | None:
    """Why ``entry`` is a leftover to report, or None (complete, in use, or young enough to be resumed)."""
    if entry.in_use or entry.kind == COMPLETE:
        return None
    if entry.kind == NO_RECORD:
        return "an entry without record.json (never finished)"
    if entry.kind == TRASH:
        return "left by an interrupted prune"
    if entry.age < orphan_age:
        return None
    if entry.kind == PARTIAL:
        return f"an abandoned partial build ({human_age(entry.age)} old, no live process holds its lock)"
    if entry.kind == TMP:
        return f"a temp dir of a killed build ({human_age(entry.age)} old)"
    return None


def check_cache(home: Path, orphan_age: float) -> list[Problem]:
    problems = []
    for entry in scan(home):
        why = _leftover(entry, orphan_age)
        if why:
            def fix(entry: Entry = entry) -> str:
                return "removed" if remove_entry(entry) else "left alone (a build started using it, or it is gone)"

            rel = entry.path.relative_to(home)
            problems.append(Problem(str(rel), f"{why}, {human_size(entry.size)}", "--fix removes it", fix))
    return problems


# ---------------------------------------------------------------------------- command


def diagnose(home: Path, tracking_uri: str, orphan_age: float = ORPHAN_AGE,
             liveness: Liveness | None = None) -> list[Problem]:
    from pipelines.tracking import liveness as live

    problems = check_stores(home, tracking_uri)
    problems += check_runs(home, liveness or live)  # type: ignore[arg-type]
    problems += check_cache(home, orphan_age)
    return problems


def doctor_command(overrides: list[str], fix: bool, orphans_older_than: str, out: Any,
                   liveness: Liveness | None = None) -> int:
    from pipelines.config.compose import compose
    from pipelines.tracking.runs import tracking_uri

    orphan_age = parse_duration(orphans_older_than, "--orphans-older-than")
    cfg = compose(overrides)
    home = Path(cfg.paths.home)
    if not home.is_dir():
        out.write(f"transferlab doctor: no state dir at {home}; nothing to check\n")
        return 0
    problems = diagnose(home, tracking_uri(cfg), orphan_age, liveness)
    out.write(f"transferlab doctor: {home}\n")
    left = 0
    for problem in problems:
        out.write(problem.line() + "\n")
        if fix and problem.fix is not None:
            try:
                out.write(f"  fixed    {problem.what}: {problem.fix()}\n")
                continue
            except Exception as exc:  # one failed repair must not stop the others
                out.write(f"  failed   {problem.what}: {exc}\n")
        left += 1
    if not problems:
        out.write("healthy: stores open, no runs left RUNNING by a dead process, no cache leftovers\n")
    elif not left:
        out.write(f"fixed all {plural(len(problems), 'problem')}\n")
    elif fix:
        out.write(f"{plural(left, 'problem')} not fixed (of {len(problems)})\n")
    else:
        out.write(f"{plural(len(problems), 'problem')}; run `transferlab doctor --fix` to repair\n")
    return 1 if left else 0
