"""Data: browse the objects of the store (filters, sandboxed SQL, light-curve viewer) and add new
light curves (upload -> column mapping -> validation report -> confirm -> ingest)."""

from __future__ import annotations

import hashlib
import io

import pandas as pd
import streamlit as st

from lcdash import io as lcio
from lcdash.periods import FINDER_VERSION
from lcdash.store.periods import period_counts
from pages import _ui

UPLOAD_TYPES = ["csv", "tsv", "txt", "dat", "parquet", "pq", "fits", "fit", "fts", "xml", "vot", "votable",
                "ecsv", "zip", "gz"]
SHOW_ROWS = 5000
ALL = "(all)"

st.title("Data")
store, jm = _ui.store(), _ui.jobs()


def problem_lines(report) -> list[str]:
    """Each validation finding as one readable line (wrapped, never cut off): what was done, where,
    how many rows. The library's hints name the CLI's `--map ROLE=COLUMN`; here the mapping is the
    form above."""
    import re

    lines = []
    for p in report.problems:
        message = re.sub(r"\s*\((?:e\.g\. )?--map [^)]*\)", " in the column mapping above", p.message)
        where = [f"file {p.file}"] if p.file else []
        if p.column:
            where.append(f"column {p.column}")
        if p.count:
            first = f" (first: {', '.join(map(str, p.rows[:5]))})" if p.rows else ""
            where.append(f"{p.count:,} rows{first}")
        icon = ":red[error]" if p.action == "error" else f":orange[{p.action}]"
        lines.append(f"- {icon} {message}" + (f" — {'; '.join(where)}" if where else ""))
    return lines
browse, upload = st.tabs(["Browse", "Add light curves"])


def periods_outcome(job) -> None:
    """What the last periods job did (it stays on the page after the job has ended)."""
    when = f" ({job.finished_at:%b %d %H:%M})" if getattr(job, "finished_at", None) else ""
    if job.state == "done":
        r = job.result or {}
        n, found = int(r.get("light_curves") or 0), int(r.get("found") or 0)
        rate = f" at {r['lc_per_s']:.0f} light curves/s" if r.get("lc_per_s") else ""
        st.success(
            f"Last periods job{when}: {found:,} of {n:,} light curves got a period{rate}; "
            f"{n - found:,} have none (too few observations, constant or no significant peak: "
            "the viewer says why)."
        )
    elif job.state == "failed":
        st.error(f"The last periods job{when} failed: {job.error or job.message or 'no message'}")
    elif job.state == "cancelled":
        st.warning(f"The last periods job{when} was cancelled; nothing it found was stored.")


def periods_section() -> None:
    """The "Find periods" job: the period finder on every light curve (of a survey, in a band) that
    has no period of this finder version yet, stored beside the catalogue period."""
    running = []
    with _ui.guard("Reading jobs"):
        running = jm.list(states=_ui.ACTIVE, kinds=["periods"])
    with st.expander("Periods from the light curves", expanded=bool(running)):
        st.caption(
            f"The period finder ({FINDER_VERSION}: Lomb-Scargle candidates judged by multi-harmonic "
            "fits, P against 2P and cadence aliases decided) on each light curve, stored beside the "
            "catalogue period, which is never changed. Folds, embeddings and the viewer read it."
        )
        c1, c2, c3 = st.columns(3)
        survey = c1.selectbox("Survey", [ALL, *store.surveys()], key="data_periods_survey")
        band = c2.selectbox("Band", [ALL, *store.bands()], key="data_periods_band")
        overwrite = c3.checkbox("Recompute stored periods", key="data_periods_overwrite")
        params = {
            "survey": None if survey == ALL else survey,
            "band": None if band == ALL else band,
            "overwrite": overwrite,
        }
        with _ui.guard("Counting stored periods"):
            n = period_counts(store, FINDER_VERSION, params["survey"], params["band"])
            st.caption(
                f"{n['stored']:,} of {n['light_curves']:,} light curves have a result of "
                f"{FINDER_VERSION} ({n['found']:,} with a period)."
            )
        if st.button("Find periods", key="data_periods_go", type="primary", disabled=bool(running)):
            with (
                _ui.guard("Starting the periods job"),
                st.spinner("Exporting the light curves for the job ..."),
            ):
                jm.submit("periods", params)
                st.rerun()
        for job in running:
            _ui.watch_job(job.job_id, key="data_periods", on_done=lambda job: _ui.periods_changed())
        last = []
        with _ui.guard("Reading the last periods job"):
            last = jm.list(kinds=["periods"], limit=1)
        if last and last[0].state not in _ui.ACTIVE:
            periods_outcome(last[0])


