"""Shared UI helpers for every page: the cached store and job manager, the sidebar, error display,
job progress and the current selection.

Pages import this module (`from pages import _ui` works because `streamlit run app.py` puts the
checkout on sys.path) and call `_ui.store()`, `_ui.jobs()`, `_ui.guard(...)`, `_ui.watch_job(...)`.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass

import streamlit as st

from lcdash import workspace
from lcdash.errors import LcdashError, user_message
from lcdash.jobstates import ACTIVE_STATES as ACTIVE  # the pages' short name

_ROUTER = {"ran": False}  # has app.py's router run in this process (see _ensure_router)


@dataclass
class _Workspace:
    store: object
    jobs: object
    report: workspace.StartReport
    lock: threading.Lock  # one session at a time polls the job manager (it writes the store)


@st.cache_resource(show_spinner="Opening the store (a fresh checkout builds the demo store first) ...")
def _open(path: str) -> _Workspace:
    """One store connection and one job manager per store path for the whole server process: DuckDB
    takes a single writer process, and every session shares it."""
    store, jobs, report = workspace.bootstrap(path)
    return _Workspace(store, jobs, report, threading.Lock())


def _ensure_router() -> None:
    """Make sure app.py's st.navigation router runs.

    Streamlit 1.67 starts in its legacy multipage mode whenever a `pages/` folder sits beside the main
    script, and stays there until some session calls st.navigation: if the first request after a
    server start is a page URL (/explore), that page runs alone, without app.py (no sidebar, every
    file of pages/ listed as a page). Leave the legacy mode and rerun through the router instead.
    Only until the router has run once in this process: AppTest resets that mode before every run
    and runs pages directly after `switch_page`, and a rerun there would swallow widget clicks.
    """
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory and not _ROUTER["ran"]:
        _ROUTER["ran"] = True
        PagesManager.uses_pages_directory = False
        st.rerun()


def _workspace() -> _Workspace:
    _ensure_router()
    path = workspace.store_path()
    try:
        return _open(str(path))
    except LcdashError as exc:
        st.error(f"Cannot open the store {path}: {exc}")
    except Exception as exc:  # e.g. the DuckDB file is locked by another process
        st.error(f"Cannot open the store {path}: {type(exc).__name__}: {exc}")
    st.stop()


def store():
    """The shared `lcdash.store.Store` of this app."""
    return _workspace().store


def jobs():
    """The shared `lcdash.jobs.JobManager` of this app."""
    return _workspace().jobs


def start_report() -> workspace.StartReport:
    return _workspace().report


def poll_jobs() -> None:
    """Refresh job states (finalizing finished ones into the store) and queue the next first-start
    job. Serialised across sessions; a failing poll is shown, never raised."""
    ws = _workspace()
    if not ws.lock.acquire(timeout=5):
        return
    try:
        ws.jobs.poll()
        workspace.advance(ws.store, ws.jobs, ws.report.encoder)
    except Exception as exc:  # noqa: BLE001 - the sidebar must keep working
        st.sidebar.warning(f"Job polling failed: {type(exc).__name__}: {exc}")
    finally:
        ws.lock.release()


@st.cache_data(ttl=5, show_spinner=False)
def _store_info_cached(path: str, _store) -> dict:
    return _store.info()


def store_changed() -> None:
    """Forget the cached store summary (after an ingest): the sidebar counts again at once."""
    _store_info_cached.clear()


def _store_info(store) -> dict:
    """store.info() at most every few seconds: the sidebar draws on every rerun."""
    return _store_info_cached(str(store.path), store)


@st.cache_resource(show_spinner=False)
def device_name() -> str:
    from lcdash.device import describe_device

    try:
        return describe_device()
    except Exception as exc:  # noqa: BLE001 - a broken torch install should not hide the app
        return f"unknown ({exc})"


# --- errors -----------------------------------------------------------------------------------


def show_error(exc: BaseException, what: str = "") -> None:
    """One st.error naming the problem; library errors carry a message meant for users."""
    prefix = f"{what}: " if what else ""
    st.error(f"{prefix}{user_message(exc)}")


@contextmanager
def guard(what: str = ""):
    """`with _ui.guard("Reading the file"):` shows any error as st.error instead of a traceback.
    Streamlit's own control flow (st.rerun, st.stop) derives from BaseException and passes through."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001
        show_error(exc, what)


