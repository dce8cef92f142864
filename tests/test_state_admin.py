"""``transferlab cache list|prune`` and ``transferlab doctor`` on hand-made state dirs.

The cache entries are written the way the stages write them (``record.json`` with the
building run id, ``.partial-<fp>`` with ``state.json`` and a ``lock``), and the registry is
a real MLflow sqlite store, so "registered" and "in use" are the real checks.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from pipelines.cache import admin as cache_admin
from pipelines.cli import main

DAY = 86400


def _age(path: Path, days: float) -> None:
    """Backdate ``path`` and its direct children (what the scan reads as the entry's age)."""
    stamp = time.time() - days * DAY
    for p in [*path.iterdir(), path]:
        os.utime(p, (stamp, stamp), follow_symlinks=False)


def _entry(home: Path, stage: str, name: str, run_id: str | None = "r", days: float = 0, size: int = 1000,
           record: bool = True) -> Path:
    d = home / "cache" / stage / name
    d.mkdir(parents=True)
    (d / "weights.bin").write_bytes(b"x" * size)
    if record:
        (d / "record.json").write_text(json.dumps({"stage": stage, "fingerprint": name, "run_id": run_id}))
    _age(d, days)
    return d


@pytest.fixture(scope="module")
def registered_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """An MLflow sqlite store with one registered version (fingerprint tag + source run), as
    pretrain registers it; returns (db file, the version's run id)."""
    from mlflow.tracking import MlflowClient

    db = tmp_path_factory.mktemp("store") / "mlflow.db"
    uri = f"sqlite:///{db}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    exp = client.create_experiment("t", artifact_location=(db.parent / "art").as_uri())
    run = client.create_run(exp)
    client.set_terminated(run.info.run_id)
    client.create_registered_model("tiny")
    client.create_model_version("tiny", source=f"runs:/{run.info.run_id}/hf_model", run_id=run.info.run_id,
                                tags={"transferlab.fingerprint": "regfp0000000000a"})
    return db, run.info.run_id


@pytest.fixture
def home(tmp_path: Path, registered_store: tuple[Path, str]) -> Path:
    """A state dir: the registered store, and a cache with one of every kind of entry."""
    db, run_id = registered_store
    h = tmp_path / "home"
    h.mkdir()
    shutil.copy(db, h / "mlflow.db")
    _entry(h, "pretrain", "regfp0000000000a", run_id="other", days=30, size=5000)  # registered by fingerprint
    _entry(h, "pretrain", "byrun00000000000", run_id=run_id, days=30, size=5000)  # registered by building run
    _entry(h, "finetune", "old0000000000000", days=10, size=3000)
    _entry(h, "finetune", "new0000000000000", days=0, size=3000)
    _entry(h, "prep", "old1111111111111", days=10, size=2000)
    _entry(h, "finetune", "norecord00000000", record=False, days=0)
    partial = h / "cache" / "pretrain" / ".partial-abandoned0000000"
    partial.mkdir()
    (partial / "state.json").write_text(json.dumps({"run_id": "killedrun"}))
    (partial / "lock").touch()
    _age(partial, 3)
    _entry(h, "finetune", ".tmp-deadbeef00000000-0123abcd", record=False, days=3)
    _entry(h, "init", ".trash-gone000000000000-89abcdef", record=False, days=0)
    return h


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _held(lock: Path) -> int:
    """Hold an exclusive flock on ``lock`` as a live build does (release: os.close)."""
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


def test_list_json_names_every_entry_with_run_registration_and_live_use(home: Path, capsys) -> None:
    live = home / "cache" / "pretrain" / ".partial-live000000000000"
    live.mkdir()
    (live / "state.json").write_text(json.dumps({"run_id": "liverun"}))
    fd = _held(live / "lock")
    try:
        code, out, err = _run(capsys, "cache", "list", "--json", f"paths.home={home}")
    finally:
        os.close(fd)
    assert code == 0, err
    rows = {r["name"]: r for r in json.loads(out)}
    assert len(rows) == 10
    assert rows["regfp0000000000a"]["registered"] == ["tiny/1"]
    assert rows["byrun00000000000"]["registered"] == ["tiny/1"]
    assert rows["old0000000000000"] | {"registered": [], "kind": "complete", "stage": "finetune", "run_id": "r",
                                      "in_use": False} == rows["old0000000000000"]
    assert rows["old0000000000000"]["size_bytes"] >= 3000 and rows["old0000000000000"]["age_s"] > 9 * DAY
    live = rows[".partial-live000000000000"]
    assert (live["in_use"], live["run_id"]) == (True, "liverun")
    assert rows[".partial-abandoned0000000"]["in_use"] is False
    assert [rows[n]["kind"] for n in ("norecord00000000", ".tmp-deadbeef00000000-0123abcd",
                                      ".trash-gone000000000000-89abcdef")] == ["no-record", "tmp", "trash"]
    # A lock beside a complete entry that names its fingerprint marks it in use too.
    fd = _held(home / "cache" / "finetune" / ".new0000000000000.lock")
    try:
        assert main(["cache", "list", "--json", f"paths.home={home}"]) == 0
    finally:
        os.close(fd)
    assert {r["name"]: r for r in json.loads(capsys.readouterr().out)}["new0000000000000"]["in_use"] is True


def test_list_table_is_human_readable(home: Path, capsys) -> None:
    code, out, _ = _run(capsys, "cache", "list", "--stage", "pretrain", f"paths.home={home}")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["STAGE", "ENTRY", "SIZE", "AGE", "RUN", "REGISTERED", "STATUS"]
    assert any("regfp0000000000a" in line and "tiny/1" in line and "30d" in line and "KiB" in line for line in lines)
    assert lines[-1].startswith("3 entries") and "1 leftover " in lines[-1]


def test_prune_is_a_dry_run_unless_yes(home: Path, capsys) -> None:
    before = sorted(p.name for p in (home / "cache").glob("*/*"))
    code, out, _ = _run(capsys, "cache", "prune", "--older-than", "7d", f"paths.home={home}")
    assert code == 0 and out.startswith("would remove 5 entries")
    assert sorted(p.name for p in (home / "cache").glob("*/*")) == before
    code, out, _ = _run(capsys, "cache", "prune", "--older-than", "7d", "--yes", f"paths.home={home}")
    assert code == 0 and out.startswith("removed 5 entries"), out
    left = sorted(p.name for p in (home / "cache").glob("*/*"))
    # Kept: both registered pretrain entries, the young finetune entry, the young no-record entry.
    assert left == ["byrun00000000000", "new0000000000000", "norecord00000000", "regfp0000000000a"]
    assert "registered as tiny/1" in out


def test_prune_never_removes_what_a_live_build_locks(home: Path, capsys) -> None:
    fd = _held(home / "cache" / "pretrain" / ".partial-abandoned0000000" / "lock")
    try:
        code, out, _ = _run(capsys, "cache", "prune", "--yes", "--orphans-older-than", "1h", f"paths.home={home}")
    finally:
        os.close(fd)
    assert code == 0
    assert (home / "cache" / "pretrain" / ".partial-abandoned0000000").is_dir()
    assert "in use by a live build" in out
    assert not (home / "cache" / "finetune" / ".tmp-deadbeef00000000-0123abcd").exists()


def test_prune_max_size_drops_oldest_unprotected_first(home: Path, capsys) -> None:
    code, out, _ = _run(capsys, "cache", "prune", "--max-size", "5K", "--stage", "finetune", "--yes",
                        f"paths.home={home}")
    assert code == 0
    # finetune holds old+new (3000 B + a record each), a no-record entry (1000 B) and a tmp dir: the
    # tmp (older than 1d) goes first, then the oldest complete entry (7.1K -> 4.1K); the newest stays.
    left = sorted(p.name for p in (home / "cache" / "finetune").iterdir())
    assert "new0000000000000" in left and "old0000000000000" not in left, out
    assert (home / "cache" / "prep" / "old1111111111111").is_dir()  # other stages untouched


def test_removal_renames_before_deleting(home: Path, monkeypatch) -> None:
    """A reader sees the whole entry or nothing: by the time deletion starts, the entry's
    name is gone and only the .trash-* name holds files."""
    seen: list[tuple[bool, str]] = []
    real = shutil.rmtree
    target = home / "cache" / "finetune" / "old0000000000000"

    def spy(path, *a, **k):
        seen.append((target.exists(), Path(path).name))
        return real(path, *a, **k)

    monkeypatch.setattr(cache_admin.shutil, "rmtree", spy)
    entry = next(e for e in cache_admin.scan(home) if e.path == target)
    assert cache_admin.remove_entry(entry)
    assert seen and seen[0][0] is False and seen[0][1].startswith(".trash-old0000000000000-")
    assert not list(target.parent.glob(".trash-*"))


@pytest.mark.parametrize("argv, bad", [
    (["cache", "prune", "--older-than", "7"], "--older-than: '7'"),
    (["cache", "prune", "--max-size", "lots"], "--max-size: 'lots'"),
    (["cache", "list", "--stage", "nope"], "--stage: 'nope'"),
    (["doctor", "--orphans-older-than", "x"], "--orphans-older-than: 'x'"),
    (["cache", "list", "paths.nope=1"], "paths.nope"),
])
def test_bad_usage_is_one_line_exit_2(tmp_path: Path, capsys, argv: list[str], bad: str) -> None:
    code, _, err = _run(capsys, *argv, f"paths.home={tmp_path / 'h'}")
    assert code == 2 and len(err.strip().splitlines()) == 1 and bad in err, err
    assert not (tmp_path / "h").exists()


def test_doctor_healthy_state_dir_exits_0_and_creates_nothing(home: Path, tmp_path: Path, capsys) -> None:
    shutil.rmtree(home / "cache")
    code, out, _ = _run(capsys, "doctor", f"paths.home={home}")
    assert code == 0 and "healthy" in out.splitlines()[-1]
    code, out, _ = _run(capsys, "doctor", f"paths.home={tmp_path / 'none'}")
    assert code == 0 and "nothing to check" in out and not (tmp_path / "none").exists()


def test_doctor_reports_and_fixes_leftovers_and_a_corrupt_store(home: Path, capsys) -> None:
    (home / "prefect").mkdir()
    (home / "prefect" / "prefect.db").write_bytes(b"this is not a database, it is a text file" * 100)
    code, out, _ = _run(capsys, "doctor", f"paths.home={home}")
    problems = [line for line in out.splitlines() if line.startswith("  problem")]
    assert code == 1, out
    assert len(problems) == 5, out  # the store, partial, tmp, no-record, trash
    assert any("prefect.db" in p and "does not open" in p and "file is not a database" in p for p in problems)
    assert any(".partial-abandoned0000000" in p and "abandoned partial build" in p for p in problems)
    assert all("(fix: " in p for p in problems)
    assert out.splitlines()[-1] == "5 problems; run `transferlab doctor --fix` to repair"
    code, out, _ = _run(capsys, "doctor", "--fix", f"paths.home={home}")
    assert code == 0 and out.splitlines()[-1] == "fixed all 5 problems", out
    assert list((home / "prefect").glob("prefect.db.corrupt-*")) and not (home / "prefect" / "prefect.db").exists()
    assert sorted(p.name for p in (home / "cache").glob("*/*")) == [
        "byrun00000000000", "new0000000000000", "old0000000000000", "old1111111111111", "regfp0000000000a"]
    code, out, _ = _run(capsys, "doctor", f"paths.home={home}")
    assert code == 0, out


def test_doctor_young_partial_is_a_resume_point_not_a_problem(home: Path, capsys) -> None:
    code, out, _ = _run(capsys, "doctor", "--orphans-older-than", "5d", f"paths.home={home}")
    assert ".partial-abandoned0000000" not in out and ".tmp-" not in out
    assert code == 1  # the no-record entry and the trash dir are leftovers at any age


def test_doctor_marks_runs_a_dead_process_left_running(home: Path, capsys) -> None:
    """A lease nobody holds the flock of (its process died) over a RUNNING parent run: doctor
    reports it, and --fix marks it KILLED through pipelines.tracking.liveness.reap."""
    from mlflow.tracking import MlflowClient

    shutil.rmtree(home / "cache")
    uri = f"sqlite:///{home / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    run_id = client.create_run(client.create_experiment("killed")).info.run_id  # RUNNING
    (home / "live").mkdir()
    (home / "live" / f"{run_id}.json").write_text(json.dumps({
        "run_id": run_id, "pid": 999999, "host": "box", "started": time.time() - 60, "tracking_uri": uri,
        "flow_run_id": None}))
    code, out, _ = _run(capsys, "doctor", f"paths.home={home}")
    assert code == 1
    assert (f"  problem  run {run_id}: left RUNNING: its process 999999 on box is gone "
            "(fix: --fix marks it KILLED)") in out
    code, out, _ = _run(capsys, "doctor", "--fix", f"paths.home={home}")
    assert code == 0 and f"fixed    run {run_id}: marked KILLED" in out, out
    assert client.get_run(run_id).info.status == "KILLED"
    assert not (home / "live" / f"{run_id}.json").exists()
    # A live holder's lease is not a problem.
    from pipelines.tracking import liveness

    with liveness.hold(home, "livebeef", uri):
        code, out, _ = _run(capsys, "doctor", f"paths.home={home}")
    assert code == 0 and "livebeef" not in out, out


def test_doctor_reports_a_repair_that_failed(home: Path) -> None:
    """A stand-in liveness whose reap cannot reach the store: the problem stays, exit 1."""
    import io

    from pipelines.cache.doctor import doctor_command

    shutil.rmtree(home / "cache")
    lease_file = home / "stale.json"
    lease_file.write_text("{}")
    lease = SimpleNamespace(run_id="abc123", pid=4242, host="box", tracking_uri="http://gone:5000",
                            path=lease_file)

    class Unreachable:
        def stale(self, h):
            return [lease]

        def reap(self, h, leases=None):
            return []

    out = io.StringIO()
    assert doctor_command([f"paths.home={home}"], True, "1d", out, Unreachable()) == 1
    assert "failed   run abc123: its MLflow store http://gone:5000 could not be updated; lease kept" in out.getvalue()
    assert out.getvalue().splitlines()[-1] == "1 problem not fixed (of 1)"


def test_cache_and_doctor_import_neither_torch_nor_prefect(home: Path) -> None:
    """They must stay quick and safe beside a running pipeline: no Prefect server, no torch."""
    import subprocess
    import sys

    code = ("import sys, io, contextlib\n"
            "from pipelines.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            f"    main(['cache', 'list', 'paths.home={home}'])\n"
            f"    main(['cache', 'prune', '--max-size', '1K', 'paths.home={home}'])\n"
            f"    main(['doctor', 'paths.home={home}'])\n"
            "print(sorted(m for m in ('torch', 'prefect', 'lightning', 'transformers') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stderr


def test_an_unreadable_registry_protects_every_complete_entry(home: Path, capsys) -> None:
    """If the store does not open, nobody can tell what is registered: prune keeps all
    complete entries (and says why), list shows '?', and MLflow never touches the file."""
    (home / "mlflow.db").write_bytes(b"garbage, not sqlite" * 50)
    code, out, err = _run(capsys, "cache", "prune", "--older-than", "1d", "--yes", "--orphans-older-than", "100d",
                          f"paths.home={home}")
    assert code == 0 and "does not open" in err and len(err.strip().splitlines()) == 1
    assert out.startswith("removed 1 entry, 1000 B; kept 4 protected")  # only the trash dir went
    assert out.count("the model registry could not be read") == 4, out
    code, out, _ = _run(capsys, "cache", "list", "--stage", "prep", f"paths.home={home}")
    assert " ? " in out.splitlines()[1]
    assert (home / "mlflow.db").read_bytes() == b"garbage, not sqlite" * 50


def test_options_may_follow_the_overrides(home: Path, capsys) -> None:
    code, out, _ = _run(capsys, "cache", "prune", f"paths.home={home}", "--older-than", "7d", "--stage", "prep")
    assert code == 0 and out.startswith("would remove 1 entry,"), out
