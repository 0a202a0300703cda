"""Explore: the UMAP of an encoder's embeddings (computed once in a background job and stored),
coloured by any object column, label set or prediction; lasso/box selection -> table + small folded
light curves; nearest neighbours in embedding space.

The scatter lives in its own fragment with a figure that only changes when the projection or the
colouring does, so a selection reruns little and Streamlit's message cache avoids resending points.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from lcdash import periods, plots, workspace
from lcdash.store import embeddings as emb_store
from pages import _density, _ui

GRID_MAX = 24
EMBEDDINGS = {"weighted": "layer-weighted (uniform weights)", "last": "last layer"}


def embedding_label(kind: str, arch: str | None) -> str:
    """The embedding's name; "Astromer 2's" weighting only for an Astromer 2 encoder."""
    if kind == "weighted" and arch == "astromer2":
        return "layer-weighted (Astromer 2, uniform weights)"
    return EMBEDDINGS.get(kind, kind)

st.title("Explore")
store = _ui.store()
path = str(store.path)


@st.cache_data(max_entries=8, show_spinner="Loading the projection ...")
def load_points(path: str, proj_id: int, _store) -> pd.DataFrame:
    return workspace.projection_points(_store, proj_id)


@st.cache_data(max_entries=4, show_spinner="Loading embeddings ...")
def load_vectors(path: str, encoder: str, embedding: str, n_rows: int, _store):
    """(oid, band, X [N, D]) of one embedding; `n_rows` invalidates the cache when embeddings change."""
    from lcdash.projection import map_input

    oid, bands, layers = emb_store.load_embeddings(_store, encoder)
    return oid, np.asarray(bands, dtype=str), map_input(layers, embedding)


@st.cache_data(max_entries=4, show_spinner="PCA preview ...")
def pca_points(path: str, encoder: str, embedding: str, n_rows: int, _store) -> pd.DataFrame:
    oid, bands, X = load_vectors(path, encoder, embedding, n_rows, _store)
    xy = workspace.pca_preview(X)
    pts = pd.DataFrame({"oid": oid, "band": bands, "x": xy[:, 0], "y": xy[:, 1]})
    cols = _store.objects(oids=np.unique(oid), columns=["oid", "object_id", *workspace.OBJECT_COLOURS])
    return pts.merge(cols, on="oid", how="left")


@st.cache_data(ttl=10, max_entries=32, show_spinner=False)
def colour_column(path: str, key: str, option: str, _points: pd.DataFrame, _store) -> pd.Series:
    return workspace.colour_values(_store, _points, option)


# --- which encoder, which embedding, which projection -------------------------------------------------


def default_encoder(encoders: pd.DataFrame) -> str:
    """The URL's encoder, else one with a stored map (the shipped default first), else one with
    embeddings, else the shipped default, else the first."""
    names = list(encoders["name"])
    if st.query_params.get("encoder") in names:
        return st.query_params["encoder"]
    mapped = set(workspace.encoders_with_projection(store))
    embedded = set(encoders.loc[encoders["n_embeddings"] > 0, "name"])
    for pool in (mapped, embedded, set(names)):
        if workspace.DEFAULT_ENCODER_NAME in pool:
            return workspace.DEFAULT_ENCODER_NAME
        if pool:
            return next(n for n in names if n in pool)
    return names[0]


encoders = emb_store.list_encoders(store)
if encoders.empty:
    st.info("No encoder is registered yet. Import or pretrain one on the Models page; a fresh checkout "
            "registers the shipped default encoder (data/encoders/) when it is present.")
    st.stop()

c1, c2, c_colour, c3 = st.columns([2, 3, 2, 2])
names = list(encoders["name"])
encoder = c1.selectbox("Encoder", names, index=names.index(default_encoder(encoders)), key="explore_encoder")
arch = str(encoders.loc[encoders["name"] == encoder, "arch"].iloc[0])
embedding = c2.radio("Embedding", list(EMBEDDINGS), format_func=lambda k: embedding_label(k, arch),
                     key="explore_embedding", horizontal=True)