# --- sidebar ----------------------------------------------------------------------------------


def sidebar() -> None:
    """Store, device and background jobs; app.py calls it once per run so every page has it."""
    _ROUTER["ran"] = True
    ws = _workspace()
    with st.sidebar:
        st.markdown(f"**Store** `{workspace.store_path().name}`")
        st.caption(str(workspace.store_path()))
        with guard("Store summary"):
            info = _store_info(ws.store)
            st.caption(f"{info['objects']:,} objects · {info['observations']:,} observations · "
                       f"{len(info['classes'])} classes · {len(info['surveys'])} survey(s)")
            if info["synthetic"]:
                st.caption(f"{info['synthetic']:,} objects are from the **synthetic** demo survey "
                           "(simulated light curves, not real stars).")
        for note in ws.report.notes:
            st.caption(note)
        st.markdown(f"**Device** {device_name()}")
        _jobs_panel()


@st.fragment(run_every=1.0)
def _jobs_panel() -> None:
    poll_jobs()
    ws = _workspace()
    try:
        listed = ws.jobs.list()
    except Exception as exc:  # noqa: BLE001
        st.warning(f"Cannot list jobs: {type(exc).__name__}: {exc}")
        return
    active = [j for j in listed if j.state in ACTIVE]
    st.markdown(f"**Jobs** ({len(active)} running)" if active else "**Jobs** none running")
    for job in active:
        _job_line(job)


def elapsed(job) -> str:
    """Seconds since the job started ("" before it starts): the line moves between progress reports."""
    from lcdash.store.jobs import utcnow

    started = getattr(job, "started_at", None)
    if not started:
        return ""
    try:
        return f"{(utcnow() - started).total_seconds():.0f} s"
    except TypeError:
        return ""


def _job_line(job, status=None) -> None:
    """A progress bar: kind, state, seconds running and the job's message, or `status(job)` when the
    page knows better what the job is doing now."""
    total = job.total or 0
    frac = min(max(job.step / total, 0.0), 1.0) if total else 0.0
    message = (status(job) if status else None) or job.message or ""
    if message == "starting":
        message = "starting the worker (loading libraries)"
    text = " · ".join(b for b in (job.kind, job.state, elapsed(job), message) if b)
    st.progress(frac, text=text)


def watch_job(job_id: str | None, key: str, on_done=None, status=None) -> None:
    """Show one job's progress, refreshed every second while it is active. When it finishes, show its
    outcome and rerun the whole page once (so the page can draw the new results); `on_done(job)` is
    called once at that moment (in the app thread); `status(job)` may say what it is doing now."""
    if not job_id:
        return

    @st.fragment(run_every=1.0 if _state(job_id) in ACTIVE else None)
    def _watch() -> None:
        poll_jobs()
        job = jobs().get(job_id)
        seen_key = f"_watch_{key}_{job_id}"
        if job.state in ACTIVE:
            st.session_state[seen_key] = "active"
            _job_line(job, status)
            if st.button("Cancel", key=f"cancel_{key}_{job_id}"):
                jobs().cancel(job_id)
            return
        if job.state == "done":
            st.success(f"{job.kind} job finished. {job.message or ''}")
        elif job.state == "failed":
            st.error(f"{job.kind} job failed: {job.error or job.message or 'no message'}")
        else:
            st.warning(f"{job.kind} job {job.state}.")
        if st.session_state.get(seen_key) == "active":
            st.session_state[seen_key] = job.state
            if on_done is not None:
                on_done(job)
            st.rerun(scope="app")

    _watch()


