"""Background jobs: each runs in its own worker process; the app process owns the store.

A job goes through three steps (see docs/DESIGN.md, "Jobs"):

1. `prepare(store, params, folder) -> dict` runs in the calling process (the only one that may open
   the DuckDB file) and exports what the worker needs into the job folder. The dict it returns is
   merged into the params that `run` and `finalize` see.
2. `run(folder, params, progress) -> dict` runs in a fresh worker interpreter. It never opens the
   store. `progress(step, total, message, metrics=None)` writes `progress.json` atomically and raises
   `JobCancelled` once the job was cancelled; the return value goes to `result.json`, an exception to
   `error.json` (message + traceback). stdout/stderr go to `log.txt`.
3. `finalize(store, folder, params, result) -> dict` runs in the polling process once the worker has
   ended with a result and writes results into the store; what it returns is the job's `result`.

Workers are started as `python -c "from lcdash.jobs import _worker_main; ..."` (spawn semantics: a
fresh interpreter, nothing forked from a process that has torch loaded). We do not use
multiprocessing's spawn because it re-imports the parent's `__main__` in the child, and under
Streamlit `sys.modules["__main__"]` is the page script: the child would run the app again and try
to lock the store. Workers run in their own session, so Ctrl-C in a terminal does not reach them
and a cancel can kill the worker's whole process group.

The state lives in the store (`jobs` table) and the job folder, so a new JobManager on the same
store (app restart) picks up where the old one stopped: `reconcile()` finalizes jobs whose worker
finished meanwhile and marks jobs whose worker vanished without a result as failed.
"""

from __future__ import annotations

import atexit
import importlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
import uuid
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from lcdash.errors import JobError, LcdashError
from lcdash.jobstates import ACTIVE_STATES, TERMINAL_STATES
from lcdash.jsonio import read_json, write_json_atomic
from lcdash.progress import JobCancelled


class _JobsTable:
    """`lcdash.store.jobs`, imported on first use: importing the store pulls in duckdb and pandas
    (about 1.4 s), which a worker process never needs."""

    def __getattr__(self, name):
        from lcdash.store import jobs

        return getattr(jobs, name)


jobs_table = _JobsTable()


# Files in a job folder.
JOB_FILE = "job.json"  # job_id, kind, params (user's + prepared), run reference, sys.path
PROGRESS_FILE = "progress.json"
RESULT_FILE = "result.json"
ERROR_FILE = "error.json"
CANCEL_FILE = "cancel"
LOG_FILE = "log.txt"
WORKER_FILE = "worker.json"  # pid and start time of the worker, for readers without the store

_WORKER_CMD = "import sys; from lcdash.jobs import _worker_main; _worker_main(sys.argv[1])"


# --------------------------------------------------------------------------------------------------
# Kinds


@dataclass(frozen=True)
class TaskKind:
    """A job kind. `run` must be a module-level function: the worker imports it by name."""

    name: str
    run: Callable[[Path, dict, Callable], dict | None]
    prepare: Callable[[Any, dict, Path], dict | None] | None = None
    finalize: Callable[[Any, Path, dict, dict], dict | None] | None = None
    description: str = ""

    @property
    def run_ref(self) -> str:
        return f"{self.run.__module__}:{self.run.__qualname__}"


#: Kinds registered at run time (`register_kind`): every JobManager knows them besides its own.
KINDS: dict[str, TaskKind] = {}


def task_kind(name: str, run, prepare=None, finalize=None, description: str = "") -> TaskKind:
    """A job kind whose `run` a worker can import by name (a module-level function)."""
    if "<locals>" in run.__qualname__ or run.__module__ == "__main__":
        raise JobError(f"job kind {name!r}: run must be a module-level function the worker can import")
    return TaskKind(name, run, prepare, finalize, description)


def register_kind(name: str, run, prepare=None, finalize=None, description: str = "") -> TaskKind:
    """Register (or replace) a job kind for every JobManager (e.g. a plug-in's or a test's)."""
    kind = task_kind(name, run, prepare, finalize, description)
    KINDS[name] = kind
    return kind


