"""`python -m lcdash jobs list|cancel --db PATH`: background jobs of a store.

While the app runs it holds the store's write lock (DuckDB takes one writer process), so these
commands then fall back to the job folders (<store dir>/jobs/<job_id>/): `list` reads their
progress files, `cancel` leaves the cancel flag there and the app's job manager stops the worker.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from lcdash.errors import JobError, LcdashError


def register(subparsers) -> None:
    p = subparsers.add_parser("jobs", help="list or cancel background jobs")
    sub = p.add_subparsers(dest="jobs_command", required=True, metavar="ACTION")

    ls = sub.add_parser("list", help="jobs of a store, newest first")
    ls.add_argument("--db", required=True, help="store file")
    ls.add_argument("--state", nargs="+", choices=("queued", "running", "done", "failed", "cancelled"))
    ls.add_argument("--kind", nargs="+", help="job kinds (embed, probe, evaluate, ...)")
    ls.add_argument("--limit", type=int, default=50)
    ls.set_defaults(func=cmd_list)

    cancel = sub.add_parser("cancel", help="cancel a queued or running job")
    cancel.add_argument("job_id")
    cancel.add_argument("--db", required=True, help="store file")
    cancel.add_argument("--wait", type=float, default=30.0, help="seconds to wait for the worker to stop")
    cancel.set_defaults(func=cmd_cancel)


def _open(db: str):
    """(Store, None) or (None, why) when another process (the app) holds the store."""
    from lcdash.store import Store

    path = Path(db)
    if not path.exists():
        raise LcdashError(f"{db}: no such store")
    try:
        return Store(path), None
    except LcdashError as exc:
        if "lock" not in str(exc).lower() and "another process" not in str(exc):
            raise
        return None, str(exc)


def _workdir(db: str) -> Path:
    return Path(db).resolve().parent / "jobs"


def _fmt(job) -> str:
    progress = f"{job.step}/{job.total}" if job.total else str(job.step or "")
    when = job.created_at.strftime("%Y-%m-%d %H:%M:%S") if job.created_at else ""
    text = f"{job.job_id:<36} {job.kind:<14} {job.state:<9} {progress:>11}  {when}  {job.message or ''}"
    if job.state == "failed" and job.error:
        text += f"\n    error: {job.error.splitlines()[0]}"
    return text.rstrip()


def cmd_list(args: argparse.Namespace) -> int:
    from lcdash.jobs import JobManager, jobs_from_folders
    from lcdash.tasks import KINDS

    store, why = _open(args.db)
    if store is None:
        print(f"(the store is in use by another process: reading the job folders instead)\n  {why}")
        jobs = jobs_from_folders(_workdir(args.db))
        if args.state:
            jobs = [j for j in jobs if j.state in args.state]
        if args.kind:
            jobs = [j for j in jobs if j.kind in args.kind]
        jobs = jobs[: args.limit]
    else:
        with store:
            # reconcile: a job left running by an app that is gone is finalized or marked failed
            jobs = JobManager(store, autostart=False, kinds=KINDS).list(
                states=args.state, kinds=args.kind, limit=args.limit
            )
    if not jobs:
        print("no jobs")
        return 0
    print(f"{'job id':<36} {'kind':<14} {'state':<9} {'progress':>11}  {'created':<19}  message")
    for job in jobs:
        print(_fmt(job))
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    from lcdash.jobs import JobManager, request_cancel
    from lcdash.tasks import KINDS

    store, why = _open(args.db)
    if store is None:
        folder = _workdir(args.db) / args.job_id
        if not (folder / "job.json").exists():
            raise JobError(f"no job {args.job_id!r} under {folder.parent}")
        request_cancel(folder)
        print(f"asked job {args.job_id} to stop; the app that holds the store will mark it cancelled")
        return 0
    with store:
        jm = JobManager(store, autostart=False, kinds=KINDS)
        job = jm.cancel(args.job_id)
        if job.finished:
            print(f"job {job.job_id} is {job.state}")
            return 0
        deadline = time.monotonic() + args.wait
        while time.monotonic() < deadline and not job.finished:
            time.sleep(0.2)
            jm.poll()
            job = jm.get(args.job_id)
        print(f"job {job.job_id} is {job.state}")
        return 0 if job.finished else 1
