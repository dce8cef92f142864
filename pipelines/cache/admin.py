"""``transferlab cache list|prune``: what the stage cache holds, and removing what is safe to remove.

The cache (``$TRANSFERLAB_HOME/cache/<stage>/<name>``, see :mod:`pipelines.cache.store`) only
ever grows: every sweep point keeps a fine-tuned model, killed builds leave ``.partial-*``
and ``.tmp-*`` dirs, and ``cache/init/`` keeps every downloaded checkpoint. This module
lists it and prunes it under three rules:

- never an entry a registered MLflow model version points at (by the fingerprint tag,
  the run that built it, or a local source path inside the entry);
- never an entry a live build uses: "in use" means a lock file in or next to the entry
  is ``flock``-ed right now (``.partial-<fp>/lock`` of :class:`~pipelines.cache.store.ResumableBuild`,
  or any ``*lock*`` file beside the entry whose name holds its fingerprint);
- removal renames the entry to ``.trash-*`` first and deletes it after, so a concurrent
  reader sees the whole entry or none of it, never a half-deleted one.

It reads the state dir and the model registry only; it imports neither Prefect nor torch.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pipelines.cache.store import RECORD
from pipelines.errors import UserError
from pipelines.runtime.locks import is_held

COMPLETE, PARTIAL, TMP, TRASH, NO_RECORD = "complete", "partial", "tmp", "trash", "no-record"
LEFTOVERS = (PARTIAL, TMP, TRASH, NO_RECORD)
DAY = 86400.0
ORPHAN_AGE = DAY  # a leftover younger than this may belong to a run that is about to resume it
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": DAY, "w": 7 * DAY}
_SIZES = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_TMP_SUFFIX = re.compile(r"-[0-9a-f]{8}$")


@dataclass
class Entry:
    """One directory under ``cache/<stage>/``."""

    stage: str
    name: str
    path: Path
    kind: str  # complete | partial | tmp | trash | no-record
    size: int
    mtime: float
    fingerprint: str
    run_id: str | None = None
    registered: list[str] | None = field(default_factory=list)  # None: the registry could not be read
    in_use: bool = False

    @property
    def age(self) -> float:
        return max(0.0, time.time() - self.mtime)

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(path=str(self.path), size_bytes=out.pop("size"), age_s=round(self.age, 1),
                   mtime=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.mtime)))
        return out


# ---------------------------------------------------------------------------- parsing


def parse_duration(text: str, option: str) -> float:
    """``30m``, ``12h``, ``7d``, ``2w`` -> seconds; a one-line UserError otherwise."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", str(text).lower())
    if not m:
        raise UserError(f"bad value for {option}: {text!r} (a duration like 30m, 12h, 7d or 2w)")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_size(text: str, option: str) -> int:
    """``500M``, ``5G``, ``5GiB``, ``123`` (bytes) -> bytes (binary units)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([bkmgt]?)(?:i?b)?\s*", str(text).lower())
    if not m:
        raise UserError(f"bad value for {option}: {text!r} (a size like 500M, 5G or 1T)")
    return int(float(m.group(1)) * _SIZES[m.group(2)])


def human_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s" if not word.endswith("y") else f"{n} {word[:-1]}ies"


def human_age(seconds: float) -> str:
    for unit, span in (("d", DAY), ("h", 3600), ("m", 60)):
        if seconds >= span:
            return f"{seconds / span:.0f}{unit}"
    return f"{seconds:.0f}s"


# ---------------------------------------------------------------------------- scanning


def cache_root(home: str | Path) -> Path:
    return Path(home) / "cache"


def _kind(directory: Path) -> tuple[str, str]:
    """(kind, fingerprint) from an entry's name and contents."""
    name = directory.name
    if name.startswith(".trash-"):
        return TRASH, _TMP_SUFFIX.sub("", name.removeprefix(".trash-"))
    if name.startswith(".partial-"):
        return PARTIAL, name.removeprefix(".partial-")
    if name.startswith(".tmp-"):
        return TMP, _TMP_SUFFIX.sub("", name.removeprefix(".tmp-"))
    return (COMPLETE if (directory / RECORD).is_file() else NO_RECORD), name


