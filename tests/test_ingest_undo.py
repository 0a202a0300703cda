"""Issue 25, point 6: a streamed dataset ingest that commits in batches is all-or-nothing also when the
process is killed (kill -9, SIGTERM, SIGHUP) between or inside its transactions: the next read-write
open of the store undoes it (`lcdash.store.undo`), checked by a hash of every table; a failure that
had merged new observations into stored objects undoes them too, so "nothing was ingested" is true."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import _hashes
import pandas as pd
import pyarrow.parquet as pq
import pytest

from lcdash.errors import LcdashError
from lcdash.simulate import write_survey_parquet
from lcdash.store import Store

REPO = Path(__file__).resolve().parents[1]

# The child runs the real `lcdash ingest` (cli.main) with small batches (as at scale, one transaction
# per 60 light curves) and kills itself at one point of the ingest.
CHILD = textwrap.dedent("""
    import os, signal, sys
    from lcdash.cli import main
    from lcdash.store import ingest_dataset as mod
    try:
        from lcdash.store import undo
    except ImportError:  # before issue 25: no undo log (the points that need it die at batch 1)
        undo = None

    point, dataset, db = sys.argv[1:4]
    # a parent under nohup hands down SIGHUP ignored: the hang-up must reach the ingest as a user's would
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    mod.INSERT_ROWS, mod.COMMIT_ROWS = 60, 1
    calls = {"write": 0}
    write_batch = mod._write_batch

    def die(sig=signal.SIGKILL):
        sys.stdout.flush()
        os.kill(os.getpid(), sig)

    def hooked_write(*args, **kwargs):
        calls["write"] += 1
        n = calls["write"]
        if point == "after-batch-1" and n == 2:       # batch 1 committed, batch 2's transaction open
            die()
        if undo is None and point in ("after-begin", "inside-undo", "after-finish"):
            die()
        if point in ("sigterm", "sighup") and n == 3:
            die(signal.SIGTERM if point == "sigterm" else signal.SIGHUP)
        out = write_batch(*args, **kwargs)
        if point == "inside-batch-3" and n == 3:      # batch 3 written, not committed
            die()
        return out

    def hooked_finish(store, log, finish=getattr(undo, "finish", None)):
        if point == "before-finish":                  # every batch committed, not published
            die()
        finish(store, log)
        if point == "after-finish":                   # published: the ingest is complete
            die()

    def hooked_drop(cur, drop=getattr(undo, "_drop", None)):
        if point == "inside-undo":                    # a failure's undo, killed before its COMMIT
            die()
        drop(cur)

    mod._write_batch = hooked_write
    if undo is None and point == "before-finish":  # before issue 25: every batch committed
        chunked = mod._chunked
        def hooked_chunked(*args, **kwargs):
            chunked(*args, **kwargs)
            die()
        mod._chunked = hooked_chunked
    if undo is not None:
        undo.finish, undo._drop = hooked_finish, hooked_drop
    if undo is not None and point == "after-begin":
        begin = undo.begin
        def hooked_begin(*args, **kwargs):
            log = begin(*args, **kwargs)
            die()
        undo.begin = hooked_begin
    sys.exit(main(["ingest", dataset, "--db", db]))
""")


def content_hash(store: Store) -> dict:
    """A hash of every table's sorted rows."""
    return _hashes.table_hashes(store)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """6 partitions of 50 objects; with INSERT_ROWS = 60 each partition is a batch of its own."""
    root = tmp_path_factory.mktemp("undo") / "survey"
    write_survey_parquet(root, 300, seed=5, objects_per_partition=50, n_obs=(10, 20))
    return root