def _state(job_id: str) -> str | None:
    try:
        return jobs().get(job_id).state
    except Exception:  # noqa: BLE001
        return None


# --- the current selection (Explore -> Label), kept in the store + query params ----------------

_SEL = "sel"


def selection_token() -> str | None:
    """The current selection's token: from the URL (survives a refresh) or this session."""
    token = st.query_params.get(_SEL) or st.session_state.get(_SEL)
    if token:
        st.session_state[_SEL] = token
        st.query_params[_SEL] = token  # page switches clear the URL; put it back
    return token


def current_selection() -> list[int]:
    try:
        return workspace.load_selection(store(), selection_token())
    except Exception as exc:  # noqa: BLE001
        show_error(exc, "Reading the current selection")
        return []


def set_selection(oids) -> str:
    """Save `oids` in the store as the current selection and put its token in the URL."""
    token = workspace.save_selection(store(), list(oids), token=None)
    st.session_state[_SEL] = token
    st.query_params[_SEL] = token
    return token


def clear_selection() -> None:
    st.session_state.pop(_SEL, None)
    if _SEL in st.query_params:
        del st.query_params[_SEL]


# --- the light-curve viewer (Data page, Explore page) -------------------------------------------


@st.cache_data(max_entries=64, show_spinner="Lomb-Scargle periodogram ...")
def _periodogram(path: str, oid: int, _store) -> tuple:
    """(periods, power, best period) of one object's light curve, all bands together."""
    lc = _store.lightcurve(oid)
    periods, power = lc.periodogram(samples_per_peak=5)
    return periods, power, lc.best_period()


@st.cache_data(max_entries=64, show_spinner="Finding the period ...")
def _found_periods(path: str, oid: int, _store) -> list:
    """The period finder's answer for each band of one object (`workspace.found_periods`)."""
    return workspace.found_periods(_store, oid)


def periods_changed() -> None:
    """Forget the viewer's period-finder answers (after the periods job stored new periods)."""
    _found_periods.clear()


def _set_period(key: str, value: float | None) -> None:
    if value is not None and value > 0:
        st.session_state[key] = float(value)


def _finder_panel(found: list, key: str, oid: int, pkey: str):
    """The period finder's answer in the viewer's side column: the band (when there are several),
    the reason, one button per ranked candidate. Returns the band's `FoundPeriod` (None without)."""
    if not found:
        return None
    st.markdown("**Period finder**")
    pick = found[0]
    if len(found) > 1:
        bands = [f.band for f in found]
        first = next((i for i, f in enumerate(found) if f.stored), 0)
        band = st.selectbox(
            "Band",
            bands,
            index=first,
            key=f"{key}_pband_{oid}",
            help="the period finder works on one band at a time",
        )
        pick = found[bands.index(band)]
    where = "stored" if pick.stored else "found now (not stored yet)"
    if pick.found:
        st.caption(f"{pick.period:.6g} d, {where}: {pick.reason}")
    else:
        st.caption(f"No period ({where}): {pick.reason}")
    for i, (label, value, help_) in enumerate(pick.choices()):
        st.button(
            label,
            key=f"{key}_cand{i}_{oid}_{pick.band}",
            on_click=_set_period,
            args=(pkey, value),
            help=f"fold at {value:.8g} d: {help_}",
            width="stretch",
        )
    return pick