def _size_and_mtime(directory: Path) -> tuple[int, float]:
    """Apparent size of every file below (symlinks not followed) and the newest mtime of the
    dir and its direct children (a partial build writes checkpoints there as it goes)."""
    size, newest = 0, directory.lstat().st_mtime
    stack = [directory]
    while stack:
        current = stack.pop()
        try:
            with os.scandir(current) as it:
                for item in it:
                    try:
                        st = item.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    if current == directory:
                        newest = max(newest, st.st_mtime)
                    if item.is_dir(follow_symlinks=False):
                        stack.append(Path(item.path))
                    else:
                        size += st.st_size
        except OSError:
            continue
    return size, newest


def _read_json(file: Path) -> dict[str, Any]:
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _run_id(directory: Path, kind: str) -> str | None:
    """The MLflow run that built the entry: ``record.json``'s ``run_id`` (``state.json`` of a partial)."""
    data = _read_json(directory / RECORD)
    if not data.get("run_id") and kind == PARTIAL:
        data = _read_json(directory / "state.json")
    run_id = data.get("run_id")
    return str(run_id) if run_id else None


def lock_files(directory: Path, fp: str) -> list[Path]:
    """Every file whose flock means a live build uses the entry ``fp`` in ``directory.parent``:
    ``lock`` inside it, ``.partial-<fp>/lock`` (a rebuild of the same fingerprint), and any
    file beside it whose name holds the fingerprint and the word ``lock``."""
    parent = directory.parent
    out = [directory / "lock", directory / ".lock", parent / f".partial-{fp}" / "lock"]
    try:
        out += [p for p in parent.iterdir() if fp in p.name and "lock" in p.name.lower() and p.is_file()]
    except OSError:
        pass
    return list(dict.fromkeys(out))


def in_use(directory: Path, fp: str) -> bool:
    return any(is_held(f) for f in lock_files(directory, fp))


def scan(home: str | Path, stage: str | None = None) -> list[Entry]:
    """Every directory under ``cache/<stage>/``, leftovers included, oldest first."""
    root = cache_root(home)
    entries: list[Entry] = []
    if not root.is_dir():
        return entries
    for stage_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        if stage and stage_dir.name != stage:
            continue
        for directory in sorted(p for p in stage_dir.iterdir() if p.is_dir() and not p.is_symlink()):
            try:
                kind, fp = _kind(directory)
                size, mtime = _size_and_mtime(directory)
            except OSError:  # removed while we looked
                continue
            entries.append(Entry(stage_dir.name, directory.name, directory, kind, size, mtime, fp,
                                 _run_id(directory, kind), [], in_use(directory, fp)))
    return sorted(entries, key=lambda e: e.mtime)


def stages(home: str | Path) -> list[str]:
    from pipelines.cache.store import STAGE_VERSIONS

    root = cache_root(home)
    present = {p.name for p in root.iterdir() if p.is_dir()} if root.is_dir() else set()
    return sorted(set(STAGE_VERSIONS) | {"init"} | present)


# ---------------------------------------------------------------------------- registry


@dataclass
class Registry:
    """What registered model versions point at: fingerprints, run ids, local source paths."""

    by_fingerprint: dict[str, list[str]] = field(default_factory=dict)
    by_run: dict[str, list[str]] = field(default_factory=dict)
    by_path: list[tuple[Path, str]] = field(default_factory=list)

    def add(self, label: str, fingerprint: str | None, run_id: str | None, source: str | None) -> None:
        if fingerprint:
            self.by_fingerprint.setdefault(fingerprint, []).append(label)
        m = re.match(r"runs:/([^/]+)", source or "")
        for rid in {run_id, m.group(1) if m else None} - {None, ""}:
            self.by_run.setdefault(str(rid), []).append(label)
        if source and (source.startswith("/") or source.startswith("file:")):
            self.by_path.append((Path(source.removeprefix("file://").removeprefix("file:")), label))

    def pointing_at(self, entry: Entry) -> list[str]:
        labels = list(self.by_fingerprint.get(entry.fingerprint, []))
        if entry.run_id:
            labels += self.by_run.get(entry.run_id, [])
        labels += [label for path, label in self.by_path if path == entry.path or entry.path in path.parents]
        return sorted(set(labels))