with c3.expander("UMAP parameters"):
    u1, u2, u3, u4 = st.columns(4)
    n_neighbors = u1.number_input("n_neighbors", 2, 200, workspace.FIRST_PROJECTION["n_neighbors"],
                                  key="explore_nn")
    min_dist = u2.number_input("min_dist", 0.0, 1.0, workspace.FIRST_PROJECTION["min_dist"], step=0.05,
                               key="explore_md")
    metric = u3.selectbox("metric", ["cosine", "euclidean"], key="explore_metric")
    seed = u4.number_input("seed", 0, 2**31 - 1, 0, key="explore_seed")
st.query_params["encoder"] = encoder
_ui.selection_token()  # keep the current selection's token in the URL

params = {"n_neighbors": int(n_neighbors), "min_dist": float(min_dist), "metric": metric, "seed": int(seed)}
n_rows = int(encoders.loc[encoders["name"] == encoder, "n_embeddings"].iloc[0])
proj_id = workspace.find_projection(store, encoder, embedding, params)


def active_job(kind: str, match: dict) -> str | None:
    for job in _ui.jobs().list(states=list(_ui.ACTIVE), kinds=[kind]):
        if all((job.params or {}).get(k) == v for k, v in match.items()):
            return job.job_id
    return None


points = None
preview = False
big = _density.is_large(store, proj_id)  # a large projection: density view (pages/_density.py)
if proj_id is not None:
    points = _density.load_points(path, proj_id, store) if big else load_points(path, proj_id, store)
elif n_rows == 0:
    job = active_job("embed", {"encoder": encoder})
    if job:
        st.info(f"Embedding the light curves with {encoder} in the background; the map appears when "
                "that and the UMAP job are done.")
        _ui.watch_job(job, key="explore_embed")
    else:
        st.warning(f"{encoder} has no embeddings in this store yet.")
        if st.button("Compute embeddings (background job)", key="explore_embed_go"):
            with _ui.guard("Starting the embedding job"):
                _ui.jobs().submit("embed", {"encoder": encoder})
                st.rerun()
else:
    job = active_job("project", {"encoder": encoder, "embedding": embedding, **params})
    if job:
        st.info("The UMAP is being computed in the background (the first one in a fresh checkout compiles "
                "numba: about a minute). Meanwhile: a **PCA preview** of the same embeddings.")
        _ui.watch_job(job, key="explore_project")
    else:
        match = {"encoder": encoder, "embedding": embedding, **params}
        failed = next((j for j in _ui.jobs().list(states=["failed"], kinds=["project"], limit=20)
                       if all((j.params or {}).get(k) == v for k, v in match.items())), None)
        if failed is not None:  # e.g. its worker was killed: say why, and offer the retry
            reason = (failed.error or "no reason recorded").splitlines()[0]
            st.error(f"The UMAP job for these settings failed: {reason}")
        st.info("No stored UMAP for these settings yet. Meanwhile: a **PCA preview**.")
        if st.button("Retry the UMAP job" if failed is not None else "Compute UMAP (background job)",
                     type="primary", key="explore_project_go"):
            with _ui.guard("Starting the UMAP job"):
                _ui.jobs().submit("project", {"encoder": encoder, "embedding": embedding, **params})
                st.rerun()
    with _ui.guard("PCA preview"):
        points = pca_points(path, encoder, embedding, n_rows, store)
        preview = True

if points is None or points.empty:
    st.stop()

# --- the scatter --------------------------------------------------------------------------------------

options = workspace.colour_options(store)
colour = c_colour.selectbox("Colour by", options, index=0, key="explore_colour",
                            format_func=workspace.colour_label(store))
values = None
with _ui.guard(f"Colouring by {colour}"):
    values = (_density.colour_column(path, proj_id, colour, points, store) if big else
              colour_column(path, f"{proj_id}-{preview}-{encoder}-{embedding}", colour, points, store))
