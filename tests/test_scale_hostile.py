"""Issue 25, points 7 and 9: embed-catalog when Dask workers die, and its options and inputs as a
careless user gives them (lcdash.scale, lcdash.cli.scale)."""

from __future__ import annotations

import json
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from lcdash.cli import main
from lcdash.models.astromer import Astromer, AstromerConfig
from lcdash.scale import MANIFEST, OUTPUT_FILE, iter_output, layers_of
from lcdash.simulate import simulate_survey
from lcdash.weights import save_encoder

N_OBJECTS = 24


@pytest.fixture(scope="module")
def cluster():
    """A local 2-process cluster of its own (its workers are killed here; their nannies restart them)."""
    import sys
    import types

    distributed = pytest.importorskip("distributed")
    main_module = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")  # see tests/test_scale.py
    try:
        with distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as lc:
            with distributed.Client(lc) as client:
                yield lc.scheduler_address, client
    finally:
        sys.modules["__main__"] = main_module


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    torch.manual_seed(0)
    cfg = AstromerConfig.astromer2(n_layers=2, n_heads=2, d_model=8, d_ff=8)
    return save_encoder(Astromer(cfg), cfg, tmp_path_factory.mktemp("enc") / "tiny")


@pytest.fixture(scope="module")
def observations():
    return simulate_survey(N_OBJECTS, seed=4, bands=("g",))[0]


def _dataset(folder: Path, obs, n_parts: int) -> Path:
    ids = sorted(obs["object_id"].unique())
    for k in range(n_parts):
        (folder / f"part={k}").mkdir(parents=True)
        obs[obs["object_id"].isin(ids[k::n_parts])].to_parquet(folder / f"part={k}" / "part-0.parquet")
    return folder


def _embed(src, encoder, out, *extra) -> int:
    return main(["embed-catalog", str(src), "--model", str(encoder), "--out", str(out), *map(str, extra)])


# Installed in every worker process: the worker dies (SIGKILL) right after writing a partition of OUT
# (all of them, or only `only`): its file is there, its report is not. A restarted worker is clean.
KILL_HOOK = textwrap.dedent("""
    import os, signal
    import lcdash.scale as s
    s._orig_atomic_parquet = getattr(s, "_orig_atomic_parquet", s._atomic_parquet)
    def hooked(table, target, pq=None, _orig=s._orig_atomic_parquet):
        _orig(table, target, pq)
        if str(target).startswith(OUT) and (ONLY is None or ONLY in str(target)):
            os.kill(os.getpid(), signal.SIGKILL)
    s._atomic_parquet = hooked
""")
UNHOOK = "import lcdash.scale as s; s._atomic_parquet = getattr(s, '_orig_atomic_parquet', s._atomic_parquet)"


@pytest.mark.parametrize("only", ["part=1", None], ids=["one-worker-killed", "both-workers-killed"])
def test_killed_workers_after_writing_do_not_fail_a_finished_run(
    only, tmp_path, cluster, encoder, observations, capsys
):
    address, client = cluster
    src = _dataset(tmp_path / "obs", observations, 6)
    out = tmp_path / "out"
    client.run(exec, f"OUT = {str(out.resolve())!r}; ONLY = {only!r}\n" + KILL_HOOK, {})
    try:
        code = _embed(src, encoder, out, "--scheduler", address)
    finally:
        client.run(exec, UNHOOK, {})
    captured = capsys.readouterr()
    assert code == 0, captured.err[-2000:]
    report = json.loads(captured.out.strip().splitlines()[-1])
    assert report["embedded"] == 6 and report["failed"] == [] and report["light_curves"] == N_OBJECTS
    got = [str(o) for _, t in iter_output(out) for o in t.column("object_id").to_pylist()]
    assert sorted(got) == sorted(observations["object_id"].unique())


def test_user_tmp_files_under_out_are_kept(tmp_path, cluster, encoder, observations, capsys):
    address, _ = cluster
    src = _dataset(tmp_path / "obs", observations, 2)
    out = tmp_path / "out"
    (out / "notes").mkdir(parents=True)
    mine = [out / ".notes.tmp", out / "notes" / ".draft.tmp", out / "part=0" / ".keep.tmp"]
    (out / "part=0").mkdir()
    for f in mine:
        f.write_text("the user's")
    stale = out / "part=1" / f".{OUTPUT_FILE}.{'0' * 32}.tmp"  # a killed run's own temporary file
    stale.parent.mkdir()
    stale.write_bytes(b"half a file")
    code = _embed(src, encoder, out, "--scheduler", address)
    assert code == 0, capsys.readouterr().err[-2000:]
    assert all(f.read_text() == "the user's" for f in mine)
    assert not stale.exists()