def read_registry(tracking_uri: str) -> Registry:
    """Every model version of the store's registry; raises ``RuntimeError`` (one line) when
    the store cannot be read. A local sqlite store that does not exist holds none (and is
    not created); one that does not open is reported, never handed to MLflow to "repair"."""
    from pipelines.tracking.runs import TAG_FINGERPRINT

    registry = Registry()
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri.removeprefix("sqlite:///"))
        if not db.is_file():
            return registry
        from pipelines.cache.doctor import sqlite_problem

        problem = sqlite_problem(db)
        if problem:
            raise RuntimeError(f"MLflow store {db} does not open: {problem}")
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    token = None
    try:
        while True:
            page = client.search_model_versions(max_results=1000, page_token=token)
            for mv in page:
                registry.add(f"{mv.name}/{mv.version}", (mv.tags or {}).get(TAG_FINGERPRINT), mv.run_id, mv.source)
            token = page.token
            if not token:
                return registry
    except MlflowException as exc:
        raise RuntimeError(f"cannot read the model registry at {tracking_uri}: {str(exc).splitlines()[0]}") from exc


def annotate(entries: list[Entry], registry: Registry | None) -> None:
    for entry in entries:
        entry.registered = None if registry is None else registry.pointing_at(entry)


# ---------------------------------------------------------------------------- list


def status(entry: Entry) -> str:
    label = {COMPLETE: "ok", PARTIAL: "partial", TMP: "temp", TRASH: "trash", NO_RECORD: "no record.json"}[entry.kind]
    return f"{label}, in use" if entry.in_use else label