shown = points.assign(**{colour: values}) if values is not None else points

# --- objects that are not on this map (uploads after the embedding, other bands) ----------------------

cover = (_density.coverage if big else workspace.map_coverage)(store, encoder, None if preview else proj_id)
if cover["unembedded"] or cover["unmapped"]:
    with st.container(border=True):
        if cover["unembedded"]:
            st.markdown(f"**{cover['unembedded']:,} of the store's {cover['objects']:,} objects are not on "
                        f"this map**: they have no {encoder} embedding yet (e.g. uploaded after the "
                        "embedding ran).")
            running = active_job("embed", {"encoder": encoder})
            if running:
                _ui.watch_job(running, key="explore_embed_missing")
            elif st.button(f"Embed the {cover['unembedded']:,} missing objects (background job)",
                           key="explore_embed_missing"):
                with _ui.guard("Starting the embedding job"):
                    _ui.jobs().submit("embed", {"encoder": encoder})
                    st.rerun()
        elif cover["unmapped"]:
            st.markdown(f"**{cover['unmapped']:,} embedded objects are not on this map yet** (embedded "
                        "after it was computed).")
            if not active_job("project", {"encoder": encoder, "embedding": embedding, **params}) and \
                    st.button("Recompute the UMAP with them (background job)", key="explore_reproject"):
                with _ui.guard("Starting the UMAP job"):
                    _ui.jobs().submit("project", {"encoder": encoder, "embedding": embedding, **params})
                    st.rerun()


@st.fragment
def scatter() -> None:
    title = (f"PCA preview (not UMAP) of {encoder}" if preview else f"UMAP of {encoder}")
    fig = plots.embedding_scatter(shown, color=colour if values is not None else None, title=title,
                                  revision=f"{proj_id}-{preview}-{encoder}-{embedding}")
    event = st.plotly_chart(fig, key=f"explore_scatter_{proj_id}_{preview}", on_select="rerun",
                            selection_mode=("points", "box", "lasso"), width="stretch",
                            config={"displaylogo": False, "scrollZoom": True})
    picked = sorted({oid for p in (event.selection.points if event else [])
                     if (oid := plots.selected_oid(p)) is not None})
    if picked and picked != st.session_state.get("explore_picked"):
        st.session_state["explore_picked"] = picked
        _ui.set_selection(picked)
        st.rerun(scope="app")


if big:
    _density.density_map(store, proj_id, points, colour, values, f"UMAP of {encoder}",
                         revision=f"{proj_id}-{preview}-{encoder}-{embedding}")
else:
    scatter()
bits = [f"UMAP #{proj_id}, parameters {', '.join(f'{k} {v}' for k, v in params.items())}, computed once "
        "and stored" if not preview else "PCA preview (first two principal components) until the UMAP lands",
        f"{points['oid'].nunique():,} objects"]
if shown["synthetic"].any():
    bits.append("synthetic demo survey: simulated light curves, not real stars")
st.caption(" · ".join(bits) + ". Lasso or box select points (drag: lasso is the default; toolbar top "
           "right) to list them below; double-click the map to clear it.")

# --- the selection ------------------------------------------------------------------------------------