@st.cache_data(max_entries=16, show_spinner="Reading the file ...")
def read_upload(name: str, data: bytes) -> list[tuple[str, pd.DataFrame]]:
    """(file name, frame) pairs of one upload (a zip gives several)."""
    if name.lower().endswith(".zip"):
        return lcio.read_zip(io.BytesIO(data), name)
    return [(name, lcio.read_table(io.BytesIO(data), name))]


# --- browse ---------------------------------------------------------------------------------------

with browse:
    surveys = store.surveys()
    labels = list(store.labels().index)
    f1, f2, f3, f4 = st.columns([2, 2, 2, 2])
    sel_surveys = f1.multiselect("Survey", surveys, key="data_survey")
    sel_labels = f2.multiselect("Catalogue label", labels, key="data_label")
    with f3:
        p_lo, p_hi = st.columns(2)
        period_lo = p_lo.number_input("Period ≥ [d]", min_value=0.0, value=None, format="%.4f",
                                      key="data_p_lo")
        period_hi = p_hi.number_input("Period ≤ [d]", min_value=0.0, value=None, format="%.4f",
                                      key="data_p_hi")
    with f4:
        n_lo, n_hi = st.columns(2)
        nobs_lo = n_lo.number_input("Obs ≥", min_value=0, value=None, step=10, key="data_n_lo")
        nobs_hi = n_hi.number_input("Obs ≤", min_value=0, value=None, step=10, key="data_n_hi")

    objects = pd.DataFrame()
    with _ui.guard("Filtering objects"):
        objects = store.objects(
            survey=sel_surveys or None, label=sel_labels or None,
            period=(period_lo, period_hi) if (period_lo is not None or period_hi is not None) else None,
            n_obs=(nobs_lo, nobs_hi) if (nobs_lo is not None or nobs_hi is not None) else None,
            limit=SHOW_ROWS + 1,
            columns=["oid", "object_id", "survey", "label", "period", "n_obs", "bands", "ra", "dec",
                     "synthetic"])
    more = len(objects) > SHOW_ROWS
    objects = objects.head(SHOW_ROWS)
    st.caption(f"{len(objects):,}{'+ (first ' + str(SHOW_ROWS) + ' shown)' if more else ''} objects "
               "match. Click a row to see its light curve.")
    if len(objects) and objects["synthetic"].any():
        st.caption("Objects marked synthetic are simulated by lcdash's demo survey, not real stars.")
    picked = st.dataframe(objects, key="data_objects", on_select="rerun", selection_mode="single-row",
                          hide_index=True, height=300,
                          column_config={"period": st.column_config.NumberColumn(format="%.5f")})
    rows = picked.selection.rows if picked is not None else []
    oid = int(objects.iloc[rows[0]]["oid"]) if rows and len(objects) else None

    with st.expander("SQL (read-only sandbox)"):
        st.caption("One SELECT over the tables objects, lightcurves, observations, labels, embeddings, "
                   "predictions, ...; no writes, no files or network; at most 10,000 rows, 10 s.")
        query = st.text_area("Query", key="data_sql",
                             value="SELECT label, count(*) AS n, median(period) AS median_period\n"
                                   "FROM objects GROUP BY label ORDER BY n DESC")
        if st.button("Run query", key="data_sql_run"):
            with _ui.guard("SQL"):
                st.session_state["data_sql_result"] = store.sql(query)
        if "data_sql_result" in st.session_state:
            result = st.session_state["data_sql_result"]
            st.caption(f"{len(result):,} rows")
            st.dataframe(result, hide_index=True, key="data_sql_table")

    periods_section()

    st.subheader("Light curve")
    if oid is None and len(objects):
        oid = int(objects.iloc[0]["oid"])
        st.caption("Showing the first object of the table; click a row to choose another.")
    if oid is not None:
        _ui.lightcurve_viewer(oid, key="data")


# --- upload -----------------------------------------------------------------------------------------

ROLE_HELP = {
    "object_id": "object identifier (leave empty for one file per object: the file name is the id)",
    "time": "observation time in days (MJD/HJD/BJD)",
    "mag": "magnitude (not flux)",
    "mag_err": "magnitude error (optional)",
    "band": "passband / filter (optional: otherwise the band typed below)",
}