# --------------------------------------------------------------------------------------------------
# Small file helpers shared by both sides


def log_tail(folder: Path, n_lines: int = 30) -> str:
    try:
        with open(Path(folder) / LOG_FILE, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 16_000))
            text = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-n_lines:])


# --------------------------------------------------------------------------------------------------
# Worker side


class Progress:
    """The `progress` callable a worker's `run` receives.

    `progress(step, total, message, metrics=None)`: `metrics` (a flat dict of numbers) are merged
    into the latest values and appended to `history`, so the app can draw e.g. a loss curve.
    Writes are throttled to one per `min_interval_s`; a background thread writes what a throttled
    call left pending, so the last report before a long silent computation still shows. Raises
    JobCancelled when the job was cancelled: library loops that report progress become
    cancellable without knowing about jobs.
    """

    def __init__(self, folder: Path, min_interval_s: float = 0.2, max_history: int = 2000):
        self.folder = Path(folder)
        self.min_interval_s = min_interval_s
        self.max_history = max_history
        self.state: dict[str, Any] = {"step": 0, "total": None, "message": "", "metrics": {}, "history": []}
        self._last_write = 0.0
        self._dirty = False
        self._lock = threading.Lock()
        self._flusher: threading.Thread | None = None

    @property
    def cancelled(self) -> bool:
        return (self.folder / CANCEL_FILE).exists()

    def check(self) -> None:
        if self.cancelled:
            raise JobCancelled("cancelled")

    def __call__(self, step, total=None, message=None, metrics=None) -> None:
        self.check()
        with self._lock:
            st = self.state
            st["step"] = int(step)
            if total is not None:
                st["total"] = int(total)
            if message is not None:
                st["message"] = str(message)
            if metrics:
                clean = {k: _plain(v) for k, v in metrics.items()}
                st["metrics"].update(clean)
                st["history"].append({"step": st["step"], **clean})
                del st["history"][: -self.max_history]
            self._dirty = True
            final = st["total"] is not None and st["step"] >= st["total"]
            due = time.monotonic() - self._last_write >= self.min_interval_s
            if final or metrics or due:
                self._write()

    def flush(self) -> None:
        with self._lock:
            self._write()

    def _write(self) -> None:
        self.state["updated"] = time.time()
        write_json_atomic(self.folder / PROGRESS_FILE, self.state)
        self._last_write = time.monotonic()
        self._dirty = False

    def start_flusher(self) -> None:
        """Write pending reports every `min_interval_s` from a daemon thread (the worker calls this)."""

        def loop():
            while True:
                time.sleep(self.min_interval_s)
                with self._lock:
                    if self._dirty:
                        self._write()

        self._flusher = threading.Thread(target=loop, name="progress-flusher", daemon=True)
        self._flusher.start()


def _plain(v):
    if hasattr(v, "item"):
        return v.item()
    return v


def _resolve(ref: str):
    module, _, qualname = ref.partition(":")
    obj = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _worker_main(folder: str) -> None:
    """Entry point of a worker process (started by JobManager._start)."""
    folder = Path(folder)
    spec = json.loads((folder / JOB_FILE).read_text())
    for p in reversed(spec.get("sys_path", [])):
        if p not in sys.path:
            sys.path.insert(0, p)
    progress = Progress(folder)
    try:
        # Thread counts come from OMP_NUM_THREADS etc. set by the parent (torch reads it on import).
        run = _resolve(spec["run"])
        progress.flush()
        progress.start_flusher()
        result = run(folder, spec["params"], progress)
        progress.flush()
        write_json_atomic(folder / RESULT_FILE, result if result is not None else {})
    except JobCancelled:
        write_json_atomic(folder / ERROR_FILE, {"message": "cancelled", "cancelled": True})
        sys.exit(3)
    except BaseException as exc:  # noqa: BLE001 - every failure must reach error.json
        message = str(exc) if isinstance(exc, LcdashError) else f"{type(exc).__name__}: {exc}"
        tb = traceback.format_exc()
        print(tb, file=sys.stderr, flush=True)
        write_json_atomic(
            folder / ERROR_FILE, {"message": message, "type": type(exc).__name__, "traceback": tb}
        )
        sys.exit(1)


