"""Explore's map for large projections (`lcdash.mapview`): a density image of every point under an
invisible sample scatter; a lasso or box selects every point inside it, on the server.

Used by pages/explore.py when a stored projection has at least `mapview.density_min_points()` points;
smaller ones keep the plain scatter (`plots.embedding_scatter`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from lcdash import mapview, workspace
from lcdash.errors import LcdashError
from lcdash.store import maps
from pages import _ui


def _setting(read, default: int) -> int:
    try:
        return read()
    except LcdashError as exc:
        st.warning(f"{exc}; using {default:,}.")
        return default


def is_large(store, proj_id: int | None) -> bool:
    """Whether projection `proj_id` gets the density view."""
    if proj_id is None:
        return False
    threshold = _setting(mapview.density_min_points, mapview.DENSITY_MIN_POINTS)
    return _size(str(store.path), int(proj_id), store) >= threshold


@st.cache_data(max_entries=16, show_spinner=False)
def _size(path: str, proj_id: int, _store) -> int:
    return maps.projection_size(_store, proj_id)


# cache_resource, not cache_data: no pickled copy of a million rows on every rerun (callers never
# modify what these return).
@st.cache_resource(max_entries=2, show_spinner="Loading the projection ...")
def load_points(path: str, proj_id: int, _store) -> pd.DataFrame:
    """oid, band, x, y, synthetic of every point (no other object columns: they are read one at a time
    when the map is coloured by them)."""
    pts = maps.projection_arrays(_store, proj_id)
    synthetic = maps.projection_column(_store, proj_id, "synthetic")
    pts["synthetic"] = synthetic.fillna(False).astype(bool).to_numpy()
    return pts


@st.cache_resource(max_entries=2, show_spinner=False)
def _map_points(path: str, proj_id: int, _points: pd.DataFrame) -> mapview.MapPoints:
    return mapview.MapPoints(_points["oid"].to_numpy(), _points["x"].to_numpy(), _points["y"].to_numpy())


def colour_column(path: str, proj_id: int, option: str, points: pd.DataFrame, store) -> pd.Series:
    """The values of colour `option` for each point: object columns straight from the store (kept 10
    minutes: re-reading a million labels costs ~0.4 s), label sets and predictions as on the plain
    scatter (`workspace.colour_values`, kept 10 s: labelling changes them)."""
    if option in workspace.OBJECT_COLOURS and option not in points.columns:
        return _object_colour(path, proj_id, option, store)
    return _other_colour(path, proj_id, option, points, store)


@st.cache_resource(max_entries=8, ttl=600, show_spinner="Colouring the map ...")
def _object_colour(path: str, proj_id: int, option: str, _store) -> pd.Series:
    return maps.projection_column(_store, proj_id, option)


@st.cache_resource(max_entries=8, ttl=10, show_spinner="Colouring the map ...")
def _other_colour(path: str, proj_id: int, option: str, _points: pd.DataFrame, _store) -> pd.Series:
    return workspace.colour_values(_store, _points, option)


@st.cache_resource(max_entries=8, ttl=600, show_spinner="Drawing the map ...")
def _figure(path: str, proj_id: int, option: str | None, values_id: int, extent: tuple | None, title: str,
            revision: str, sample: int, _mp: mapview.MapPoints, _values, _store):
    """The figure, rebuilt when the colour values are a new object (`values_id`: the colour caches
    above hand out the same object until they expire)."""
    colouring = mapview.colouring(_values, option)
    return mapview.density_figure(_mp, colouring, extent=extent, title=title, revision=revision,
                                  sample=sample, hover=lambda oids: maps.object_ids(_store, oids))


def coverage(store, encoder: str, proj_id: int) -> dict:
    """`workspace.map_coverage`, cached for 2 minutes: its anti-joins take ~0.85 s at a million objects,
    and every rerun (each lasso) would wait for them."""
    return _coverage(str(store.path), encoder, int(proj_id), store)


@st.cache_data(ttl=120, max_entries=8, show_spinner=False)
def _coverage(path: str, encoder: str, proj_id: int, _store) -> dict:
    return workspace.map_coverage(_store, encoder, proj_id)


def _zoom(key: str, mp: mapview.MapPoints, selected: list[int]) -> None:
    inside = np.isin(mp.oid, np.asarray(selected, np.int64))
    if inside.any():
        st.session_state[key] = mapview.extent_of(mp.x[inside], mp.y[inside], pad=0.05)


def density_map(store, proj_id: int, points: pd.DataFrame, colour: str | None, values, title: str,
                revision: str) -> None:
    """The map (in a fragment: a lasso reruns only this until the selection changes), with zoom to the
    selection and back."""
    path = str(store.path)
    mp = _map_points(path, int(proj_id), points)
    zoom_key = f"explore_zoom_{proj_id}"
    sample = _setting(mapview.sample_size, mapview.SAMPLE_POINTS)

    @st.fragment
    def _map() -> None:
        extent = st.session_state.get(zoom_key)
        fig = _figure(path, int(proj_id), colour if values is not None else None, id(values), extent, title,
                      revision, sample, mp, values, store)
        tag = "full" if extent is None else "z" + "_".join(f"{v:.4g}" for v in extent)
        event = st.plotly_chart(fig, key=f"explore_density_{proj_id}_{tag}", on_select="rerun",
                                selection_mode=("points", "box", "lasso"), width="stretch",
                                config={"displaylogo": False, "scrollZoom": True})
        selection = event.selection if event else None
        if selection and (selection.get("box") or selection.get("lasso") or selection.get("points")):
            sig = mapview.selection_key(selection)
            if sig != st.session_state.get("explore_density_sig"):
                st.session_state["explore_density_sig"] = sig
                picked = mapview.selected_oids(mp, selection)
                if not picked:
                    st.info("No object inside that selection.")
                elif picked != st.session_state.get("explore_picked"):
                    st.session_state["explore_picked"] = picked
                    _ui.set_selection(picked)
                    st.rerun(scope="app")
        z1, z2, _ = st.columns([2, 2, 6])
        selected = _ui.current_selection()
        # callbacks, not st.rerun: they run before the rerun that draws the new extent
        z1.button("Zoom to the selection", key="explore_zoom_in", disabled=not selected, on_click=_zoom,
                  args=(zoom_key, mp, selected),
                  help="redraw the density for the selection's area (scroll-zoom only stretches it)")
        z2.button("Whole map", key="explore_zoom_out", disabled=extent is None,
                  on_click=lambda: st.session_state.pop(zoom_key, None))

    _map()
    st.caption(f"Density of all {len(mp):,} points (one pixel is a bin; colour = the mix of its points' "
               f"colours, opacity = how many), with {min(len(mp), sample):,} of them "
               "sampled under it for hovering. A lasso or box selects every point inside it, not only "
               "the sampled ones.")


def neighbour_query(column, selected_ids: list[str], store, points: pd.DataFrame) -> str | None:
    """The object box of the neighbours section on a large map: a text box (a list of a million ids
    would be sent to the browser on every rerun) holding the selection's first object, else the map's
    first object (as the plain page's list starts at its first)."""
    key = "explore_nn_object_text"
    first = selected_ids[0] if selected_ids else None
    if first is not None and st.session_state.get("explore_nn_text_for") != first:
        st.session_state["explore_nn_text_for"] = first
        st.session_state[key] = first
    if key not in st.session_state and len(points):
        st.session_state[key] = maps.object_ids(store, points["oid"].iloc[:1])[0]
    value = column.text_input("Object id", key=key, help="the first object of the selection; type any other")
    return value.strip() or None


def find_object(store, object_id: str | None) -> int:
    """The oid of the typed object id; a clear message when there is none."""
    if not object_id:
        raise LcdashError("type an object id to list its neighbours")
    oid = maps.find_object(store, object_id)
    if oid is None:
        raise LcdashError(f"no object {object_id!r} in the store")
    return oid


@st.cache_resource(max_entries=1, show_spinner="Loading embeddings ...")
def load_vectors(path: str, encoder: str, embedding: str, n_rows: int, _store):
    """(oid, band, X) of the neighbours section on a large map: built batch by batch and kept once
    (cache_resource: no pickled copy of a [N, d] matrix per rerun); `n_rows` invalidates it."""
    return mapview.map_input_batches(maps.iter_embeddings(_store, encoder), embedding)


def neighbours_wanted(n_rows: int) -> bool:
    """Whether to compute neighbours on a large map: they need every embedding read once (at a million
    [5, 128] embeddings ~16 s and a full scan), so only after the user asks; then for the session."""
    key = "explore_nn_wanted"
    if st.session_state.get(key):
        return True
    st.caption(f"Neighbours on this map read all {n_rows:,} embeddings once (they stay in memory after).")
    if st.button("Find neighbours", key="explore_nn_go"):
        st.session_state[key] = True
        return True
    return False
