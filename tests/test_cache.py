"""Content addressing and atomic publication of stage outputs."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.cache.store import StageCache, atomic_dir, fingerprint, write_record


def test_fingerprint_is_stable_and_input_sensitive() -> None:
    a = fingerprint("prep", {"data": {"seed": 1}, "x": [1, 2]})
    assert a == fingerprint("prep", {"x": [1, 2], "data": {"seed": 1}})
    assert a != fingerprint("prep", {"data": {"seed": 2}, "x": [1, 2]})
    assert a != fingerprint("pretrain", {"data": {"seed": 1}, "x": [1, 2]})


def test_failed_build_leaves_nothing_behind(tmp_path: Path) -> None:
    cache = StageCache(tmp_path, "prep")
    with pytest.raises(RuntimeError, match="boom"), cache.build("abc") as tmp:
        (tmp / "half-written.bin").write_bytes(b"x")
        raise RuntimeError("boom")
    assert cache.lookup("abc") is None
    assert not any(cache.root.iterdir())


def test_entry_without_record_is_neither_published_nor_reused(tmp_path: Path) -> None:
    cache = StageCache(tmp_path, "prep")
    with pytest.raises(RuntimeError, match="record.json"), cache.build("abc") as tmp:
        (tmp / "data").write_text("no record written")
    assert cache.lookup("abc") is None
    cache.path("abc").mkdir(parents=True)  # e.g. left by a crashed older version
    assert cache.lookup("abc") is None
    with cache.build("abc") as tmp:
        write_record(tmp, {"ok": True})
    assert cache.lookup("abc") == {"ok": True}


def test_atomic_dir_appears_only_when_complete(tmp_path: Path) -> None:
    final = tmp_path / "out"
    with atomic_dir(final) as tmp:
        (tmp / "a.txt").write_text("a")
        assert not final.exists()
    assert (final / "a.txt").read_text() == "a"