def lightcurve_viewer(oid: int, key: str) -> None:
    """One object's light curve: raw (error bars, inverted magnitudes, bands in colour) or folded at
    the catalogue period, a typed period, one of the period finder's candidates (its Fourier model
    drawn over the fold at its own period) or a Lomb-Scargle peak, with P/2 and 2P one click away."""
    from lcdash import plots
    from lcdash.lightcurve import period_aliases

    s = store()
    try:
        lc = s.lightcurve(int(oid))
        meta = s.objects(
            oids=[int(oid)], columns=["object_id", "survey", "label", "period", "n_obs", "synthetic"]
        )
    except Exception as exc:  # noqa: BLE001
        show_error(exc, f"Reading the light curve of oid {oid}")
        return
    found = []
    with guard("Period finder"):
        found = _found_periods(str(s.path), int(oid), s)
    row = meta.iloc[0]
    cat_period = float(row["period"]) if row["period"] == row["period"] and row["period"] else None
    first_found = next((f.period for f in found if f.found), None)
    synthetic = " · **synthetic** (simulated)" if bool(row["synthetic"]) else ""
    st.markdown(
        f"**{row['object_id']}** · {row['survey']}{synthetic} · label {row['label'] or '—'} · "
        f"{int(row['n_obs'])} observations · bands {', '.join(lc.bands) or '—'} · "
        f"catalogue period {f'{cat_period:.6g} d' if cat_period else '—'}"
    )
    pkey = f"{key}_period_{oid}"
    if pkey not in st.session_state:
        st.session_state[pkey] = cat_period or first_found or 1.0
    frame = lc.to_frame()
    left, right = st.columns([3, 1])
    with right:
        folded = st.toggle("Fold", value=(cat_period or first_found) is not None, key=f"{key}_fold_{oid}")
        st.number_input("Period [d]", min_value=1e-4, format="%.6f", key=pkey)
        period = float(st.session_state[pkey])
        c1, c2, c3 = st.columns(3)
        aliases = period_aliases(period)
        c1.button(
            "P/2",
            key=f"{key}_half_{oid}",
            on_click=_set_period,
            args=(pkey, aliases["P/2"]),
            help="fold at half the current period",
        )
        c2.button(
            "2P",
            key=f"{key}_double_{oid}",
            on_click=_set_period,
            args=(pkey, aliases["2P"]),
            help="fold at twice the current period",
        )
        c3.button(
            "Cat.",
            key=f"{key}_cat_{oid}",
            on_click=_set_period,
            args=(pkey, cat_period),
            disabled=cat_period is None,
            help="fold at the catalogue period",
        )
        pick = _finder_panel(found, key, int(oid), pkey)
        want_ls = st.toggle(
            "Periodogram",
            key=f"{key}_ls_{oid}",
            help="Lomb-Scargle (all bands together); pick its best peak to fold",
        )
    best = None
    if want_ls:
        try:
            periods, power, best = _periodogram(str(s.path), int(oid), s)
        except Exception as exc:  # noqa: BLE001
            show_error(exc, "Periodogram")
        if best is not None:
            with right:
                st.button(
                    f"Best peak {best:.6g} d",
                    key=f"{key}_best_{oid}",
                    on_click=_set_period,
                    args=(pkey, best),
                )
    with left:
        if folded:
            model, name = None, "model"
            if pick is not None and pick.model_fits(period):
                n_terms = (len(pick.result.coefficients) - 1) // 2
                name = f"Fourier model ({n_terms} terms, {pick.band})"
                with guard("Drawing the period finder's model"):
                    model = plots.phase_curve(pick.result.model, period, lc.epoch_of_maximum())
            fig = plots.folded_figure(
                frame.assign(phase=lc.fold(period)),
                period,
                model=model,
                model_name=name,
                model_band=pick.band if pick else None,
            )
        else:
            fig = plots.lightcurve_figure(frame)
        st.plotly_chart(fig, key=f"{key}_lc_{oid}", width="stretch")
        if best is not None:
            marks = {
                "best": best,
                "P/2": best / 2,
                "2P": best * 2,
                "catalogue": cat_period,
                "finder": pick.period if pick is not None and pick.found else None,
                "folded": period if folded else None,
            }
            st.plotly_chart(
                plots.periodogram_figure(periods, power, marks), key=f"{key}_pg_{oid}", width="stretch"
            )