selected = _ui.current_selection()
st.subheader(f"Selection ({len(selected):,} objects)")
if selected:
    objs = store.objects(oids=selected, columns=["oid", "object_id", "survey", "label", "period", "n_obs",
                                                 "synthetic"])
    a, b, c = st.columns([2, 1, 3])
    a.page_link("pages/label.py", label="Label this selection", icon=":material/label:",
                query_params={"sel": _ui.selection_token()})
    if b.button("Clear selection", key="explore_clear"):
        _ui.clear_selection()  # the chart keeps its marks; a new lasso replaces the selection
        st.rerun()
    st.dataframe(objs, hide_index=True, key="explore_sel_table", height=240)
    curves = []
    shown = objs.head(GRID_MAX)
    try:  # catalogue period, else the one found from the light curve (stored once found)
        fold_at = periods.fold_periods_of(store, shown["oid"].to_numpy(), None, "catalogue")
    except Exception as exc:  # noqa: BLE001
        _ui.show_error(exc, "Periods of the selection")
        fold_at = np.full(len(shown), np.nan)
    for row, p in zip(shown.itertuples(index=False), fold_at, strict=True):
        try:
            lc = store.lightcurve(int(row.oid))
        except Exception as exc:  # noqa: BLE001
            _ui.show_error(exc, f"Light curve of {row.object_id}")
            continue
        period = float(p) if np.isfinite(p) and p > 0 else None
        frame = lc.to_frame()
        if period:
            frame = frame.assign(phase=lc.fold(period))
        curves.append({"title": f"{row.object_id} ({row.label or '?'})", "frame": frame, "period": period})
    st.caption(f"Light curves of the first {min(GRID_MAX, len(objs))}, folded at their catalogue period, "
               "else at the period found from the light curve (raw where there is none).")
    st.plotly_chart(plots.small_multiples(curves, cols=4), key="explore_grid", width="stretch")
else:
    st.caption("Nothing selected yet.")

# --- nearest neighbours -------------------------------------------------------------------------------

st.subheader("Nearest neighbours in embedding space")
if n_rows == 0:
    st.caption("Needs embeddings.")
else:
    n1, n2 = st.columns([3, 1])
    candidates = None if big else points.drop_duplicates("oid")
    ids = [] if big else candidates["object_id"].astype(str).tolist()
    # The object box follows the selection: a new lasso makes its first mapped object the query (the
    # box keeps a hand-picked object until the selection changes).
    token = _ui.selection_token() if selected else None
    if token != st.session_state.get("explore_nn_for"):
        st.session_state["explore_nn_for"] = token
        first = next((str(o) for o in objs["object_id"] if str(o) in ids), None) if selected else None
        if first is not None:
            st.session_state["explore_nn_object"] = first
    if st.session_state.get("explore_nn_object") not in ids:
        st.session_state.pop("explore_nn_object", None)
    if big:
        query_id = _density.neighbour_query(n1, objs["object_id"].head(1).astype(str).tolist() if selected
                                            else [], store, points)
    else:
        query_id = n1.selectbox("Object", ids, key="explore_nn_object",
                                help="the first object of the selection; pick any other")
    k = n2.number_input("k", 1, 100, 10, key="explore_nn_k")
    q_oid = None
    wanted = not big or _density.neighbours_wanted(n_rows)  # a large map reads every embedding once
    if wanted:
        with _ui.guard("Nearest neighbours"):
            from lcdash.projection import nearest_neighbours

            oid_all, bands_all, X = (_density.load_vectors if big else load_vectors)(path, encoder, embedding,
                                                                                     n_rows, store)
            q_oid = (_density.find_object(store, query_id) if big else
                     int(candidates.loc[candidates["object_id"].astype(str) == query_id, "oid"].iloc[0]))
            rows = np.flatnonzero(oid_all == q_oid)
            if rows.size == 0:
                st.warning(f"{query_id} has no {encoder} embedding.")
            if rows.size:
                idx, dist = nearest_neighbours(X, int(rows[0]), k=int(k), metric=metric)
                nn = pd.DataFrame({"oid": oid_all[idx], "band": bands_all[idx], "distance": dist})
                info = store.objects(oids=nn["oid"].unique(), columns=["oid", "object_id", "label", "period"])
                nn = nn.merge(info, on="oid", how="left")
                st.dataframe(nn[["object_id", "band", "label", "period", "distance", "oid"]], hide_index=True,
                             key="explore_nn_table")
                if st.button("Select these neighbours", key="explore_nn_select"):
                    _ui.set_selection([q_oid, *nn["oid"].tolist()])
                    st.rerun()
    if q_oid is not None:
        with st.expander(f"Light curve of {query_id}"):
            _ui.lightcurve_viewer(q_oid, key="explore")
