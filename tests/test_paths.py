"""``paths.build_atomically``: the one "lock, re-check, build into a temporary sibling, rename" of the caches
(synthetic checkpoints, the fp32 export, the derived profiles)."""

from __future__ import annotations

import pytest

from acestep_parity import paths


def test_builds_once_and_reuses(tmp_path):
    target, calls = tmp_path / "thing", []

    def build(tmp):
        calls.append(tmp)
        (tmp / "done").write_text("1")

    for _ in range(2):
        assert paths.build_atomically(target, tmp_path / ".lock", lambda: (target / "done").is_file(), build) == target
    assert len(calls) == 1 and calls[0].parent == tmp_path and calls[0] != target
    assert (target / "done").read_text() == "1" and sorted(p.name for p in tmp_path.iterdir()) == [".lock", "thing"]


def test_stale_target_is_replaced_whole(tmp_path):
    target = tmp_path / "thing"
    target.mkdir()
    (target / "old").write_text("stale")
    paths.build_atomically(target, tmp_path / ".lock", lambda: (target / "new").is_file(),
                           lambda tmp: (tmp / "new").write_text("fresh"))
    assert sorted(p.name for p in target.iterdir()) == ["new"]


def test_failed_build_leaves_the_old_target_and_no_temporary_folder(tmp_path):
    target = tmp_path / "thing"
    target.mkdir()
    (target / "old").write_text("kept")

    def build(tmp):
        (tmp / "half").write_text("x")
        raise RuntimeError("export failed")

    with pytest.raises(RuntimeError, match="export failed"):
        paths.build_atomically(target, tmp_path / ".lock", lambda: False, build)
    assert (target / "old").read_text() == "kept"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "thing"]


def test_rechecks_under_the_lock(tmp_path):
    """Another process may finish the build while this one waits for the lock: the second check sees it."""
    target, checks = tmp_path / "thing", []

    def complete():
        checks.append(1)
        return len(checks) > 1  # incomplete before the lock, complete once it is held

    paths.build_atomically(target, tmp_path / ".lock", complete, lambda tmp: pytest.fail("built twice"))
    assert len(checks) == 2