def render_table(entries: list[Entry]) -> str:
    """A table for people: one row per entry, then the total."""
    if not entries:
        return "the cache is empty\n"
    rows = [("STAGE", "ENTRY", "SIZE", "AGE", "RUN", "REGISTERED", "STATUS")]
    for e in entries:
        registered = "?" if e.registered is None else (", ".join(e.registered) or "-")
        rows.append((e.stage, e.name, human_size(e.size), human_age(e.age), (e.run_id or "-")[:12], registered,
                     status(e)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    leftovers = [e for e in entries if e.kind in LEFTOVERS and not e.in_use]
    total = sum(e.size for e in entries)
    lines.append(f"{plural(len(entries), 'entry')}, {human_size(total)}; {plural(len(leftovers), 'leftover')} "
                 f"({human_size(sum(e.size for e in leftovers))}) of builds no live process runs")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- prune


@dataclass
class Plan:
    remove: list[tuple[Entry, str]]  # entry, why
    keep: list[tuple[Entry, str]]  # entries a rule matched but that are protected, and why

    @property
    def size(self) -> int:
        return sum(e.size for e, _ in self.remove)


def protected(entry: Entry) -> str | None:
    """Why ``entry`` must stay, or None."""
    if entry.in_use:
        return "in use by a live build"
    if entry.registered is None and entry.kind == COMPLETE:
        return "the model registry could not be read"
    if entry.registered:
        return f"registered as {', '.join(entry.registered)}"
    return None


def plan_prune(entries: list[Entry], older_than: float | None = None, max_size: int | None = None,
               orphan_age: float = ORPHAN_AGE) -> Plan:
    """What prune removes from ``entries`` (already filtered by stage).

    Leftovers (partials without a live lock, temp dirs, entries without ``record.json``) go
    once older than ``orphan_age``; trash always. Complete entries go when older than
    ``older_than``, then oldest first while the total exceeds ``max_size``. Without either,
    only leftovers are removed.
    """
    remove: list[tuple[Entry, str]] = []
    keep: list[tuple[Entry, str]] = []
    chosen: set[Path] = set()

    def take(entry: Entry, why: str) -> None:
        reason = protected(entry)
        if reason:
            keep.append((entry, reason))
        else:
            remove.append((entry, why))
            chosen.add(entry.path)

    for e in entries:
        if e.kind == TRASH and not e.in_use:
            take(e, "left by an interrupted prune")
        elif e.kind in LEFTOVERS and e.age >= orphan_age:
            take(e, f"{status(e)} leftover, {human_age(e.age)} old")
    complete = [e for e in entries if e.kind == COMPLETE]
    if older_than is not None:
        for e in complete:
            if e.age >= older_than:
                take(e, f"older than {human_age(older_than)}")
    if max_size is not None:
        total = sum(e.size for e in entries if e.path not in chosen)
        for e in complete:  # oldest first
            if total <= max_size:
                break
            if e.path in chosen:
                continue
            before = len(remove)
            take(e, f"total over {human_size(max_size)}")
            if len(remove) > before:
                total -= e.size
    seen: set[Path] = set()
    keep = [(e, r) for e, r in keep if not (e.path in seen or seen.add(e.path))]  # type: ignore[func-returns-value]
    return Plan(remove, keep)


def remove_entry(entry: Entry) -> bool:
    """Rename to ``.trash-<name>-<rand>`` (atomic: readers see all of it or nothing), then
    delete. Re-checks the locks first: a build may have started since the scan."""
    if entry.kind != TRASH and in_use(entry.path, entry.fingerprint):
        return False
    if entry.kind == TRASH:
        trash = entry.path
    else:
        trash = entry.path.parent / f".trash-{entry.name.lstrip('.')}-{uuid.uuid4().hex[:8]}"
        try:
            os.rename(entry.path, trash)
        except FileNotFoundError:
            return False  # someone else removed it
    shutil.rmtree(trash, ignore_errors=True)
    return not trash.exists()


def render_plan(plan: Plan, applied: bool, removed: int | None = None) -> str:
    lines = []
    verb = "removed" if applied else "would remove"
    for e, why in plan.remove:
        lines.append(f"  {verb:<12} {e.stage:<9} {e.name}  {human_size(e.size)}  ({why})")
    for e, why in plan.keep:
        lines.append(f"  {'kept':<12} {e.stage:<9} {e.name}  {human_size(e.size)}  ({why})")
    n = len(plan.remove) if removed is None else removed
    if applied:
        head = f"removed {plural(n, 'entry')}, {human_size(plan.size)}"
    elif plan.remove:
        head = f"would remove {plural(n, 'entry')}, {human_size(plan.size)} (dry run; add --yes to remove them)"
    else:
        head = "nothing to remove"
    if plan.keep:
        head += f"; kept {len(plan.keep)} protected"
    return "\n".join([head, *lines]) + "\n"


# ---------------------------------------------------------------------------- commands


def _store(overrides: list[str]) -> tuple[Path, str]:
    """(state dir, tracking URI) from the same overrides and env vars as every command."""
    from pipelines.config.compose import compose
    from pipelines.tracking.runs import tracking_uri

    cfg = compose(overrides)
    return Path(cfg.paths.home), tracking_uri(cfg)


def _check_stage(home: Path, stage: str | None) -> None:
    if stage is not None and stage not in stages(home):
        raise UserError(f"bad value for --stage: {stage!r} (choices: {', '.join(stages(home))})")


def _with_registry(entries: list[Entry], uri: str, err: Any) -> None:
    try:
        registry: Registry | None = read_registry(uri)
    except RuntimeError as exc:
        err.write(f"transferlab: warning: {exc}; complete entries count as registered\n")
        registry = None
    annotate(entries, registry)


def list_command(overrides: list[str], as_json: bool, stage: str | None, out: Any, err: Any) -> int:
    home, uri = _store(overrides)
    _check_stage(home, stage)
    entries = scan(home, stage)
    _with_registry(entries, uri, err)
    if as_json:
        out.write(json.dumps([e.as_json() for e in entries], indent=2) + "\n")
    else:
        out.write(render_table(entries))
    return 0


def prune_command(overrides: list[str], older_than: str | None, max_size: str | None, stage: str | None,
                  orphans_older_than: str, yes: bool, out: Any, err: Any) -> int:
    age = parse_duration(older_than, "--older-than") if older_than is not None else None
    size = parse_size(max_size, "--max-size") if max_size is not None else None
    orphan_age = parse_duration(orphans_older_than, "--orphans-older-than")
    home, uri = _store(overrides)
    _check_stage(home, stage)
    entries = scan(home, stage)
    _with_registry(entries, uri, err)
    plan = plan_prune(entries, age, size, orphan_age)
    if not yes:
        out.write(render_plan(plan, applied=False))
        return 0
    done: list[tuple[Entry, str]] = []
    skipped: list[tuple[Entry, str]] = []
    for e, why in plan.remove:
        (done if remove_entry(e) else skipped).append((e, why))
    applied = Plan(done, plan.keep + [(e, "a build started using it, or it is gone") for e, _ in skipped])
    out.write(render_plan(applied, applied=True, removed=len(done)))
    return 0