@pytest.fixture(scope="module")
def before_db(dataset, tmp_path_factory):
    """A store with another survey and 30 of the dataset's objects (partitions 0 and 2) holding half of
    their observations, so that batches 1 and 3 merge new observations into stored light curves."""
    db = tmp_path_factory.mktemp("undo-db") / "before.duckdb"
    parts = sorted((dataset / "observations").iterdir())
    obs = pd.concat([pq.read_table(parts[0]).to_pandas(), pq.read_table(parts[2]).to_pandas()])
    cat = pq.read_table(dataset / "objects.parquet").to_pandas()
    keep = list(obs["object_id"].drop_duplicates()[::3][:30])
    obs = obs[obs["object_id"].isin(keep)].groupby(["object_id", "band"]).head(6)
    with Store(db) as store:
        store.ingest(obs, cat[cat["object_id"].isin(keep)].drop(columns=["label"]), survey="x")
        store.ingest(
            pd.DataFrame({"object_id": ["other"] * 5, "band": "V", "time": range(5), "mag": 1.0}),
            survey="other",
        )
        assert store.info()["objects"] == 31
    return db


def _child(point, dataset, db):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-c", CHILD, point, str(dataset), str(db)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    "point, rc",
    [
        ("after-batch-1", -signal.SIGKILL),
        ("inside-batch-3", -signal.SIGKILL),
        ("before-finish", -signal.SIGKILL),
        ("sigterm", -signal.SIGTERM),
        ("sighup", -signal.SIGHUP),
    ],
)
def test_a_killed_streamed_ingest_is_undone_by_the_next_open(point, rc, dataset, before_db, tmp_path):
    import shutil

    db = tmp_path / "store.duckdb"
    shutil.copy(before_db, db)
    with Store(db) as store:
        before = content_hash(store)
    proc = _child(point, dataset, db)
    assert proc.returncode == rc, proc.stderr[-2000:]
    try:  # a reader cannot put it back: refused, with what to do (or it sees the store as before)
        reader = Store(db, read_only=True)
    except LcdashError as exc:
        assert "an ingest into this store was interrupted" in str(exc) and "open it read-write" in str(exc)
    else:
        with reader:
            assert content_hash(reader) == before
    with Store(db) as store:  # the next read-write open undoes it
        assert content_hash(store) == before
    with Store(db, read_only=True) as store:
        assert content_hash(store) == before and store.info()["objects"] == 31


def test_a_reader_is_told_then_a_rerun_killed_after_publishing_keeps_it_all(dataset, before_db, tmp_path):
    """Killed right after the marker: a read-only open is refused; the next read-write open removes the
    marker and the undo tables. Then the same ingest, killed once it has published, is kept whole."""
    import shutil

    db, ref = tmp_path / "store.duckdb", tmp_path / "ref.duckdb"
    shutil.copy(before_db, db)
    shutil.copy(before_db, ref)
    with Store(db) as store:
        before = content_hash(store)
    proc = _child("after-begin", dataset, db)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    with pytest.raises(
        LcdashError,
        match=r"an ingest into this store was interrupted \(ingest of .*survey "
        r"started .* by process \d+\); open it read-write once",
    ):
        Store(db, read_only=True)
    with Store(db) as store:
        assert content_hash(store) == before
    assert _child("after-finish", dataset, db).returncode == -signal.SIGKILL
    assert _child("none", dataset, ref).returncode == 0
    with Store(db) as store, Store(ref) as whole:
        assert content_hash(store) == content_hash(whole)
        assert store.info()["objects"] == 301 and "_ingest_undo_objects" not in content_hash(store)


def test_a_failed_merge_is_undone_and_the_message_is_true(dataset, before_db, tmp_path):
    """Partition 4 is corrupt: batches 1-3 (merging into 30 stored objects) were committed, then undone;
    killed inside that undo, the next open finishes it."""
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(dataset, bad)
    (bad / "observations" / "part=00004" / "part-0.parquet").write_bytes(b"PAR1 not really parquet")
    db = tmp_path / "store.duckdb"
    shutil.copy(before_db, db)
    with Store(db) as store:
        before = content_hash(store)
    proc = _child("none", bad, db)
    line = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 1 and "part=00004" in line and line.endswith("nothing was ingested"), line
    assert "keep them" not in line
    with Store(db) as store:
        assert content_hash(store) == before
    assert _child("inside-undo", bad, db).returncode == -signal.SIGKILL
    with Store(db) as store:
        assert content_hash(store) == before