# --------------------------------------------------------------------------------------------------
# Parent side


@dataclass
class Job:
    job_id: str
    kind: str
    params: dict
    state: str
    step: int = 0
    total: int | None = None
    message: str | None = None
    metrics: dict | None = None
    error: str | None = None
    result: dict | None = None
    pid: int | None = None
    workdir: str | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    extra: dict = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL_STATES

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    @property
    def fraction(self) -> float:
        """Progress in [0, 1] for st.progress (1 once done, 0 when the total is unknown)."""
        if self.state == "done":
            return 1.0
        if not self.total:
            return 0.0
        return max(0.0, min(1.0, self.step / self.total))

    @property
    def folder(self) -> Path | None:
        return Path(self.workdir) if self.workdir else None

    @property
    def history(self) -> list[dict]:
        """Metrics reported so far (one dict per progress call that carried metrics)."""
        data = read_json(self.folder / PROGRESS_FILE) if self.folder else None
        return (data or {}).get("history", [])

    @property
    def traceback(self) -> str:
        data = read_json(self.folder / ERROR_FILE) if self.folder else None
        return (data or {}).get("traceback", "")

    def log_tail(self, n_lines: int = 30) -> str:
        return log_tail(self.folder, n_lines) if self.folder else ""

    @property
    def label(self) -> str:
        """A short line for lists: kind, state, progress message."""
        text = f"{self.kind} [{self.state}]"
        if self.message:
            text += f" {self.message}"
        return text

    def raise_for_state(self) -> Job:
        """Raise JobError when the job failed or was cancelled; return self otherwise."""
        if self.state == "failed":
            raise JobError(f"job {self.job_id} ({self.kind}) failed: {self.error}")
        if self.state == "cancelled":
            raise JobError(f"job {self.job_id} ({self.kind}) was cancelled")
        return self


def job_from_folder(folder: Path) -> Job | None:
    """A job as far as its folder tells (when the store is locked by the app): kind, params, progress,
    and done / failed / cancelled once the worker left result.json / error.json; None if not a job."""
    folder = Path(folder)
    spec = read_json(folder / JOB_FILE)
    if not spec:
        return None
    prog = read_json(folder / PROGRESS_FILE) or {}
    result, error = read_json(folder / RESULT_FILE), read_json(folder / ERROR_FILE)
    if result is not None:
        state = "done"
    elif (folder / CANCEL_FILE).exists():
        state = "cancelled" if error is not None else "running"
    elif error is not None:
        state = "failed"
    else:
        state = "running" if prog or (folder / WORKER_FILE).exists() else "queued"
    lost = None
    if state == "running" and not _worker_alive(folder):
        # the worker is gone without result.json / error.json: killed (OOM, kill -9) or crashed
        lost = "worker lost: the worker process ended without a result (killed, or out of memory)"
        tail = log_tail(folder, 5)
        state = "cancelled" if (folder / CANCEL_FILE).exists() else "failed"
        if tail and state == "failed":
            lost += "\nlast lines of its log:\n" + tail
    return Job(
        job_id=spec["job_id"],
        kind=spec["kind"],
        params=spec.get("params", {}),
        state=state,
        step=int(prog.get("step") or 0),
        total=prog.get("total"),
        message=prog.get("message"),
        metrics=prog.get("metrics"),
        error=(error or {}).get("message") or (lost if state == "failed" else None),
        result=result,
        workdir=str(folder),
        created_at=datetime.fromtimestamp((folder / JOB_FILE).stat().st_mtime),
    )


