"""The index root's life: versions and CURRENT, retention, rollback, leftovers, the old flat layout, and
kill -9 of `python -m indexer build` at random moments."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from indexer.build import build_index
from indexer.store import (
    CURRENT,
    IndexIncompatible,
    has_index,
    list_versions,
    load_index,
    prune,
    read_current,
    root_lock,
    set_current,
)
from service.retrieval import Retriever
from tests.conftest import MARKER_QUERY, REPORT, ROOT, copy_root, make_client, write_small_corpus


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "indexer", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _leftovers(root: Path) -> list[str]:
    out = [p.name for p in root.glob(".CURRENT.tmp-*")]
    if (root / "versions").is_dir():
        out += [p.name for p in (root / "versions").iterdir() if p.name.startswith(".")]
    return sorted(out)


def test_build_writes_a_version_and_switches_current(tmp_path, fake_embedder):
    root = tmp_path / "index"
    corpus = write_small_corpus(tmp_path / "c", "alpha")
    v1 = build_index(corpus, root, fake_embedder).index_version
    assert read_current(root) == v1 and (root / CURRENT).read_text() == v1 + "\n"
    assert sorted(p.name for p in (root / "versions").iterdir()) == [v1]
    v2 = build_index(corpus, root, fake_embedder).index_version  # same corpus, maybe the same second
    assert v2 != v1 and read_current(root) == v2
    assert load_index(root).version == v2 and load_index(root / "versions" / v1).version == v1
    v3 = build_index(corpus, root, fake_embedder, activate=False).index_version  # --no-switch
    assert read_current(root) == v2 and [v.name for v in list_versions(root)] == [v1, v2, v3]
    assert [v.current for v in list_versions(root)] == [False, True, False]


def test_retention_keeps_the_newest_and_never_the_current(tmp_path, fake_embedder):
    root = tmp_path / "index"
    corpus = write_small_corpus(tmp_path / "c", "alpha")
    names = [build_index(corpus, root, fake_embedder, keep=10).index_version for _ in range(4)]
    assert [v.name for v in list_versions(root)] == names
    set_current(root, names[0])
    with root_lock(root):
        assert prune(root, keep=2) == [names[1]]  # the two newest stay, and the oldest because it is CURRENT
    assert [v.name for v in list_versions(root)] == [names[0], names[2], names[3]]
    v5 = build_index(corpus, root, fake_embedder, keep=1).index_version
    assert [v.name for v in list_versions(root)] == [v5]


def test_versions_and_rollback_commands(two_versions, tmp_path):
    root, a, b = copy_root(two_versions, tmp_path / "index")
    set_current(root, b)
    r = _cli("versions", "--out", str(root))
    assert r.returncode == 0
    lines = r.stdout.splitlines()
    assert lines[0].startswith(f"  {a} ") and lines[1].startswith(f"* {b} ")
    r = _cli("rollback", "--out", str(root))
    assert r.returncode == 0 and f"{b} -> {a}" in r.stdout and read_current(root) == a
    r = _cli("rollback", "--out", str(root))  # nothing older than A
    assert r.returncode == 5 and "no version older" in r.stderr and read_current(root) == a
    r = _cli("rollback", "--out", str(root), "--to", "2020-01-01T00-00-00Z-000000")
    assert r.returncode == 5 and "no version '2020-01-01T00-00-00Z-000000'" in r.stderr
    (root / "versions" / b / "dense.faiss").write_bytes(b"broken")
    r = _cli("rollback", "--out", str(root), "--to", b)  # a broken target is refused; CURRENT unchanged
    assert r.returncode == 5 and "dense.faiss" in r.stderr and "Traceback" not in r.stderr
    assert read_current(root) == a
    r = _cli("versions", "--out", str(tmp_path / "nothing"))
    assert r.returncode == 5 and "no versions" in r.stdout


def test_the_old_flat_layout_is_refused_then_replaced_by_a_build(two_versions, tmp_path, fake_embedder):
    root, a, _ = two_versions
    flat = tmp_path / "flat"
    shutil.copytree(root / "versions" / a, flat)  # what schema 1 wrote: the files directly in the root
    with pytest.raises(IndexIncompatible, match="old flat layout.*python -m indexer build"):
        load_index(flat)
    assert not has_index(flat)
    with make_client(flat, fake_embedder, load_retry_initial=3600) as c:
        r = c.get("/readyz")
        assert r.status_code == 503 and "old flat layout" in r.json()["detail"]
    v = build_index(write_small_corpus(tmp_path / "c", "alpha"), flat, fake_embedder).index_version
    assert has_index(flat) and load_index(flat).version == v
    assert sorted(p.name for p in flat.iterdir() if not p.name.startswith(".")) == [CURRENT, "versions"]


def test_leftovers_are_cleaned_by_the_next_build(two_versions, tmp_path, fake_embedder):
    root, a, _ = copy_root(two_versions, tmp_path / "index")
    (root / "versions" / ".tmp-dead").mkdir()
    (root / "versions" / ".tmp-dead" / "chunks.jsonl").write_text("half")
    (root / "versions" / f".del-{a}-0000").mkdir()
    (root / ".CURRENT.tmp-123-abcd").write_text("half")
    assert len(_leftovers(root)) == 3 and load_index(root).version == a  # ignored by readers
    build_index(write_small_corpus(tmp_path / "c", "alpha"), root, fake_embedder)
    assert _leftovers(root) == []


# -- kill -9 --------------------------------------------------------------------------------------------

KILLS = 24


def _wait_for_temp_dir(root: Path, proc: subprocess.Popen, known: set[str], timeout: float = 60) -> bool:
    """Poll until the build's temporary version directory appears (its write phase has begun); `known`:
    leftovers of earlier builds."""
    versions = root / "versions"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if any(p.name.startswith(".tmp-") and p.name not in known for p in os.scandir(versions)):
            return True
        time.sleep(0.0005)
    return False


def test_kill_9_during_build_never_leaves_current_on_a_half_written_version(tmp_path, fake_embedder,
                                                                           record_property):
    """`python -m indexer build` is killed (SIGKILL) at 24 random moments: a third uniformly over a whole
    build, the rest at a random delay after its temporary version directory appears (the write, fsync,
    rename and switch phase). After each kill CURRENT names a complete version that loads with checksums,
    the previous version still loads and answers, and the next build removes the leftovers."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(4):  # big enough that a build takes a measurable time
        shutil.copy(REPORT, corpus / f"report-{i}.md")
    root = tmp_path / "index"
    previous = build_index(corpus, root, fake_embedder, keep=100).index_version
    cmd = [sys.executable, "-m", "indexer", "build", "--corpus", str(corpus), "--out", str(root),
           "--fake-embedder", "--no-progress", "--keep", "100"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    # one uninterrupted build: how long a build takes, and how long from its temporary directory appearing
    # to CURRENT naming the new version (write, fsync, rename, switch)
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert _wait_for_temp_dir(root, proc, set())
    t_write = time.monotonic()
    while read_current(root) == previous and proc.poll() is None:
        time.sleep(0.0005)
    window = time.monotonic() - t_write
    assert proc.wait(timeout=120) == 0, proc.stderr.read()
    whole = time.monotonic() - t0
    assert read_current(root) != previous

    rng = random.Random(20261125)
    figures = {"tried": 0, "failed": 0, "before_write": 0, "during_write": 0, "between_rename_and_switch": 0,
               "after_switch": 0, "left_leftovers": 0}
    problems: list[str] = []
    for i in range(KILLS):
        before = read_current(root)
        names_before = {v.name for v in list_versions(root)}
        leftovers_before = set(_leftovers(root))
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if i % 3 == 0:
            time.sleep(rng.uniform(0, whole))
        else:
            _wait_for_temp_dir(root, proc, leftovers_before)
            time.sleep(rng.uniform(0, 1.2 * window))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        figures["tried"] += 1
        leftovers = set(_leftovers(root)) - leftovers_before  # what this kill left (a build that finishes
        figures["left_leftovers"] += bool(leftovers)        # removes earlier ones first)
        try:
            idx = load_index(root)  # with checksums: CURRENT names a complete version
            new_names = {v.name for v in list_versions(root)} - names_before
            if idx.version != before:
                figures["after_switch"] += 1
                assert idx.version in new_names
            elif new_names:
                figures["between_rename_and_switch"] += 1
            elif any(n.startswith(".tmp-") for n in leftovers):
                figures["during_write"] += 1
            else:
                figures["before_write"] += 1
            old = load_index(root / "versions" / previous)
            if not Retriever(old, fake_embedder).search("OpenInfra Foundation board", k=3):
                raise AssertionError("the previous version answered nothing")
        except Exception as e:  # every failure is a figure, reported together below
            figures["failed"] += 1
            problems.append(f"kill {i}: {type(e).__name__}: {e}")

    print(f"\nkill -9 of indexer build: {figures}; whole build {whole:.2f}s, temp dir to switch "
          f"{window * 1000:.0f}ms")
    record_property("kill9", figures)
    assert problems == [] and figures["failed"] == 0 and figures["tried"] == KILLS
    assert figures["during_write"] > 0  # the kills did reach the write phase

    # the previous version still serves over HTTP
    set_current(root, previous)
    with make_client(root, fake_embedder) as c:
        r = c.get("/v1/search", params={"q": MARKER_QUERY + " OpenInfra"})
        assert r.status_code == 200 and r.json()["index_version"] == previous and r.json()["results"]
    # the next build cleans up after the killed ones
    last = build_index(corpus, root, fake_embedder, keep=100).index_version
    assert _leftovers(root) == [] and read_current(root) == last
    for v in list_versions(root):  # every version that got its name is complete
        assert load_index(v.path).version == v.name
    assert json.loads((root / "versions" / last / "manifest.json").read_text())["index_version"] == last


def test_rollback_repairs_a_garbage_current(two_versions, tmp_path):
    from indexer.store import rollback

    root, a, b = copy_root(two_versions, tmp_path / "index")
    (root / CURRENT).write_text("not a version!\n")
    assert rollback(root) == (None, b)  # the newest version that loads
    (root / "versions" / b / "sentences.npy").write_bytes(b"x")
    set_current(root, b)
    assert rollback(root) == (b, a)
    (root / CURRENT).write_text("\x00")
    assert rollback(root) == (None, a)  # B no longer loads: skipped