@pytest.mark.parametrize("value", [1e300, -1e300])
def test_out_of_range_times_are_refused_not_nan(value, tmp_path, cluster, encoder, observations, capsys):
    """Never NaN with exit 0: a time beyond float32 (1e300) refuses its partition in one line; times
    inside the range (3e38, 1e30) give finite embeddings."""
    address, _ = cluster
    obs = observations.copy()
    ids = sorted(obs["object_id"].unique())
    for oid, t in ((ids[0], value), (ids[1], 3e38), (ids[3], -1e30)):  # ids[k::2]: part=0, 1, 1
        obs.loc[obs.index[obs["object_id"] == oid][:3], "time"] = t
    src = _dataset(tmp_path / "obs", obs, 2)
    out = tmp_path / "out"
    code = _embed(src, encoder, out, "--scheduler", address, "--retries", 0)
    err = capsys.readouterr().err
    assert code == 1 and "1 of 2 partitions failed (part=0)" in err, err[-2000:]
    line = next(x for x in err.splitlines() if x.startswith("failed partition part=0:"))
    assert f"object {ids[0]!r}: time {value:g} is beyond the encoder's float32 range" in line
    assert not (out / "part=0" / OUTPUT_FILE).exists()
    [(name, table)] = list(iter_output(out))
    assert name == "part=1" and table.num_rows == N_OBJECTS // 2 and np.isfinite(layers_of(table)).all()


@pytest.fixture(scope="module")
def small_store(tmp_path_factory):
    db = tmp_path_factory.mktemp("store") / "s.duckdb"
    assert main(["demo", "--db", str(db), "--n-objects", "6"]) == 0
    return db


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--chunk-size", "0"], "--chunk-size 0: must be a whole number of at least 1"),
        (["--device", "tpu9"], "--device 'tpu9': not a device lcdash runs on (cpu, cuda, cuda:N or mps)"),
        (["--batch-size", "0"], "--batch-size 0: must be a whole number of at least 1"),
        (["--retries", "-1"], "--retries -1: must be a whole number of at least 0"),
        (["--out-is-a-file"], "a file, not a folder"),
    ],
)
def test_bad_options_are_one_clear_line_before_anything_runs(
    extra, words, tmp_path, cluster, encoder, small_store, capsys
):
    out = tmp_path / "out"
    if extra == ["--out-is-a-file"]:
        out.write_text("a file of mine")
        extra = []
    code = _embed(small_store, encoder, out, "--scheduler", cluster[0], *extra)
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.splitlines() == [f"lcdash embed-catalog: {err.split(': ', 1)[1]}"], err
    assert words in err and "an unexpected problem" not in err and "division" not in err
    assert out.read_text() == "a file of mine" if out.is_file() else not out.exists()  # nothing written


def test_no_dask_log_lines_or_tracebacks_before_the_final_line(
    tmp_path, cluster, encoder, observations, capfd
):
    """The command's own local cluster (no --scheduler): a failing partition is one line, and neither the
    workers (other processes, so capfd) nor the scheduler print Dask's logs."""
    src = _dataset(tmp_path / "obs", observations, 2)
    (src / "part=1" / "part-0.parquet").write_bytes(b"not parquet")
    out = tmp_path / "out"
    # in a thread with a time limit: the module's client is this process's default client, and a
    # progress bar that watched the default client's scheduler instead of the run's waited forever
    codes = []
    run = threading.Thread(
        target=lambda: codes.append(_embed(src, encoder, out, "--workers", 1, "--retries", 0)), daemon=True
    )
    run.start()
    run.join(timeout=240)
    assert codes, "embed-catalog did not finish"
    code = codes[0]
    err = capfd.readouterr().err
    lines = [x for x in err.replace("\r", "\n").splitlines() if x.strip() and "% Completed" not in x]
    assert code == 1 and "Traceback" not in err and "distributed." not in err, err[-3000:]
    assert "Warning" not in err, err[-3000:]
    assert lines[-1].startswith("lcdash embed-catalog: 1 of 2 partitions failed (part=1)")
    assert [x for x in lines if x.startswith("failed partition")] == [lines[-2]]
    assert json.loads((out / MANIFEST).read_text())["failed"].keys() == {"part=1"}