def _signature(files) -> str:
    h = hashlib.sha1()
    for f in files:
        h.update(f.name.encode())
        h.update(str(f.size).encode())
    return h.hexdigest()[:10]


with upload:
    st.markdown("Upload one long table (object id, time, mag, ...) or one file per object; CSV, "
                "Parquet, FITS, VOTable, ECSV, or a zip of them. An optional catalogue table adds "
                "labels, periods and positions.")
    files = st.file_uploader("Light-curve files", type=UPLOAD_TYPES, accept_multiple_files=True,
                             key="data_upload")
    catalogue_file = st.file_uploader("Catalogue table (optional)", type=UPLOAD_TYPES,
                                      key="data_upload_catalogue")
    frames: list[tuple[str, pd.DataFrame]] = []
    with _ui.guard("Reading the upload"):
        for f in files or []:
            frames += read_upload(f.name, f.getvalue())
    catalogue = None
    if catalogue_file is not None:
        with _ui.guard("Reading the catalogue"):
            catalogue = read_upload(catalogue_file.name, catalogue_file.getvalue())[0][1]

    if frames:
        sig = _signature(files)
        first_name, first = frames[0]
        st.markdown(f"**{len(frames)} table(s)**, {sum(len(f) for _, f in frames):,} rows. "
                    f"Preview of `{first_name}`:")
        st.dataframe(first.head(20), hide_index=True, key="data_upload_preview")
        columns = [str(c) for c in first.columns]
        guess = lcio.guess_mapping(columns)
        st.markdown("**Column mapping** (guessed; correct it if needed)")
        mapping: dict[str, str | None] = {}
        cols = st.columns(len(lcio.OBS_ROLES))
        for col, role in zip(cols, lcio.OBS_ROLES, strict=True):
            options = [None, *columns]
            default = options.index(guess.get(role)) if guess.get(role) in options else 0
            mapping[role] = col.selectbox(role, options, index=default, key=f"map_{role}_{sig}",
                                          format_func=lambda c: "— none —" if c is None else c,
                                          help=ROLE_HELP[role])
        o1, o2, o3 = st.columns(3)
        survey = o1.text_input("Survey name", key=f"upload_survey_{sig}",
                               value=lcio.file_stem(first_name) if len(frames) == 1 else "uploaded",
                               help="objects are keyed by (survey, object id)")
        band = o2.text_input("Band (when there is no band column)", value="default", key=f"upload_band_{sig}")
        min_obs = o3.number_input("Minimum observations per light curve", min_value=1, value=5,
                                  key=f"upload_min_obs_{sig}")

        allow_merge = st.checkbox("Allow merge (--allow-merge): files without an id column are one star each "
                                  "even when times repeat or names recur in several folders",
                                  key=f"upload_allow_merge_{sig}")
        report = None
        with _ui.guard("Validating"):
            obs, objs, report = lcio.prepare(frames, mapping, objects=catalogue,
                                             band=band or None, min_obs=int(min_obs),
                                             name=first_name, allow_merge=allow_merge)
        if report is not None:
            st.markdown("**Validation report**")
            head = (f"{report.n_rows_read:,} rows read, {report.n_rows_kept:,} kept, "
                    f"{report.n_objects:,} objects; {len(report.errors)} error(s), "
                    f"{len(report.fixes)} fix(es)"
                    + (f", {len(report.warnings)} warning(s)" if report.warnings else ""))
            (st.success if report.ok else st.error)(head)
            for line in problem_lines(report):
                st.markdown(line)
            if report.ok and report.n_objects:
                if st.button(f"Ingest {report.n_objects:,} objects into survey '{survey}'", type="primary",
                             key=f"upload_confirm_{sig}", disabled=not survey.strip()):
                    with _ui.guard("Ingest"):
                        done = store.ingest(obs, objs, survey=survey.strip(), validation=report)
                        st.session_state["data_last_ingest"] = (survey.strip(), done.summary())
                        _ui.store_changed()  # the sidebar's object count
    if "data_last_ingest" in st.session_state:
        name, summary = st.session_state["data_last_ingest"]
        st.success(f"Ingested: {summary}")
        with _ui.guard("Listing the new objects"):
            st.dataframe(store.objects(survey=name, limit=SHOW_ROWS,
                                       columns=["oid", "object_id", "survey", "label", "period", "n_obs",
                                                "bands"]),
                         hide_index=True, key="data_ingested")
