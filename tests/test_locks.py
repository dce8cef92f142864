"""The build lock that lets concurrent runs share cache entries: wait, reuse, take over, time out.

Threads take the lock through separate file descriptors, which conflict exactly as
separate processes do (flock locks belong to the open file); the holder that dies is a
real process killed with SIGKILL, since only the kernel's release on death proves that.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pipelines.cache.store import StageCache, write_record
from pipelines.runtime.locks import BuildTimeout, build_lock, exclusive, holder

REPO = Path(__file__).resolve().parent.parent


class Holder(threading.Thread):
    """Holds the build lock at ``lock`` until ``release`` is set, then finishes (or not) the entry."""

    def __init__(self, lock: Path, marker: Path, finish: bool = True, fail: bool = False) -> None:
        super().__init__(daemon=True)
        self.lock, self.marker, self.finish, self.fail = lock, marker, finish, fail
        self.locked, self.release = threading.Event(), threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with build_lock(self.lock, "prep abc", 30, self.marker.exists) as claim:
                assert not claim.done
                self.locked.set()
                self.release.wait(30)
                if self.fail:
                    raise RuntimeError("build failed")
                if self.finish:
                    self.marker.write_text("done")
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            self.error = exc


def _start(holder_: Holder) -> Holder:
    holder_.start()
    assert holder_.locked.wait(10)
    return holder_


def test_second_builder_waits_then_reuses(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    lock, marker = tmp_path / ".lock-abc", tmp_path / "done"
    first = _start(Holder(lock, marker))
    assert holder(lock) == f"pid {os.getpid()}"
    threading.Timer(1.0, first.release.set).start()
    with caplog.at_level(logging.INFO, logger="transferlab"), build_lock(lock, "prep abc", 30, marker.exists) as claim:
        assert claim.done and claim.waited_s >= 0.5 and claim.waited_for == f"pid {os.getpid()}"
    first.join(10)
    assert first.error is None
    assert f"waiting for prep abc being built by pid {os.getpid()} (timeout 30 s" in caplog.text
    assert "while we waited" in caplog.text
    assert not lock.exists() and holder(lock) is None  # the lock file goes with its last holder


def test_waiter_takes_over_when_the_builder_fails(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    lock, marker = tmp_path / ".lock-abc", tmp_path / "done"
    first = _start(Holder(lock, marker, fail=True))
    threading.Timer(0.5, first.release.set).start()
    with caplog.at_level(logging.INFO, logger="transferlab"), build_lock(lock, "prep abc", 30, marker.exists) as claim:
        assert not claim.done and claim.waited_for  # ours to build now
        assert holder(lock) is not None
        marker.write_text("done")
    first.join(10)
    assert isinstance(first.error, RuntimeError)
    assert "stopped without finishing it" in caplog.text


def test_waiter_takes_over_when_the_builder_is_killed(tmp_path: Path) -> None:
    """SIGKILL of the builder: the kernel drops its lock and the waiter builds."""
    lock, marker = tmp_path / ".lock-abc", tmp_path / "done"
    code = ("import sys, time; from pathlib import Path; from pipelines.runtime.locks import build_lock\n"
            f"with build_lock(Path({str(lock)!r}), 'prep abc', 5, lambda: False):\n"
            "    print('locked', flush=True); time.sleep(120)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        assert holder(lock) == f"pid {proc.pid}"
        threading.Timer(1.0, os.kill, (proc.pid, signal.SIGKILL)).start()
        with build_lock(lock, "prep abc", 60, marker.exists) as claim:
            assert not claim.done and claim.waited_for == f"pid {proc.pid}" and claim.waited_s >= 0.5
    finally:
        proc.kill()
        proc.wait(10)


def test_wait_times_out_with_one_line(tmp_path: Path) -> None:
    lock, marker = tmp_path / ".lock-abc", tmp_path / "done"
    first = _start(Holder(lock, marker))
    try:
        t0 = time.monotonic()
        with pytest.raises(BuildTimeout) as info, build_lock(lock, "pretrain abc", 1, marker.exists):
            pass
        assert time.monotonic() - t0 >= 1
        message = str(info.value)
        assert "\n" not in message and f"pretrain abc being built by pid {os.getpid()}" in message
        assert "cache.wait_timeout_s" in message
        with pytest.raises(BuildTimeout, match="cache.wait_timeout_s is 0"), build_lock(lock, "x", 0, marker.exists):
            pass
    finally:
        first.release.set()
        first.join(10)


def test_finished_entry_needs_no_lock(tmp_path: Path) -> None:
    lock, marker = tmp_path / ".lock-abc", tmp_path / "done"
    marker.write_text("done")
    first = _start(Holder(lock, tmp_path / "other"))  # even while someone holds the lock
    try:
        with build_lock(lock, "prep abc", 0, marker.exists) as claim:
            assert claim.done and claim.waited_for is None
    finally:
        first.release.set()
        first.join(10)


def test_lock_file_removed_by_its_holder_never_admits_two(tmp_path: Path) -> None:
    """Many threads building one entry: each build runs alone, and exactly one builds."""
    lock, marker = tmp_path / ".lock-abc", tmp_path / "done"
    inside, most, builds = [0], [0], [0]
    guard = threading.Lock()

    def worker() -> None:
        with build_lock(lock, "prep abc", 30, marker.exists) as claim:
            if claim.done:
                return
            with guard:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
                builds[0] += 1
            time.sleep(0.3)
            marker.write_text("done")
            with guard:
                inside[0] -= 1

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert most[0] == 1 and builds[0] == 1


def test_stage_cache_claim_waits_for_the_record(tmp_path: Path) -> None:
    cache = StageCache(tmp_path, "finetune")
    started, release = threading.Event(), threading.Event()

    def build() -> None:
        with cache.claim("fp1", 30) as claim, cache.build("fp1") as tmp:
            assert not claim.done
            started.set()
            release.wait(30)
            write_record(tmp, {"stage": "finetune", "fingerprint": "fp1", "run_id": "r1"})

    t = threading.Thread(target=build)
    t.start()
    assert started.wait(10)
    assert cache.builder("fp1") == f"pid {os.getpid()}"
    threading.Timer(0.5, release.set).start()
    with cache.claim("fp1", 30) as claim:
        assert claim.done and claim.waited_for
        assert cache.lookup("fp1")["run_id"] == "r1"
    t.join(10)
    assert cache.builder("fp1") is None
    assert sorted(p.name for p in cache.root.iterdir()) == ["fp1"]  # no lock or temp files left


def test_exclusive_serializes(tmp_path: Path) -> None:
    lock, order = tmp_path / "store.lock", []

    def worker(i: int) -> None:
        with exclusive(lock):
            order.append(("in", i))
            time.sleep(0.1)
            order.append(("out", i))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert all(order[k][0] == "in" and order[k + 1] == ("out", order[k][1]) for k in range(0, 8, 2))


def test_different_entries_build_side_by_side(tmp_path: Path) -> None:
    """Sweep points that share nothing: their builds hold separate locks at the same time."""
    cache = StageCache(tmp_path, "finetune")
    with cache.claim("fp1", 0) as one, cache.claim("fp2", 0) as two:
        assert not one.done and not two.done
        assert cache.builder("fp1") and cache.builder("fp2")
