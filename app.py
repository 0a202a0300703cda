"""lcdash app: `streamlit run app.py` (or `make app`). Routes to the pages in pages/ and draws the
shared sidebar (store, device, running jobs); everything else lives in the pages and the library.

The store path comes from `$LCDASH_DB` (default data/lcdash.duckdb); a fresh checkout builds the
synthetic demo store and queues the default encoder's embeddings and UMAP as background jobs.
"""

import streamlit as st

from lcdash.workspace import configure_numba_cache

# Before anything imports numba (umap): job workers inherit the cache folder through the environment.
configure_numba_cache()

st.set_page_config(page_title="lcdash", layout="wide")

from pages import _ui  # noqa: E402  (after set_page_config: _ui's caches may draw spinners)

EXPLORE = st.Page("pages/explore.py", title="Explore", icon=":material/scatter_plot:", url_path="explore")


def home() -> None:
    """`/` opens Explore at its own address: Streamlit serves its default page only at `/`, so
    Explore as the default page would answer "Page not found" at `/explore` (bookmarks, shared links)."""
    st.switch_page(EXPLORE, query_params=st.query_params.to_dict())


PAGES = {
    "": [st.Page(home, title="Home", url_path="home", default=True, visibility="hidden")],
    "Data": [
        st.Page("pages/data.py", title="Data", icon=":material/table:", url_path="data"),
        EXPLORE,
        st.Page("pages/label.py", title="Label", icon=":material/label:", url_path="label"),
    ],
    "Models": [
        st.Page("pages/models.py", title="Models", icon=":material/memory:", url_path="models"),
        st.Page("pages/probe.py", title="Probe", icon=":material/model_training:", url_path="probe"),
        st.Page("pages/compare.py", title="Compare", icon=":material/leaderboard:", url_path="compare"),
    ],
}

page = st.navigation(PAGES)
_ui.sidebar()
page.run()
