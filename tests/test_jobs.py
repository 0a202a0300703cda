"""The job layer with real worker processes running trivial kinds defined here.

The kinds' `run` functions are module-level so the worker (a fresh interpreter that gets this
process's sys.path) can import them by name.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lcdash import jobs as jobs_mod
from lcdash.errors import JobError
from lcdash.jobs import JobManager, register_kind

# Workers import this module for the test kinds: keep its imports light (no lcdash.store here).

# --- test kinds -------------------------------------------------------------------------------


def count_prepare(store, params, folder):
    (folder / "input.json").write_text(json.dumps(list(range(params["n"]))))
    return {"input": "input.json"}


def count_run(folder, params, progress):
    values = json.loads((folder / params["input"]).read_text())
    total = 0
    for i, v in enumerate(values, 1):
        total += v
        progress(i, len(values), f"adding {v}", metrics={"partial": total})
    print("counted", total)
    return {"sum": total}


def count_finalize(store, folder, params, result):
    with store.transaction() as cur:
        cur.execute("INSERT INTO meta VALUES (?, ?)", [f"test:{folder.name}", str(result["sum"])])
    return {"sum": result["sum"], "stored": True}


def loop_run(folder, params, progress):
    """Runs until cancelled (progress raises JobCancelled), or `params['seconds']` at most."""
    start = time.monotonic()
    i = 0
    while time.monotonic() - start < params.get("seconds", 60):
        i += 1
        progress(i, None, f"tick {i}")
        time.sleep(0.05)
    return {"ticks": i}


def deaf_run(folder, params, progress):
    """Never checks for cancel: must be terminated after the grace period."""
    progress(1, 2, "sleeping")
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # ignore the polite request too
    time.sleep(120)
    return {}


def raise_run(folder, params, progress):
    progress(1, 3, "about to fail")
    raise ValueError("boom: the test kind failed")


def exit_run(folder, params, progress):
    progress(1, 3, "about to exit")
    print("last words before exit", flush=True)
    os._exit(7)


def finalize_fails(store, folder, params, result):
    raise RuntimeError("cannot store")


@pytest.fixture(autouse=True, scope="module")
def _kinds():
    register_kind("t_count", count_run, count_prepare, count_finalize)
    register_kind("t_loop", loop_run)
    register_kind("t_deaf", deaf_run)
    register_kind("t_raise", raise_run)
    register_kind("t_exit", exit_run)
    register_kind("t_count_badfinal", count_run, count_prepare, finalize_fails)
    yield
    for name in ("t_count", "t_loop", "t_deaf", "t_raise", "t_exit", "t_count_badfinal"):
        jobs_mod.KINDS.pop(name, None)


@pytest.fixture
def store(tmp_path):
    from lcdash.store import Store

    s = Store(tmp_path / "t.duckdb")
    yield s
    s.close()


@pytest.fixture
def jm(store):
    m = JobManager(store, grace_s=1.0)
    yield m
    m.shutdown(timeout_s=5)


def _meta(store, key):
    row = store.cursor().execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
    return row and row[0]


# --- tests ------------------------------------------------------------------------------------


def test_job_runs_reports_progress_and_finalizes(store, jm):
    seen = []
    job_id = jm.submit("t_count", {"n": 5})
    assert jm.get(job_id).state in ("queued", "running")
    job = jm.wait(job_id, on_progress=lambda *a: seen.append(a), poll_s=0.05)
    assert job.state == "done", job.error
    assert job.result == {"sum": 10, "stored": True}
    assert job.step == job.total == 5 and job.fraction == 1.0
    assert job.metrics == {"partial": 10}
    assert [h["partial"] for h in job.history] == [0, 1, 3, 6, 10]
    assert _meta(store, f"test:{job_id}") == "10"
    assert seen and seen[-1][:2] == (5, 5)
    assert "counted 10" in job.log_tail()
    assert job.started_at is not None and job.finished_at >= job.started_at
    assert jm.get(job_id).params == {"n": 5}  # the user's params, not the prepared extras


def test_unknown_kind_and_bad_params(jm):
    with pytest.raises(JobError, match="unknown job kind"):
        jm.submit("no-such-kind", {})
    with pytest.raises(JobError, match="JSON"):
        jm.submit("t_loop", {"x": object()})
    with pytest.raises(JobError, match="module-level"):
        register_kind("t_local", lambda f, p, g: {})


def test_prepare_error_leaves_no_job(jm):
    with pytest.raises(KeyError):
        jm.submit("t_count", {})  # count_prepare needs params["n"]
    assert jm.list() == []
    assert not any(p.is_dir() and not p.name.startswith(".") for p in jm.workdir.iterdir())


def test_cancel_running_job(jm):
    job_id = jm.submit("t_loop", {"seconds": 60})
    _wait_for(lambda: jm.poll() is not None and jm.get(job_id).step > 0)
    assert jm.get(job_id).state == "running"
    jm.cancel(job_id)
    job = jm.wait(job_id, poll_s=0.05, timeout_s=30)
    assert job.state == "cancelled"
    assert job.finished_at is not None


def test_cancel_terminates_a_worker_that_ignores_it(jm):
    job_id = jm.submit("t_deaf", {})
    _wait_for(lambda: jm.poll() is not None and jm.get(job_id).step == 1)
    jm.cancel(job_id)
    job = jm.wait(job_id, poll_s=0.1, timeout_s=30)
    assert job.state == "cancelled"
    assert not jobs_mod._pid_alive(job.pid)


def test_queue_and_cancel_queued(jm):
    first = jm.submit("t_loop", {"seconds": 60})
    second = jm.submit("t_count", {"n": 3})
    assert jm.get(second).state == "queued"  # max_workers=1
    third = jm.submit("t_count", {"n": 2})
    assert jm.cancel(third).state == "cancelled"
    jm.cancel(first)
    assert jm.wait(second, poll_s=0.05, timeout_s=60).state == "done"
    assert jm.get(first).state == "cancelled"
    assert jm.get(third).state == "cancelled" and jm.get(third).started_at is None
    assert [j.job_id for j in jm.list(states=["done"])] == [second]
    assert {j.job_id for j in jm.list(kinds="t_count")} == {second, third}
    assert len(jm.list(limit=2)) == 2


@pytest.mark.parametrize(
    "kind, expect",
    [("t_raise", "ValueError: boom: the test kind failed"), ("t_exit", "exited with code 7")],
)
def test_crash_is_marked_failed_and_nothing_else_touched(store, jm, kind, expect):
    good = jm.submit("t_count", {"n": 3})
    jm.wait(good, poll_s=0.05)
    bad = jm.submit(kind, {})
    job = jm.wait(bad, poll_s=0.05, timeout_s=60)
    assert job.state == "failed"
    assert expect in job.error
    if kind == "t_raise":
        assert "Traceback" in job.traceback and "raise_run" in job.traceback
        with pytest.raises(JobError, match="boom"):
            job.raise_for_state()
    else:
        assert "last words before exit" in job.error  # the log tail
    assert jm.get(good).state == "done" and _meta(store, f"test:{good}") == "3"
    # the manager keeps working after a crash
    assert jm.wait(jm.submit("t_count", {"n": 2}), poll_s=0.05).state == "done"


def test_kill_9_worker_is_marked_failed(jm):
    job_id = jm.submit("t_loop", {"seconds": 60})
    _wait_for(lambda: jm.poll() is not None and jm.get(job_id).step > 0)
    os.kill(jm.get(job_id).pid, signal.SIGKILL)
    job = jm.wait(job_id, poll_s=0.05, timeout_s=30)
    assert job.state == "failed"
    assert "SIGKILL" in job.error


def test_finalize_error_fails_the_job(store, jm):
    job = jm.wait(jm.submit("t_count_badfinal", {"n": 2}), poll_s=0.05)
    assert job.state == "failed" and "storing the results failed: RuntimeError: cannot store" in job.error


def test_restart_keeps_results_and_reconciles(store, tmp_path):
    from lcdash.store import jobs as jobs_table

    jm1 = JobManager(store, grace_s=1.0, max_workers=3)
    done = jm1.wait(jm1.submit("t_count", {"n": 4}), poll_s=0.05).job_id
    # A job whose worker finished while no manager watched it: result.json is there, row says running.
    pending = jm1.submit("t_count", {"n": 3})
    proc = jm1._procs.pop(pending)
    proc.wait(timeout=60)
    assert (jm1.folder(pending) / "result.json").exists()
    # A job whose worker vanished without a result (pid of a process that has ended).
    lost = jm1.submit("t_loop", {"seconds": 60})
    jm1._procs.pop(lost).kill()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    jobs_table.update_job(store, lost, pid=dead.pid)
    del jm1

    jm2 = JobManager(store)  # what an app restart does
    assert jm2.get(done).state == "done" and jm2.get(done).result["sum"] == 6
    assert jm2.get(pending).state == "done" and _meta(store, f"test:{pending}") == "3"
    assert jm2.get(lost).state == "failed" and "worker lost" in jm2.get(lost).error
    jm2.shutdown()


def test_restart_watches_a_worker_that_still_runs(store):
    jm1 = JobManager(store, grace_s=1.0)
    job_id = jm1.submit("t_count", {"n": 3})
    proc = jm1._procs.pop(job_id)  # forget the process object, as a restarted app would
    del jm1
    jm2 = JobManager(store)
    job = jm2.wait(job_id, poll_s=0.05, timeout_s=60)
    proc.wait(timeout=10)
    assert job.state == "done" and job.result["sum"] == 3


def test_progress_writes_atomically_and_raises_when_cancelled(tmp_path):
    prog = jobs_mod.Progress(tmp_path, min_interval_s=0)
    prog(1, 10, "one", metrics={"loss": 0.5})
    data = json.loads((tmp_path / "progress.json").read_text())
    assert data["step"] == 1 and data["total"] == 10 and data["metrics"] == {"loss": 0.5}
    (tmp_path / "cancel").touch()
    assert prog.cancelled
    with pytest.raises(jobs_mod.JobCancelled):
        prog(2, 10)
    assert [p.name for p in Path(tmp_path).iterdir() if p.name.endswith(".tmp")] == []


def _wait_for(cond, timeout_s=60.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


# --- CLI: jobs list / cancel ------------------------------------------------------------------


def test_cli_list_and_cancel(tmp_path, capsys):
    from lcdash.cli import main
    from lcdash.store import Store

    db = tmp_path / "cli.duckdb"
    with Store(db) as store:
        jm = JobManager(store, grace_s=1.0)
        done = jm.wait(jm.submit("t_count", {"n": 2}), poll_s=0.05).job_id
        jm.submit("t_loop", {"seconds": 60})
        queued = jm.submit("t_count", {"n": 2})
        running = jm.list(states=["running"])[0].job_id
        jm._procs.clear()  # the "app" goes away; its worker keeps running
    assert main(["jobs", "list", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert done in out and running in out and queued in out and "done" in out
    assert main(["jobs", "list", "--db", str(db), "--state", "queued"]) == 0
    out = capsys.readouterr().out
    assert queued in out and done not in out
    assert main(["jobs", "cancel", queued, "--db", str(db)]) == 0
    assert "cancelled" in capsys.readouterr().out
    assert main(["jobs", "cancel", running, "--db", str(db), "--wait", "30"]) == 0
    assert "cancelled" in capsys.readouterr().out
    with Store(db) as store:
        assert JobManager(store).get(running).state == "cancelled"
        assert JobManager(store).get(queued).started_at is None  # the CLI never started it
    assert main(["jobs", "cancel", "nope", "--db", str(db)]) == 1
    assert "no job 'nope'" in capsys.readouterr().err


def test_cli_falls_back_to_job_folders_while_the_store_is_locked(tmp_path, capsys):
    from lcdash.cli import main
    from lcdash.store import Store

    db = tmp_path / "locked.duckdb"
    with Store(db) as store:
        jm = JobManager(store)
        job_id = jm.submit("t_loop", {"seconds": 60})
        _wait_for(lambda: jm.poll() is not None and jm.get(job_id).step > 0)
        jm._procs.clear()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from lcdash.store import Store; s = Store(sys.argv[1]); "
            "print('ready', flush=True); sys.stdin.read()",
            str(db),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        assert main(["jobs", "list", "--db", str(db)]) == 0
        out = capsys.readouterr().out
        assert "reading the job folders" in out and job_id in out and "running" in out
        assert main(["jobs", "cancel", job_id, "--db", str(db)]) == 0
        assert "asked job" in capsys.readouterr().out
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    with Store(db) as store:  # the "app" comes back: the worker saw the flag and stopped
        jm = JobManager(store)
        assert jm.wait(job_id, poll_s=0.05, timeout_s=30).state == "cancelled"


def test_workers_stop_when_the_app_exits(tmp_path):
    from lcdash.store import Store

    db = tmp_path / "exit.duckdb"
    script = (
        "import sys, time; sys.path[:0] = sys.argv[2:]\n"
        "from lcdash.store import Store; from lcdash.jobs import JobManager, register_kind\n"
        "import test_jobs; register_kind('t_loop', test_jobs.loop_run)\n"
        "jm = JobManager(Store(sys.argv[1])); job_id = jm.submit('t_loop', {'seconds': 60})\n"
        "while jm.poll() is not None and jm.get(job_id).step == 0: time.sleep(0.05)\n"
        "print(job_id, jm.get(job_id).pid, flush=True)\n"
    )
    here = str(Path(__file__).parent)
    out = subprocess.run(
        [sys.executable, "-c", script, str(db), os.getcwd(), here],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    job_id, pid = out.stdout.split()
    assert not jobs_mod._pid_alive(int(pid))
    with Store(db) as store:
        job = JobManager(store).get(job_id)
    assert job.state == "cancelled" and job.message == "stopped: the app exited"