def jobs_from_folders(workdir: Path) -> list[Job]:
    """Every job folder under `workdir`, newest first (see job_from_folder)."""
    found = (
        [job_from_folder(p) for p in Path(workdir).iterdir() if p.is_dir()] if Path(workdir).is_dir() else []
    )
    return sorted((j for j in found if j), key=lambda j: j.created_at, reverse=True)


def request_cancel(folder: Path) -> None:
    """Leave the cancel flag in a job folder: the worker stops at its next progress call, and the
    app's manager terminates it after the grace period (used by `jobs cancel` while the app runs)."""
    (Path(folder) / CANCEL_FILE).touch()


def _proc_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22): with the pid
    it tells a worker from a later process that reuses its pid."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _worker_alive(folder: Path) -> bool:
    """Whether the worker recorded in the job folder still runs (True when nothing is recorded:
    a job from before worker.json, or one whose worker is starting)."""
    info = read_json(Path(folder) / WORKER_FILE)
    if not isinstance(info, dict) or not info.get("pid"):
        return True
    pid = int(info["pid"])
    if not _pid_alive(pid):
        return False
    start = info.get("start")
    return start is None or _proc_start(pid) in (None, start)


def _pid_alive(pid: int | None) -> bool:
    """Whether a process with this pid runs (a zombie counts as ended)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return True


def _describe_exit(code: int | None) -> str:
    if code is None:
        return (
            "the worker process ended without a result (exit status unknown: it was not started by this app)"
        )
    if code < 0:
        sig = -code
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        hint = " (killed: out of memory, or killed from outside)" if sig == signal.SIGKILL else ""
        return f"the worker process was killed by {name}{hint}"
    return f"the worker process exited with code {code} without a result"


class JobManager:
    """Starts, watches, cancels and finalizes background jobs of one store.

    Thread-safe (one lock): Streamlit sessions share one cached manager and call `poll()` from
    their fragments. At most `max_workers` workers run at once; the rest wait `queued`.
    """

    def __init__(
        self,
        store,
        workdir: str | Path | None = None,
        max_workers: int = 1,
        grace_s: float = 5.0,
        threads_per_worker: int | None = None,
        autostart: bool = True,
        kinds: Mapping[str, TaskKind] | None = None,
    ):
        self.store = store
        self.kinds = dict(kinds or {})  # e.g. lcdash.tasks.KINDS; registered kinds come on top
        if workdir is None:
            path = getattr(store, "path", None)
            if path is None or str(path) == ":memory:":
                raise JobError("an in-memory store needs an explicit jobs workdir")
            workdir = Path(path).resolve().parent / "jobs"
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.max_workers = max(1, int(max_workers))
        self.grace_s = grace_s
        self.threads_per_worker = threads_per_worker or max(1, (os.cpu_count() or 1) // self.max_workers)
        self.autostart = autostart  # False: poll() never starts queued jobs (CLI inspection)
        self._procs: dict[str, subprocess.Popen] = {}
        self._cancel_at: dict[str, float] = {}
        self._mtimes: dict[str, float] = {}
        self._lock = threading.RLock()
        _MANAGERS.add(self)
        self.reconcile()

    # -- public API ------------------------------------------------------------------------------

    def kind(self, name: str) -> TaskKind:
        """The job kind `name`: registered at run time, else one this manager was given."""
        task = KINDS.get(name) or self.kinds.get(name)
        if task is None:
            known = ", ".join(sorted({*KINDS, *self.kinds}))
            raise JobError(f"unknown job kind {name!r}; known kinds: {known or 'none'}")
        return task

    def submit(self, kind: str, params: dict | None = None) -> str:
        """Prepare the job folder (in this process), record the job and start it when a slot is free."""
        task = self.kind(kind)
        params = dict(params or {})
        try:
            json.dumps(params)
        except TypeError as exc:
            raise JobError(f"job {kind}: parameters must be JSON values ({exc})") from None
        job_id = f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        folder = self.workdir / job_id
        folder.mkdir(parents=True)
        try:
            prepared = task.prepare(self.store, params, folder) if task.prepare else None
        except BaseException:
            _rmtree(folder)
            raise
        spec = {
            "job_id": job_id,
            "kind": kind,
            "params": {**params, **(prepared or {})},
            "run": task.run_ref,
            "sys_path": [p for p in sys.path if p],
        }
        write_json_atomic(folder / JOB_FILE, spec)
        with self._lock:
            jobs_table.insert_job(self.store, job_id, kind, params, str(folder))
            self._start_queued()
        return job_id

    def poll(self) -> list[Job]:
        """Refresh running jobs from their folders, finish ended ones, start queued ones.

        Cheap when nothing changed (one query and a stat per running job): the app calls it every
        second from each open page. Returns the active jobs.
        """
        with self._lock:
            rows = jobs_table.list_jobs(self.store, states=ACTIVE_STATES, oldest_first=True)
            changed = False
            for row in rows:
                if row["state"] == "running":
                    changed |= self._poll_running(row)
            if self.autostart:
                changed |= self._start_queued(None if changed else rows)
            if changed:
                rows = jobs_table.list_jobs(self.store, states=ACTIVE_STATES, oldest_first=True)
            return [Job(**r) for r in rows]

    def get(self, job_id: str) -> Job:
        row = jobs_table.get_job(self.store, job_id)
        if row is None:
            raise JobError(f"no job {job_id!r} in this store")
        return Job(**row)

    def list(self, states=None, kinds=None, limit: int | None = None) -> list[Job]:
        return [Job(**r) for r in jobs_table.list_jobs(self.store, states=states, kinds=kinds, limit=limit)]

    def active(self) -> list[Job]:
        return self.list(states=ACTIVE_STATES)

    def cancel(self, job_id: str) -> Job:
        """Ask a job to stop: a queued job is cancelled at once; a running worker sees the cancel flag
        at its next progress call and is terminated if it has not stopped after `grace_s`."""
        with self._lock:
            job = self.get(job_id)
            if job.finished:
                return job
            if job.folder:
                job.folder.mkdir(parents=True, exist_ok=True)
                (job.folder / CANCEL_FILE).touch()
            if job.state == "queued":
                jobs_table.update_job(
                    self.store,
                    job_id,
                    state="cancelled",
                    message="cancelled before it started",
                    finished_at=jobs_table.utcnow(),
                )
            else:
                self._cancel_at.setdefault(job_id, time.monotonic())
                jobs_table.update_job(self.store, job_id, message="cancelling...")
            return self.get(job_id)

    def wait(
        self,
        job_id: str,
        on_progress: Callable | None = None,
        poll_s: float = 0.5,
        timeout_s: float | None = None,
    ) -> Job:
        """Poll until the job ends; `on_progress(step, total, message, metrics)` on each change.

        Ctrl-C while waiting cancels the job (the worker is in its own session and would not see
        it) and re-raises KeyboardInterrupt. Returns the finished Job; see Job.raise_for_state().
        """
        start = time.monotonic()
        seen = None
        try:
            while True:
                self.poll()
                job = self.get(job_id)
                key = (job.step, job.total, job.message)
                if on_progress is not None and key != seen and job.state != "queued":
                    seen = key
                    on_progress(job.step, job.total, job.message, job.metrics)
                if job.finished:
                    return job
                if timeout_s is not None and time.monotonic() - start > timeout_s:
                    raise JobError(f"job {job_id} still {job.state} after {timeout_s:.0f} s")
                time.sleep(poll_s)
        except KeyboardInterrupt:
            self.cancel(job_id)
            self._terminate(job_id, force=True)
            self.poll()
            raise

    def folder(self, job_id: str) -> Path:
        return self.workdir / job_id

    def reconcile(self) -> None:
        """Settle jobs left `running` by an earlier manager (app restart): a worker that still runs
        is watched again; one that ended is finalized (result.json) or marked failed."""
        with self._lock:
            for row in jobs_table.list_jobs(self.store, states=["running"]):
                if row["job_id"] in self._procs:
                    continue
                if not _pid_alive(row["pid"]):
                    self._finish(row, exit_code=None, lost=True)

    def shutdown(self, cancel_running: bool = True, timeout_s: float = 10.0) -> None:
        """Cancel this manager's workers and wait for them (tests, CLI exit)."""
        for job_id in list(self._procs):
            if cancel_running:
                self.cancel(job_id)
        deadline = time.monotonic() + timeout_s
        while self._procs and time.monotonic() < deadline:
            self.poll()
            time.sleep(0.1)
        for job_id in list(self._procs):
            self._terminate(job_id, force=True)
        self.poll()

    # -- internals -------------------------------------------------------------------------------

    def _start_queued(self, rows: list[dict] | None = None) -> bool:
        """Start the oldest queued jobs while fewer than max_workers run; `rows`: the active jobs
        when the caller has them fresh. Returns whether it started any."""
        if rows is None:
            rows = jobs_table.list_jobs(self.store, states=ACTIVE_STATES, oldest_first=True)
        running = sum(r["state"] == "running" for r in rows)
        started = False
        for row in rows:
            if running >= self.max_workers:
                break
            if row["state"] == "queued":
                self._start(row)
                running += 1
                started = True
        return started

    def _start(self, row: dict) -> None:
        job_id, folder = row["job_id"], Path(row["workdir"])
        if not (folder / JOB_FILE).exists():
            jobs_table.update_job(
                self.store,
                job_id,
                state="failed",
                error=f"job folder {folder} is missing",
                finished_at=jobs_table.utcnow(),
            )
            return
        env = dict(os.environ)
        # Workers share the cores: cap each one's thread pools (torch reads OMP_NUM_THREADS at import),
        # unless the caller chose a count already (e.g. `evaluate --threads`).
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
            env.setdefault(var, str(self.threads_per_worker))
        env.setdefault("NUMBA_CACHE_DIR", str(self.workdir / ".numba_cache"))
        env["PYTHONUNBUFFERED"] = "1"
        with open(folder / LOG_FILE, "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-c", _WORKER_CMD, str(folder)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=os.getcwd(),
                start_new_session=True,
            )
        self._procs[job_id] = proc
        write_json_atomic(folder / WORKER_FILE, {"pid": proc.pid, "start": _proc_start(proc.pid)})
        jobs_table.update_job(
            self.store,
            job_id,
            state="running",
            pid=proc.pid,
            started_at=jobs_table.utcnow(),
            message="starting",
        )

    def _alive(self, row: dict) -> tuple[bool, int | None]:
        proc = self._procs.get(row["job_id"])
        if proc is not None:
            code = proc.poll()
            return code is None, code
        return _pid_alive(row["pid"]), None

    def _poll_running(self, row: dict) -> bool:
        """Mirror a running job's progress; finish it when its worker has ended. Returns whether
        its row changed."""
        job_id, folder = row["job_id"], Path(row["workdir"])
        changed = self._mirror_progress(row)
        alive, code = self._alive(row)
        if alive:
            asked = self._cancel_at.get(job_id)
            if asked is None and (folder / CANCEL_FILE).exists():
                # cancelled from another process (CLI `jobs cancel`): start the grace period now
                asked = self._cancel_at.setdefault(job_id, time.monotonic())
            if asked is not None:
                late = time.monotonic() - asked
                if late > self.grace_s:
                    self._terminate(job_id, force=late > 2 * self.grace_s, pid=row["pid"])
            return changed
        self._procs.pop(job_id, None)
        self._finish(row, exit_code=code)
        return True

    def _mirror_progress(self, row: dict) -> bool:
        path = Path(row["workdir"]) / PROGRESS_FILE
        try:
            mtime = path.stat().st_mtime
        except OSError:
            return False
        if self._mtimes.get(row["job_id"]) == mtime:
            return False
        data = read_json(path)
        if data is None:
            return False
        self._mtimes[row["job_id"]] = mtime
        fields = {
            "step": int(data.get("step") or 0),
            "total": data.get("total"),
            "metrics": data.get("metrics"),
        }
        if row["job_id"] not in self._cancel_at:
            fields["message"] = data.get("message")
        jobs_table.update_job(self.store, row["job_id"], **fields)
        return True

    def _terminate(self, job_id: str, force: bool = False, pid: int | None = None) -> None:
        proc = self._procs.get(job_id)
        pid = proc.pid if proc is not None else pid
        if not pid or (proc is not None and proc.poll() is not None):
            return
        sig = signal.SIGKILL if force else signal.SIGTERM
        try:
            os.killpg(pid, sig)  # the worker leads its own session: this reaches its children too
        except (ProcessLookupError, PermissionError):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        if proc is not None:
            try:
                proc.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                pass

    def _finish(self, row: dict, exit_code: int | None, lost: bool = False) -> None:
        """The worker has ended: finalize its result, or record why it failed."""
        job_id, folder = row["job_id"], Path(row["workdir"])
        self._mirror_progress(row)
        self._cancel_at.pop(job_id, None)
        now = jobs_table.utcnow()
        result = read_json(folder / RESULT_FILE)
        if result is not None:
            spec = read_json(folder / JOB_FILE) or {}
            params = spec.get("params", row["params"])
            task = KINDS.get(row["kind"]) or self.kinds.get(row["kind"])
            try:
                final = task.finalize(self.store, folder, params, result) if task and task.finalize else None
            except Exception as exc:  # noqa: BLE001 - the job fails, the app goes on
                msg = str(exc) if isinstance(exc, LcdashError) else f"{type(exc).__name__}: {exc}"
                write_json_atomic(
                    folder / ERROR_FILE,
                    {"message": f"storing the results failed: {msg}", "traceback": traceback.format_exc()},
                )
                jobs_table.update_job(
                    self.store,
                    job_id,
                    state="failed",
                    error=f"storing the results failed: {msg}",
                    finished_at=now,
                )
                return
            total = row["total"] or None
            fields = {"state": "done", "result": final if final is not None else result, "finished_at": now}
            if total:
                fields["step"] = total
            fields["message"] = "done"
            jobs_table.update_job(self.store, job_id, **fields)
            return
        error = read_json(folder / ERROR_FILE)
        if (folder / CANCEL_FILE).exists():
            why = (folder / CANCEL_FILE).read_text().strip() or "cancelled"
            jobs_table.update_job(self.store, job_id, state="cancelled", message=why, finished_at=now)
            return
        if error is not None:
            jobs_table.update_job(
                self.store, job_id, state="failed", error=error.get("message"), finished_at=now
            )
            return
        why = "worker lost: " if lost else ""
        why += _describe_exit(exit_code)
        tail = log_tail(folder, 15)
        if tail:
            why += "\nlast lines of its log:\n" + tail
        jobs_table.update_job(self.store, job_id, state="failed", error=why, finished_at=now)


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


# Workers run in their own session, so they would outlive the app; stop them when it exits (the
# next JobManager on the store marks their jobs cancelled). Workers of an app killed with SIGKILL
# keep running and are picked up again by the next app's reconcile().
_MANAGERS: weakref.WeakSet[JobManager] = weakref.WeakSet()


def _stop_workers_at_exit(grace_s: float = 3.0) -> None:
    procs = []
    for manager in list(_MANAGERS):
        for job_id, proc in list(manager._procs.items()):
            if proc.poll() is None:
                try:
                    (manager.workdir / job_id / CANCEL_FILE).write_text("stopped: the app exited")
                except OSError:
                    pass
                procs.append(proc)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for proc in procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, sig)
                except OSError:
                    pass
        deadline = time.monotonic() + grace_s
        while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
            time.sleep(0.05)


atexit.register(_stop_workers_at_exit)
